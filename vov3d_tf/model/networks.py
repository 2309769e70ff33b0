"""VoV3D-M/L and the X3D-M/L baselines as Keras functional models.

Architecture constants and channel formulas come from
docs/architecture.md#variants-and-channel-tables (the official VoV3D configs); variants are pure
data.
"""

import keras

from vov3d_tf.model import layers as L

# VoV3D: stage widths are multiples of the base width c (INNER_CH).
VOV3D_INNER_MULTIPLIER = (1, 2, 4, 8)
VOV3D_OUT_MULTIPLIER = (0.5, 1.0, 2, 4)
HEAD_LIN5_WIDTH = 2048  # X3D.DIM_C5, read by both families

# X3D: base widths b2..b5 = 12, 24, 48, 96 scaled by WIDTH_FACTOR 2.0 (divisor-8 rounding);
# inner width = int(2.25 * out). Block counts are ceil(DEPTH_FACTOR * (1, 2, 5, 3)) in float64,
# hard-coded (a float32 2.2 would give 12 instead of 11 in s4).
X3D_WIDTH_FACTOR = 2.0
X3D_BOTTLENECK_FACTOR = 2.25

VARIANTS = {
    "vov3d_m": {"family": "vov3d", "base_width": 40, "num_conv": 5, "blocks": (1, 2, 3, 2)},
    "vov3d_l": {"family": "vov3d", "base_width": 48, "num_conv": 5, "blocks": (1, 2, 5, 3)},
    "x3d_m": {"family": "x3d", "base_width": 12, "blocks": (3, 5, 11, 7)},
    "x3d_l": {"family": "x3d", "base_width": 12, "blocks": (5, 10, 25, 15)},
}
MODEL_NAMES = tuple(VARIANTS)


round_width = L.round_width  # X3D's width rounding (defined beside SE, which uses it too)


# The rules of the families, asked by create_model, the config loader and the search space.
def model_family(name):
    """"vov3d" or "x3d" for a model name; ValueError listing the names otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    return VARIANTS[name]["family"]


def has_num_conv(family):
    """Only VoV3D has a D(2+1)D-units-per-T-OSA count (`num_conv`)."""
    return family == "vov3d"


def base_width_error(family, base_width):
    """Why `base_width` is not allowed for `family` ('' when it is): VoV3D's T-OSA units
    project to base_width / 2 channels, so its base width must be even."""
    if family == "vov3d" and base_width % 2:
        return f"VoV3D needs even base widths (its units project to width/2), got {base_width}"
    return ""


def vov3d_widths(base_width):
    """(stem width, per-stage (dim_inner, dim_out)) of VoV3D with base width c."""
    stem = int(base_width / 2)
    stages = [(int(base_width * mi), int(base_width * mo))
              for mi, mo in zip(VOV3D_INNER_MULTIPLIER, VOV3D_OUT_MULTIPLIER)]
    return stem, stages


def x3d_widths(base_width):
    """(stem width, per-stage (dim_inner, dim_out)) of X3D with DIM_C1 = base width."""
    bases = [base_width]
    for _ in range(3):
        bases.append(round_width(bases[-1], 2))
    outs = [round_width(b, X3D_WIDTH_FACTOR) for b in bases]
    stages = [(int(X3D_BOTTLENECK_FACTOR * o), o) for o in outs]
    return round_width(base_width, X3D_WIDTH_FACTOR), stages


def _check_positive_ints(name, value, length=None):
    values = value if length else [value]
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    if not ok or (length and len(values) != length):
        what = f"a list of {length} positive ints" if length else "a positive int"
        raise ValueError(f"{name} must be {what}, got {value!r}")


@keras.saving.register_keras_serializable(package="vov3d_tf")
class VideoClassifier(keras.Model):
    """VoV3D or X3D network: `(batch, T, H, W, 3)` normalized RGB frames -> logits.

    The constructor arguments fully describe the network (`get_config` returns exactly them).
    `fold_bn=True` builds the inference form without BatchNormalization layers (see
    `vov3d_tf.model.inference.fold_batchnorm`).
    """

    def __init__(self, family, num_classes, base_width, blocks, num_conv=5, dropout_rate=0.5,
                 fold_bn=False, input_shape=(None, None, None, 3), head_pool_size=None, **kwargs):
        if family not in ("vov3d", "x3d"):
            raise ValueError(f"family must be 'vov3d' or 'x3d', got {family!r}")
        _check_positive_ints("num_classes", num_classes)
        _check_positive_ints("base_width", base_width)
        _check_positive_ints("blocks", list(blocks) if isinstance(blocks, (list, tuple))
                             else blocks, length=4)
        _check_positive_ints("num_conv", num_conv)
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        if base_width_error(family, base_width):
            raise ValueError(base_width_error(family, base_width))
        if head_pool_size is not None:
            _check_positive_ints("head_pool_size", list(head_pool_size)
                                 if isinstance(head_pool_size, (list, tuple)) else head_pool_size,
                                 length=3)
            head_pool_size = tuple(head_pool_size)
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[-1] != 3:
            raise ValueError(f"input_shape must be (T, H, W, 3), got {input_shape!r}")

        inputs = keras.Input(shape=input_shape, name="frames")
        if family == "vov3d":
            stem_width, stages = vov3d_widths(base_width)
            conv5_width = base_width * VOV3D_INNER_MULTIPLIER[-1]
        else:
            stem_width, stages = x3d_widths(base_width)
            conv5_width = stages[-1][0]
        x = L.apply_stem(inputs, stem_width, fold_bn=fold_bn)
        for k, ((inner, width), n) in enumerate(zip(stages, blocks), start=2):
            for j in range(n):
                stride = 2 if j == 0 else 1  # every stage, s2 included, starts with stride 2
                name = f"s{k}_b{j}"
                if family == "vov3d":
                    x = L.apply_t_osa_block(x, inner, width, num_conv, stride=stride,
                                            fold_bn=fold_bn, name=name)
                else:  # X3D: SE on even block indices, counted per stage
                    x = L.apply_x3d_block(x, inner, width, stride=stride, use_se=j % 2 == 0,
                                          fold_bn=fold_bn, name=name)
        outputs = L.apply_head(x, conv5_width, HEAD_LIN5_WIDTH, num_classes,
                               dropout_rate=dropout_rate, fold_bn=fold_bn,
                               pool_size=head_pool_size)
        kwargs.setdefault("name", family)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.family = family
        self.num_classes = num_classes
        self.base_width = base_width
        self.blocks = tuple(blocks)
        self.num_conv = num_conv
        self.dropout_rate = dropout_rate
        self.fold_bn = fold_bn
        self.frames_shape = input_shape
        self.head_pool_size = head_pool_size

    def get_config(self):
        return {"family": self.family, "num_classes": self.num_classes,
                "base_width": self.base_width, "blocks": list(self.blocks),
                "num_conv": self.num_conv, "dropout_rate": self.dropout_rate,
                "fold_bn": self.fold_bn, "input_shape": list(self.frames_shape),
                "head_pool_size": self.head_pool_size and list(self.head_pool_size),
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


OVERRIDES = ("base_width", "num_conv", "blocks", "dropout_rate", "fold_bn", "input_shape",
             "head_pool_size", "name")


def create_model(name, num_classes, **overrides):
    """Build `name` (one of MODEL_NAMES) for `num_classes`.

    Overrides (for width/depth search): `base_width` (VoV3D c / X3D DIM_C1), `num_conv`
    (D(2+1)D units per T-OSA, VoV3D only), `blocks` (4 ints, blocks per stage s2..s5),
    `dropout_rate`, `fold_bn`, `input_shape` (T, H, W, 3; None for any), `head_pool_size`
    (None: global pooling; (t, h, w): the reference head's fixed window, e.g. (16, 7, 7) for
    16x224 training clips, which reproduces its multi-position output at larger test crops).
    """
    family = model_family(name)
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {name!r}; allowed: "
                         f"{', '.join(OVERRIDES)}")
    spec = dict(VARIANTS[name])
    if "num_conv" in overrides and not has_num_conv(family):
        raise ValueError(f"num_conv applies to VoV3D only, not {name!r}")
    spec.update(overrides)
    spec.setdefault("name", name)
    return VideoClassifier(num_classes=num_classes, **spec)
