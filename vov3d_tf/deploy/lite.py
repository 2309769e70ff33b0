"""CPU inference through LiteRT (TensorFlow Lite): the fastest and smallest way to run a model.

    vov3d-lite runs/demo/best.keras --output vov3d.tflite --frames 16 --size 224

writes a float32 `.tflite` file of the BN-folded model for one fixed input shape
`(batch, frames, size, size, 3)` (normalized frames, as the Keras model takes; logits out).
Run it with the LiteRT runtime alone, `pip install ai-edge-litert` (~40 MB with its deps; it does
not import TensorFlow):

    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path="vov3d.tflite", num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clips)  # float32
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

Why: a process that imports TensorFlow holds ~650 MiB before the first tensor (its libraries),
while LiteRT with XNNPACK needs ~35 MiB and plans every activation buffer ahead, so a whole
VoV3D-M 16x224x224 inference peaks at ~160-195 MiB at batch 1 (see README for the measured figures).
Outputs equal the Keras model's to float32 rounding (tested against the official logits).
Fixed shapes: convert once per deployed clip shape and batch size; `--batch 0` keeps the batch
dimension dynamic (resize it with `interpreter.resize_tensor_input`), which is slower.

Quantized (`--quantize`; the file still takes float32 clips and returns float32 logits):
  fp16     weights stored as float16 (half the file), computed in float32;
  dynamic  int8 weights, activations quantized on the fly inside each op;
  int8     int8 weights and activations, their ranges calibrated on the eval views of your own
           shards (`--calibration-shards GLOB --calibration-clips N`, the training pipeline's
           eval preprocessing at --frames / --size).
`--eval-shards GLOB` then reports top-1/top-5 of the float and the quantized model on the eval
views of those shards and how often their top-1 agrees (`compare`). What each costs, and why no
op is kept in float32 by default: docs/lite.md.
"""
import argparse
import os
import sys

import numpy as np

from vov3d_tf import runtime
from vov3d_tf.config import SAMPLING_MODES
from vov3d_tf.data.specs import EvalViews

QUANTIZE_MODES = ("fp16", "dynamic", "int8")
# What int8 conversion keeps in float32 by default (TFLite op names; regular expressions on op
# output names): nothing. Measured on VoV3D (docs/lite.md): the pools round like any other op,
# the int8 error grows stage by stage through the convs, and keeping the pools (MEAN) or the
# squeeze-excite blocks in float32 did not raise the top-1 agreement with float32.
INT8_FLOAT_OPS = ()
INT8_FLOAT_NODES = ()


def _check_shape(frames, height, width, batch_size):
    from vov3d_tf.model.networks import _check_positive_ints

    for name, value in (("frames", frames), ("height", height), ("width", width),
                        ("batch_size", batch_size)):
        if value is not None:
            _check_positive_ints(name, value)


def _converter(model, frames, height, width, batch_size):
    import keras
    import tensorflow as tf

    from vov3d_tf.model.inference import fold_batchnorm

    folded = fold_batchnorm(model)
    inputs = keras.Input((frames, height, width, 3), batch_size=batch_size, name="clips")
    wrapper = keras.Model(inputs, folded(inputs, training=False), name=folded.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(wrapper)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no TF fallback
    return converter


def _representative_dataset(calibration, shape):
    """A re-iterable representative dataset over `calibration` (clips (T, H, W, 3) or batches of
    them), yielding model-shaped float32 batches; counts the clips it yielded."""
    batch = shape[0] or 1

    class Clips:
        count = 0

        def __call__(self):
            self.count = 0
            pending = []
            for item in calibration() if callable(calibration) else calibration:
                item = np.asarray(item, np.float32)
                for clip in (item if item.ndim == 5 else item[None]):
                    if tuple(clip.shape) != tuple(shape[1:]):
                        raise ValueError(f"calibration clip of shape {tuple(clip.shape)} does not "
                                         f"fit the model's input {tuple(shape[1:])}")
                    pending.append(clip)
                    if len(pending) == batch:
                        self.count += batch
                        yield [np.stack(pending)]
                        pending = []
            if self.count == 0:
                raise ValueError(f"int8 calibration got {len(pending)} clips; it needs at least "
                                 f"{batch} (one batch of the converted shape)")
    return Clips()


def to_tflite(model, *, frames=16, height=224, width=None, batch_size=1, quantize=None,
              calibration=None, float_ops=None, float_nodes=None):
    """`.tflite` bytes of `model` (a `VideoClassifier`; BN is folded first) for float32 inputs
    `(batch_size, frames, height, width, 3)` and float32 logits out. `batch_size=None` leaves
    the batch dynamic.

    quantize: None (float32), "fp16" (weights stored as float16, computed in float32: half the
      file, same speed), "dynamic" (int8 weights, activations quantized on the fly per op) or
      "int8" (weights and activations int8 with scales calibrated on `calibration`; float32
      input and output).
    calibration: for "int8" only: clips (T, H, W, 3), or batches of them, as the model takes
      them (normalized), e.g. `EvalClips(shards, ..., max_clips=200)`; an iterable or a function
      returning one. A few hundred eval views of your own data is typical.
    float_ops: for "int8": TFLite op names (e.g. "MEAN", "LOGISTIC") kept in float32
      (default `INT8_FLOAT_OPS`).
    float_nodes: for "int8": regular expressions; ops whose output tensor name (the Keras layer
      path, e.g. "s3_b0_u2_se_fc1") matches one stay in float32 (default `INT8_FLOAT_NODES`).
    """
    width = height if width is None else width
    _check_shape(frames, height, width, batch_size)
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None or one of {QUANTIZE_MODES}, got {quantize!r}")
    if (calibration is not None) != (quantize == "int8"):
        raise ValueError("int8 quantization needs calibration clips" if quantize == "int8" else
                         f"calibration clips are only used by quantize='int8', not {quantize!r}")
    for name, value in (("float_ops", float_ops), ("float_nodes", float_nodes)):
        if value is not None and quantize != "int8":
            raise ValueError(f"{name} is only used by quantize='int8', not {quantize!r}")
    from vov3d_tf.model import layers as L

    converter = _converter(model, frames, height, width, batch_size)
    # The model is traced inside convert(), in the LiteRT form of the T-OSA sum (int8 ADDs, not
    # a float32 ADD_N between dequantized inputs).
    with L.pairwise_sums():
        return _convert(converter, quantize, calibration, (batch_size, frames, height, width, 3),
                        float_ops, float_nodes)


def _convert(converter, quantize, calibration, shape, float_ops, float_nodes):
    import tensorflow as tf

    if quantize is None:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    if quantize == "dynamic":
        return converter.convert()
    dataset = _representative_dataset(calibration, shape)
    converter.representative_dataset = dataset
    float_ops = list(INT8_FLOAT_OPS if float_ops is None else float_ops)
    float_nodes = list(INT8_FLOAT_NODES if float_nodes is None else float_nodes)
    # The quantization debugger's converter path: calibrate once, then quantize every op but
    # the denylisted ones (the plain converter cannot keep chosen ops in float).
    options = tf.lite.experimental.QuantizationDebugOptions
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=dataset,
        debug_options=options(denylisted_ops=float_ops or None))
    if float_nodes:
        nodes = _matching_tensors(debugger.calibrated_model, float_nodes)
        debugger.options = options(denylisted_ops=float_ops or None, denylisted_nodes=nodes)
    return debugger.get_nondebug_quantized_model()


def _matching_tensors(blob, patterns):
    """Names of the tensors of a .tflite model matching any of the regular expressions."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    names = [t["name"] for t in Interpreter(model_content=blob).get_tensor_details()]
    found = [n for n in names if any(re.search(p, n) for p in patterns)]
    missing = [p for p in patterns if not any(re.search(p, n) for n in names)]
    if missing:
        raise ValueError(f"float_nodes {missing} match no tensor of the model (names look like "
                         f"{names[len(names) // 2]!r})")
    return found


def save_tflite(model, path, **options):
    """`to_tflite(model, **options)` written to `path` (folders created); returns the path."""
    return _write(to_tflite(model, **options), path)


def _write(blob, path):
    from vov3d_tf import fileio

    path = os.fspath(path)
    fileio.makedirs(fileio.dirname(fileio.abspath(path)))
    fileio.atomic_write_bytes(path, blob)  # never a half-written model under the final name
    return path


class EvalClips:
    """The test views `views` (an `EvalViews`) of video shards, one normalized clip at a time,
    as evaluation makes them (`pipeline.eval_dataset`).

    Iterable more than once; `count` is the number of clips the last pass yielded, `labels` the
    video labels it read. `max_clips` stops early (None: every view of every video).
    """

    def __init__(self, file_pattern, views, *, max_clips=None):
        if max_clips is not None and (not isinstance(max_clips, int) or max_clips < 1):
            raise ValueError(f"max_clips must be a positive int or None, got {max_clips!r}")
        self.max_clips, self.count, self.labels = max_clips, 0, []
        self.views = views
        self._file_pattern = file_pattern
        from vov3d_tf.data.pipeline import resolve_files
        resolve_files(file_pattern)  # no matching file: FileNotFoundError naming the pattern

    def videos(self):
        """(views (V, T, S, S, 3), label) per video, in shard order."""
        from vov3d_tf.data.pipeline import eval_dataset

        ds = eval_dataset(self._file_pattern, self.views, batch_size=1)
        for views, label in ds:
            yield views.numpy()[0], int(label.numpy()[0])

    def __iter__(self):
        self.count, self.labels = 0, []
        for views, label in self.videos():
            self.labels.append(label)
            for clip in views:
                if self.max_clips is not None and self.count >= self.max_clips:
                    return
                self.count += 1
                yield clip


class TFLiteRunner:
    """One LiteRT interpreter kept for many calls: `runner(clips)` -> logits for any number of
    clips: fed in chunks of the converted batch (the last one padded), or all at once when the
    batch was converted dynamic (`batch_size=None`; the input is resized when the count
    changes). Clips that do not fit the converted clip shape are a ValueError naming both."""

    def __init__(self, path_or_bytes, *, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        kwargs = {"num_threads": num_threads or os.cpu_count() or 1}
        if isinstance(path_or_bytes, (bytes, bytearray)):
            self.interpreter = Interpreter(model_content=bytes(path_or_bytes), **kwargs)
        else:
            self.interpreter = Interpreter(model_path=os.fspath(path_or_bytes), **kwargs)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.signature = [int(d) for d in self.input["shape_signature"]]
        self.dynamic = self.signature[0] == -1
        self.interpreter.allocate_tensors()

    def _invoke(self, chunk):
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(chunk))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)

    def __call__(self, clips):
        clips = np.asarray(clips, np.float32)
        expected = self.signature
        if len(expected) != clips.ndim or any(e not in (-1, c) for e, c in
                                              zip(expected[1:], clips.shape[1:])):
            raise ValueError(f"clips of shape {tuple(clips.shape)} do not fit the model's input "
                             f"{tuple(expected)} (-1: any); convert it for this shape")
        if self.dynamic:
            if list(self.input["shape"]) != list(clips.shape):
                self.interpreter.resize_tensor_input(self.input["index"], list(clips.shape))
                self.interpreter.allocate_tensors()
                self.input = self.interpreter.get_input_details()[0]
            return self._invoke(clips).copy()
        batch = expected[0]
        out = []
        for start in range(0, len(clips), batch):
            chunk = clips[start:start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:],
                                                        np.float32)])
            out.append(self._invoke(chunk)[:n].copy())
        return np.concatenate(out)


def _as_runner(model, num_threads):
    if isinstance(model, (bytes, bytearray, str, os.PathLike)):
        return TFLiteRunner(model, num_threads=num_threads)
    from vov3d_tf.model.networks import VideoClassifier
    if isinstance(model, VideoClassifier):
        import tensorflow as tf

        from vov3d_tf.model.inference import fold_batchnorm
        folded = fold_batchnorm(model)
        step = tf.function(lambda x: folded(x, training=False), reduce_retracing=True)
        return lambda clips: step(clips).numpy()
    if callable(model):
        return model
    raise TypeError(f"expected a .tflite path or bytes, a VideoClassifier or a function of clips, "
                    f"got {type(model).__name__}")


def compare(reference, candidates, eval_clips, *, max_videos=None, num_threads=None):
    """Accuracy of float and quantized models on the same eval views, and their agreement.

    reference: the float model (a `VideoClassifier`, a `.tflite` path/bytes or a function
      clips -> logits); candidates: {name: model} of the same kinds (e.g. quantized `.tflite`).
    eval_clips: an `EvalClips` (the eval views of labeled shards).
    Returns {name: {"top1", "top5", ...}} with "reference" first: video top-1/top-5 from the
    summed view softmaxes (the multi-view test of `vov3d_tf.train.evaluation`), and per candidate
    "top1_agreement" (fraction of views whose top-1 class equals the reference's),
    "video_top1_agreement" (same per video), "top1_delta" (candidate - reference top-1),
    "logit_rel_rmse" (RMS logit error over the reference logits' standard deviation), and
    "clear_views" / "clear_top1_agreement": the views whose reference top-1 leads its runner-up
    by more than 3x the candidate's RMS logit error, and the agreement on those (elsewhere a
    flipped top-1 can be a near tie, not an error; see `clear_agreement`).
    Videos with hidden labels (-1) count in the agreements only; top-1/top-5 are then over the
    labelled videos ("labelled_videos"), None when there are none.
    """
    from vov3d_tf.train.evaluation import multi_view_scores, topk_accuracy

    runners = {"reference": _as_runner(reference, num_threads)}
    runners.update({name: _as_runner(m, num_threads) for name, m in candidates.items()})
    probs = {name: [] for name in runners}
    logits_of = {name: [] for name in runners}
    labels = []
    for i, (views, label) in enumerate(eval_clips.videos()):
        if max_videos is not None and i >= max_videos:
            break
        labels.append(label)
        for name, run in runners.items():
            logits = np.asarray(run(views), np.float64)
            logits_of[name].append(logits)
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs[name].append(e / e.sum(axis=-1, keepdims=True))
    if not labels:
        raise ValueError("no eval videos were read")
    labels = np.asarray(labels)
    known = labels >= 0  # hidden labels (-1) have no accuracy
    result = {}
    for name, p in probs.items():
        p = np.stack(p)  # (videos, views, classes)
        scores = multi_view_scores(p)
        entry = {"top1": None, "top5": None, "videos": int(p.shape[0]),
                 "views": int(p.shape[0] * p.shape[1]), "labelled_videos": int(known.sum())}
        if known.any():
            entry["top1"] = topk_accuracy(scores[known], labels[known], 1)
            entry["top5"] = topk_accuracy(scores[known], labels[known], 5)
        if name != "reference":
            ref = np.stack(probs["reference"])
            entry["top1_agreement"] = float(np.mean(p.argmax(-1) == ref.argmax(-1)))
            entry["video_top1_agreement"] = float(np.mean(
                scores.argmax(-1) == multi_view_scores(ref).argmax(-1)))
            entry["top1_delta"] = (None if entry["top1"] is None
                                   else entry["top1"] - result["reference"]["top1"])
            ref_logits = np.concatenate(logits_of["reference"])
            got_logits = np.concatenate(logits_of[name])
            entry["logit_rel_rmse"] = float(  # error relative to the logits' own spread
                np.sqrt(np.mean((got_logits - ref_logits) ** 2))
                / max(float(ref_logits.std()), 1e-12))
            entry["clear_top1_agreement"], entry["clear_views"] = clear_agreement(
                ref_logits, got_logits)
        result[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
    return result


def clear_agreement(reference, candidate, factor=3.0):
    """(top-1 agreement, count) over the clips whose `reference` logits' top-1 leads the
    runner-up by more than `factor` x the RMS difference between `candidate` and `reference`.

    A model whose top two classes are nearly tied on a clip flips its top-1 under any small
    perturbation (even fp16 weights do, on an untrained net); on the clear clips a flip is a real
    error. Agreement is None when no clip is clear."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    rmse = float(np.sqrt(np.mean((candidate - reference) ** 2)))
    top2 = np.sort(reference, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > factor * rmse
    if not clear.any():
        return None, 0
    agree = candidate[clear].argmax(-1) == reference[clear].argmax(-1)
    return float(np.mean(agree)), int(clear.sum())


def run_tflite(path_or_bytes, clips, *, num_threads=None):
    """Logits of a `.tflite` model (path or bytes) for float32 `clips`, via LiteRT (one
    `TFLiteRunner` call: any number of clips, whatever batch the file was converted for)."""
    return TFLiteRunner(path_or_bytes, num_threads=num_threads)(clips)


def _ops(value):
    return [v.strip().upper() for v in value.split(",") if v.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(prog="vov3d-lite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help=".keras model written by vov3d-train or vov3d-convert")
    p.add_argument("--output", required=True, help="the .tflite file to write")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224, help="crop height and width")
    p.add_argument("--batch", type=int, default=1, help="clips per call (0: dynamic batch)")
    p.add_argument("--quantize", choices=QUANTIZE_MODES,
                   help="fp16 weights, dynamic-range (int8 weights) or full int8 (calibrated; "
                        "needs --calibration-shards); default: float32")
    p.add_argument("--calibration-shards", metavar="GLOB",
                   help="int8: shards whose eval views calibrate the activation ranges")
    p.add_argument("--calibration-clips", type=int, default=200, metavar="N",
                   help="int8: eval views used for calibration (default 200)")
    p.add_argument("--float-ops", type=_ops, default=None, metavar="OPS",
                   help="int8: comma-separated TFLite ops kept in float32, e.g. MEAN,LOGISTIC "
                        "(default: none; see docs/lite.md)")
    p.add_argument("--float-nodes", type=lambda v: [x for x in v.split(",") if x], default=None,
                   metavar="REGEXES", help="int8: ops whose output tensor name matches one of "
                   "these comma-separated regular expressions stay in float32, e.g. _se_ "
                   "(squeeze-excite), head_ (default: none)")
    p.add_argument("--eval-shards", metavar="GLOB",
                   help="labeled shards: report top-1/top-5 of the float and the converted "
                        "model on their eval views and the agreement of their top-1")
    p.add_argument("--eval-videos", type=int, default=None, metavar="N",
                   help="only the first N videos of --eval-shards")
    p.add_argument("--sampling", choices=SAMPLING_MODES, default=EvalViews.sampling,
                   help="temporal sampling of the eval views, as the training config's "
                        f"data.sampling (default {EvalViews.sampling})")
    p.add_argument("--sampling-rate", type=int, default=EvalViews.sampling_rate,
                   help="dense sampling's frame stride, as data.sampling_rate (configs/k400.json: "
                        f"5; default {EvalViews.sampling_rate})")
    p.add_argument("--num-clips", type=int, default=EvalViews.num_clips,
                   help=f"eval clips per video, as eval.num_clips (default "
                        f"{EvalViews.num_clips})")
    p.add_argument("--num-crops", type=int, default=EvalViews.num_crops,
                   help=f"eval crops per clip (default {EvalViews.num_crops})")
    p.add_argument("--threads", type=int, default=0, help="LiteRT threads (0: all cores)")
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    if args.quantize == "int8" and not args.calibration_shards:
        p.error("--quantize int8 needs --calibration-shards GLOB (your own shards: their eval "
                "views set the int8 activation ranges)")
    if args.calibration_shards and args.quantize != "int8":
        p.error("--calibration-shards is only used with --quantize int8")
    for flag, value in (("--float-ops", args.float_ops), ("--float-nodes", args.float_nodes)):
        if value is not None and args.quantize != "int8":
            p.error(f"{flag} is only used with --quantize int8")
    if args.calibration_clips < 1:
        p.error(f"--calibration-clips must be >= 1, got {args.calibration_clips}")
    if args.eval_shards and args.batch == 0:
        p.error("--eval-shards needs a fixed --batch")
    from vov3d_tf.deploy.loading import load_trained_model

    try:
        views = EvalViews(num_frames=args.frames, short_side=args.size, sampling=args.sampling,
                          sampling_rate=args.sampling_rate, num_clips=args.num_clips,
                          num_crops=args.num_crops)
        model = load_trained_model(args.weights)
        calibration = None
        if args.quantize == "int8":
            calibration = EvalClips(args.calibration_shards, views,
                                    max_clips=args.calibration_clips)
        eval_clips = EvalClips(args.eval_shards, views) if args.eval_shards else None
        blob = to_tflite(model, frames=args.frames, height=args.size,
                         batch_size=args.batch or None, quantize=args.quantize,
                         calibration=calibration, float_ops=args.float_ops,
                         float_nodes=args.float_nodes)
        path = _write(blob, args.output)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    shape = (args.batch or "dynamic", args.frames, args.size, args.size, 3)
    kind = args.quantize or "float32"
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, {kind}): input {shape} float32 "
          f"normalized frames -> {model.num_classes} logits")
    if calibration is not None:
        print(f"int8 calibrated on {calibration.count} eval views of {len(calibration.labels)} "
              f"videos from {args.calibration_shards}")
    if eval_clips is not None:
        import json
        result = compare(model, {kind: path}, eval_clips, max_videos=args.eval_videos,
                         num_threads=args.threads or None)
        print(json.dumps({"eval_shards": args.eval_shards, "float32": result["reference"],
                          kind: result[kind]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
