"""Top-5 classes of one video file.

    python -m vov3d_tf.predict VIDEO [--weights W.keras] [--config C.json] [--set k=v ...]

The video is decoded with PyAV exactly as the shard builder stores it (short side 256 JPEG
frames, `--fps` as used for the shards) and turned into the config's test views (clips x
crops) by the same preprocessing functions as evaluation; view softmaxes are averaged. The
config (default: the SSv2 recipe) gives frames, sampling, views, labels and the default
weights (`train.output_dir/best.keras`).
"""
import argparse
import os
import sys

import numpy as np

from vov3d_tf import runtime

__all__ = ["video_views", "predict_video", "main"]


def video_views(path, cfg, *, fps=None, short_side=256):
    """Test views float32 (V, T, c, c, 3) of the video at `path`, as the eval pipeline makes
    them from a shard built with `--short-side short_side --fps fps`."""
    import tensorflow as tf
    from vov3d_tf.adapters import eval_view_kwargs
    from vov3d_tf.data import preprocess
    from vov3d_tf.data.video_io import VideoError, read_video

    try:
        jpegs = read_video(path, short_side=short_side, fps=fps)
    except VideoError as e:
        raise ValueError(f"{path}: {e}") from None
    return preprocess.eval_views(tf.constant(jpegs), **eval_view_kwargs(cfg))


def predict_video(model, path, cfg, *, fps=None, short_side=256):
    """Class probabilities (K,) of one video: mean of the softmax of its test views."""
    import tensorflow as tf
    views = video_views(path, cfg, fps=fps, short_side=short_side)
    logits = model(views, training=False)
    return tf.reduce_mean(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), axis=0).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vov3d_tf.predict",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("video", help="video file (mp4, webm, avi, mkv, ...)")
    parser.add_argument("--weights", help=".keras file (default: train.output_dir/best.keras)")
    parser.add_argument("--config", help="experiment JSON (default: the SSv2 recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--labels", help="class names, one per line (default: from the config)")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample to this frame rate, as the shards were built (default: "
                             "every frame)")
    parser.add_argument("--short-side", type=int, default=256,
                        help="stored short side of the shards (build_shards --short-side)")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor

    import keras
    from vov3d_tf import VideoClassifier, fold_batchnorm
    from vov3d_tf.config import apply_overrides, config_from_dict, load_config
    from vov3d_tf.adapters import class_names
    from vov3d_tf.data.labels import read_labels

    try:
        cfg = (load_config(args.config, args.overrides) if args.config else
               config_from_dict(apply_overrides({}, args.overrides), "defaults"))
        weights = args.weights or os.path.join(cfg.train.output_dir, "best.keras")
        if not os.path.exists(weights):
            raise FileNotFoundError(f"weights not found: {weights!r} (pass --weights)")
        if not os.path.exists(args.video):
            raise FileNotFoundError(f"video not found: {args.video!r}")
        model = keras.models.load_model(weights, compile=False)
        if isinstance(model, VideoClassifier):
            model = fold_batchnorm(model)  # the fast inference form, same outputs
        probs = predict_video(model, args.video, cfg, fps=args.fps, short_side=args.short_side)
        names = read_labels(args.labels) if args.labels else class_names(cfg)
        if names is not None and len(names) != len(probs):
            raise ValueError(f"{len(names)} labels for a model with {len(probs)} classes")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    order = np.argsort(-probs, kind="stable")[:args.top_k]
    print(f"{args.video}:")
    for rank, k in enumerate(order, 1):
        name = names[k] if names else str(k)
        print(f"  {rank}. {name:<40s} {probs[k]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
