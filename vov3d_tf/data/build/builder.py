"""The local shard build: a fixed plan, decoding in worker processes, atomic shards, resume.

    items, labels = annotations.parse_csv("videos.csv")
    params = build_params("csv", short_side=256, fps=None)
    manifest = build(items, labels, output_dir="data/mine", split="train", num_shards=16,
                     params=params)

Deterministic: videos are dealt to shards by a fixed permutation (seed 0) of the annotation
order, so classes mix across shards and the same inputs give byte-identical shards. Decoding runs
on `workers` processes; the main process writes one shard at a time to a temporary name and
renames it when complete, then records it in `.build/{split}/` so that a re-run skips finished
shards (a shard whose videos or build parameters changed is rebuilt). Videos that are missing,
empty or undecodable are skipped, counted and listed with the reason in manifest.json.

`prepare`, `load_video`, `write_shard` and `finish` are the steps, shared with the Apache Beam
pipeline (beam.py), so both write the same bytes. Every path may be local or on any
tf.io.gfile filesystem (gs://, s3://, ram://, ...). The command line is `__main__.py`.
"""
import hashlib
import json
import multiprocessing
import os
import sys

import numpy as np
import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.data import shards, video_io
from vov3d_tf.data.build import annotations
from vov3d_tf.data import format as fmt

PLAN_SEED = 0
DEFAULT_FPS = {"k400": fmt.DENSE_FPS}  # Kinetics is stored at the rate dense sampling assumes


def build_params(dataset, *, short_side=fmt.SHORT_SIDE, fps=None, jpeg_quality=fmt.JPEG_QUALITY,
                 num_shards=None):
    """The build parameters recorded in the manifest and in every shard's plan digest (a change
    rebuilds the shard): the frame policy of `video_io` and where the items came from."""
    return {"builder": "vov3d_tf.data.build", "dataset": dataset,
            "short_side": short_side or None, "fps": fps, "jpeg_quality": jpeg_quality,
            "num_shards": num_shards, "plan_seed": PLAN_SEED,
            "resize": "PIL bilinear, short side, never upscaled",
            "fps_policy": "all decoded frames" if fps is None else
            f"resampled to {fps} fps (frame on screen at t0 + k / fps)"}


def assign_shards(items, num_shards, seed=PLAN_SEED):
    """[[items of shard 0], ...]: a fixed permutation of the items dealt round-robin."""
    order = np.random.default_rng(seed).permutation(len(items))
    return [[items[j] for j in order[k::num_shards]] for k in range(num_shards)]


def load_video(job):
    """Worker: (item, params) -> (serialized record, stored frame rate or None) or (None, reason).
    """
    item, params = job
    try:
        if item.kind == "frames":
            frames = video_io.read_frame_folder(item.source, short_side=params["short_side"],
                                                jpeg_quality=params["jpeg_quality"])
            rate = None  # a folder of frames carries no frame rate
        else:
            frames, rate = video_io.read_video_with_rate(
                item.source, short_side=params["short_side"], fps=params["fps"],
                start=item.start, end=item.end, jpeg_quality=params["jpeg_quality"])
    except video_io.VideoError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001  (never let one file kill the build)
        return None, f"{type(e).__name__}: {e}"
    if item.label == annotations.HIDDEN_LABEL:  # test split: both label lists stay empty
        example = fmt.make_sequence_example(frames, [], [], item.name)
    else:
        example = fmt.make_sequence_example(frames, item.label, item.label_text, item.name)
    # deterministic=True sorts the context map's keys; otherwise upb writes them in a per-process
    # hash order and two processes (or Beam workers) give different bytes for the same record.
    return example.SerializeToString(deterministic=True), rate


def write_shard(output_dir, split, name, digest, shard_items, outcomes, num_labels, *, gzip=False,
                on_video=None):
    """Writes one shard from `outcomes`, the (record or None, rate or reason) of `shard_items` in
    order (what `load_video` returns), under a temporary name renamed when complete; records it in
    `.build/{split}/` and returns its result (file, records, sha256, skipped, class_counts,
    frame_rates, skipped_videos, size). Shared by the local builder and the Beam pipeline, so
    both write the same bytes."""
    writer = shards.ShardWriter(fileio.join(output_dir, name), gzip=gzip)
    counts, skipped, rates = [0] * num_labels, [], {}
    try:
        for item, (record, info) in zip(shard_items, outcomes, strict=True):
            if record is None:
                skipped.append({"source": item.source, "reason": info, "shard": name})
            else:
                writer.write(record)
                if item.label != annotations.HIDDEN_LABEL:
                    counts[item.label] += 1
                key = "unknown" if info is None else repr(float(info))
                rates[key] = rates.get(key, 0) + 1
            if on_video is not None:
                on_video(len(skipped))
    except BaseException:
        writer.abort()
        raise
    records = writer.records
    digest_file = writer.close()
    result = {"file": name, "records": records, "sha256": digest_file, "skipped": len(skipped),
              "class_counts": counts, "frame_rates": dict(sorted(rates.items())),
              "skipped_videos": skipped, "size": fileio.getsize(fileio.join(output_dir, name))}
    fileio.makedirs(state_path(output_dir, split))
    shards.atomic_write_text(fileio.join(state_path(output_dir, split), name + ".json"),
                             json.dumps({"plan": digest, "result": result}))
    return result


def state_path(output_dir, split):
    return fileio.join(output_dir, ".build", split)


def prepare(items, labels, *, output_dir, split, num_shards, params, gzip=False):
    """The build plan: (num_shards, finished {k: result}, todo [(k, name, digest, items)]).

    Removes leftovers of an interrupted run (temporary shard files) and reuses shards whose
    recorded plan digest and size still match."""
    if num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num_shards}")
    if not items:
        raise ValueError(f"no videos to build for split {split!r} (empty annotation list)")
    num_shards = min(num_shards, len(items))
    fileio.makedirs(state_path(output_dir, split))
    for name in fileio.listdir(output_dir):  # leftovers of an interrupted run
        if name.startswith(f"{split}-") and fileio.TMP_MARK in name:
            fileio.remove(fileio.join(output_dir, name))
    results, todo = {}, []
    for k, shard_items in enumerate(assign_shards(items, num_shards)):
        name = fmt.shard_name(split, k, num_shards, gzip=gzip)
        digest = _plan_digest(shard_items, params)
        done = _finished(output_dir, state_path(output_dir, split), name, digest)
        if done is not None:
            results[k] = done
        else:
            todo.append((k, name, digest, shard_items))
    return num_shards, results, todo


def finish(results, labels, *, output_dir, split, num_shards, params, gzip=False,
           hidden_labels=False):
    """Writes the split's manifest entry from all shard results ({k: result}); returns the
    manifest. `hidden_labels`: the split's labels are hidden (annotations.labels_hidden)."""
    ordered = [dict(results[k]) for k in range(num_shards)]
    skipped = [s for r in ordered for s in r.pop("skipped_videos")]
    for r in ordered:
        r.pop("size")
    entry = shards.split_entry(ordered, skipped, len(labels), "GZIP" if gzip else "", params,
                               hidden_labels=hidden_labels)
    return shards.write_split(output_dir, split, entry, labels)


def _plan_digest(shard_items, params):
    blob = json.dumps([params, [[i.source, i.label, i.name, i.start, i.end] for i in shard_items]])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def build(items, labels, *, output_dir, split, num_shards, params, workers=None, gzip=False,
          progress=True):
    """Writes the shards of `items` and the split's manifest entry; returns the manifest."""
    num_shards, results, todo = prepare(items, labels, output_dir=output_dir, split=split,
                                        num_shards=num_shards, params=params, gzip=gzip)
    skipped_done = sum(len(r["skipped_videos"]) for r in results.values())
    if progress and results:
        print(f"resuming: {len(results)} of {num_shards} shards already built", file=sys.stderr)
    jobs = [(item, params) for _, _, _, shard_items in todo for item in shard_items]
    bar = _progress(len(jobs), progress, split)
    ctx = multiprocessing.get_context("fork")
    workers = workers or os.cpu_count() or 1
    pool = ctx.Pool(workers) if workers > 1 and jobs else None
    stream = (pool.imap(load_video, jobs, chunksize=1) if pool is not None
              else map(load_video, jobs))
    try:
        for k, name, digest, shard_items in todo:
            def on_video(n_skipped, done=skipped_done):
                bar.update(1)
                bar.set_postfix(skipped=done + n_skipped, refresh=False)

            outcomes = (next(stream) for _ in shard_items)
            results[k] = write_shard(output_dir, split, name, digest, shard_items, outcomes,
                                     len(labels), gzip=gzip, on_video=on_video)
            skipped_done += results[k]["skipped"]
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return finish(results, labels, output_dir=output_dir, split=split, num_shards=num_shards,
                  params=params, gzip=gzip, hidden_labels=annotations.labels_hidden(items))


def _finished(output_dir, state_dir, name, digest):
    path = fileio.join(state_dir, name + ".json")
    shard = fileio.join(output_dir, name)
    if not (fileio.exists(path) and fileio.exists(shard)):
        return None
    try:
        state = fileio.read_json(path)
    except (OSError, ValueError, tf.errors.OpError):
        return None
    result = state.get("result", {})
    if (state.get("plan") != digest or result.get("size") != fileio.getsize(shard)
            or "frame_rates" not in result):  # state of an older builder: rebuild
        return None
    return result


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _progress(total, enabled, split):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=f"{split} videos", unit="video", smoothing=0.05)
