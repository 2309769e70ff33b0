"""Export a trained model as a TF Serving SavedModel (signatures, labels, warmup requests).

    python export.py --weights runs/demo/best.keras --config configs/demo.json \
        --output-dir models/demo [--version N] [--labels FILE] [--top-k 5] [--multi-view]

writes `models/demo/<N>/` (the next free integer version unless --version is given; an
existing version is never overwritten). The config supplies the frames, test resize/crop,
sampling and labels (`data.labels_file`, else the shards' manifest); `--set` overrides keys as
in train.py, e.g. to export converted official weights:

    python export.py --weights vov3d_m_ssv2.keras --config CONFIG.json \
        --set model.num_classes=174 data.labels_file=ssv2_labels.txt --output-dir models/vov3d_m

See docs/serving.md for serving the result with TF Serving and for request examples.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python export.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True,
                   help=".keras model (e.g. best.keras or a converted checkpoint) or .weights.h5 "
                        "for the config's architecture")
    p.add_argument("--config", required=True, help="experiment config JSON")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="SECTION.KEY=VALUE", help="config overrides, as in train.py")
    p.add_argument("--output-dir", required=True,
                   help="model folder BASE/NAME; the version folder is created inside it")
    p.add_argument("--version", type=int, default=None,
                   help="version number (default: the next free integer)")
    p.add_argument("--labels", default=None,
                   help="class names, one per line (default: data.labels_file or the manifest)")
    p.add_argument("--top-k", type=int, default=5, help="labels returned per video (default 5)")
    p.add_argument("--multi-view", action="store_true",
                   help="average eval.num_clips x eval.num_crops views inside the graph "
                        "(default: one clip, centre crop)")
    p.add_argument("--no-warmup", action="store_true",
                   help="do not write assets.extra/tf_serving_warmup_requests")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from vov3d_tf import runtime
    runtime.configure()  # TF process settings, before the first tensor
    from vov3d_tf import serving
    from vov3d_tf.config import config_to_dict, load_config
    from vov3d_tf.adapters import class_names

    try:
        cfg = load_config(args.config, overrides=args.overrides)
        model = serving.load_trained_model(args.weights, cfg.model)
        if args.labels:
            labels, source = serving.read_labels(args.labels), args.labels
        else:
            labels, source = class_names(cfg), "data.labels_file / manifest"
        if labels is None:
            labels, source = [str(i) for i in range(cfg.model.num_classes)], "class indices"
            print("export.py: no labels file in the config or beside the shards; "
                  "top_k_labels will be class indices (pass --labels FILE)", file=sys.stderr)
        labels = serving.check_labels(labels, cfg.model.num_classes, source)
        spec = serving.spec_from_config(cfg, multi_view=args.multi_view, top_k=args.top_k)
        path = serving.export_saved_model(
            model, args.output_dir, labels, spec, version=args.version,
            warmup=not args.no_warmup,
            extra_info={"weights": os.path.abspath(args.weights), "labels_source": source,
                        "config": config_to_dict(cfg)})
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} -> {path}")
    print(f"  signatures: {', '.join(serving.SIGNATURES)}; outputs: "
          f"{', '.join(serving.OUTPUT_KEYS)} (top {min(spec.top_k, len(labels))})")
    print(f"  preprocessing: {spec.num_frames} frames ({spec.sampling}), short side "
          f"{spec.short_side}, crop {spec.crop_size}, {spec.num_clips} clip(s) x {spec.num_crops} "
          f"crop(s) per video")
    return 0


if __name__ == "__main__":
    sys.exit(main())
