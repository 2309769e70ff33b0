"""The reference optimizer (`vov3d_tf.train.optim`): its step against the PyTorch formulas written out
by hand, the decayed-parameter set (architecture.md: training recipe and architecture.md: a.1/c.1 quirk), serialization."""
import numpy as np
import pytest

import vov3d_tf
from vov3d_tf.model.convert import official_names
from vov3d_tf.train.optim import ReferenceSGD, reference_sgd


def test_decayed_set_is_the_reference_quirk():
    model = vov3d_tf.create_model("vov3d_m", 174)
    opt = reference_sgd(model, 0.1)
    opt.build(model.trainable_variables)
    names = official_names(model)
    decayed = [v for v in model.trainable_variables if opt.decays(v)]
    assert len(decayed) == 434  # architecture.md: training recipe: every tensor whose name has no "bn"
    assert all("bn" not in names[v.path] for v in decayed)
    bn_layers = {names[v.path].rpartition(".")[0] for v in decayed if "_bn/" in v.path}
    assert len(bn_layers) == 80 and all(n.endswith((".a.1", ".c.1")) for n in bn_layers)
    assert sum(v.numpy().size for v in decayed if "_bn/" in v.path) == 19_800
    assert any(opt.decays(v) for v in model.trainable_variables if v.path.endswith("/bias"))
    x3d = vov3d_tf.create_model("x3d_m", 400)
    opt = reference_sgd(x3d, 0.1)
    opt.build(x3d.trainable_variables)
    bn = [v for v in x3d.trainable_variables if "_bn/" in v.path]
    assert len(bn) == 168 and not any(opt.decays(v) for v in bn)  # architecture.md: a.1/c.1 quirk: every BN excluded
    assert all(opt.decays(v) for v in x3d.trainable_variables if "_bn/" not in v.path)


def test_serialization_round_trip():
    import keras
    opt = ReferenceSGD(0.05, momentum=0.8, nesterov=False, weight_decay=1e-4,
                       decay_exclude=["a/gamma"])
    back = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(back, ReferenceSGD)
    assert (back.momentum, back.nesterov, back.l2, back.decay_exclude) == \
        (0.8, False, 1e-4, ("a/gamma",))


LRS = [0.1, 0.2, 0.3, 0.4]  # a learning rate that changes every step (warm-up)


def _schedule():
    import keras
    return keras.optimizers.schedules.PiecewiseConstantDecay([0, 1, 2], LRS)


def _grads(step):
    rng = np.random.default_rng(step)
    return [rng.standard_normal((3, 2)).astype(np.float32),
            rng.standard_normal((2,)).astype(np.float32)]


def _by_hand(w, b, steps, nesterov=True, m=0.9, wd=0.01):
    """torch.optim.SGD's step written out (dampening 0); `b` is not decayed."""
    params, bufs = [w.astype(np.float64), b.astype(np.float64)], [0.0, 0.0]
    for s in range(steps):
        for i, g in enumerate(_grads(s)):
            g = g + (wd * params[i] if i == 0 else 0.0)
            bufs[i] = m * bufs[i] + g
            params[i] = params[i] - LRS[s] * ((g + m * bufs[i]) if nesterov else bufs[i])
    return params


def _variables():
    import keras
    rng = np.random.default_rng(42)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    b0 = rng.standard_normal((2,)).astype(np.float32)
    return w0, b0, keras.Variable(w0, name="w"), keras.Variable(b0, name="b")


@pytest.mark.parametrize("nesterov", [True, False])
def test_step_is_torch_sgd_with_changing_lr(nesterov):
    w0, b0, w, b = _variables()
    opt = ReferenceSGD(_schedule(), momentum=0.9, nesterov=nesterov, weight_decay=0.01,
                       decay_exclude=[b.path])
    for s in range(4):
        opt.apply(_grads(s), [w, b])
    want = _by_hand(w0, b0, 4, nesterov)
    np.testing.assert_allclose(w.numpy(), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), want[1], rtol=1e-5, atol=1e-6)
    assert opt.decays(w) and not opt.decays(b)


def test_checkpoint_resume_and_loss_scaling_give_the_same_steps(tmp_path):
    import keras
    import tensorflow as tf
    want = _by_hand(*_variables()[:2], 4)
    w0, b0, w, b = _variables()
    opt = ReferenceSGD(_schedule(), weight_decay=0.01, decay_exclude=[b.path])
    for s in range(2):
        opt.apply(_grads(s), [w, b])
    path = tf.train.Checkpoint(optimizer=opt, w=w.value, b=b.value).save(str(tmp_path / "c"))
    # a fresh optimizer, wrapped for mixed precision, restored mid-run: momentum and step count
    _, _, w2, b2 = _variables()
    inner = ReferenceSGD(_schedule(), weight_decay=0.01, decay_exclude=[b2.path])
    inner.build([w2, b2])
    tf.train.Checkpoint(optimizer=inner, w=w2.value, b=b2.value).restore(path) \
        .assert_existing_objects_matched()
    assert int(inner.iterations.numpy()) == 2
    lso = keras.optimizers.LossScaleOptimizer(inner)
    lso.build([w2, b2])
    for s in range(2, 4):
        scale = float(lso.dynamic_scale.numpy())
        lso.apply([g * scale for g in _grads(s)], [w2, b2])
    np.testing.assert_allclose(w2.numpy(), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b2.numpy(), want[1], rtol=1e-5, atol=1e-6)
