"""Custom layers and block functions of VoV3D / X3D, channels-last `(batch, T, H, W, C)`.

Only the convolutions are real custom layers: they map the 3D (depthwise) convolutions of the
reference onto TensorFlow's fast 2D kernels (Keras `Conv3D(groups=C)` runs through a slow XLA
path on CPU) and pad exactly like PyTorch (symmetric padding, also for stride 2, where TF's
"same" would pad (0, 1) instead of (1, 1)). Blocks are plain `apply_*` functions.

Every conv here may carry a bias and a fused activation: the trainable model follows each conv with
a BatchNormalization, the inference model (`vov3d_tf.model.inference.fold_batchnorm`) folds that BN
into the conv's kernel and bias, and the activation rides along so TF's grappler can fuse
MatMul/Conv + BiasAdd + Relu into one kernel.
"""
import contextlib
import contextvars
import functools
import math
import operator

import keras
import tensorflow as tf

BN_EPSILON = 1e-5  # PyTorch default; the parity fixture has running variances below 1e-3
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 in Keras' convention

_PAIRWISE_SUMS = contextvars.ContextVar("vov3d_tf_pairwise_sums", default=False)


@contextlib.contextmanager
def pairwise_sums():
    """While tracing inside this context, the T-OSA aggregation sums its per-input matmuls as a
    chain of two-input adds instead of one AddN.

    For LiteRT conversion (`vov3d_tf.deploy.lite`): TFLite has no integer ADD_N, so an int8 model
    would run each aggregation in float32 between DEQUANTIZE ops, while an integer ADD exists (and
    XNNPACK runs it). TensorFlow itself keeps AddN, one pass over memory instead of several.
    """
    token = _PAIRWISE_SUMS.set(True)
    try:
        yield
    finally:
        _PAIRWISE_SUMS.reset(token)


def _activation(name):
    if name in (None, "linear"):
        return None
    return {"relu": tf.nn.relu, "swish": tf.nn.silu, "sigmoid": tf.sigmoid}[name]


def _dims(x):
    """Shape as a list: static ints where known, dynamic scalars elsewhere.

    Static sizes let grappler fold the reshapes below; explicit products instead of -1 keep
    them valid for empty batches.
    """
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape)]


def _prod(dims):
    out = dims[0]
    for d in dims[1:]:
        out = out * d
    return out


def torch_fan_out_normal(fan_out):
    """He-normal with PyTorch's fan_out (out_channels * kernel volume, groups ignored)."""
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / fan_out))


class _ConvBase(keras.layers.Layer):
    """Shared bias / activation handling of the convolutions below."""

    def __init__(self, use_bias=False, activation=None, **kwargs):
        super().__init__(**kwargs)
        # XLA's CPU depthwise convolution is ~10x slower than TF's native kernels (measured on
        # this model), so `compile(jit_compile="auto")` must not pick XLA; pass
        # jit_compile=True explicitly where XLA is measured faster (e.g. on a GPU).
        self.supports_jit = False
        if activation not in (None, "linear", "relu", "swish", "sigmoid"):
            raise ValueError(f"{self.name}: activation must be None, 'relu', 'swish' or "
                             f"'sigmoid', got {activation!r}")
        self.use_bias = use_bias
        self.activation = activation

    def _add_bias(self, channels):
        self.bias = (self.add_weight(name="bias", shape=(channels,), initializer="zeros")
                     if self.use_bias else None)

    def _finish(self, y):
        if self.bias is not None:
            y = tf.nn.bias_add(y, tf.cast(self.bias, y.dtype))
        act = _activation(self.activation)
        return act(y) if act is not None else y

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias, "activation": self.activation}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class PointwiseConv3D(_ConvBase):
    """1x1x1 convolution as one matmul over all positions; `strides` subsamples H and W
    (indices 0, s, 2s, ... as a strided 1x1x1 conv with padding 0 does in PyTorch).

    Works on inputs of any rank >= 2 (also the pooled `(batch, C)` features of the head).
    Kernel `(Cin, Cout)` = PyTorch `w[:, :, 0, 0, 0].T`.
    """

    def __init__(self, filters, strides=1, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or torch_fan_out_normal(self.filters))

    def build(self, input_shape):
        cin = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(cin, self.filters),
                                      initializer=self.kernel_initializer)
        self._add_bias(self.filters)

    def call(self, x):
        kernel = tf.cast(self.kernel, x.dtype)
        if self.strides != 1:
            # A strided 1x1 Conv2D on frames subsamples inside the conv kernel; a separate
            # strided slice of a 5-D tensor was 10% of the whole network's time.
            d = _dims(x)
            frames = tf.reshape(x, [d[0] * d[1]] + d[2:])
            s = self.strides
            y = tf.nn.conv2d(frames, kernel[None, None], [1, s, s, 1], "VALID")
            # Sizes from the stride arithmetic, not from y: oneDNN's conv returns its input
            # unchanged for an empty batch.
            out = [(d[2] - 1) // s + 1, (d[3] - 1) // s + 1, self.filters]
            y = self._finish(tf.reshape(y, [d[0] * d[1]] + out))
            return tf.reshape(y, d[:2] + out)
        d = _dims(x)
        y = tf.matmul(tf.reshape(x, [_prod(d[:-1]), d[-1]]), kernel)
        y = self._finish(y)
        return tf.reshape(y, d[:-1] + [self.filters])

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.strides != 1:
            for axis in (2, 3):
                if shape[axis] is not None:
                    shape[axis] = (shape[axis] - 1) // self.strides + 1
        return tuple(shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class OneShotAggregation(_ConvBase):
    """T-OSA aggregation: 1x1x1 conv over the channel-concatenation of its inputs.

    Computed as a sum of one matmul per input (kernel row blocks), which never materialises
    the concatenated tensor: TF's concat along a short channel axis is a slow strided copy.
    Kernel `(sum Cin, Cout)`, identical to a PointwiseConv3D on the concatenation. The sum is
    one AddN, or a chain of adds when traced inside `pairwise_sums()` (LiteRT conversion).
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)

    def build(self, input_shapes):
        self.splits = [int(s[-1]) for s in input_shapes]
        self.kernel = self.add_weight(name="kernel", shape=(sum(self.splits), self.filters),
                                      initializer=torch_fan_out_normal(self.filters))
        self._add_bias(self.filters)

    def call(self, inputs):
        d = _dims(inputs[0])
        n = _prod(d[:-1])
        kernel = tf.cast(self.kernel, inputs[0].dtype)
        parts = tf.split(kernel, self.splits, axis=0)
        terms = [tf.matmul(tf.reshape(x, [n, c]), k)
                 for x, c, k in zip(inputs, self.splits, parts)]
        y = functools.reduce(operator.add, terms) if _PAIRWISE_SUMS.get() else tf.add_n(terms)
        y = self._finish(y)
        return tf.reshape(y, d[:-1] + [self.filters])

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0][:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _symmetric_padding(x, pad, stride, axis, explicit_ok=True):
    """PyTorch-style padding for a k = 2 * pad + 1 conv along `axis` of a 4-D tensor.

    Returns (input, padding argument). Stride 1: "SAME" pads (pad, pad) too. Stride > 1: TF's
    "SAME" may pad (pad - 1, pad + 1), so use the op's EXPLICIT padding; where the conv is
    followed by a bias (`explicit_ok=False`), pad with tf.pad and use "VALID" instead, since
    oneDNN builds of TF abort on a fused depthwise conv + bias with EXPLICIT padding.
    """
    if pad == 0:
        return x, "VALID"
    if stride == 1:
        return x, "SAME"
    pads = [[0, 0]] * 4
    for a in axis:
        pads[a] = [pad, pad]
    return (x, pads) if explicit_ok else (tf.pad(x, pads), "VALID")


def _spatial_out(size, kernel, stride):
    pad = kernel // 2
    return None if size is None else (size + 2 * pad - kernel) // stride + 1


@keras.saving.register_keras_serializable(package="vov3d_tf")
class SpatialConv(_ConvBase):
    """1 x k x k convolution (dense or depthwise) on frames folded into the batch.

    Pads k//2 on each side of H and W like PyTorch, so strided convs sample the same grid as
    the reference. `depthwise=True`: kernel `(k, k, C, 1)` = PyTorch
    `w[:, 0, 0].transpose(1, 2, 0)[..., None]`;
    dense: kernel `(k, k, Cin, Cout)` = `w[:, :, 0].transpose(2, 3, 1, 0)`.
    """

    def __init__(self, kernel_size=3, strides=1, depthwise=True, filters=None, **kwargs):
        super().__init__(**kwargs)
        if not depthwise and filters is None:
            raise ValueError(f"{self.name}: a dense SpatialConv needs `filters`")
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)
        self.filters = None if filters is None else int(filters)

    def build(self, input_shape):
        cin, k = input_shape[-1], self.kernel_size
        if self.depthwise:
            shape, out = (k, k, cin, 1), cin
        else:
            shape, out = (k, k, cin, self.filters), self.filters
        self.kernel = self.add_weight(name="kernel", shape=shape,
                                      initializer=torch_fan_out_normal(out * k * k))
        self._add_bias(out)

    def call(self, x):
        d = _dims(x)
        frames = tf.reshape(x, [d[0] * d[1]] + d[2:])
        frames, padding = _symmetric_padding(frames, self.kernel_size // 2, self.strides, (1, 2),
                                             explicit_ok=not self.use_bias)
        strides = [1, self.strides, self.strides, 1]
        kernel = tf.cast(self.kernel, x.dtype)
        if self.depthwise:
            y = tf.nn.depthwise_conv2d(frames, kernel, strides, padding)
        else:
            y = tf.nn.conv2d(frames, kernel, strides, padding)
        # Output size from the padding arithmetic, not from y: oneDNN's convs return their
        # input unchanged for an empty batch.
        k, s, p = self.kernel_size, self.strides, self.kernel_size // 2
        out = [(d[2] + 2 * p - k) // s + 1, (d[3] + 2 * p - k) // s + 1,
               d[4] if self.depthwise else self.filters]
        y = self._finish(tf.reshape(y, [d[0] * d[1]] + out))
        return tf.reshape(y, d[:2] + out)

    def compute_output_shape(self, input_shape):
        b, t, h, w, c = input_shape
        k, s = self.kernel_size, self.strides
        return (b, t, _spatial_out(h, k, s), _spatial_out(w, k, s),
                c if self.depthwise else self.filters)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "depthwise": self.depthwise, "filters": self.filters}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class TemporalDepthwiseConv(_ConvBase):
    """k x 1 x 1 depthwise convolution over time, zero-padded k//2 frames on each side.

    Runs as a `(k, 1)` depthwise 2D conv on `(batch, T, H*W, C)`. Kernel `(k, 1, C, 1)` =
    PyTorch `w[:, 0, :, 0, 0].T[:, None, :, None]`.
    """

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        c, k = input_shape[-1], self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, 1, c, 1),
                                      initializer=torch_fan_out_normal(c * k))
        self._add_bias(c)

    def call(self, x):
        d = _dims(x)
        seq = tf.reshape(x, [d[0], d[1], d[2] * d[3], d[4]])
        # Stride 1 and an odd kernel: "SAME" is the symmetric k//2 zero padding of PyTorch.
        y = tf.nn.depthwise_conv2d(seq, tf.cast(self.kernel, x.dtype), [1, 1, 1, 1], "SAME")
        return tf.reshape(self._finish(y), d)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class DepthwiseConv3D(_ConvBase):
    """Full 3 x 3 x 3 channelwise convolution (X3D), padding (1, 1, 1), spatial stride s.

    Sum of three 3x3 depthwise 2D convs, one per temporal tap, on zero-padded shifted frames.
    Kernel `(3, 3, 3, C)` = PyTorch `w[:, 0].transpose(1, 2, 3, 0)` (t, h, w, C).
    """

    def __init__(self, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, 3, c),
                                      initializer=torch_fan_out_normal(27 * c))
        self._add_bias(c)

    def call(self, x):
        d = _dims(x)
        b, t = d[0], d[1]
        # Time is always padded here; H and W too when strided (see _symmetric_padding).
        hw = 1 if self.strides > 1 else 0
        padded = tf.pad(x, [[0, 0], [1, 1], [hw, hw], [hw, hw], [0, 0]])
        padding = "VALID" if hw else "SAME"
        frame_shape = _dims(padded)[2:]
        kernel = tf.cast(self.kernel, x.dtype)
        strides = [1, self.strides, self.strides, 1]
        y = None
        for dt in range(3):  # output frame t reads input frame t + dt - 1
            frames = tf.reshape(padded[:, dt:dt + t], [b * t] + frame_shape)
            tap = tf.nn.depthwise_conv2d(frames, kernel[dt][..., None], strides, padding)
            y = tap if y is None else y + tap
        s = self.strides
        out = [(d[2] - 1) // s + 1, (d[3] - 1) // s + 1, d[4]]  # (see SpatialConv.call)
        y = self._finish(tf.reshape(y, [b * t] + out))
        return tf.reshape(y, [b, t] + out)

    def compute_output_shape(self, input_shape):
        b, t, h, w, c = input_shape
        return (b, t, _spatial_out(h, 3, self.strides), _spatial_out(w, 3, self.strides), c)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class GlobalAveragePool(keras.layers.Layer):
    """Mean over (T, H, W); `keepdims` keeps the 5-D shape (for SE gates)."""

    def __init__(self, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.keepdims = bool(keepdims)

    def call(self, x):
        return tf.reduce_mean(x, axis=(1, 2, 3), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return (input_shape[0], 1, 1, 1, input_shape[-1])
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


def _window_mean(x, axis, window):
    """Mean of every `window` consecutive entries along `axis` (stride 1, no padding); a window
    longer than the axis is clipped to it. Cumulative sums, so the axis length may be dynamic."""
    n = tf.shape(x)[axis]
    k = tf.minimum(window, n)
    paddings = [[1, 0] if a == axis else [0, 0] for a in range(len(x.shape))]
    cs = tf.pad(tf.cumsum(x, axis=axis), paddings)  # cs[i] = sum of the first i entries
    upper = tf.gather(cs, tf.range(k, n + 1), axis=axis)
    lower = tf.gather(cs, tf.range(0, n - k + 1), axis=axis)
    return (upper - lower) / tf.cast(k, x.dtype)


@keras.saving.register_keras_serializable(package="vov3d_tf")
class WindowAveragePool(keras.layers.Layer):
    """Average over every `pool_size` = (t, h, w) window, stride 1, no padding: the reference
    head's fixed `AvgPool3d` (architecture.md: head). A window larger
    than the feature map is clipped to it (the reference would fail there), so at or below the
    training clip geometry this is global pooling with one output position."""

    def __init__(self, pool_size, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = tuple(int(v) for v in pool_size)

    def call(self, x):
        for axis, window in zip((1, 2, 3), self.pool_size):
            x = _window_mean(x, axis, window)
        return x

    def compute_output_shape(self, input_shape):
        dims = [None if n is None else n - min(k, n) + 1
                for n, k in zip(input_shape[1:4], self.pool_size)]
        return (input_shape[0], *dims, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size)}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class MeanOfSoftmaxes(keras.layers.Layer):
    """Per-position logits (B, T', H', W', K) -> (B, K): the logits themselves when there is one
    position, else log(mean over positions of softmax), whose softmax is the reference head's
    evaluation output (the average of the positions' class
    probabilities, docs/architecture.md: the head)."""

    def call(self, x):
        flat = tf.reshape(x, tf.stack([tf.shape(x)[0], -1, tf.shape(x)[-1]]))
        positions = tf.shape(flat)[1]

        def mean_of_softmaxes():
            log_p = tf.nn.log_softmax(flat, axis=-1)
            return (tf.reduce_logsumexp(log_p, axis=1)
                    - tf.math.log(tf.cast(positions, flat.dtype)))
        return tf.cond(tf.equal(positions, 1), lambda: flat[:, 0], mean_of_softmaxes)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="vov3d_tf")
class BatchNorm(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose training step runs TF's fused kernel.

    Keras 3 normalises with separate moments / subtract / scale ops and keeps several
    activation-sized temporaries for the backward pass; `FusedBatchNormV3` keeps one. Same
    weights, same moving-average update (PyTorch momentum 0.1 == Keras 0.9); inference, masks
    and renorm use the parent implementation.

    `synchronized=True` (SyncBN) computes the batch statistics over all replicas with the same
    numbers as the fused kernel: a two-pass variance (mean first, then the mean squared
    deviation from it, not E[x^2] - E[x]^2) for normalising, and the unbiased variance
    (x n / (n - 1), n = elements per channel over all replicas) for the moving average, as
    PyTorch's SyncBatchNorm. Keras' own synchronized BN uses the one-pass formula and the
    biased variance.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm
                or self.axis not in (-1, len(inputs.shape) - 1)):
            return super().call(inputs, training=training, mask=mask)
        if self.synchronized:
            return self._synchronized_call(inputs)
        channels = inputs.shape[-1]
        x = tf.reshape(inputs, (-1, 1, 1, channels))
        ones = tf.ones((channels,), tf.float32)
        y, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, tf.float32) if self.scale else ones,
            offset=tf.cast(self.beta, tf.float32) if self.center else tf.zeros_like(ones),
            mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m
                                + tf.cast(mean, self.moving_mean.dtype) * (1 - m))
        self.moving_variance.assign(self.moving_variance * m
                                    + tf.cast(var, self.moving_variance.dtype) * (1 - m))
        return tf.cast(tf.reshape(y, _dims(inputs)), self.compute_dtype)

    def _synchronized_call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        axes = list(range(len(inputs.shape) - 1))
        ctx = tf.distribute.get_replica_context()
        local_n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        total, n = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                  [tf.reduce_sum(x, axis=axes), local_n])
        mean = total / n
        centered = x - mean
        var = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                             tf.reduce_sum(tf.square(centered), axis=axes)) / n
        y = centered * tf.math.rsqrt(var + self.epsilon)
        if self.scale:
            y = y * tf.cast(self.gamma, tf.float32)
        if self.center:
            y = y + tf.cast(self.beta, tf.float32)
        unbiased = var * n / tf.maximum(n - 1.0, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m
                                + tf.cast(tf.stop_gradient(mean), self.moving_mean.dtype) * (1 - m))
        self.moving_variance.assign(self.moving_variance * m
                                    + tf.cast(tf.stop_gradient(unbiased),
                                              self.moving_variance.dtype) * (1 - m))
        return tf.cast(y, self.compute_dtype)


# ----------------------------------------------------------------------------------------------
# Block functions. `fold_bn=True` builds the inference form: no BatchNormalization layers, the
# conv before each BN gets a bias instead. The BN after conv `X` is always named `X + "_bn"`,
# which is how `vov3d_tf.model.inference.fold_batchnorm` pairs them.
# ----------------------------------------------------------------------------------------------

def apply_conv_bn(x, conv_cls, name, *, fold_bn, activation=None, zero_gamma=False, **conv_kw):
    """conv -> BN -> activation (trainable) or conv(+bias, activation) (folded)."""
    if fold_bn:
        return conv_cls(name=name, use_bias=True, activation=activation, **conv_kw)(x)
    x = conv_cls(name=name, **conv_kw)(x)
    x = BatchNorm(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name + "_bn",
        gamma_initializer="zeros" if zero_gamma else "ones")(x)
    return keras.layers.Activation(activation, name=name + "_act")(x) if activation else x


def round_width(width, multiplier, divisor=8):
    """X3D's width rounding: to a multiple of 8, at least 8, never below 90% of the target."""
    v = width * multiplier
    r = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return r + divisor if r < 0.9 * v else r


def se_width(channels, ratio=0.0625, divisor=8):
    """SE bottleneck width: round_width(C * 1/16) (architecture.md: D(2+1)D)."""
    return round_width(channels, ratio, divisor)


def apply_squeeze_excite(x, name):
    """SE: global mean -> 1x1x1 (+bias) -> ReLU -> 1x1x1 (+bias) -> sigmoid -> scale."""
    channels = x.shape[-1]
    s = GlobalAveragePool(keepdims=True, name=name + "_pool")(x)
    s = PointwiseConv3D(se_width(channels), use_bias=True, activation="relu",
                        name=name + "_fc1")(s)
    s = PointwiseConv3D(channels, use_bias=True, activation="sigmoid", name=name + "_fc2")(s)
    return keras.layers.Multiply(name=name + "_scale")([x, s])


def apply_stem(x, width, *, fold_bn, name="stem"):
    """conv_xy 1x3x3 stride (1,2,2) -> depthwise 5x1x1 -> BN -> ReLU
    (architecture.md: the network)."""
    x = SpatialConv(3, strides=2, depthwise=False, filters=width, name=name + "_conv_xy")(x)
    return apply_conv_bn(x, TemporalDepthwiseConv, name + "_conv_t", fold_bn=fold_bn,
                         activation="relu", kernel_size=5)


def apply_d2plus1d_unit(x, inner, *, stride, use_se, fold_bn, name):
    """D(2+1)D bottleneck (architecture.md: D(2+1)D)::

        x -> 1x1x1 (Ci) BN ReLU -> dw 1x3x3 /s -> dw 3x1x1 BN -> [SE] -> Swish
          -> 1x1x1 (Ci/2) BN -> (+ x if shapes allow) -> ReLU
    """
    cin, cout = x.shape[-1], inner // 2
    y = apply_conv_bn(x, PointwiseConv3D, name + "_a", fold_bn=fold_bn, activation="relu",
                      filters=inner)
    y = SpatialConv(3, strides=stride, depthwise=True, name=name + "_b1")(y)
    y = apply_conv_bn(y, TemporalDepthwiseConv, name + "_b2", fold_bn=fold_bn, kernel_size=3)
    if use_se:
        y = apply_squeeze_excite(y, name + "_se")
    y = keras.layers.Activation("swish", name=name + "_swish")(y)
    y = apply_conv_bn(y, PointwiseConv3D, name + "_c", fold_bn=fold_bn, filters=cout)
    if cin == cout and stride == 1:
        y = keras.layers.Add(name=name + "_add")([y, x])
    return keras.layers.ReLU(name=name + "_relu")(y)


def apply_shortcut(x, width, stride, *, fold_bn, name):
    """Projection (1x1x1 /s + BN) when width or resolution changes, else identity."""
    if x.shape[-1] == width and stride == 1:
        return x
    return apply_conv_bn(x, PointwiseConv3D, name + "_shortcut", fold_bn=fold_bn,
                         filters=width, strides=stride)


def apply_t_osa_block(x, inner, width, num_conv, *, stride, fold_bn, name):
    """Residual T-OSA block (architecture.md: T-OSA)::

        x -> unit_0 -> unit_1 -> ... -> unit_{n-1}      (each sees a longer temporal field)
        concat([x (stride 1 only), out_0, ..., out_{n-1}]) -> 1x1x1 -> BN (zero gamma)
        ReLU(shortcut(x) + that)
    """
    outputs = [x] if stride == 1 else []
    y = x
    for i in range(num_conv):
        y = apply_d2plus1d_unit(y, inner, stride=stride if i == 0 else 1, use_se=i % 2 == 0,
                                fold_bn=fold_bn, name=f"{name}_u{i}")
        outputs.append(y)
    agg = apply_conv_bn(outputs, OneShotAggregation, name + "_agg", fold_bn=fold_bn,
                        filters=width, zero_gamma=True)
    shortcut = apply_shortcut(x, width, stride, fold_bn=fold_bn, name=name)
    out = keras.layers.Add(name=name + "_add")([shortcut, agg])
    return keras.layers.ReLU(name=name + "_relu")(out)


def apply_x3d_block(x, inner, width, *, stride, use_se, fold_bn, name):
    """X3D bottleneck with residual (docs/architecture.md#x3d-m-and-x3d-l-the-papers-baselines)::

        x -> 1x1x1 (Ci) BN ReLU -> dw 3x3x3 /s BN -> [SE] -> Swish -> 1x1x1 (Co) BN (zero gamma)
        ReLU(shortcut(x) + that)
    """
    y = apply_conv_bn(x, PointwiseConv3D, name + "_a", fold_bn=fold_bn, activation="relu",
                      filters=inner)
    y = apply_conv_bn(y, DepthwiseConv3D, name + "_b", fold_bn=fold_bn, strides=stride)
    if use_se:
        y = apply_squeeze_excite(y, name + "_se")
    y = keras.layers.Activation("swish", name=name + "_swish")(y)
    y = apply_conv_bn(y, PointwiseConv3D, name + "_c", fold_bn=fold_bn, filters=width,
                      zero_gamma=True)
    shortcut = apply_shortcut(x, width, stride, fold_bn=fold_bn, name=name)
    out = keras.layers.Add(name=name + "_add")([shortcut, y])
    return keras.layers.ReLU(name=name + "_relu")(out)


def apply_head(x, conv5_width, lin5_width, num_classes, *, dropout_rate, fold_bn, pool_size=None,
               name="head"):
    """X3D head (architecture.md: head)::

        1x1x1 (conv_5) BN ReLU -> mean over T,H,W -> linear (lin_5, no bias) ReLU
          -> dropout -> linear (projection, bias) -> logits

    With `pool_size` (t, h, w) the mean is the reference's fixed-window average instead (stride 1)
    and lin_5 / projection run at every window position; several positions (a test crop larger
    than the training crop) give log(mean of the positions' softmaxes), see `MeanOfSoftmaxes`.
    """
    x = apply_conv_bn(x, PointwiseConv3D, name + "_conv_5", fold_bn=fold_bn, activation="relu",
                      filters=conv5_width)
    if pool_size is None:
        x = GlobalAveragePool(name=name + "_pool")(x)
    else:
        x = WindowAveragePool(pool_size, name=name + "_pool")(x)
    x = PointwiseConv3D(lin5_width, activation="relu", name=name + "_lin_5")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name=name + "_dropout")(x)
    x = PointwiseConv3D(num_classes, use_bias=True,
                        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        name=name + "_projection")(x)
    if pool_size is not None:
        x = MeanOfSoftmaxes(name=name + "_positions")(x)
    return keras.layers.Activation("linear", dtype="float32", name="logits")(x)
