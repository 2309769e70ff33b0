"""Class predictions for a video file: the whole file, or sliding windows over a long video.

    vov3d-predict VIDEO [--weights MODEL] [--config C.json] [--set k=v ...]
    vov3d-predict VIDEO --window 4 --stride 2 [--output out.csv|out.jsonl] [--top-k 5]

MODEL picks the runtime from its path: a `.keras` file (TensorFlow, BN folded: the fast
inference form), a `.tflite` file (LiteRT, from `vov3d-lite`; its fixed clip shape
must be the config's frames and test crop) or a SavedModel export (`export.py`'s model folder,
newest version, or one version folder; run through its `serve_frames` signature, which holds the
export's own preprocessing and label list, so no config is needed). Default MODEL:
`train.output_dir/best.keras` of the config (default config: the SSv2 recipe).

The video is decoded with PyAV exactly as the shard builder stores it (short side `--short-side`
JPEG frames, `--fps` as used for the shards) and turned into the test views (clips x crops) by
the evaluation preprocessing (`vov3d_tf.data.preprocess.eval_views`); the probabilities of a
video, or of a window, are the mean of its views' softmaxes.

With `--window SECONDS --stride SECONDS` the video is streamed (`vov3d_tf.data.stream`): windows
`[k * stride, k * stride + window)` are cut as the frames are decoded, only the frames of the
current windows are held (memory bounded by the window, not the video), `--batch` windows go
through the model per call, and decoding runs in a background thread while the model works. A
window's probabilities are what predicting on that window cut as its own file gives. The
whole-video answer is the mean of the windows' probabilities. `--output` writes every window's
top-k with its start/end time and then the whole-video row, as CSV (`.csv`) or JSON lines
(`.jsonl`), to `FILE.partial` while running and renamed to FILE when complete.
"""
import argparse
import csv
import json
import os
import queue
import sys
import threading

import numpy as np

from vov3d_tf import fileio, runtime
from vov3d_tf.adapters import eval_views
from vov3d_tf.config import add_config_arguments, config_from_args
from vov3d_tf.data import format as fmt
from vov3d_tf.train import rundir

__all__ = ["video_views", "predict_video", "load_runtime", "KerasRuntime", "SavedModelRuntime",
           "TFLiteRuntime", "predict_windows", "main"]

AGGREGATE = "mean of the window probabilities"


def _read(path, *, fps, short_side):
    from vov3d_tf.data.video_io import VideoError, read_video
    try:
        return read_video(path, short_side=short_side, fps=fps)
    except VideoError as e:
        raise ValueError(f"{path}: {e}") from None


def video_views(path, views, *, fps=None, short_side=fmt.SHORT_SIDE):
    """The test views float32 (V, T, c, c, 3) of `views` (an `EvalViews`; from a config:
    `adapters.eval_views(cfg)`) of the video at `path`, as the eval pipeline makes them from a
    shard built with `--short-side short_side --fps fps`."""
    import tensorflow as tf
    from vov3d_tf.data import preprocess
    jpegs = _read(path, fps=fps, short_side=short_side)
    return preprocess.eval_views(tf.constant(jpegs), views)


def predict_video(model, path, views, *, fps=None, short_side=fmt.SHORT_SIDE):
    """Class probabilities (K,) of one video: mean of the softmax of its test views `views`.
    `model`: a runtime (`load_runtime`) or a Keras model; a `VideoClassifier` is BN-folded on
    every call, so pass `KerasRuntime(model, views)` to predict many videos."""
    engine = model if hasattr(model, "probabilities") else KerasRuntime(model, views)
    return engine.probabilities([_read(path, fps=fps, short_side=short_side)])[0]


# ----------------------------------------------------------------------------------------------
# Runtimes: `probabilities(videos)`, videos = list of lists of JPEG frames -> (len(videos), K)
# ----------------------------------------------------------------------------------------------

def _views_fn(views):
    import tensorflow as tf
    from vov3d_tf.data import preprocess

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def views_of(jpegs):
        return preprocess.eval_views(jpegs, views)
    return views_of


class _EvalViewsRuntime:
    """What the Keras and LiteRT runtimes share: each video's JPEG frames -> the config's eval
    views (`preprocess.eval_views`) -> logits of every view (`_logits`, the runtime's own) ->
    the mean of the view softmaxes."""

    eager_first_call = False

    def __init__(self, views, num_classes, labels):
        self.num_classes = num_classes
        self.labels = labels
        self.views = views
        self._views = _views_fn(views)
        self._calls = 0

    def _logits(self, flat, eager):
        raise NotImplementedError

    def probabilities(self, videos):
        import tensorflow as tf
        from vov3d_tf.data import preprocess

        # With `eager_first_call` the first call runs eagerly (one whole file: tracing would
        # cost more than it saves); later calls (windows of a stream) run the traced functions.
        eager = self.eager_first_call and self._calls == 0
        self._calls += 1
        flat = tf.concat([preprocess.eval_views(tf.constant(v), self.views) if eager
                          else self._views(tf.constant(v)) for v in videos], axis=0)  # (B*V, ...)
        probs = tf.nn.softmax(tf.cast(self._logits(flat, eager), tf.float32), axis=-1)
        return tf.reduce_mean(tf.reshape(probs, [len(videos), self.views.num_views, -1]),
                              axis=1).numpy()


class KerasRuntime(_EvalViewsRuntime):
    """A Keras model (BN folded when it is a `VideoClassifier`) with the eval preprocessing."""

    eager_first_call = True

    def __init__(self, model, views, *, labels=None):
        import tensorflow as tf
        from vov3d_tf.model.inference import fold_batchnorm
        from vov3d_tf.model.networks import VideoClassifier

        if isinstance(model, VideoClassifier):
            model = fold_batchnorm(model)  # the fast inference form, same outputs (<= 1e-4)
        super().__init__(views, int(model.output_shape[-1]), labels)
        shape = [None, *views.view_shape]
        self._model = model
        self._forward = tf.function(lambda x: model(x, training=False),
                                    input_signature=[tf.TensorSpec(shape, tf.float32)])

    def _logits(self, flat, eager):
        return self._model(flat, training=False) if eager else self._forward(flat)


class TFLiteRuntime(_EvalViewsRuntime):
    """A `.tflite` clip classifier (LiteRT, `vov3d_tf.deploy.lite.TFLiteRunner`) with the eval
    preprocessing (TensorFlow ops). The file is read through `fileio` (local, gs://, ...)."""

    def __init__(self, path, views, *, labels=None, num_threads=None):
        from vov3d_tf.deploy.lite import TFLiteRunner

        self.path = os.fspath(path)
        self._runner = TFLiteRunner(fileio.read_bytes(self.path), num_threads=num_threads)
        shape = [int(d) for d in self._runner.input["shape_signature"]]
        want = list(views.view_shape)
        if len(shape) != 5 or shape[1:] != want:
            raise ValueError(f"{self.path}: the model takes clips {tuple(shape)} but the config's "
                             f"test views are (views, {', '.join(map(str, want))}) "
                             f"(data.num_frames, data.test_crop_size or data.test_short_side); "
                             f"convert it for that shape or fix the config")
        output = self._runner.interpreter.get_output_details()[0]
        super().__init__(views, int(output["shape"][-1]), labels)

    def _logits(self, flat, eager):
        # Chunks of the converted batch, the last one padded (a dynamic batch: all at once).
        return self._runner(flat.numpy())


class SavedModelRuntime:
    """An `export.py` SavedModel through its `serve_frames` signature (the export's own
    preprocessing and views; `probabilities` = mean of the view softmaxes)."""

    def __init__(self, path):
        import tensorflow as tf
        from vov3d_tf.data.labels import read_labels
        from vov3d_tf.deploy.serving import LABELS_ASSET, SIGNATURE_FRAMES
        from vov3d_tf.deploy.serving_client import read_spec

        self.path = _saved_model_version(os.fspath(path))
        loaded = tf.saved_model.load(self.path)
        if SIGNATURE_FRAMES not in loaded.signatures:
            raise ValueError(f"{self.path}: no {SIGNATURE_FRAMES!r} signature (signatures: "
                             f"{sorted(loaded.signatures)}); export it with vov3d-export")
        self._loaded = loaded  # keeps the signature's variables alive
        self._fn = loaded.signatures[SIGNATURE_FRAMES]
        self.labels = read_labels(fileio.join(self.path, "assets", LABELS_ASSET))
        self.num_classes = len(self.labels)
        self.spec = read_spec(self.path)  # the export's ServingSpec

    def probabilities(self, videos):
        import tensorflow as tf
        from vov3d_tf.data import preprocess
        from vov3d_tf.deploy.serving_client import sample_indices

        if self.spec.presampled:  # a --client-sampling export takes exactly the sampled frames
            videos = [[v[i] for i in sample_indices(len(v), self.spec)] for v in videos]
        cap = self.spec.limits.max_frames
        for v in videos:  # the graph would refuse it (after all its frames were decoded here)
            if cap is not None and len(v) > cap:
                raise ValueError(f"{self.path}: {len(v)} frames in one video or window, over the "
                                 f"export's cap max_frames={cap}; use shorter --window seconds, "
                                 f"or export with a larger --max-frames or --client-sampling")
        decoded = [preprocess.decode_jpegs(tf.constant(v)) for v in videos]
        out = [None] * len(videos)
        # One call per frame count (a batch is one uint8 array; usually all windows share it)
        # and at most the export's max_videos per call.
        for shape in sorted({tuple(d.shape) for d in decoded}):
            same = [i for i, d in enumerate(decoded) if tuple(d.shape) == shape]
            for start in range(0, len(same), self.spec.max_videos):
                idx = same[start:start + self.spec.max_videos]
                probs = self._fn(frames=tf.stack([decoded[i] for i in idx]))["probabilities"]
                for i, p in zip(idx, probs.numpy()):
                    out[i] = p
        return np.stack(out)


def _saved_model_version(path):
    """`path` if it is a SavedModel, else its newest numbered version folder holding one."""
    from vov3d_tf.deploy.serving import existing_versions

    if fileio.exists(fileio.join(path, "saved_model.pb")):
        return path
    versions = [v for v in existing_versions(path)
                if fileio.exists(fileio.join(path, str(v), "saved_model.pb"))]
    if not versions:
        raise ValueError(f"{path}: not a SavedModel export (no saved_model.pb in it or in a "
                         f"numbered version folder)")
    return fileio.join(path, str(versions[-1]))


def load_runtime(model_path, cfg=None, *, labels=None):
    """The runtime for `model_path`: `.keras` -> KerasRuntime, `.tflite` -> TFLiteRuntime (both
    with `cfg`'s test views), a directory -> SavedModelRuntime (its own preprocessing)."""
    model_path = os.fspath(model_path)
    if not fileio.exists(model_path):
        raise FileNotFoundError(f"weights not found: {model_path!r} (pass --weights)")
    if fileio.isdir(model_path):
        return SavedModelRuntime(model_path)
    if cfg is None and model_path.endswith((".tflite", ".keras")):
        raise ValueError(f"{model_path}: a .keras or .tflite model needs the config of its test "
                         f"views (frames, resize, crops); only a SavedModel export has its own")
    if model_path.endswith(".tflite"):
        return TFLiteRuntime(model_path, eval_views(cfg), labels=labels)
    if model_path.endswith(".keras"):
        from vov3d_tf.deploy.loading import load_trained_model
        return KerasRuntime(load_trained_model(model_path), eval_views(cfg), labels=labels)
    raise ValueError(f"{model_path}: expected a .keras file, a .tflite file or a SavedModel "
                     f"export folder")


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------

def _prefetched(iterable, size):
    """Items of `iterable` produced by a background thread, at most `size` ahead; its errors
    are raised here."""
    q = queue.Queue(maxsize=max(size, 1))
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
            q.put((done, e))
            return
        q.put((done, None))

    thread = threading.Thread(target=produce, daemon=True, name="vov3d-decode")
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def predict_windows(engine, windows, *, batch=4):
    """(Window, probabilities (K,)) for every window of `windows` (an iterable of
    `stream.Window`) through `engine` (a `load_runtime` result), `batch` windows per model call;
    windows are prepared in a background thread while the model runs."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    pending = []
    for window in _prefetched(windows, batch):
        pending.append(window)
        if len(pending) == batch:
            yield from zip(pending, engine.probabilities([w.frames for w in pending]))
            pending = []
    if pending:
        yield from zip(pending, engine.probabilities([w.frames for w in pending]))


def _top_k(probs, k, names):
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), names[i] if names else str(int(i)), float(probs[i])) for i in order]


class _Writer:
    """Window rows and the final whole-video row, as CSV or JSON lines, to PATH.partial."""

    def __init__(self, path, top_k):
        if not path.endswith((".csv", ".jsonl")):
            raise ValueError(f"--output {path!r}: the name must end in .csv or .jsonl")
        fileio.makedirs(fileio.dirname(fileio.abspath(path)))
        self.path, self.tmp = path, path + ".partial"
        self.jsonl = path.endswith(".jsonl")
        self.f = fileio.open(self.tmp, "w")
        if not self.jsonl:
            self.csv = csv.writer(self.f)
            header = ["window", "start", "end", "frames"]
            for r in range(1, top_k + 1):
                header += [f"label_{r}", f"index_{r}", f"score_{r}"]
            self.csv.writerow(header)

    def row(self, window, start, end, frames, top):
        if self.jsonl:
            self.f.write(json.dumps({
                "window": window, "start": round(start, 6), "end": round(end, 6),
                "frames": frames, "labels": [n for _, n, _ in top],
                "indices": [i for i, _, _ in top], "scores": [round(p, 6) for _, _, p in top],
                **({"aggregate": AGGREGATE} if window == "video" else {})}) + "\n")
        else:
            self.csv.writerow([window, f"{start:.3f}", f"{end:.3f}", frames]
                              + [x for i, n, p in top for x in (n, i, f"{p:.6f}")])
        self.f.flush()

    def finish(self):
        self.f.close()
        fileio.rename(self.tmp, self.path)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vov3d-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="video file (mp4, webm, avi, mkv, ...)")
    parser.add_argument("--weights", help=".keras file, .tflite file or SavedModel export folder "
                                          "(default: train.output_dir/best.keras)")
    add_config_arguments(parser, required=False, default_help="the SSv2 recipe")
    parser.add_argument("--labels", help="class names, one per line (default: from the config; "
                                         "a SavedModel has its own)")
    parser.add_argument("--fps", type=_positive_float, default=None,
                        help="resample to this frame rate, as the shards were built (default: "
                             "every frame)")
    parser.add_argument("--short-side", type=_positive_int, default=fmt.SHORT_SIDE,
                        help="stored short side of the shards (vov3d-build-shards --short-side)")
    parser.add_argument("--top-k", type=_positive_int, default=5)
    parser.add_argument("--window", type=_positive_float, default=None,
                        help="stream the video in windows of this many seconds")
    parser.add_argument("--stride", type=_positive_float, default=None,
                        help="seconds between window starts (default: --window, no overlap)")
    parser.add_argument("--batch", type=_positive_int, default=4,
                        help="windows per model call (default 4)")
    parser.add_argument("--output", help="write the windows' top-k and the whole-video row to "
                                         "this .csv or .jsonl file")
    args = parser.parse_args(argv)
    if args.stride is not None and args.window is None:
        parser.error("--stride needs --window")
    runtime.configure()  # TF process settings, before the first tensor

    from vov3d_tf.adapters import class_names
    from vov3d_tf.data import stream
    from vov3d_tf.data.labels import read_labels
    from vov3d_tf.data.video_io import VideoError

    writer = None
    try:
        cfg, _ = config_from_args(args)
        weights = args.weights or os.path.join(cfg.train.output_dir, rundir.BEST)
        if not fileio.exists(weights):
            raise FileNotFoundError(f"weights not found: {weights!r} (pass --weights)")
        if not fileio.exists(args.video):
            raise FileNotFoundError(f"video not found: {args.video!r}")
        if args.labels:
            names, source = read_labels(args.labels), f"--labels {args.labels}"
        elif fileio.isdir(weights):
            names, source = None, None  # the export's own list
        else:
            names = class_names(cfg)
            source = (f"data.labels_file {cfg.data.labels_file}" if cfg.data.labels_file
                      else "the shards' manifest")
        # Without --window the whole file is one window (all its frames held, as before).
        windows = stream.sliding_windows(
            args.video, window=args.window or float("inf"),
            stride=args.stride or args.window or float("inf"), short_side=args.short_side,
            fps=args.fps)
        windows.peek()  # an unreadable video fails here, before the model is loaded
        engine = load_runtime(weights, cfg)
        if names is None:
            names, source = engine.labels, f"{weights} (its labels)"
        if names is not None and len(names) != engine.num_classes:
            raise ValueError(f"{source}: {len(names)} labels for a model with "
                             f"{engine.num_classes} classes ({weights})")
        top_k = min(args.top_k, engine.num_classes)
        if args.output:
            writer = _Writer(args.output, top_k)
        total, count = None, 0
        for w, p in predict_windows(engine, windows, batch=args.batch):
            total = p.astype(np.float64) if total is None else total + p
            count += 1
            if args.window is None:
                continue
            top = _top_k(p, top_k, names)
            if writer:
                writer.row(w.index, w.start, w.end, len(w.frames), top)
            else:
                print(f"[{w.start:9.3f} - {w.end:9.3f} s] {top[0][1]:<30s} {top[0][2]:.4f}")
        if total is None:
            raise ValueError(f"{args.video}: no window has frames")
        probs = total / count
    except (VideoError, ValueError, FileNotFoundError) as e:
        where = f"{args.video}: " if isinstance(e, VideoError) else ""
        print(f"error: {where}{e}", file=sys.stderr)
        if writer:
            writer.f.close()
            print(f"(rows written so far are in {writer.tmp})", file=sys.stderr)
        return 2
    top = _top_k(probs, top_k, names)
    if writer:
        writer.row("video", 0.0, windows.duration, windows.num_frames, top)
        writer.finish()
    head = f"{args.video}:" if args.window is None else (
        f"{args.video} ({count} windows, {AGGREGATE}):")
    print(head)
    for rank, (_, name, p) in enumerate(top, 1):
        print(f"  {rank}. {name:<40s} {p:.4f}")
    if writer:
        print(f"wrote {writer.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
