"""Import official PyTorch VoV3D / X3D weights (PySlowFast checkpoints) into a Keras model.

    vov3d-convert SRC --model vov3d_m --num-classes 174 --output OUT.keras

SRC is a `.pth` / `.pyth` checkpoint (a dict with `model_state`, or a bare state_dict), read with
`torch.load(weights_only=True)` so no pickled code runs, or an `.npz` of arrays under the official
parameter names (like the parity fixture's npz). Layout conversion follows
docs/architecture.md#official-names-and-the-converter: PyTorch `(Cout, Cin/groups, kT, kH, kW)`
kernels become the channels-last kernels of `vov3d_tf.model.layers`.
"""
import argparse
import re
import sys

import keras
import numpy as np

from vov3d_tf import fileio
from vov3d_tf.model import layers as L
from vov3d_tf import runtime

# In Keras' order: gamma, beta, moving mean, moving variance.
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_IGNORED_SUFFIXES = ("num_batches_tracked",)
# Non-weight arrays of the parity fixture (.npz); its `feat_*` debugging features are skipped too.
_FIXTURE_EXTRAS = {"input", "logits", "probs", "logits_f64", "probs_f64"}

# PyTorch module path -> Keras layer name. Block-level parts (after `s{k}.pathway0_res{j}.`):
_BLOCK_PARTS = {"branch1": "shortcut", "branch1_bn": "shortcut_bn"}
_VOV3D_BRANCH2 = {"c": "agg", "c_bn": "agg_bn"}
_VOV3D_UNIT = {"a.0": "a", "a.1": "a_bn", "b1": "b1", "b2": "b2", "b_bn": "b2_bn",
               "se.fc1": "se_fc1", "se.fc2": "se_fc2", "c.0": "c", "c.1": "c_bn"}
_X3D_BRANCH2 = {"a": "a", "a_bn": "a_bn", "b": "b", "b_bn": "b_bn", "c": "c", "c_bn": "c_bn",
                "se.fc1": "se_fc1", "se.fc2": "se_fc2"}
_STEM = {"conv_xy": "stem_conv_xy", "conv": "stem_conv_t", "bn": "stem_conv_t_bn"}
_HEAD = {"conv_5": "head_conv_5", "conv_5_bn": "head_conv_5_bn", "lin_5": "head_lin_5",
         "projection": "head_projection"}
_BLOCK_RE = re.compile(r"^s([2-5])\.pathway0_res(\d+)\.(.+)$")
_UNIT_RE = re.compile(r"^branch2\.layers\.(\d+)\.(.+)$")


def keras_layer_name(module, family):
    """Keras layer name for an official PyTorch module path, or None if it has no counterpart."""
    if module.startswith("s1.pathway0_stem."):
        return _STEM.get(module[len("s1.pathway0_stem."):])
    if module.startswith("head."):
        return _HEAD.get(module[len("head."):])
    m = _BLOCK_RE.match(module)
    if not m:
        return None
    prefix, rest = f"s{m.group(1)}_b{int(m.group(2))}", m.group(3)
    if rest in _BLOCK_PARTS:
        return f"{prefix}_{_BLOCK_PARTS[rest]}"
    if not rest.startswith("branch2."):
        return None
    if family == "x3d":
        part = _X3D_BRANCH2.get(rest[len("branch2."):])
        return part and f"{prefix}_{part}"
    u = _UNIT_RE.match(rest)
    if u:
        part = _VOV3D_UNIT.get(u.group(2))
        return part and f"{prefix}_u{int(u.group(1))}_{part}"
    part = _VOV3D_BRANCH2.get(rest[len("branch2."):])
    return part and f"{prefix}_{part}"


def torch_kernel_to_keras(layer, w):
    """Convert one PyTorch conv/linear weight to `layer`'s kernel layout."""
    if isinstance(layer, (L.PointwiseConv3D, L.OneShotAggregation)):
        return w.reshape(w.shape[0], -1).T  # (Cout, Cin[,1,1,1]) -> (Cin, Cout)
    if isinstance(layer, L.SpatialConv):
        if layer.depthwise:
            return w[:, 0, 0].transpose(1, 2, 0)[..., None]  # (C,1,1,k,k) -> (k,k,C,1)
        return w[:, :, 0].transpose(2, 3, 1, 0)  # (Co,Ci,1,k,k) -> (k,k,Ci,Co)
    if isinstance(layer, L.TemporalDepthwiseConv):
        return w[:, 0, :, 0, 0].T[:, None, :, None]  # (C,1,k,1,1) -> (k,1,C,1)
    if isinstance(layer, L.DepthwiseConv3D):
        return w[:, 0].transpose(1, 2, 3, 0)  # (C,1,3,3,3) -> (3,3,3,C)
    raise TypeError(f"no PyTorch kernel conversion for layer {layer.name} "
                    f"({type(layer).__name__})")


def load_state_dict(path):
    """Arrays under their PyTorch names from a .pth/.pyth checkpoint or an .npz file."""
    if not fileio.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".npz"):
        with fileio.open(path, "rb") as f, np.load(f) as data:  # (reads through gfile)
            return {k: data[k] for k in data.files}
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading .pth/.pyth checkpoints needs PyTorch: "
                          "pip install 'vov3d-tf[convert]'") from e
    try:
        with fileio.open(path, "rb") as f:
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report which file and why
        raise ValueError(f"{path}: not a readable weights-only PyTorch checkpoint ({e})") from e
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict or a dict with 'model_state'")
    return {k.removeprefix("module."): v.detach().cpu().numpy()
            for k, v in state.items() if hasattr(v, "detach")}


def load_torch_weights(model, state):
    """Copy a PyTorch state_dict (name -> array) into `model` (a trainable VideoClassifier).

    Raises ValueError listing every missing, unexpected and mis-shaped key.
    """
    if model.fold_bn:
        raise ValueError("load weights into the trainable model, then fold_batchnorm() it")
    by_name = {layer.name: layer for layer in model.layers if layer.weights}
    pending = {}  # layer name -> {param: array}
    unexpected = []
    for key, value in state.items():
        if key.endswith(_IGNORED_SUFFIXES) or key in _FIXTURE_EXTRAS or key.startswith("feat_"):
            continue
        module, _, param = key.rpartition(".")
        name = keras_layer_name(module, model.family)
        if name is None or name not in by_name:
            unexpected.append(key)
            continue
        pending.setdefault(name, {})[param] = np.asarray(value, np.float32)

    missing, bad_shapes = [], []
    assignments = []
    for name, layer in by_name.items():
        params = pending.get(name, {})
        torch_module = torch_module_name(name, model.family)
        wanted = official_params(layer)
        arrays = [params.get(p) for p in wanted]
        if not isinstance(layer, keras.layers.BatchNormalization):
            if arrays[0] is not None:
                try:
                    arrays[0] = torch_kernel_to_keras(layer, arrays[0])
                except (IndexError, ValueError) as e:
                    bad_shapes.append(f"{torch_module}.weight: {params['weight'].shape} ({e})")
                    continue
        extra = sorted(set(params) - set(wanted))
        unexpected += [f"{torch_module}.{p}" for p in extra]
        for p, arr, var in zip(wanted, arrays, layer.weights):
            if arr is None:
                missing.append(f"{torch_module}.{p} (-> {name}/{var.name})")
            elif tuple(arr.shape) != tuple(var.shape):
                bad_shapes.append(f"{torch_module}.{p}: got {params[p].shape}, layer {name} "
                                  f"expects {tuple(var.shape)} after conversion")
        assignments.append((layer, arrays))
    if missing or unexpected or bad_shapes:
        lines = []
        for title, items in (("missing", missing), ("unexpected", sorted(unexpected)),
                             ("mis-shaped", bad_shapes)):
            if items:
                lines.append(f"{len(items)} {title} key(s):\n  " + "\n  ".join(items))
        raise ValueError(f"checkpoint does not match {model.name} "
                         f"({model.family}, {model.num_classes} classes):\n" + "\n".join(lines))
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    return model


def official_params(layer):
    """Official parameter suffixes of `layer`'s weights, in `layer.weights` order."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return list(_BN_PARAMS)
    return ["weight", "bias"][:len(layer.weights)]


def official_names(model):
    """{Keras variable path: official PyTorch parameter name} for every weight of `model`.

    The single mapping between the two namings (the converter and the reference optimizer's
    weight-decay set both use it), e.g. `s2_b0_u1_a_bn/gamma` -> `s2.pathway0_res0.branch2.
    layers.1.a.1.weight`. Raises ValueError naming a weight without an official counterpart.
    """
    names = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = torch_module_name(layer.name, model.family)
        if keras_layer_name(module, model.family) != layer.name:
            raise ValueError(f"layer {layer.name!r} of {model.name} has no official PyTorch "
                             f"counterpart")
        for param, var in zip(official_params(layer), layer.weights):
            names[var.path] = f"{module}.{param}"
    return names


def _invert(d):
    return {v: k for k, v in d.items()}


def torch_module_name(keras_name, family):
    """Inverse of `keras_layer_name`: the official module path of a Keras layer."""
    for table, prefix in ((_STEM, "s1.pathway0_stem."), (_HEAD, "head.")):
        if keras_name in table.values():
            return prefix + _invert(table)[keras_name]
    m = re.match(r"^s([2-5])_b(\d+)_(.+)$", keras_name)
    if not m:
        return keras_name
    block, rest = f"s{m.group(1)}.pathway0_res{m.group(2)}", m.group(3)
    if rest in _BLOCK_PARTS.values():
        return f"{block}.{_invert(_BLOCK_PARTS)[rest]}"
    if family == "x3d":
        return f"{block}.branch2.{_invert(_X3D_BRANCH2).get(rest, rest)}"
    u = re.match(r"^u(\d+)_(.+)$", rest)
    if u:
        part = _invert(_VOV3D_UNIT).get(u.group(2), u.group(2))
        return f"{block}.branch2.layers.{u.group(1)}.{part}"
    return f"{block}.branch2.{_invert(_VOV3D_BRANCH2).get(rest, rest)}"


def convert(src, model_name, num_classes, output=None, **overrides):
    """Build `model_name`, load the weights of `src`, optionally save to `output` (.keras)."""
    from vov3d_tf.model.networks import create_model

    state = load_state_dict(src)
    model = create_model(model_name, num_classes, **overrides)
    try:
        load_torch_weights(model, state)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None
    if output:
        if not output.endswith(".keras"):
            raise ValueError(f"--output must end in .keras, got {output!r}")
        tmp = output + ".tmp.keras"
        model.save(tmp)
        fileio.rename(tmp, output)
    return model


def main(argv=None):
    from vov3d_tf.model.networks import MODEL_NAMES

    p = argparse.ArgumentParser(prog="vov3d-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help=".pth/.pyth checkpoint or .npz of arrays under official names")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--output", required=True, help="where to write the .keras model")
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    try:
        model = convert(args.src, args.model, args.num_classes, args.output)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"wrote {args.output}: {args.model}, {args.num_classes} classes, {n:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
