"""Experiment configuration: frozen dataclasses per section and a strict JSON loader.

A config file is JSON with the sections `model`, `data`, `train`, `eval` and optionally
`search`; every key is optional (defaults below, the paper's SSv2 recipe for VoV3D-M,
docs/architecture.md#training-recipe). Anything unknown, of the wrong type or out of range is a
`ValueError` naming the file and the dotted key, raised before any model or data is built::

    cfg = load_config("configs/ssv2.json", overrides=["train.epochs=3", "model.blocks=[1,1,1,1]"])

Override values are parsed as JSON (`3`, `[1,1,1,1]`, `null`, `true`); anything that is not
JSON is taken as a string (`model.name=vov3d_l`). Relative paths in the config are relative
to the working directory (run the commands from the repository root).

The config stops at one adapter module (`vov3d_tf.adapters`: model, data and view arguments):
layers and models never see it. The closed sets of values a key takes are named here (below),
once: the library modules that check them import them from here, and this module imports no
library module (the model's rules on `model.*`, owned by `vov3d_tf.model.networks`, are asked
when a config is checked).
"""
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "EvalConfig", "SearchConfig",
           "SearchSpaceConfig", "load_config", "config_from_dict", "config_to_dict",
           "save_config", "parse_override", "apply_overrides", "add_config_arguments",
           "config_from_args", "SAMPLING_MODES", "NUM_CROPS", "ON_CORRUPT", "OPTIMIZER_FORMS",
           "LR_POLICIES", "STAGES", "FREEZE_CHOICES", "PRECISIONS", "TUNERS"]

# ----------------------------------------------------------------------------------------------
# Allowed values (the closed sets of config keys, also checked by the library)
# ----------------------------------------------------------------------------------------------

SAMPLING_MODES = ("segment", "dense")  # Something-Something / Kinetics sampling
NUM_CROPS = (1, 3)  # test crops per clip: the centre, or left/centre/right (uniform_crop)
ON_CORRUPT = ("skip", "fail")  # a corrupt record is skipped and counted, or an error
OPTIMIZER_FORMS = ("reference", "keras")  # torch.optim.SGD's step, or Keras' SGD
LR_POLICIES = ("cosine", "steps_with_relative_lrs")  # after the warm-up (PySlowFast's names)
STAGES = ("stem", "s2", "s3", "s4", "s5")  # the network's stages in order (layer name prefixes)
FREEZE_CHOICES = ("none", "backbone") + STAGES  # train.freeze: nothing, all but the head, up to
PRECISIONS = ("mixed_float16", "mixed_bfloat16")  # train.mixed_precision (null: float32)
TUNERS = ("random", "bayesian", "hyperband")  # keras-tuner oracles


# Field metadata: "range" (numeric bounds), "choices" (a closed set of numbers; strings use
# Literal), "length" (list length). Checked by `_convert` when the config loads.
def _range(lo=None, hi=None, *, lo_open=False, hi_open=False):
    """Field metadata: allowed numeric range (closed unless `*_open`)."""
    return {"range": (lo, hi, lo_open, hi_open)}


def _positive():
    return _range(0, None, lo_open=True)


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    """`vov3d_tf.create_model(name, num_classes, **overrides)`; null = the variant's default."""
    name: str = "vov3d_m"  # one of vov3d_tf.MODEL_NAMES (checked by vov3d_tf.model.networks)
    num_classes: int = field(default=174, metadata=_positive())
    base_width: Optional[int] = field(default=None, metadata=_positive())
    num_conv: Optional[int] = field(default=None, metadata=_positive())  # VoV3D only
    blocks: Optional[tuple[int, ...]] = field(default=None, metadata={"length": 4, **_positive()})
    dropout_rate: float = field(default=0.5, metadata=_range(0.0, 1.0, hi_open=True))
    # null: global average pooling in the head; [t, h, w]: the reference's fixed window, e.g.
    # [16, 7, 7] for 16x224 training clips (matches its output at larger test crops; see
    # docs/architecture.md, the head).
    head_pool_size: Optional[tuple[int, ...]] = field(default=None,
                                                      metadata={"length": 3, **_positive()})
    # Start a fresh run from these weights: a .keras of this project, or an official PySlowFast
    # .pth/.pyth/.npz (through vov3d_tf.model.convert). A different num_classes re-initialises the
    # classifier; a resumed run takes its own checkpoint instead.
    init_weights: Optional[str] = None


@dataclass(frozen=True)
class DataConfig:
    """Shards (glob patterns) and the paper's sampling/augmentation (the training recipe)."""
    train_files: str = "data/ssv2/train-*.tfrecord"
    eval_files: str = "data/ssv2/validation-*.tfrecord"
    labels_file: Optional[str] = None  # one class per line; null = the manifest's label list
    num_frames: int = field(default=16, metadata=_positive())
    crop_size: int = field(default=224, metadata=_positive())
    sampling: Literal[SAMPLING_MODES] = "segment"  # Something-Something / Kinetics
    sampling_rate: int = field(default=1, metadata=_positive())  # frame stride (dense only)
    train_short_side: tuple[int, ...] = field(default=(256, 320),
                                              metadata={"length": 2, **_positive()})
    inverse_uniform_scale: bool = True  # short side = round(1 / U(1/max, 1/min)) (SS recipe)
    random_flip: bool = False  # off for Something-Something: left/right is in the labels
    test_short_side: int = field(default=256, metadata=_positive())
    test_crop_size: Optional[int] = field(default=None, metadata=_positive())  # null = short side
    on_corrupt: Literal[ON_CORRUPT] = "skip"
    # Record keys: the frames' feature list and the int64 class indices; null = the shard
    # format's (vov3d_tf/data/format.py, also Model Garden's and DMVR's). Set them for shards
    # written by other tools (Model Garden's image_field_key / label_field_key).
    image_key: Optional[str] = None
    label_key: Optional[str] = None
    shuffle_frames: bool = False  # control experiment: destroy frame order in train and eval
    # Demo only: keyword arguments of vov3d_tf.data.build.synthetic.write_synthetic_dataset; the
    # shards are written when `train_files` matches nothing (null = never generate data).
    synthetic: Optional[dict] = None


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (the training recipe): SGD Nesterov, cosine with linear warm-up, LR scaled
    with the batch."""
    batch_size: int = field(default=64, metadata=_positive())  # global, over all replicas
    epochs: int = field(default=100, metadata=_positive())
    base_lr: float = field(default=0.1, metadata=_positive())
    lr_reference_batch: int = field(default=64, metadata=_positive())  # LR = base * bs / ref
    warmup_epochs: float = field(default=1.0, metadata=_range(0.0))
    warmup_start_lr: float = field(default=0.01, metadata=_range(0.0))
    # LR policy after the warm-up: `cosine` (ends at 0) or PySlowFast's `steps_with_relative_lrs`
    # (lr = peak * lr_relative[i] from epoch lr_steps[i]; lr_steps starts at 0).
    lr_policy: Literal[LR_POLICIES] = "cosine"
    lr_steps: Optional[tuple[float, ...]] = field(default=None, metadata=_range(0.0))
    lr_relative: Optional[tuple[float, ...]] = field(default=None, metadata=_positive())
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0, hi_open=True))
    nesterov: bool = True
    # `reference`: torch.optim.SGD's step (coupled L2 decay on the parameters whose official
    # name has no "bn", vov3d_tf.train.optim); `keras`: Keras' SGD (decoupled decay, kernels only).
    optimizer: Literal[OPTIMIZER_FORMS] = "reference"
    weight_decay: float = field(default=5e-5, metadata=_range(0.0))
    # Parameters not trained: `none`, `backbone` (train the head only), or every stage up to
    # and including the named one (`stem`, `s2` ... `s5`); frozen BNs run in inference mode.
    freeze: Literal[FREEZE_CHOICES] = "none"
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 1.0, hi_open=True))
    mixed_precision: Optional[Literal[PRECISIONS]] = None
    sync_bn: bool = False  # BN statistics over all replicas instead of per replica
    output_dir: str = "runs/ssv2_vov3d_m"
    checkpoint_every_steps: int = field(default=500, metadata=_positive())
    steps_per_epoch: Optional[int] = field(default=None, metadata=_positive())  # null: manifest
    seed: int = field(default=0, metadata=_range(0))
    precise_bn_batches: int = field(default=200, metadata=_range(0))  # 0 = off


@dataclass(frozen=True)
class EvalConfig:
    """The paper's multi-view test: clips x crops views, softmax summed per video."""
    batch_size: int = field(default=8, metadata=_positive())  # videos per batch
    num_clips: int = field(default=2, metadata=_positive())
    num_crops: int = field(default=3, metadata={**_range(1, 3), "choices": NUM_CROPS})
    every_epochs: int = field(default=0, metadata=_range(0))  # 0 = only after training
    # Views per forward pass (null = a whole batch's batch_size x clips x crops views at once):
    # bounds the activation memory of the test, same results (e.g. 6 for Kinetics' 30 views).
    max_views_per_batch: Optional[int] = field(default=None, metadata=_positive())


# ============================ search section (owned by the search engineer) ===================
@dataclass(frozen=True)
class SearchSpaceConfig:
    """Choices the tuner draws from; null frames/crop = keep the `data` section's value."""
    base_width: tuple[int, ...] = field(default=(16, 24, 32, 40), metadata=_positive())
    num_conv: tuple[int, ...] = field(default=(2, 3, 4, 5), metadata=_positive())
    blocks: tuple[tuple[int, ...], ...] = field(
        default=((1, 1, 1, 1), (1, 2, 3, 2)), metadata={"length": 4, **_positive()})
    num_frames: Optional[tuple[int, ...]] = field(default=None, metadata=_positive())
    crop_size: Optional[tuple[int, ...]] = field(default=None, metadata=_positive())


@dataclass(frozen=True)
class SearchConfig:
    """Keras Tuner width/depth search (used by the search engineer's code)."""
    tuner: Literal[TUNERS] = "random"
    max_trials: int = field(default=10, metadata=_positive())
    epochs_per_trial: int = field(default=1, metadata=_positive())
    objective: str = "val_top1"
    max_gflops: Optional[float] = field(default=None, metadata=_positive())
    max_params: Optional[int] = field(default=None, metadata=_positive())
    seed: int = field(default=0, metadata=_range(0))
    space: SearchSpaceConfig = SearchSpaceConfig()
# ============================ end of the search section =======================================


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    search: SearchConfig = SearchConfig()


# ----------------------------------------------------------------------------------------------
# Strict conversion JSON -> dataclasses
# ----------------------------------------------------------------------------------------------

def _describe(tp):
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in inner) + " or null"
    if origin is tuple:
        return f"a list of ({_describe(typing.get_args(tp)[0])})"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            dict: "an object"}.get(tp, str(tp))


def _convert(value, tp, meta, where):
    """Check `value` against type `tp` and metadata; return the frozen Python value."""
    origin = typing.get_origin(tp)
    bad = ValueError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin is typing.Union:
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _convert(value, inner, meta, where)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        item_tp = typing.get_args(tp)[0]
        nested = typing.get_origin(item_tp) is tuple
        length = meta.get("length")
        if length is not None and not nested and len(value) != length:
            raise ValueError(f"{where}: expected {length} values, got {len(value)}: {value!r}")
        return tuple(_convert(v, item_tp, meta, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, where)
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif tp is float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise bad
        value = float(value)
    elif tp is str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if "range" in meta:
        lo, hi, lo_open, hi_open = meta["range"]
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            bounds = [f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []
            bounds += [f"{'<' if hi_open else '<='} {hi}"] if hi is not None else []
            raise ValueError(f"{where}: {value!r} is out of range, expected {' and '.join(bounds)}")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{where}: expected one of {', '.join(map(repr, meta['choices']))}, "
                         f"got {value!r}")
    return value


def _build(cls, d, where):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        what = f"{where}: unknown key(s)" if where else "unknown section(s)"
        raise ValueError(f"{what} {', '.join(repr(u) for u in unknown)}; "
                         f"allowed: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            kwargs[f.name] = _convert(d[f.name], hints[f.name], dict(f.metadata),
                                      f"{where}.{f.name}" if where else f.name)
    return cls(**kwargs)


def _check_consistency(cfg, source):
    """Rules that involve more than one key."""
    def err(key, msg):
        return ValueError(f"{source}: {key}: {msg}")

    from vov3d_tf.model import networks  # the families' rules live beside the builder

    m = cfg.model
    try:
        family = networks.model_family(m.name)
    except ValueError as e:
        raise err("model.name", str(e)) from None
    if m.num_conv is not None and not networks.has_num_conv(family):
        raise err("model.num_conv", f"applies to VoV3D only, not {m.name!r}; use null")
    if m.base_width is not None and networks.base_width_error(family, m.base_width):
        raise err("model.base_width", networks.base_width_error(family, m.base_width))
    lo, hi = cfg.data.train_short_side
    if lo > hi:
        raise err("data.train_short_side", f"expected [min, max] with min <= max, got [{lo}, {hi}]")
    if lo < cfg.data.crop_size:
        raise err("data.train_short_side", f"min {lo} is smaller than data.crop_size "
                                           f"{cfg.data.crop_size}")
    test_crop = cfg.data.test_crop_size
    if test_crop is not None and test_crop > cfg.data.test_short_side:
        raise err("data.test_crop_size", f"{test_crop} exceeds data.test_short_side "
                                         f"{cfg.data.test_short_side}")
    if cfg.data.sampling == "segment" and cfg.data.sampling_rate != 1:
        raise err("data.sampling_rate", "only applies to dense sampling; use 1 with "
                                        "segment sampling")
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise err("train.warmup_epochs", f"{cfg.train.warmup_epochs} exceeds train.epochs "
                                         f"{cfg.train.epochs}")
    t = cfg.train
    if t.lr_policy == "steps_with_relative_lrs":
        if t.lr_steps is None or t.lr_relative is None:
            raise err("train.lr_steps", "train.lr_policy 'steps_with_relative_lrs' needs "
                                        "train.lr_steps and train.lr_relative")
        if len(t.lr_steps) != len(t.lr_relative):
            raise err("train.lr_relative", f"{len(t.lr_relative)} values for "
                                           f"{len(t.lr_steps)} train.lr_steps")
        if t.lr_steps[0] != 0 or any(b <= a for a, b in zip(t.lr_steps, t.lr_steps[1:])):
            raise err("train.lr_steps", f"expected increasing epochs starting at 0, got "
                                        f"{list(t.lr_steps)}")
        if t.lr_steps[-1] >= t.epochs:
            raise err("train.lr_steps", f"{t.lr_steps[-1]} is not before train.epochs {t.epochs}")
    elif t.lr_steps is not None or t.lr_relative is not None:
        raise err("train.lr_steps", "train.lr_steps / train.lr_relative apply to lr_policy "
                                    "'steps_with_relative_lrs' only; use null")
    if cfg.data.synthetic is not None:
        _check_synthetic_kwargs(cfg.data.synthetic, source)


def _check_synthetic_kwargs(kwargs, source):
    """`data.synthetic` must be keyword arguments of the synthetic-data writer."""
    import inspect
    try:
        from vov3d_tf.data.build import synthetic
    except ImportError:  # the data package is optional for config handling
        return
    params = inspect.signature(synthetic.write_synthetic_dataset).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if n != "output_dir"
               and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"{source}: data.synthetic: unknown key(s) "
                         f"{', '.join(repr(u) for u in unknown)}; allowed: {', '.join(allowed)}")


def config_from_dict(d, source="<dict>"):
    """Validate a plain dict (as read from JSON) into a `Config`; errors name `source`."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: a config must be a JSON object of sections, got "
                         f"{type(d).__name__}")
    try:
        cfg = _build(Config, d, "")
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    _check_consistency(cfg, source)
    return cfg


def config_to_dict(cfg):
    """Plain JSON-ready dict (tuples become lists) that `config_from_dict` reads back."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def parse_override(text):
    """'section.key=value' -> (['section', 'key'], value); value parsed as JSON if it can be."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ValueError(f"--set {text!r}: expected section.key=value (e.g. train.epochs=3)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def apply_overrides(d, overrides, source="--set"):
    """Return a copy of the dict `d` with every 'a.b.c=value' override applied."""
    d = json.loads(json.dumps(d))
    for text in overrides or ():
        path, value = parse_override(text)
        node = d
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if child is None:  # e.g. data.synthetic=null, then data.synthetic.x=...
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"{source} {text!r}: {'.'.join(path[:i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return d


def load_config(path, overrides=()):
    """Read the JSON file at `path`, apply `--set` overrides, validate strictly."""
    from vov3d_tf import fileio  # (tf.io.gfile: configs may be on gs://, ram://, ...)
    path = str(path)
    try:
        if not fileio.exists(path):
            raise FileNotFoundError(path)
        d = json.loads(fileio.read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config must be a JSON object of sections")
    source = path + (f" (with --set {' '.join(overrides)})" if overrides else "")
    return config_from_dict(apply_overrides(d, overrides, source=path), source=source)


def save_config(cfg, path):
    """Write `cfg` as indented JSON (the resolved config: every key, defaults included)."""
    from vov3d_tf import fileio
    fileio.write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def add_config_arguments(parser, *, required=True, default_help=None):
    """The two flags of every command that reads a config: `--config FILE` and
    `--set SECTION.KEY=VALUE [...]` (repeatable, several overrides per flag)."""
    parser.add_argument("--config", required=required,
                        help="experiment JSON (configs/*.json)" + (
                            "" if required else f" (default: {default_help})"))
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a config key (the value is parsed as JSON, else taken "
                             "as a string), e.g. train.epochs=3; repeatable")


def config_from_args(args):
    """(Config, source) from `add_config_arguments`' flags: `--config` with the `--set`
    overrides, or the defaults (the paper's SSv2 recipe) with them when there is no `--config`.
    `source` names both, for error messages."""
    overrides = list(args.overrides)
    sets = f" (with --set {' '.join(overrides)})" if overrides else ""
    if args.config:
        return load_config(args.config, overrides), args.config + sets
    return config_from_dict(apply_overrides({}, overrides), "defaults" + sets), "defaults" + sets
