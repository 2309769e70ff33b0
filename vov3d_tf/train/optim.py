"""The reference's optimizer step and LR schedules (docs/architecture.md#training-recipe).

    make_optimizer(train_cfg, model, steps_per_epoch)   the optimizer of `train.optimizer`
    make_schedule(train_cfg, steps_per_epoch)           the LR policy of `train.lr_policy`

The SGD step: PyTorch SGD (momentum, Nesterov, coupled L2 weight decay).

The paper trains with PySlowFast's `torch.optim.SGD` (architecture.md: training recipe):
momentum 0.9, Nesterov, dampening 0, and weight decay added to the gradient before momentum, on
every parameter whose official PyTorch name does not contain "bn". Per step, with learning rate
`lr`::

    g = grad + wd * w            (only for the decayed parameters)
    b = m * b + g                (the momentum buffer holds raw gradient sums, no LR inside)
    w = w - lr * (g + m * b)     (Nesterov; plain momentum: w = w - lr * b)

Keras' `SGD` keeps the LR inside its velocity (`v = m * v - lr * g`) and decays decoupled
(`w -= lr * wd * w`): the same step only while the LR is constant and the decay is zero.
`ReferenceSGD` is that PyTorch step as a Keras 3 optimizer (serializable, its momentum buffers
are ordinary optimizer variables in `tf.train.Checkpoint`s, wraps in a `LossScaleOptimizer`).

The LR: base LR x global batch / reference batch (the linear scaling rule), a linear warm-up,
then PySlowFast's `cosine` (`WarmupCosineDecay`) or `steps_with_relative_lrs`
(`WarmupStepsDecay`) policy, per optimizer step.

Which parameters are decayed comes from the official names (`vov3d_tf.model.convert.official_names`,
the converter's mapping), so the reference's naming quirk is reproduced: the BNs inside each
D(2+1)D's `nn.Sequential` are `...a.1` and `...c.1`, names without "bn", and *are* decayed
(80 of VoV3D-M's 134 BN layers), as are all biases (SE fc1/fc2, the classifier). In X3D every
BN is named `*_bn` and none is decayed (architecture.md: a.1/c.1 quirk).
"""
import math

import keras
import tensorflow as tf
from keras import ops

from vov3d_tf import _compat
from vov3d_tf.model.convert import official_names

__all__ = ["ReferenceSGD", "reference_decay_exclusions", "reference_sgd", "LinearWarmup",
           "WarmupCosineDecay", "WarmupStepsDecay", "scaled_learning_rate", "no_decay_variables",
           "make_schedule", "make_optimizer"]


def reference_decay_exclusions(model):
    """Paths of the trainable variables the reference does not decay (official name has "bn")."""
    names = official_names(model)
    trainable = {v.path for v in model.trainable_weights}
    return sorted(p for p, official in names.items() if p in trainable and "bn" in official)


@keras.saving.register_keras_serializable(package="vov3d_tf")
class ReferenceSGD(keras.optimizers.Optimizer):
    """`torch.optim.SGD(momentum, nesterov, dampening=0, weight_decay)` as a Keras optimizer.

    `weight_decay` is the coupled (L2) decay added to the gradient; `decay_exclude` lists the
    variable paths (`variable.path`) it is not applied to (see `reference_decay_exclusions`).
    The base class's decoupled `weight_decay` is not used.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=0.0,
                 decay_exclude=(), name="reference_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if float(weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if nesterov and not momentum:
            raise ValueError("Nesterov momentum requires momentum > 0 (as torch.optim.SGD)")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(weight_decay)
        self.decay_exclude = tuple(decay_exclude)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        excluded = set(self.decay_exclude)
        self._decays = [self.l2 > 0 and v.path not in excluded for v in variables]
        self.momentums = (self.add_optimizer_variables(variables, "momentum_buffer")
                          if self.momentum else [])

    def decays(self, variable):
        """Whether `variable` (one the optimizer was built for) gets weight decay."""
        return self._decays[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self._decays[index]:
            g = ops.add(g, ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        if self.momentum:
            m = ops.cast(self.momentum, variable.dtype)
            buf = self.momentums[index]
            self.assign(buf, ops.add(ops.multiply(buf, m), g))
            g = ops.add(g, ops.multiply(buf, m)) if self.nesterov else buf
        self.assign_sub(variable, ops.multiply(lr, g))

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.l2,
                      decay_exclude=list(self.decay_exclude))
        return config


def reference_sgd(model, learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-5):
    """`ReferenceSGD` for `model` with the reference's decayed-parameter set."""
    return ReferenceSGD(learning_rate, momentum=momentum, nesterov=nesterov,
                        weight_decay=weight_decay,
                        decay_exclude=reference_decay_exclusions(model) if weight_decay else ())


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A per-step LR policy (`_policy(step)`, the subclass's) after PySlowFast's linear warm-up:
    from `warmup_start_lr` at step 0 to the policy's own value at `warmup_steps`."""

    warmup_steps = 0
    warmup_start_lr = 0.0

    def _policy(self, step):
        raise NotImplementedError

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = self._policy(step)
        if self.warmup_steps <= 0:
            return lr
        end = self._policy(tf.constant(float(self.warmup_steps)))
        warm = self.warmup_start_lr + (end - self.warmup_start_lr) * step / self.warmup_steps
        return tf.where(step < self.warmup_steps, warm, lr)


@keras.saving.register_keras_serializable(package="vov3d_tf")
class WarmupStepsDecay(LinearWarmup):
    """PySlowFast's `steps_with_relative_lrs` policy with linear warm-up, per step::

        lr(s) = peak * relative[i]      for the last i with lr_steps[i] <= s / steps_per_epoch
        lr(s) = start + (lr(warmup) - start) * s / warmup                     s <  warmup

    `lr_steps` are epochs (fractional allowed) and start at 0, as the reference's
    `SOLVER.STEPS`; e.g. the K400 -> SSv2 fine-tune: peak 0.05, steps [0, 35, 45], relative
    [1, 0.1, 0.01], 50 epochs.
    """

    def __init__(self, peak_lr, steps_per_epoch, lr_steps, lr_relative, warmup_steps=0,
                 warmup_start_lr=0.0):
        if len(lr_steps) != len(lr_relative) or not lr_steps or lr_steps[0] != 0:
            raise ValueError(f"lr_steps must start at 0 and match lr_relative in length, got "
                             f"{list(lr_steps)} and {list(lr_relative)}")
        self.peak_lr = float(peak_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.lr_steps = [float(e) for e in lr_steps]
        self.lr_relative = [float(r) for r in lr_relative]
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_lr)

    def _policy(self, step):
        epoch = step / float(self.steps_per_epoch)
        index = tf.reduce_sum(tf.cast(epoch >= tf.constant(self.lr_steps[1:] or [1e30]),
                                      tf.int32)) if len(self.lr_steps) > 1 else 0
        return self.peak_lr * tf.gather(tf.constant(self.lr_relative), index)

    def get_config(self):
        return {"peak_lr": self.peak_lr, "steps_per_epoch": self.steps_per_epoch,
                "lr_steps": self.lr_steps, "lr_relative": self.lr_relative,
                "warmup_steps": self.warmup_steps, "warmup_start_lr": self.warmup_start_lr}


@keras.saving.register_keras_serializable(package="vov3d_tf")
class WarmupCosineDecay(LinearWarmup):
    """PySlowFast's cosine policy with linear warm-up, per step
    (architecture.md: training recipe)::

        lr(s) = 0.5 * peak * (1 + cos(pi * s / total))                       s >= warmup
        lr(s) = start + (lr(warmup) - start) * s / warmup                     s <  warmup

    The cosine runs over the whole run (warm-up included) and ends at 0, as in the reference.
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, warmup_start_lr=0.0):
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_lr)

    def _policy(self, step):
        frac = tf.minimum(step / float(max(self.total_steps, 1)), 1.0)
        return 0.5 * self.peak_lr * (1.0 + tf.cos(math.pi * frac))

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_start_lr": self.warmup_start_lr}


def scaled_learning_rate(train_cfg):
    """Linear scaling rule: base LR at the reference batch, scaled to the global batch."""
    return train_cfg.base_lr * train_cfg.batch_size / train_cfg.lr_reference_batch


def no_decay_variables(model):
    """BatchNorm gamma/beta and every bias: excluded from weight decay."""
    out = []
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            out += layer.trainable_weights
        else:
            out += [w for w in layer.trainable_weights if w.name == "bias"]
    return out


def make_schedule(train_cfg, steps_per_epoch):
    """The LR schedule of `train.lr_policy`, per step: peak = `scaled_learning_rate`, a warm-up
    of `warmup_epochs` rounded to whole steps from `warmup_start_lr`."""
    t = train_cfg
    warmup = dict(peak_lr=scaled_learning_rate(t),
                  warmup_steps=int(round(t.warmup_epochs * steps_per_epoch)),
                  warmup_start_lr=t.warmup_start_lr)
    if t.lr_policy == "cosine":
        return WarmupCosineDecay(total_steps=t.epochs * steps_per_epoch, **warmup)
    return WarmupStepsDecay(steps_per_epoch=steps_per_epoch, lr_steps=tuple(t.lr_steps),
                            lr_relative=tuple(t.lr_relative), **warmup)


def make_optimizer(train_cfg, model, steps_per_epoch):
    """SGD Nesterov with the warm-up schedule, in the form `train.optimizer` names.

    `reference`: `ReferenceSGD`, torch.optim.SGD's step with coupled L2 decay
    (`g += wd * w` before momentum) on every parameter whose official name has no "bn"
    (biases and the D(2+1)D `a.1`/`c.1` BNs included). `keras`: Keras' SGD, decoupled decay
    (`w -= lr * wd * w`) on kernels only. Build `model` (and freeze it) before calling this.
    """
    schedule = make_schedule(train_cfg, steps_per_epoch)
    if train_cfg.optimizer == "reference":
        optimizer = reference_sgd(model, schedule, momentum=train_cfg.momentum,
                                  nesterov=train_cfg.nesterov,
                                  weight_decay=train_cfg.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=train_cfg.momentum,
                                         nesterov=train_cfg.nesterov,
                                         weight_decay=train_cfg.weight_decay or None)
        if train_cfg.weight_decay:
            optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    if train_cfg.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
