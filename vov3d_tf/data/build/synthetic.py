"""A small temporal task in the real shard format: the ORDER of the frames decides the class.

Every video shows one real handwritten digit (scikit-learn's `load_digits`, bundled with the
package) travelling across the frame along a random left-to-right path. All classes visit
exactly the same positions - a class is only a permutation of the same frames:

    0 left_to_right          p0 p1 p2 ... p15
    1 right_to_left          p15 p14 ... p0
    2 out_and_back_left      p0 p2 ... p14 p15 p13 ... p1   (starts left, returns)
    3 out_and_back_right     p15 p13 ... p1 p0 p2 ... p14   (starts right, returns)
    4 two_sweeps_left        p0 p2 ... p14 p1 p3 ... p15    (jumps back once)
    5 two_sweeps_right       p15 p13 ... p1 p14 p12 ... p0

so the bag of frames of a video carries no label information and a model that ignores time
cannot beat chance (1 / num_classes); a temporal model learns it in a few epochs.

    vov3d-synthetic --output-dir /tmp/synthetic

writes `train-*-of-*.tfrecord`, `eval-*-of-*.tfrecord`, `labels.txt` and `manifest.json` into one
directory (see shards.py). Deterministic: same arguments, byte-identical shards.
"""
import argparse
import io
import json
import os
import sys

import numpy as np

from vov3d_tf import fileio, runtime
from vov3d_tf.data import format as fmt
from vov3d_tf.data import shards

CLASS_NAMES = ("left_to_right", "right_to_left", "out_and_back_left", "out_and_back_right",
               "two_sweeps_left", "two_sweeps_right")
MAX_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "eval")


def class_order(label, num_frames):
    """Frame order of class `label`: a permutation of range(num_frames) (positions p0..p{T-1})."""
    t = np.arange(num_frames)
    even, odd = t[0::2], t[1::2]
    if label == 0:
        order = t
    elif label == 1:
        order = t[::-1]
    elif label == 2:
        order = np.concatenate([even, odd[::-1]])
    elif label == 3:
        order = np.concatenate([odd[::-1], even])
    elif label == 4:
        order = np.concatenate([even, odd])
    elif label == 5:
        order = np.concatenate([odd[::-1], even[::-1]])
    else:
        raise ValueError(f"label must be in [0, {MAX_CLASSES}), got {label}")
    return order


def render_video(digit, label, rng, *, num_frames, size):
    """uint8 (num_frames, size, size, 3): `digit` (8x8, 0..16) moving in class `label`'s order."""
    scale = int(rng.integers(max(1, size // 32), max(2, size // 16) + 1))
    sprite = np.kron(digit / 16.0, np.ones((scale, scale)))  # (8*scale,)*2 in [0, 1]
    d = sprite.shape[0]
    if d > size:
        raise ValueError(f"size {size} is too small for the digit sprite ({d} px)")
    room = size - d
    # A left-to-right path: start in the left third, end in the right third, any heights.
    x0 = rng.uniform(0, room / 3)
    x1 = rng.uniform(2 * room / 3, room)
    y0, y1 = rng.uniform(0, room, size=2)
    colour = rng.uniform(0.5, 1.0, size=3)
    background = rng.uniform(0.0, 0.25, size=3)
    steps = np.arange(num_frames) / max(num_frames - 1, 1)
    xs = np.rint(x0 + (x1 - x0) * steps).astype(int)
    ys = np.rint(y0 + (y1 - y0) * steps).astype(int)
    video = np.empty((num_frames, size, size, 3), np.float64)
    for i, p in enumerate(class_order(label, num_frames)):
        frame = np.broadcast_to(background, (size, size, 3)).copy()
        patch = frame[ys[p]:ys[p] + d, xs[p]:xs[p] + d]
        frame[ys[p]:ys[p] + d, xs[p]:xs[p] + d] = (
            patch * (1 - sprite[..., None]) + colour * sprite[..., None])
        video[i] = frame + rng.normal(0.0, 0.02, size=frame.shape)
    return np.clip(np.rint(video * 255), 0, 255).astype(np.uint8)


def encode_jpeg(frame, quality=fmt.JPEG_QUALITY):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _check(name, value, lo, hi=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (
            hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"write_synthetic_dataset: {name} must be an int {bound}, got {value!r}")


def write_synthetic_dataset(output_dir, *, num_train=384, num_eval=96, num_frames=16, size=64,
                            num_classes=4, seed=0, num_shards=2):
    """Writes the synthetic temporal-order dataset; returns the manifest (a dict).

    Args:
      output_dir: directory to (over)write; gets train-*.tfrecord, eval-*.tfrecord, labels.txt,
        manifest.json.
      num_train, num_eval: videos per split (classes balanced round-robin, then shuffled).
      num_frames: frames per video (>= 4).
      size: frame height = width in pixels (>= 32).
      num_classes: 2..6; class k is CLASS_NAMES[k].
      seed: everything (digits, paths, colours, noise, order) derives from it.
      num_shards: shards per split (eval gets min(num_shards, num_eval) too).
    """
    _check("num_train", num_train, 1)
    _check("num_eval", num_eval, 1)
    _check("num_frames", num_frames, 4)
    _check("size", size, 32)
    _check("num_classes", num_classes, 2, MAX_CLASSES)
    _check("seed", seed, 0)
    _check("num_shards", num_shards, 1)
    from sklearn.datasets import load_digits
    digits = load_digits().images
    labels = list(CLASS_NAMES[:num_classes])
    params = {"generator": "vov3d_tf.data.build.synthetic", "num_frames": num_frames, "size": size,
              "num_classes": num_classes, "seed": seed, "jpeg_quality": fmt.JPEG_QUALITY,
              "num_train": num_train, "num_eval": num_eval}
    manifest = None
    fileio.makedirs(output_dir)
    old = os.path.join(output_dir, fmt.MANIFEST_NAME)
    if fileio.exists(old):  # regenerate from scratch, whatever was there before
        fileio.remove(old)
    for split_id, (split, count) in enumerate(zip(SPLITS, (num_train, num_eval))):
        rng = np.random.default_rng([seed, split_id])
        classes = rng.permutation(np.arange(count) % num_classes)
        n_shards = min(num_shards, count)
        results = []
        for s in range(n_shards):
            name = fmt.shard_name(split, s, n_shards)
            writer = shards.ShardWriter(os.path.join(output_dir, name))
            counts = [0] * num_classes
            for i in range(s, count, n_shards):
                video_rng = np.random.default_rng([seed, split_id, i])
                label = int(classes[i])
                digit = digits[video_rng.integers(len(digits))]
                video = render_video(digit, label, video_rng, num_frames=num_frames, size=size)
                example = fmt.make_sequence_example(
                    [encode_jpeg(f) for f in video], label, labels[label],
                    f"synthetic/{split}/{i:06d}")
                writer.write(example.SerializeToString())
                counts[label] += 1
            records = writer.records
            results.append({"file": name, "records": records, "sha256": writer.close(),
                            "skipped": 0, "class_counts": counts})
        entry = shards.split_entry(results, [], num_classes, "", params)
        manifest = shards.write_split(output_dir, split, entry, labels)
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vov3d-synthetic",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-train", type=int, default=384)
    parser.add_argument("--num-eval", type=int, default=96)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--num-shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    manifest = write_synthetic_dataset(
        args.output_dir, num_train=args.num_train, num_eval=args.num_eval,
        num_frames=args.num_frames, size=args.size, num_classes=args.num_classes,
        seed=args.seed, num_shards=args.num_shards)
    summary = {split: {k: e[k] for k in ("num_records", "class_histogram")}
               for split, e in manifest["splits"].items()}
    print(json.dumps({"output_dir": args.output_dir, "labels": manifest["labels"], **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
