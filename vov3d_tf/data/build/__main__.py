"""Build TFRecord shards from videos or frame folders and the public annotations.

    vov3d-build-shards --output-dir data/ssv2 --split train --ssv2-dir /data/ssv2 --num-shards 256
    vov3d-build-shards --output-dir data/k400 --split validation \\
        --k400-csv kinetics400/validate.csv --videos-root /datasets/k400 --fps 30 --labels k400.txt
    vov3d-build-shards --output-dir data/mine --split train --csv train.csv

(also `python -m vov3d_tf.data.build`). Inputs (exactly one): --csv FILE (`path,label`; with
--frames-root the paths are frame folders), --ssv2-dir, --ssv1-dir, --k400-csv with
--videos-root (annotations.py documents the formats). A test split whose labels are hidden
(--split test with --ssv2-dir / --ssv1-dir, or a CSV with no or an empty label column and
--labels) is written with empty label lists and marked `"hidden_labels": true` in the manifest:
it is for evaluation and predictions only.

The build is deterministic and resumes (builder.py). Every path may be local or on any
tf.io.gfile filesystem (gs://, s3://, ram://, ...). With --runner (or --beam) the same build
runs as an Apache Beam pipeline (beam.py, `pip install -e ".[beam]"`); every flag this parser
does not know is passed to Beam as a pipeline option, e.g. --runner DataflowRunner --project P
--region R --temp_location gs://...
"""
import argparse
import json
import os
import sys
import time

from vov3d_tf import runtime
from vov3d_tf.data import format as fmt
from vov3d_tf.data.build import annotations, builder


def load_items(args):
    """(items, labels) from the parsed command-line input flags."""
    inputs = [n for n in ("csv", "ssv2_dir", "ssv1_dir", "k400_csv") if getattr(args, n)]
    if len(inputs) != 1:
        given = ['--' + n.replace('_', '-') for n in inputs] or 'none'
        raise SystemExit(f"error: give exactly one input of --csv, --ssv2-dir, --ssv1-dir, "
                         f"--k400-csv (got {given})")
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
    parser = argparse.ArgumentParser(prog="vov3d-build-shards",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]),
                                     allow_abbrev=False)  # unknown flags go to Beam verbatim
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
    parser.add_argument("--short-side", type=int, default=fmt.SHORT_SIDE,
                        help="resize, never upscale; 0 = keep the size")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample to this frame rate (default: every frame; 30 for K400)")
    parser.add_argument("--jpeg-quality", type=int, default=fmt.JPEG_QUALITY)
    parser.add_argument("--gzip", action="store_true", help="write .tfrecord.gz shards")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--beam", action="store_true",
                        help="build with Apache Beam (default runner: DirectRunner); implied by "
                             "--runner; every unknown flag is a Beam pipeline option")
    args, beam_args = parser.parse_known_args(argv)
    use_beam = args.beam or any(a == "--runner" or a.startswith("--runner=") for a in beam_args)
    if beam_args and not use_beam:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need "
                     f"--beam or --runner)")
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
    fps = args.fps if args.fps is not None else builder.DEFAULT_FPS.get(dataset)
    if fps is not None and any(i.kind == "frames" for i in items):
        print("error: --fps applies to video files, not frame folders", file=sys.stderr)
        return 2
    params = builder.build_params(dataset, short_side=args.short_side, fps=fps,
                                  jpeg_quality=args.jpeg_quality, num_shards=args.num_shards)
    start = time.time()
    metrics = None
    try:
        if use_beam:
            try:
                from vov3d_tf.data.build import beam
                import apache_beam  # noqa: F401
            except ImportError as e:
                print(f"error: --beam/--runner needs Apache Beam: pip install -e \".[beam]\" ({e})",
                      file=sys.stderr)
                return 2
            manifest, metrics = beam.run(items, labels, output_dir=args.output_dir,
                                         split=args.split, num_shards=args.num_shards,
                                         params=params, gzip=args.gzip, beam_args=beam_args)
        else:
            manifest = builder.build(items, labels, output_dir=args.output_dir, split=args.split,
                                     num_shards=args.num_shards, params=params,
                                     workers=args.workers, gzip=args.gzip,
                                     progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    entry = manifest["splits"][args.split]
    summary = {"output_dir": args.output_dir, "split": args.split,
               "records": entry["num_records"], "skipped": entry["num_skipped"],
               "shards": len(entry["shards"]), "seconds": round(time.time() - start, 1)}
    if entry.get("hidden_labels"):
        summary["hidden_labels"] = True
    if metrics is not None:
        summary["beam_metrics"] = metrics
    print(json.dumps(summary))
    for s in entry["skipped"][:20]:
        print(f"skipped {s['source']}: {s['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
