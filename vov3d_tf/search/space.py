"""Width/depth search space: keras-tuner hyperparameters -> `create_model` kwargs and
training-config overrides. Nothing else.

The architecture itself lives in `vov3d_tf.model.networks`; a trial is the base experiment config
with a few keys replaced, built and trained by the same code as `train.py` (STYLE.md: the tuner
never copies the model). The hyperparameter names are the config keys they set:

    base_width  -> model.base_width   (VoV3D c / X3D DIM_C1)
    num_conv    -> model.num_conv     (D(2+1)D units per T-OSA; VoV3D only)
    blocks      -> model.blocks       (blocks per stage s2..s5, encoded "1-2-3-2": keras-tuner
                                       choices must be scalars)
    num_frames  -> data.num_frames    (only when search.space.num_frames is set)
    crop_size   -> data.crop_size     (only when search.space.crop_size is set)

Keys keras-tuner adds itself (Hyperband's `tuner/epochs`, ...) are ignored here.
"""
from vov3d_tf.model import networks as models
from vov3d_tf.adapters import model_overrides as config_model_overrides
from vov3d_tf.config import config_from_dict, config_to_dict

MODEL_HPS = ("base_width", "num_conv", "blocks")
DATA_HPS = ("num_frames", "crop_size")
ARCH_HPS = MODEL_HPS + DATA_HPS


def encode_blocks(blocks):
    """(1, 2, 3, 2) -> "1-2-3-2" (a keras-tuner Choice value)."""
    return "-".join(str(int(b)) for b in blocks)


def decode_blocks(text):
    """"1-2-3-2" -> (1, 2, 3, 2)."""
    try:
        blocks = tuple(int(b) for b in str(text).split("-"))
    except ValueError:
        raise ValueError(f"blocks hyperparameter must look like '1-2-3-2', got {text!r}") from None
    if len(blocks) != 4:
        raise ValueError(f"blocks hyperparameter must have 4 stages, got {text!r}")
    return blocks


def has_num_conv(model_name):
    """Whether the model has a num_conv hyperparameter (VoV3D; `model.networks` decides)."""
    return models.has_num_conv(models.model_family(model_name))


def check_space(cfg, source="config"):
    """Rules of `search.space` that the generic config loader cannot know; errors name the key."""
    space = cfg.search.space

    def err(key, msg):
        return ValueError(f"{source}: search.space.{key}: {msg}")

    for key in ("base_width", "num_conv", "blocks", "num_frames", "crop_size"):
        values = getattr(space, key)
        if values is None:
            continue
        if len(values) == 0:
            hint = (" (or null to keep the data section's value)" if key in DATA_HPS else "")
            raise err(key, f"needs at least one value{hint}")
        if len(set(values)) != len(values):
            raise err(key, f"has duplicate values: {list(values)!r}")
    family = models.model_family(cfg.model.name)
    bad = [w for w in space.base_width if models.base_width_error(family, w)]
    if bad:
        raise err("base_width", f"{models.base_width_error(family, bad[0])} (all: {bad})")
    for i, blocks in enumerate(space.blocks):
        if len(blocks) != 4:
            raise err(f"blocks[{i}]", f"expected 4 blocks per stage, got {list(blocks)!r}")
    # Every frames/crop pair must give a valid training config (e.g. crop <= short side).
    for frames in space.num_frames or (None,):
        for crop in space.crop_size or (None,):
            values = {k: v for k, v in (("num_frames", frames), ("crop_size", crop)) if v}
            try:
                trial_config(cfg, values)
            except ValueError as e:
                key = "crop_size" if crop else "num_frames"
                raise err(key, f"value {values} gives an invalid training config: {e}") from None


def declare_space(hp, cfg):
    """Register the search space of `cfg.search.space` on a keras_tuner.HyperParameters."""
    space = cfg.search.space
    hp.Choice("base_width", list(space.base_width))
    if has_num_conv(cfg.model.name):  # X3D has no D(2+1)D count: its choices are ignored
        hp.Choice("num_conv", list(space.num_conv))
    hp.Choice("blocks", [encode_blocks(b) for b in space.blocks])
    if space.num_frames:
        hp.Choice("num_frames", list(space.num_frames))
    if space.crop_size:
        hp.Choice("crop_size", list(space.crop_size))
    return hp


def model_overrides(values):
    """Hyperparameter values -> `create_model` keyword overrides."""
    out = {k: values[k] for k in ("base_width", "num_conv") if k in values}
    if "blocks" in values:
        out["blocks"] = decode_blocks(values["blocks"])
    return out


def data_overrides(values):
    """Hyperparameter values -> `data` section overrides (clip geometry)."""
    return {k: values[k] for k in DATA_HPS if k in values}


def arch_values(values):
    """Only the architecture/clip hyperparameters (drops keras-tuner's `tuner/...` keys)."""
    return {k: values[k] for k in ARCH_HPS if k in values}


def trial_config(cfg, values, *, epochs=None, output_dir=None):
    """The base `Config` with one candidate's values (and optionally epochs / output dir) set.

    With `epochs`, `train.warmup_epochs` is capped at it (the loader rejects a warm-up longer
    than training). Validated like any config file, so a trial config is exactly what
    `train.py` would accept.
    """
    d = config_to_dict(cfg)
    for key, value in model_overrides(values).items():
        d["model"][key] = list(value) if isinstance(value, tuple) else value
    d["data"].update(data_overrides(values))
    if epochs is not None:
        d["train"]["epochs"] = int(epochs)
        # A short trial keeps the recipe's warm-up unless it would outlast the trial.
        d["train"]["warmup_epochs"] = min(d["train"]["warmup_epochs"], float(epochs))
    if output_dir is not None:
        d["train"]["output_dir"] = str(output_dir)
    return config_from_dict(d, source=f"search candidate {arch_values(values)}")


def clip_shape(cfg):
    """(T, H, W, 3) of the training clip: the geometry FLOPs are counted at."""
    return (cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, 3)


def cost_kwargs(cfg):
    """`vov3d_tf.model.flops.count_flops` keyword arguments for the model of `cfg`."""
    return {"input_shape": clip_shape(cfg), "num_classes": cfg.model.num_classes,
            **config_model_overrides(cfg.model, architecture_only=True)}
