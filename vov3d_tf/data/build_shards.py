"""Build TFRecord shards (format.py) from videos or frame folders and the public annotations.

    python -m vov3d_tf.data.build_shards --output-dir data/ssv2 --split train \\
        --ssv2-dir /datasets/ssv2 --num-shards 256
    python -m vov3d_tf.data.build_shards --output-dir data/k400 --split validation \\
        --k400-csv kinetics400/validate.csv --videos-root /datasets/k400 --fps 30 --labels k400.txt
    python -m vov3d_tf.data.build_shards --output-dir data/mine --split train --csv train.csv

Inputs (exactly one): --csv FILE (`path,label`; with --frames-root the paths are frame folders),
--ssv2-dir, --ssv1-dir, --k400-csv with --videos-root (annotations.py documents the formats).

Deterministic: videos are dealt to shards by a fixed permutation (seed 0) of the annotation
order, so classes mix across shards and the same inputs give byte-identical shards. Decoding runs
on --workers processes; the main process writes one shard at a time to a temporary name and
renames it when complete, then records it in `.build/{split}/` so that a re-run skips finished
shards (a shard whose videos or build parameters changed is rebuilt). Videos that are missing,
empty or undecodable are skipped, counted and listed with the reason in manifest.json.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from vov3d_tf import runtime
from vov3d_tf.data import annotations, shards, video_io
from vov3d_tf.data import format as fmt

PLAN_SEED = 0
DEFAULT_FPS = {"k400": 30.0}  # PySlowFast samples Kinetics at TARGET_FPS 30


def assign_shards(items, num_shards, seed=PLAN_SEED):
    """[[items of shard 0], ...]: a fixed permutation of the items dealt round-robin."""
    order = np.random.default_rng(seed).permutation(len(items))
    return [[items[j] for j in order[k::num_shards]] for k in range(num_shards)]


def _load(job):
    """Worker: (item, params) -> (serialized record or None, reason)."""
    item, params = job
    try:
        if item.kind == "frames":
            frames = video_io.read_frame_folder(item.source, short_side=params["short_side"],
                                                jpeg_quality=params["jpeg_quality"])
        else:
            frames = video_io.read_video(item.source, short_side=params["short_side"],
                                         fps=params["fps"], start=item.start, end=item.end,
                                         jpeg_quality=params["jpeg_quality"])
    except video_io.VideoError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001  (never let one file kill the build)
        return None, f"{type(e).__name__}: {e}"
    example = fmt.make_sequence_example(frames, item.label, item.label_text, item.name)
    return example.SerializeToString(), len(frames)


def _plan_digest(shard_items, params):
    blob = json.dumps([params, [[i.source, i.label, i.name, i.start, i.end] for i in shard_items]])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def build(items, labels, *, output_dir, split, num_shards, params, workers=None, gzip=False,
          progress=True):
    """Writes the shards of `items` and the split's manifest entry; returns the manifest."""
    if num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num_shards}")
    if not items:
        raise ValueError(f"no videos to build for split {split!r} (empty annotation list)")
    num_shards = min(num_shards, len(items))
    state_dir = os.path.join(output_dir, ".build", split)
    os.makedirs(state_dir, exist_ok=True)
    for name in os.listdir(output_dir):  # leftovers of an interrupted run
        if name.startswith(f"{split}-") and ".tmp-" in name:
            os.remove(os.path.join(output_dir, name))
    plan = assign_shards(items, num_shards)
    results, todo = {}, []
    for k, shard_items in enumerate(plan):
        name = fmt.shard_name(split, k, num_shards, gzip=gzip)
        digest = _plan_digest(shard_items, params)
        done = _finished(output_dir, state_dir, name, digest)
        if done is not None:
            results[k] = done
        else:
            todo.append((k, name, digest, shard_items))
    skipped_done = sum(len(r["skipped_videos"]) for r in results.values())
    if progress and results:
        print(f"resuming: {len(results)} of {num_shards} shards already built", file=sys.stderr)
    jobs = [(item, params) for _, _, _, shard_items in todo for item in shard_items]
    bar = _progress(len(jobs), progress, split)
    ctx = multiprocessing.get_context("fork")
    workers = workers or os.cpu_count() or 1
    pool = ctx.Pool(workers) if workers > 1 and jobs else None
    stream = (pool.imap(_load, jobs, chunksize=1) if pool is not None else map(_load, jobs))
    try:
        for k, name, digest, shard_items in todo:
            writer = shards.ShardWriter(os.path.join(output_dir, name), gzip=gzip)
            counts, skipped = [0] * len(labels), []
            try:
                for item in shard_items:
                    record, info = next(stream)
                    if record is None:
                        skipped.append({"source": item.source, "reason": info, "shard": name})
                    else:
                        writer.write(record)
                        counts[item.label] += 1
                    bar.update(1)
                    bar.set_postfix(skipped=skipped_done + len(skipped), refresh=False)
            except BaseException:
                writer.abort()
                raise
            records = writer.records
            digest_file = writer.close()
            results[k] = {"file": name, "records": records, "sha256": digest_file,
                          "skipped": len(skipped), "class_counts": counts,
                          "skipped_videos": skipped,
                          "size": os.path.getsize(os.path.join(output_dir, name))}
            skipped_done += len(skipped)
            shards.atomic_write_text(os.path.join(state_dir, name + ".json"),
                                     json.dumps({"plan": digest, "result": results[k]}))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    ordered = [results[k] for k in range(num_shards)]
    skipped = [s for r in ordered for s in r.pop("skipped_videos")]
    for r in ordered:
        r.pop("size")
    entry = shards.split_entry(ordered, skipped, len(labels), "GZIP" if gzip else "", params)
    return shards.write_split(output_dir, split, entry, labels)


def _finished(output_dir, state_dir, name, digest):
    path = os.path.join(state_dir, name + ".json")
    shard = os.path.join(output_dir, name)
    if not (os.path.exists(path) and os.path.exists(shard)):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    result = state.get("result", {})
    if state.get("plan") != digest or result.get("size") != os.path.getsize(shard):
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


def load_items(args):
    """(items, labels) from the parsed command-line input flags."""
    inputs = [n for n in ("csv", "ssv2_dir", "ssv1_dir", "k400_csv") if getattr(args, n)]
    if len(inputs) != 1:
        raise SystemExit(f"error: give exactly one input of --csv, --ssv2-dir, --ssv1-dir, "
                         f"--k400-csv (got {['--' + n.replace('_', '-') for n in inputs] or 'none'})")
    labels = annotations.read_labels_file(args.labels) if args.labels else None
    if args.csv:
        return annotations.parse_csv(args.csv, labels=labels, frames_root=args.frames_root)
    if args.ssv2_dir:
        items, found = annotations.parse_ssv2(args.ssv2_dir, args.split,
                                              videos_root=args.videos_root)
    elif args.ssv1_dir:
        items, found = annotations.parse_ssv1(args.ssv1_dir, args.split,
                                              frames_root=args.frames_root)
    else:
        if not args.videos_root:
            raise SystemExit("error: --k400-csv needs --videos-root")
        return annotations.parse_k400(args.k400_csv, args.videos_root, labels=labels)
    if labels is not None and labels != found:
        raise SystemExit(f"error: --labels {args.labels} differs from the dataset's own label "
                         f"list ({len(labels)} vs {len(found)} classes)")
    return items, found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vov3d_tf.data.build_shards",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--split", required=True, help="file prefix, e.g. train / validation")
    parser.add_argument("--csv", help="CSV with header path,label")
    parser.add_argument("--frames-root", help="with --csv: paths are frame folders under it; "
                                              "with --ssv1-dir: where the frame folders are")
    parser.add_argument("--ssv2-dir", help="folder with labels.json, train.json, validation.json")
    parser.add_argument("--ssv1-dir", help="folder with something-something-v1-*.csv")
    parser.add_argument("--k400-csv", help="Kinetics train.csv / validate.csv")
    parser.add_argument("--videos-root", help="where the videos are (K400; SSv2 optional)")
    parser.add_argument("--labels", help="class names, one per line (fixes the index order)")
    parser.add_argument("--num-shards", type=int, default=16)
    parser.add_argument("--short-side", type=int, default=256, help="resize, never upscale; 0 = "
                                                                     "keep the size")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample to this frame rate (default: every frame; 30 for K400)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--gzip", action="store_true", help="write .tfrecord.gz shards")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    if not 1 <= args.jpeg_quality <= 100:
        parser.error(f"--jpeg-quality must be in [1, 100], got {args.jpeg_quality}")
    if args.short_side < 0 or (args.fps is not None and args.fps <= 0):
        parser.error("--short-side must be >= 0 and --fps > 0")
    try:
        items, labels = load_items(args)
    except (annotations.AnnotationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dataset = "k400" if args.k400_csv else "ssv2" if args.ssv2_dir else (
        "ssv1" if args.ssv1_dir else "csv")
    fps = args.fps if args.fps is not None else DEFAULT_FPS.get(dataset)
    if fps is not None and any(i.kind == "frames" for i in items):
        print("error: --fps applies to video files, not frame folders", file=sys.stderr)
        return 2
    params = {"builder": "vov3d_tf.data.build_shards", "dataset": dataset,
              "short_side": args.short_side or None, "fps": fps,
              "jpeg_quality": args.jpeg_quality, "num_shards": args.num_shards,
              "plan_seed": PLAN_SEED, "resize": "PIL bilinear, short side, never upscaled",
              "fps_policy": "all decoded frames" if fps is None else
              f"resampled to {fps} fps (frame on screen at t0 + k / fps)"}
    start = time.time()
    try:
        manifest = build(items, labels, output_dir=args.output_dir, split=args.split,
                         num_shards=args.num_shards, params=params, workers=args.workers,
                         gzip=args.gzip, progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    entry = manifest["splits"][args.split]
    print(json.dumps({"output_dir": args.output_dir, "split": args.split,
                      "records": entry["num_records"], "skipped": entry["num_skipped"],
                      "shards": len(entry["shards"]), "seconds": round(time.time() - start, 1)}))
    for s in entry["skipped"][:20]:
        print(f"skipped {s['source']}: {s['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
