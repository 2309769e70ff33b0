"""Inference form of a trained model: every BatchNormalization folded into the conv before it.

`fold_batchnorm(model)` rebuilds the same architecture with `fold_bn=True` (convs with bias, no
BN layers) and copies the weights, scaling each conv's output channels by gamma / sqrt(var + eps)
and setting its bias to beta - mean * scale. Outputs equal the trainable model's in inference
mode (tested to 1e-4); it is the fast path for evaluation, prediction and serving.
"""
import numpy as np

from vov3d_tf.model import layers as L


def _out_channel_axis(layer):
    depthwise = isinstance(layer, L.TemporalDepthwiseConv) or (
        isinstance(layer, L.SpatialConv) and layer.depthwise)
    return -2 if depthwise else -1  # depthwise kernels end in (..., C, 1)


def fold_batchnorm(model):
    """Return an inference copy of `model` (a `VideoClassifier`) with BN folded into convs."""
    from vov3d_tf.model.networks import VideoClassifier

    if not isinstance(model, VideoClassifier):
        raise TypeError(f"fold_batchnorm needs a vov3d_tf VideoClassifier, got "
                        f"{type(model).__name__}")
    if model.fold_bn:
        return model
    config = {**model.get_config(), "fold_bn": True, "name": model.name + "_folded"}
    folded = VideoClassifier.from_config(config)
    source = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        if not layer.weights:
            continue
        src = source[layer.name]
        weights = [np.asarray(w) for w in src.get_weights()]
        bn = source.get(layer.name + "_bn")
        if bn is not None:
            gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel = weights[0].astype(np.float64)
            axis = _out_channel_axis(layer)
            shape = [1] * kernel.ndim
            shape[axis] = -1
            kernel = kernel * scale.reshape(shape)
            bias = beta - mean * scale
            weights = [kernel.astype(np.float32), bias.astype(np.float32)]
        layer.set_weights(weights)
    return folded
