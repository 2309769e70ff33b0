"""Export a trained model as a TF Serving SavedModel (signatures, labels, warmup requests).

    vov3d-export --weights runs/demo/best.keras --config configs/demo.json \
        --output-dir models/demo [--version N] [--labels FILE] [--top-k 5] [--multi-view]
        [--max-videos 16] [--max-frame-pixels N] [...] [--client-sampling]

(`python export.py ...` is the same command)

writes `models/demo/<N>/` (the next free integer version unless --version is given; an
existing version is never overwritten). The config supplies the frames, test resize/crop,
sampling and labels (`data.labels_file`, else the shards' manifest); `--set` overrides keys as
in vov3d-train, e.g. to export converted official weights:

    vov3d-export --weights vov3d_m_ssv2.keras --config CONFIG.json \
        --set model.num_classes=174 data.labels_file=ssv2_labels.txt --output-dir models/vov3d_m

See docs/serving.md for serving the result with TF Serving and for request examples.
"""
import argparse
import dataclasses
import sys

from vov3d_tf import fileio, runtime
from vov3d_tf.adapters import class_names, eval_views
from vov3d_tf.config import add_config_arguments, config_from_args, config_to_dict
from vov3d_tf.data.labels import read_labels
from vov3d_tf.data.preprocess import InputLimits
from vov3d_tf.deploy import serving
from vov3d_tf.deploy.loading import load_trained_model
from vov3d_tf.deploy.serving import ServingSpec

__all__ = ["parse_args", "serving_options", "main"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="vov3d-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True,
                   help=".keras model (e.g. best.keras or a converted checkpoint) or .weights.h5 "
                        "for the config's architecture")
    add_config_arguments(p)
    p.add_argument("--output-dir", required=True,
                   help="model folder BASE/NAME; the version folder is created inside it")
    p.add_argument("--version", type=int, default=None,
                   help="version number (default: the next free integer)")
    p.add_argument("--labels", default=None,
                   help="class names, one per line (default: data.labels_file or the manifest)")
    p.add_argument("--top-k", type=int, default=ServingSpec.top_k,
                   help=f"labels returned per video (default {ServingSpec.top_k})")
    p.add_argument("--multi-view", action="store_true",
                   help="average eval.num_clips x eval.num_crops views inside the graph "
                        "(default: one clip, centre crop)")
    p.add_argument("--no-warmup", action="store_true",
                   help="do not write assets.extra/tf_serving_warmup_requests")
    caps = p.add_argument_group(
        "request caps (recorded in assets.extra/export_info.json; see docs/serving.md)")
    d = InputLimits()
    caps.add_argument("--max-videos", type=int, default=ServingSpec.max_videos,
                      help=f"videos per request (default {ServingSpec.max_videos})")
    caps.add_argument("--max-request-pixel-scans", type=int,
                      default=ServingSpec.max_request_pixel_scans,
                      help=f"JPEG decoding per request: sum over the sampled frames of height x "
                           f"width x scans (default {ServingSpec.max_request_pixel_scans})")
    caps.add_argument("--max-frames", type=int, default=d.max_frames,
                      help=f"frames per video sent (default {d.max_frames})")
    caps.add_argument("--max-frame-pixels", type=int, default=d.max_frame_pixels,
                      help=f"height x width per frame (default {d.max_frame_pixels}, 4096x2304)")
    caps.add_argument("--max-aspect-ratio", type=float, default=d.max_aspect_ratio,
                      help=f"long side / short side per frame (default {d.max_aspect_ratio})")
    caps.add_argument("--max-frame-bytes", type=int, default=d.max_frame_bytes,
                      help=f"bytes per JPEG frame (default {d.max_frame_bytes})")
    caps.add_argument("--max-scans", type=int, default=d.max_scans,
                      help=f"JPEG scans per frame, 1 baseline, ~10 progressive (default "
                           f"{d.max_scans})")
    caps.add_argument("--dct-scaling-above", type=int, default=d.dct_scaling_above,
                      help=f"decode JPEG frames with more pixels than this at 1/2, 1/4 or 1/8 "
                           f"size (libjpeg DCT scaling; pixels differ slightly from a full "
                           f"decode); 0 = always decode in full (default {d.dct_scaling_above}, "
                           f"2560x1440)")
    caps.add_argument("--clips-per-chunk", type=int, default=ServingSpec.clips_per_chunk,
                      help=f"clips through the model at once; bounds a request's memory "
                           f"(default {ServingSpec.clips_per_chunk})")
    caps.add_argument("--client-sampling", action="store_true",
                      help="serving_default and serve_frames take exactly the sampled frames "
                           "(num_clips x T per video; vov3d_tf.deploy.serving_client samples "
                           "them): "
                           "fixed shapes for TF Serving's request batching")
    return p.parse_args(argv)


def serving_options(args):
    """The request-cost fields of `ServingSpec` from the flags."""
    limits = InputLimits(max_frames=args.max_frames, max_frame_pixels=args.max_frame_pixels,
                         max_aspect_ratio=args.max_aspect_ratio,
                         max_frame_bytes=args.max_frame_bytes, max_scans=args.max_scans,
                         dct_scaling_above=args.dct_scaling_above or None)
    return dict(limits=limits, max_videos=args.max_videos,
                max_request_pixel_scans=args.max_request_pixel_scans,
                clips_per_chunk=args.clips_per_chunk, presampled=args.client_sampling)


def main(argv=None):
    args = parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    try:
        cfg, _ = config_from_args(args)
        model = load_trained_model(args.weights, cfg.model)
        if args.labels:
            labels, source = read_labels(args.labels), args.labels
        else:
            labels, source = class_names(cfg), "data.labels_file / manifest"
        if labels is None:
            labels, source = [str(i) for i in range(cfg.model.num_classes)], "class indices"
            print("warning: no labels file in the config or beside the shards; "
                  "top_k_labels will be class indices (pass --labels FILE)", file=sys.stderr)
        labels = serving.check_labels(labels, cfg.model.num_classes, source)
        spec = ServingSpec(eval_views(cfg, multi_view=args.multi_view), top_k=args.top_k,
                           **serving_options(args))
        path = serving.export_saved_model(
            model, args.output_dir, labels, spec, version=args.version,
            warmup=not args.no_warmup,
            extra_info={"weights": fileio.abspath(args.weights), "labels_source": source,
                        "config": config_to_dict(cfg)})
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # also bad caps
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} -> {path}")
    print(f"  signatures: {', '.join(serving.SIGNATURES)}; outputs: "
          f"{', '.join(serving.OUTPUT_KEYS)} (top {min(spec.top_k, len(labels))})")
    v = spec.views
    print(f"  preprocessing: {v.num_frames} frames ({v.sampling}), short side "
          f"{v.short_side}, crop {v.crop}, {v.num_clips} clip(s) x {v.num_crops} "
          f"crop(s) per video{' (sampled by the client)' if spec.presampled else ''}")
    caps = dataclasses.asdict(spec.limits)
    print(f"  caps: max_videos {spec.max_videos}, max_request_pixel_scans "
          f"{spec.max_request_pixel_scans}, clips_per_chunk {spec.clips_per_chunk}, "
          + ", ".join(f"{k} {v}" for k, v in caps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
