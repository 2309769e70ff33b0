"""Train and evaluate VoV3D / X3D from a JSON config.

    python train.py --config configs/demo.json                     # synthetic demo on CPU
    python train.py --config configs/ssv2.json --set train.epochs=3 --set train.batch_size=32
    python train.py --config configs/ssv2.json --eval-only [--weights runs/x/best.keras]
    python train.py --config configs/ssv2.json --force              # retrain a finished run

A killed run (even kill -9) resumes where it was when the same command is run again; a
finished run is reported, not retrained. Several machines: set TF_CONFIG on each and run the
same command everywhere (docs/training.md).
"""
import argparse
import json
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--config", required=True, help="experiment JSON (configs/*.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a config value (JSON-parsed); repeatable")
    parser.add_argument("--eval-only", action="store_true",
                        help="only the multi-view test of saved weights")
    parser.add_argument("--weights", help="with --eval-only: a .keras file (default: "
                                          "train.output_dir/best.keras)")
    parser.add_argument("--force", action="store_true",
                        help="delete the run in train.output_dir and train from scratch")
    args = parser.parse_args(argv)
    if args.weights and not args.eval_only:
        parser.error("--weights needs --eval-only")

    # Imports after argument parsing: `--help` and usage errors stay instant.
    from vov3d_tf import runtime
    runtime.configure()  # TF process settings, before the first tensor
    from vov3d_tf import training
    from vov3d_tf.config import load_config

    try:
        cfg = load_config(args.config, args.overrides)
        if args.eval_only:
            metrics = training.evaluate_run(cfg, weights=args.weights, source=args.config)
        else:
            metrics = training.run(cfg, source=args.config, force=args.force)
    except (ValueError, FileNotFoundError, training.TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, training.TrainingDiverged) else 3
    print(json.dumps({k: v for k, v in metrics.items()
                      if k in ("top1", "top5", "num_videos", "num_views", "steps",
                               "train_seconds", "best_weights", "last_weights", "weights",
                               "already_finished")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
