"""The reference head's fixed-window pooling option (docs/architecture.md#the-head-and-head_pool_size): `head_pool_size`."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import vov3d_tf


def _small(**kw):
    return vov3d_tf.create_model("vov3d_m", 5, base_width=8, blocks=(1, 1, 1, 1), num_conv=2,
                                 **kw)


def _reference_head(model, x):
    """numpy: conv_5 features -> every (2, 2, 2) window, stride 1 -> lin_5 ReLU -> projection ->
    mean of the positions' softmaxes (the reference's eval output)."""
    feats = keras.Model(model.input, model.get_layer("head_conv_5_bn").output)(x).numpy()
    feats = np.maximum(feats, 0.0)
    lin5 = model.get_layer("head_lin_5").get_weights()[0]
    proj_w, proj_b = model.get_layer("head_projection").get_weights()
    b, t, h, w, _ = feats.shape
    probs = []
    for i in range(t - 1):
        for j in range(h - 1):
            for k in range(w - 1):
                v = feats[:, i:i + 2, j:j + 2, k:k + 2].mean(axis=(1, 2, 3))
                z = np.maximum(v @ lin5.reshape(lin5.shape[-2:]), 0.0) @ \
                    proj_w.reshape(proj_w.shape[-2:]) + proj_b
                e = np.exp(z - z.max(-1, keepdims=True))
                probs.append(e / e.sum(-1, keepdims=True))
    return np.mean(probs, axis=0), len(probs)


def test_window_pooling_matches_the_reference_at_a_larger_crop():
    # (2, 2, 2) windows on an (8, 3, 4) feature map (8 frames, 96x128 input; time is not
    # downsampled): 7 x 2 x 3 positions.
    model = _small(head_pool_size=(2, 2, 2))
    x = np.random.RandomState(0).normal(size=(2, 8, 96, 128, 3)).astype("float32")
    want, positions = _reference_head(model, x)
    assert positions == 42
    got = model(x, training=False).numpy()
    assert got.shape == (2, 5)
    np.testing.assert_allclose(tf.nn.softmax(got).numpy(), want, rtol=1e-5, atol=1e-6)


def test_window_equal_to_the_map_is_global_pooling():
    x = np.random.RandomState(1).normal(size=(2, 8, 64, 64, 3)).astype("float32")  # map 8x2x2
    glob = _small()
    win = _small(head_pool_size=(8, 2, 2))
    win.set_weights(glob.get_weights())
    np.testing.assert_allclose(win(x, training=False).numpy(), glob(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)  # the logits themselves: one position
    # A window larger than the map is clipped to it (the reference would fail).
    big = _small(head_pool_size=(16, 7, 7))
    big.set_weights(glob.get_weights())
    np.testing.assert_allclose(big(x, training=False).numpy(), glob(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_round_trip_fold_and_bad_values(tmp_path):
    model = _small(head_pool_size=(2, 2, 2))
    x = np.random.RandomState(2).normal(size=(1, 8, 96, 96, 3)).astype("float32")
    want = model(x, training=False).numpy()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.head_pool_size == (2, 2, 2)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), want, rtol=1e-5, atol=1e-6)
    folded = vov3d_tf.fold_batchnorm(model)
    np.testing.assert_allclose(folded(x, training=False).numpy(), want, rtol=1e-4, atol=1e-5)
    for bad in ((2, 2), (0, 7, 7), 7):
        with pytest.raises(ValueError, match="head_pool_size must be a list of 3 positive ints"):
            _small(head_pool_size=bad)
