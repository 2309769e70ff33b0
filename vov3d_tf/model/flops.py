"""Multiply-adds and parameters of a model for a given clip shape.

Counts like fvcore (docs/architecture.md#numbers-the-port-matches): one multiply-add of a conv
or linear layer = one "flop"; BatchNorm (inference) costs 2 per element and is reported separately;
element-wise ops (activations, SE gating, residual adds, pooling) are not counted.

    vov3d-flops --model vov3d_m --num-classes 174 --frames 16 --size 224
"""
import argparse
import json
import math
import sys

import keras

from vov3d_tf.model import layers as L
from vov3d_tf import runtime


def _elements(shape):
    return math.prod(1 if d is None else d for d in shape)


def layer_macs(layer):
    """Multiply-adds of one layer for its (static) output shape; 0 for non-conv layers."""
    out = _elements(layer.output.shape)
    if isinstance(layer, (L.PointwiseConv3D, L.OneShotAggregation)):
        return out * layer.kernel.shape[0]
    if isinstance(layer, L.SpatialConv):
        k2 = layer.kernel_size ** 2
        return out * k2 * (1 if layer.depthwise else layer.kernel.shape[2])
    if isinstance(layer, L.TemporalDepthwiseConv):
        return out * layer.kernel_size
    if isinstance(layer, L.DepthwiseConv3D):
        return out * 27
    return 0


def count_flops(model_or_name, input_shape=(16, 224, 224, 3), num_classes=400, **overrides):
    """{"macs", "bn_flops", "gflops" (conv+linear), "gflops_incl_bn", "params"} for one clip.

    `model_or_name` is a `VideoClassifier` (its architecture is rebuilt at `input_shape`, its
    weights untouched) or a model name for `create_model(name, num_classes, **overrides)`.
    """
    from vov3d_tf.model.networks import VideoClassifier, create_model

    input_shape = tuple(input_shape)
    if len(input_shape) != 4 or input_shape[-1] != 3 or not all(
            isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be (T, H, W, 3) of positive ints, got {input_shape!r}")
    if isinstance(model_or_name, str):
        model = create_model(model_or_name, num_classes, input_shape=input_shape, **overrides)
    elif isinstance(model_or_name, VideoClassifier):
        if overrides:
            raise ValueError("overrides apply only when a model name is given")
        model = VideoClassifier.from_config({**model_or_name.get_config(),
                                             "input_shape": input_shape})
    else:
        raise TypeError(f"count_flops takes a model name or a VideoClassifier, "
                        f"got {type(model_or_name).__name__}")
    macs = sum(layer_macs(layer) for layer in model.layers)
    bn = sum(2 * _elements(layer.output.shape) for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization))
    params = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {"macs": macs, "bn_flops": bn, "gflops": macs / 1e9,
            "gflops_incl_bn": (macs + bn) / 1e9, "params": params}


def main(argv=None):
    from vov3d_tf.model.networks import MODEL_NAMES

    p = argparse.ArgumentParser(prog="vov3d-flops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224, help="square crop size")
    p.add_argument("--base-width", type=int)
    p.add_argument("--num-conv", type=int)
    p.add_argument("--blocks", type=lambda s: tuple(int(v) for v in s.split(",")),
                   help="blocks per stage, e.g. 1,2,3,2")
    a = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    overrides = {k: v for k, v in (("base_width", a.base_width), ("num_conv", a.num_conv),
                                   ("blocks", a.blocks)) if v is not None}
    try:
        r = count_flops(a.model, (a.frames, a.size, a.size, 3), a.num_classes, **overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"model": a.model, "input": [a.frames, a.size, a.size, 3], **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
