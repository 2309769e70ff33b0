"""The paper's multi-view test and precise BatchNorm statistics (ARCHITECTURE.md §12).

Multi-view test: every view (clip x spatial crop) of a video goes through the model in
inference mode, the softmax of each view is **summed** per video (`ENSEMBLE_METHOD sum`) and
top-1/top-5 are computed on the sum. `evaluate` also writes a per-class accuracy CSV and a
confusion-matrix PNG when given an output folder.

Precise BN (`BN.USE_PRECISE_STATS`): before the final evaluation the BatchNorm moving
statistics are replaced by their average over N training batches, so they describe the final
weights instead of an exponential average over the weights of the last few hundred steps.
"""
import csv
import os

import keras
import numpy as np
import tensorflow as tf

from vov3d_tf import _compat

__all__ = ["evaluate", "multi_view_scores", "topk_accuracy", "precise_bn", "write_per_class_csv",
           "plot_confusion_matrix"]


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


def _view_probabilities_fn(model):
    from vov3d_tf.inference import fold_batchnorm
    from vov3d_tf.models import VideoClassifier

    if isinstance(model, VideoClassifier) and not tf.distribute.has_strategy():
        model = fold_batchnorm(model)  # the fast inference form: same outputs (<= 1e-4)

    @tf.function(reduce_retracing=True)
    def view_probs(views):
        views = _as_views(views)
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))
        logits = tf.cast(model(flat, training=False), tf.float32)
        probs = tf.nn.softmax(logits, axis=-1)
        return tf.reshape(probs, [shape[0], shape[1], -1])
    return view_probs


def evaluate(model, dataset, num_classes, *, class_names=None, output_dir=None,
             max_batches=None, verbose=True, prefix=""):
    """Multi-view test of `model` over `dataset`.

    `dataset` yields `(views, labels)`: views `(B, V, T, H, W, 3)` (V = clips x crops) or
    single clips `(B, T, H, W, 3)`; labels `(B,)` class indices. Returns a dict with `top1`,
    `top5`, `num_videos`, `num_views`, `per_class_accuracy` (list, NaN for absent classes),
    `confusion` (K x K counts, rows = true class), and when `output_dir` is given the paths
    `per_class_csv` and `confusion_png` (file names start with `prefix`).
    """
    view_probs = _view_probabilities_fn(model)
    all_scores, all_labels, num_views = [], [], 0
    progbar = keras.utils.Progbar(None, unit_name="batch", verbose=1 if verbose else 0)
    for i, (views, labels) in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        probs = view_probs(views).numpy()
        if probs.shape[-1] != num_classes:
            raise ValueError(f"model has {probs.shape[-1]} outputs but num_classes is "
                             f"{num_classes}")
        num_views = probs.shape[1]
        labels = np.asarray(labels).reshape(len(probs), -1)[:, 0]  # first label if multi-label
        all_scores.append(multi_view_scores(probs))
        all_labels.append(labels.astype(np.int64))
        progbar.update(i + 1)
    if not all_scores:
        raise ValueError("evaluation dataset is empty")
    scores = np.concatenate(all_scores)
    labels = np.concatenate(all_labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
    pred = scores.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    result = {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
              "num_videos": int(len(labels)), "num_views": int(num_views),
              "per_class_accuracy": [float(a) for a in per_class],
              "confusion": confusion.tolist()}
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        names = list(class_names) if class_names else [str(k) for k in range(num_classes)]
        result["per_class_csv"] = write_per_class_csv(
            os.path.join(output_dir, prefix + "per_class_accuracy.csv"), confusion, names)
        result["confusion_png"] = plot_confusion_matrix(
            os.path.join(output_dir, prefix + "confusion_matrix.png"), confusion, names)
    return result


def write_per_class_csv(path, confusion, class_names):
    """class_index, class_name, videos, correct, accuracy (empty when no videos)."""
    confusion = np.asarray(confusion)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_index", "class_name", "videos", "correct", "accuracy"])
        for k, name in enumerate(class_names):
            n, c = int(confusion[k].sum()), int(confusion[k, k])
            w.writerow([k, name, n, c, f"{c / n:.6f}" if n else ""])
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
    fig.savefig(path, dpi=100)
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
