"""The paper's multi-view test and precise BatchNorm statistics (docs/architecture.md,
"Training recipe").

Multi-view test: every view (clip x spatial crop) of a video goes through the model in
inference mode, the softmax of each view is **summed** per video (`ENSEMBLE_METHOD sum`) and
top-1/top-5 are computed on the sum. `evaluate` also writes a per-class accuracy CSV, a
confusion-matrix PNG and `predictions.csv` (every video's top-k, the form a test-set submission
is made from) when given an output folder. `max_views_per_batch` splits a batch's views into
forward passes of at most that many views (same results, bounded activation memory).

Hidden labels (a test split: label -1): those videos are predicted and written to
predictions.csv but left out of every metric. With none labelled there is no top-1/top-5 (NaN
in the result, null in metrics files; `describe` says "labels hidden"); with some labelled and
some hidden, top-1/top-5 are over the labelled videos only and `describe` says how many.

Precise BN (`BN.USE_PRECISE_STATS`): before the final evaluation the BatchNorm moving
statistics are replaced by their average over N training batches, so they describe the final
weights instead of an exponential average over the weights of the last few hundred steps.
"""
import csv
import io
import os

import keras
import numpy as np
import tensorflow as tf

from vov3d_tf import _compat, fileio
from vov3d_tf.train import rundir

__all__ = ["evaluate", "describe", "json_metrics", "multi_view_scores", "topk_accuracy",
           "precise_bn", "write_per_class_csv", "write_predictions_csv", "plot_confusion_matrix"]


def multi_view_scores(view_probs):
    """(videos, views, K) per-view probabilities -> (videos, K) summed video scores."""
    view_probs = np.asarray(view_probs, np.float64)
    if view_probs.ndim != 3:
        raise ValueError(f"expected (videos, views, classes) probabilities, got shape "
                         f"{view_probs.shape}")
    return view_probs.sum(axis=1)


def topk_accuracy(scores, labels, k):
    """Fraction of rows whose label is among the k highest scores (ties: lowest index first)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(order == labels[:, None], axis=1))) if len(labels) else 0.0


def _as_views(x):
    """Training-shaped clips (B, T, H, W, 3) count as one view per video."""
    return x[:, None] if x.shape.rank == 5 else x


def _view_logits_fn(model, max_views=None):
    """views (B, V, T, H, W, 3) or clips (B, T, H, W, 3) -> float32 logits (B, V, K), at most
    `max_views` views per forward pass (None: all at once)."""
    from vov3d_tf.model.inference import fold_batchnorm
    from vov3d_tf.model.networks import VideoClassifier

    if isinstance(model, VideoClassifier) and not tf.distribute.has_strategy():
        model = fold_batchnorm(model)  # the fast inference form: same outputs (<= 1e-4)

    traced = {}  # clip shape -> forward pass traced once for any number of views

    def forward(flat):
        shape = tuple(flat.shape[1:])
        if shape not in traced:
            traced[shape] = tf.function(
                lambda x: tf.cast(model(x, training=False), tf.float32),
                input_signature=[tf.TensorSpec([None, *shape], flat.dtype)])
        return traced[shape](flat)

    def view_logits(views):
        views = _as_views(tf.convert_to_tensor(views))
        b, v = int(views.shape[0]), int(views.shape[1])
        flat = tf.reshape(views, [b * v, *views.shape[2:]])
        step = b * v if max_views is None else max_views
        logits = tf.concat([forward(flat[i:i + step]) for i in range(0, b * v, step)], axis=0)
        return tf.reshape(logits, [b, v, -1])
    return view_logits


def _view_probabilities_fn(model, max_views=None):
    view_logits = _view_logits_fn(model, max_views)
    return lambda views: tf.nn.softmax(view_logits(views), axis=-1)


def evaluate(model, dataset, num_classes, *, class_names=None, output_dir=None,
             max_batches=None, verbose=True, prefix="", max_views_per_batch=None, top_k=5):
    """Multi-view test of `model` over `dataset`.

    `dataset` yields `(views, labels)` or `(views, labels, filenames)`: views
    `(B, V, T, H, W, 3)` (V = clips x crops) or single clips `(B, T, H, W, 3)`; labels `(B,)`
    class indices, -1 for a video whose label is unknown (a test set's hidden labels: in
    the predictions, not in the metrics); filenames `(B,)` strings. `max_views_per_batch`: at
    most that many views per forward pass (None: the whole batch at once; results are the
    same). Returns a dict with `top1`, `top5` (over the labelled videos; NaN if none),
    `num_videos`, `num_labelled`, `num_views`, `per_class_accuracy` (list, NaN for absent
    classes), `confusion` (K x K counts, rows = true class), and when `output_dir` is given
    the paths `per_class_csv`, `confusion_png` and `predictions_csv` (`top_k` classes per
    video; file names start with `prefix`).
    """
    if max_views_per_batch is not None and (isinstance(max_views_per_batch, bool) or not
                                            isinstance(max_views_per_batch, int) or
                                            max_views_per_batch < 1):
        raise ValueError(f"max_views_per_batch must be a positive int or None, got "
                         f"{max_views_per_batch!r}")
    view_probs = _view_probabilities_fn(model, max_views_per_batch)
    all_scores, all_labels, all_files, num_views = [], [], [], 0
    progbar = keras.utils.Progbar(None, unit_name="batch", verbose=1 if verbose else 0)
    for i, element in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        views, labels = element[:2]
        probs = view_probs(views).numpy()
        if probs.shape[-1] != num_classes:
            raise ValueError(f"model has {probs.shape[-1]} outputs but num_classes is "
                             f"{num_classes}")
        num_views = probs.shape[1]
        labels = np.asarray(labels).reshape(len(probs), -1)[:, 0]  # first label if multi-label
        all_scores.append(multi_view_scores(probs))
        all_labels.append(labels.astype(np.int64))
        all_files += ([f.decode("utf-8", "replace") for f in np.asarray(element[2]).reshape(-1)]
                      if len(element) > 2 else [""] * len(probs))
        progbar.update(i + 1)
    if not all_scores:
        raise ValueError("evaluation dataset is empty")
    scores = np.concatenate(all_scores)
    labels = np.concatenate(all_labels)
    if labels.min() < -1 or labels.max() >= num_classes:
        bad = int(labels.max() if labels.max() >= num_classes else labels.min())
        raise ValueError(f"label {bad} out of range for {num_classes} classes (-1: unknown)")
    known = labels >= 0
    pred = scores.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels[known], pred[known]), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    top1, top5 = ((topk_accuracy(scores[known], labels[known], k) for k in (1, 5)) if known.any()
                  else (float("nan"), float("nan")))
    result = {"top1": top1, "top5": top5, "num_videos": int(len(labels)),
              "num_labelled": int(known.sum()), "num_views": int(num_views),
              "per_class_accuracy": [float(a) for a in per_class],
              "confusion": confusion.tolist()}
    if output_dir:
        fileio.makedirs(output_dir)
        names = list(class_names) if class_names else [str(k) for k in range(num_classes)]
        result["per_class_csv"] = write_per_class_csv(
            os.path.join(output_dir, prefix + rundir.PER_CLASS_CSV), confusion, names)
        result["confusion_png"] = plot_confusion_matrix(
            os.path.join(output_dir, prefix + rundir.CONFUSION_PNG), confusion, names)
        result["predictions_csv"] = write_predictions_csv(
            os.path.join(output_dir, prefix + rundir.PREDICTIONS_CSV), all_files, labels,
            scores / max(num_views, 1), names, top_k)
    return result


def describe(result):
    """One line for a log: top-1/top-5, or that the labels are hidden (over how many videos)."""
    n, known = result["num_videos"], result.get("num_labelled", result["num_videos"])
    if known == 0:
        return f"labels hidden: no top-1/top-5 ({n} videos predicted)"
    text = f"top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}"
    if known < n:
        text += f" over the {known} labelled of {n} videos ({n - known} with hidden labels)"
    return text


def json_metrics(result, keys=("top1", "top5", "num_videos", "num_labelled", "num_views")):
    """`keys` of an `evaluate` result for a JSON file: no top-1/top-5 (labels hidden) is null,
    not NaN (which is not JSON)."""
    out = {k: result[k] for k in keys}
    for k in ("top1", "top5"):
        if k in out and out[k] is not None and np.isnan(out[k]):
            out[k] = None
    return out


def write_predictions_csv(path, filenames, labels, probabilities, class_names, top_k=5):
    """One row per video: video_id (the file name without folder and extension), filename,
    true_index and true_label (-1 and empty when unknown), then label_r, index_r, score_r for
    the `top_k` classes by score (`probabilities`: the mean of the view softmaxes)."""
    probabilities = np.asarray(probabilities)
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["video_id", "filename", "true_index", "true_label"]
               + [f"{c}_{r}" for r in range(1, k + 1) for c in ("label", "index", "score")])
    for name, label, probs, top in zip(filenames, labels, probabilities, order):
        video_id = os.path.splitext(os.path.basename(name))[0]
        label = int(label)
        w.writerow([video_id, name, label, class_names[label] if label >= 0 else ""]
                   + [x for c in top for x in (class_names[c], int(c), f"{probs[c]:.6f}")])
    fileio.atomic_write_text(path, text.getvalue())  # never a half-written file under the name
    return path


def write_per_class_csv(path, confusion, class_names):
    """class_index, class_name, videos, correct, accuracy (empty when no videos)."""
    confusion = np.asarray(confusion)
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["class_index", "class_name", "videos", "correct", "accuracy"])
    for k, name in enumerate(class_names):
        n, c = int(confusion[k].sum()), int(confusion[k, k])
        w.writerow([k, name, n, c, f"{c / n:.6f}" if n else ""])
    fileio.write_text(path, text.getvalue())
    return path


def plot_confusion_matrix(path, confusion, class_names):
    """Row-normalised confusion matrix as a PNG (class names on the axes when <= 50)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion, np.float64)
    k = len(confusion)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.3 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix (row-normalised, {int(confusion.sum())} videos)")
    if k <= 50:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if confusion[i, j]:
                        ax.text(j, i, int(confusion[i, j]), ha="center", va="center",
                                fontsize=7, color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    with fileio.open(path, "wb") as f:  # matplotlib writes to the gfile handle
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return path


def _batchnorm_layers(model):
    return [layer for layer in _compat.flatten_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def precise_bn(model, dataset, num_batches):
    """Set every BN layer's moving mean/variance to their average over `num_batches` batches.

    Runs the model in training mode with momentum (k-1)/k on batch k, which makes the moving
    statistics the exact running mean of the per-batch statistics; trainable weights are
    untouched. `dataset` yields `(clips, labels)` training batches. Returns batches used.
    """
    bns = _batchnorm_layers(model)
    if not bns or num_batches <= 0:
        return 0
    momenta = [bn.momentum for bn in bns]
    used = 0
    try:
        for clips, _ in dataset.take(num_batches):
            for bn in bns:
                bn.momentum = used / (used + 1.0)  # batch 0 replaces, batch k averages
            model(clips, training=True)  # eager: the momentum is read on every call
            used += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    return used
