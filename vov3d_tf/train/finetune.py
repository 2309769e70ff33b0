"""Fine-tuning: start a run from pretrained weights, and freeze part of the network.

The paper's best Something-Something results start from a Kinetics-400 VoV3D and fine-tune it
(docs/architecture.md#training-recipe, "finetune from K400"). `load_initial_weights(model, path)`
copies a `.keras` model of this project, or an official PySlowFast `.pth`/`.pyth`/`.npz` checkpoint
(through `vov3d_tf.model.convert`), into a freshly built model. When only the number of classes
differs, the classifier (`head_projection`) keeps its fresh initialisation, the reference's
(docs/architecture.md#initialisation: weight N(0, 0.01^2), bias 0); any other difference is an error
naming every layer and shape.

`freeze(model, what)` stops training the backbone (`backbone`: only the head trains) or every
stage up to a named one (`stem`, `s2` ... `s5`); a frozen BatchNorm runs in inference mode (its
moving statistics are used and not updated), as Keras does for a non-trainable BN.
"""

import keras
import numpy as np

from vov3d_tf import fileio
from vov3d_tf.config import FREEZE_CHOICES, STAGES

__all__ = ["load_initial_weights", "freeze", "CLASSIFIER"]

CLASSIFIER = "head_projection"  # the layer a different num_classes re-initialises


def _source_weights(model, path):
    """{layer name: [arrays in layer.weights order]} of the checkpoint at `path`."""
    if path.endswith(".keras"):
        src = keras.models.load_model(path, compile=False)
        if getattr(src, "fold_bn", False):
            raise ValueError(f"{path}: a BN-folded (inference) model cannot be fine-tuned; use "
                             f"the trainable .keras (best.keras / last.keras of a run)")
        return {layer.name: [w.numpy() for w in layer.weights]
                for layer in src.layers if layer.weights}
    if not path.endswith((".pth", ".pyth", ".npz")):
        raise ValueError(f"model.init_weights: {path!r}: expected a .keras, .pth, .pyth or "
                         f".npz file")
    from vov3d_tf.model.convert import load_state_dict, load_torch_weights
    from vov3d_tf.model.networks import VideoClassifier

    state = load_state_dict(path)
    bias = state.get("head.projection.bias")
    classes = int(np.shape(bias)[0]) if bias is not None else model.num_classes
    config = dict(model.get_config(), num_classes=classes, fold_bn=False)
    src = VideoClassifier.from_config(config)  # same architecture, the checkpoint's classes
    try:
        load_torch_weights(src, state)
    except ValueError as e:
        raise ValueError(f"model.init_weights: {path}: {e}") from None
    return {layer.name: [w.numpy() for w in layer.weights]
            for layer in src.layers if layer.weights}


def load_initial_weights(model, path, log=print):
    """Copy the weights at `path` into `model`; returns a report dict.

    Report: `path`, `sha256`, `loaded` (number of tensors copied), `loaded_layers` (their layer
    names), `reinitialized` (layer names kept at their fresh initialisation: the classifier
    when num_classes differs).
    Raises ValueError listing every missing, unexpected and mis-shaped layer otherwise.
    """
    if not fileio.exists(path):
        raise FileNotFoundError(f"model.init_weights: {path!r} not found")
    source = _source_weights(model, path)
    targets = {layer.name: layer for layer in model.layers if layer.weights}
    missing = sorted(set(targets) - set(source))
    unexpected = sorted(set(source) - set(targets))
    mis_shaped, reinitialized, assignments = [], [], []
    for name, layer in targets.items():
        if name not in source:
            continue
        arrays = source[name]
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if want == got:
            assignments.append((layer, arrays))
        elif name == CLASSIFIER and len(want) == len(got) and want[0][:-1] == got[0][:-1]:
            reinitialized.append(name)  # only the class count differs: keep the fresh init
        else:
            mis_shaped.append(f"{name}: checkpoint {got}, model {want}")
    if missing or unexpected or mis_shaped:
        lines = [f"{len(items)} {title} layer(s):\n  " + "\n  ".join(items)
                 for title, items in (("missing", missing), ("unexpected", unexpected),
                                      ("mis-shaped", mis_shaped)) if items]
        raise ValueError(f"model.init_weights: {path} does not fit {model.name} "
                         f"({model.num_classes} classes):\n" + "\n".join(lines))
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    loaded = sum(len(arrays) for _, arrays in assignments)
    report = {"path": fileio.abspath(path), "sha256": fileio.sha256(path), "loaded": loaded,
              "loaded_layers": [layer.name for layer, _ in assignments],
              "reinitialized": reinitialized}
    log(f"[vov3d] init_weights {path}: loaded {loaded} tensors of {len(assignments)} layers"
        + (f"; re-initialised {', '.join(reinitialized)} (num_classes differs: "
           f"{source[CLASSIFIER][-1].shape[0]} -> {model.num_classes})" if reinitialized else ""))
    return report


def _frozen_layer(name, what):
    if what == "backbone":
        return not (name.startswith("head_") or name == "logits")
    last = STAGES.index(what)
    return name.startswith(tuple(f"{s}_" for s in STAGES[:last + 1]))


def freeze(model, what):
    """Make the layers selected by `what` (FREEZE_CHOICES) non-trainable; returns their names.

    Call before `compile` (Keras reads trainable flags when it builds the train step)."""
    if what not in FREEZE_CHOICES:
        raise ValueError(f"train.freeze must be one of {', '.join(FREEZE_CHOICES)}, got {what!r}")
    if what == "none":
        return []
    frozen = []
    for layer in model.layers:
        if layer.weights and _frozen_layer(layer.name, what):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen
