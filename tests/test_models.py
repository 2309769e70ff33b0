"""Architecture: exact parameter counts, PyTorch parity, padding arithmetic, FLOPs, errors."""
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import vov3d_tf
from vov3d_tf.model import layers as L
from vov3d_tf.model.flops import count_flops
from vov3d_tf.model.networks import vov3d_widths, x3d_widths


def n_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def tiny(name="vov3d_m", k=5, **kw):
    kw.setdefault("base_width", 8)
    kw.setdefault("blocks", (1, 1, 1, 1))
    if name.startswith("vov3d"):
        kw.setdefault("num_conv", 2)
    return vov3d_tf.create_model(name, k, **kw)


def randomize_bn(model, seed=0):
    """Non-trivial BN statistics and gammas so BN folding and round trips are really tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])


# Official counts, docs/architecture.md#numbers-the-port-matches.
@pytest.mark.parametrize("name,classes,expected", [
    ("vov3d_m", 174, 3_204_286), ("vov3d_m", 400, 3_667_360),
    ("vov3d_l", 174, 5_834_094), ("vov3d_l", 400, 6_297_168),
    ("x3d_m", 174, 3_331_248), ("x3d_m", 400, 3_794_322),
    ("x3d_l", 174, 5_690_358), ("x3d_l", 400, 6_153_432),
])
def test_parameter_counts_match_official(name, classes, expected):
    assert n_params(vov3d_tf.create_model(name, classes)) == expected


def test_channel_tables():
    assert vov3d_widths(40) == (20, [(40, 20), (80, 40), (160, 80), (320, 160)])
    assert vov3d_widths(48) == (24, [(48, 24), (96, 48), (192, 96), (384, 192)])
    assert x3d_widths(12) == (24, [(54, 24), (108, 48), (216, 96), (432, 192)])
    assert [L.se_width(c) for c in (40, 80, 160, 320, 384, 432)] == [8, 8, 16, 24, 24, 32]


def test_block_structure_counts():
    m = vov3d_tf.create_model("vov3d_m", 174)
    names = [l.name for l in m.layers]
    assert sum(n.endswith("_se_fc1") for n in names) == 24  # 3 SE per T-OSA, 8 blocks
    assert sum(n.endswith("_swish") for n in names) == 40  # 40 D(2+1)D units
    x = vov3d_tf.create_model("x3d_m", 174)
    assert sum(l.name.endswith("_se_fc1") for l in x.layers) == 15  # SE on even blocks


def test_parity_with_official_vov3d_m(parity_npz):
    from vov3d_tf.model.convert import load_torch_weights
    model = vov3d_tf.create_model("vov3d_m", 10)
    load_torch_weights(model, parity_npz)
    x = parity_npz["input"].transpose(0, 2, 3, 4, 1)
    logits = model(x, training=False).numpy()
    assert np.abs(logits - parity_npz["logits"]).max() <= 1e-4
    probs = tf.nn.softmax(logits).numpy()
    assert np.abs(probs - parity_npz["probs"]).max() <= 1e-5
    # Intermediate stage features (NCTHW in the fixture).
    probe = keras.Model(model.input, [model.get_layer(n).output
                                      for n in ("s2_b0_relu", "s4_b2_relu", "s5_b1_relu")])
    for got, key in zip(probe(x, training=False), ("feat_s2", "feat_s4", "feat_s5")):
        want = parity_npz[key].transpose(0, 2, 3, 4, 1)
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The inference path (BN folded) gives the same logits.
    folded = vov3d_tf.fold_batchnorm(model)
    assert not any(l.name.endswith("_bn") for l in folded.layers)
    assert np.abs(folded(x).numpy() - parity_npz["logits"]).max() <= 1e-4


@pytest.mark.parametrize("name", ["vov3d_m", "x3d_m"])
def test_fold_batchnorm_matches_trainable_model(name):
    model = tiny(name)
    randomize_bn(model, seed=1)
    x = np.random.default_rng(0).normal(size=(2, 4, 33, 47, 3)).astype("float32")
    want = model(x, training=False).numpy()
    got = vov3d_tf.fold_batchnorm(model)(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("name", ["vov3d_m", "x3d_l"])
def test_keras_round_trip(tmp_path, name):
    model = tiny(name)
    randomize_bn(model, seed=2)
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 32, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(x, training=False).numpy(),
                                  model(x, training=False).numpy())


@pytest.mark.parametrize("size,expected", [(112, 4), (113, 4), (97, 4), (33, 2), (224, 7)])
def test_odd_sizes_follow_pytorch_arithmetic(size, expected):
    # Five stride-2 convs with kernel 3, padding 1: out = floor((n - 1) / 2) + 1 each.
    n = size
    for _ in range(5):
        n = (n - 1) // 2 + 1
    assert n == expected
    model = tiny()
    probe = keras.Model(model.input, model.get_layer("s5_b0_relu").output)
    out = probe(np.zeros((1, 3, size, size + 2, 3), "float32"))
    m = size + 2
    for _ in range(5):
        m = (m - 1) // 2 + 1
    assert tuple(out.shape[1:4]) == (3, expected, m)


def _reference_depthwise3d(x, w, stride):
    """Direct per-channel 3D convolution (PyTorch semantics: pad k//2 symmetric)."""
    kt, kh, kw = w.shape[:3]
    xp = np.pad(x, [(0, 0), (kt // 2,) * 2, (kh // 2,) * 2, (kw // 2,) * 2, (0, 0)])
    b, t, h, wd, c = x.shape
    ho, wo = (h + 2 * (kh // 2) - kh) // stride + 1, (wd + 2 * (kw // 2) - kw) // stride + 1
    out = np.zeros((b, t, ho, wo, c))
    for i in range(kt):
        for j in range(kh):
            for k in range(kw):
                patch = xp[:, i:i + t, j:j + stride * ho:stride, k:k + stride * wo:stride]
                out += patch * w[i, j, k]
    return out


@pytest.mark.parametrize("stride,size", [(1, 9), (2, 10), (2, 9)])
def test_depthwise_kernels_equal_direct_convolution(stride, size):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, size, size + 1, 4)).astype("float32")
    # X3D's full 3x3x3 depthwise conv.
    layer = L.DepthwiseConv3D(strides=stride)
    layer.build(x.shape)
    w = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    layer.set_weights([w])
    np.testing.assert_allclose(layer(x).numpy(), _reference_depthwise3d(x, w, stride),
                               rtol=1e-5, atol=1e-5)
    # D(2+1)D: 1x3x3 spatial then 3x1x1 temporal == 3x3x3 with the outer-product kernel.
    spatial, temporal = L.SpatialConv(3, strides=stride), L.TemporalDepthwiseConv(3)
    ws, wt = rng.normal(size=(3, 3, 4, 1)), rng.normal(size=(3, 1, 4, 1))
    spatial.build(x.shape)
    spatial.set_weights([ws.astype("float32")])
    y = spatial(x)
    temporal.build(y.shape)
    temporal.set_weights([wt.astype("float32")])
    w3 = wt[:, 0, :, 0][:, None, None, :] * ws[None, :, :, :, 0]
    np.testing.assert_allclose(temporal(y).numpy(), _reference_depthwise3d(x, w3, stride),
                               rtol=1e-4, atol=1e-4)


def test_hand_computed_temporal_conv():
    x = np.arange(1, 6, dtype="float32").reshape(1, 5, 1, 1, 1)  # frames 1..5
    layer = L.TemporalDepthwiseConv(3)
    layer.build(x.shape)
    layer.set_weights([np.ones((3, 1, 1, 1), "float32")])
    # zero-padded moving sums: [0+1+2, 1+2+3, 2+3+4, 3+4+5, 4+5+0]
    assert layer(x).numpy().ravel().tolist() == [3, 6, 9, 12, 9]


@pytest.mark.parametrize("name,size,gflops,incl_bn", [
    ("vov3d_m", 224, 4.916, 5.108), ("vov3d_m", 256, 6.421, 6.671),
    ("vov3d_l", 224, 9.306, 9.575), ("x3d_m", 224, 4.732, 4.898),
    ("x3d_m", 256, 6.180, 6.397),
])
def test_flops_match_fvcore(name, size, gflops, incl_bn):
    r = count_flops(name, (16, size, size, 3), num_classes=174)
    assert r["gflops"] == pytest.approx(gflops, rel=0.02)
    assert r["gflops_incl_bn"] == pytest.approx(incl_bn, rel=0.02)


def test_flops_of_a_model_object_and_cli(capsys):
    from vov3d_tf.model.flops import main
    r = count_flops(tiny(), (4, 32, 32, 3))
    assert r["params"] == n_params(tiny()) and r["macs"] > 0
    assert main(["--model", "vov3d_m", "--num-classes", "174", "--frames", "16",
                 "--size", "224"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 3_204_286 and abs(out["gflops"] - 4.916) < 0.01


def test_bad_names_and_overrides():
    with pytest.raises(ValueError, match="allowed: vov3d_m, vov3d_l, x3d_m, x3d_l"):
        vov3d_tf.create_model("vov3d_xl", 10)
    with pytest.raises(ValueError, match="allowed: base_width"):
        vov3d_tf.create_model("vov3d_m", 10, width=3)
    with pytest.raises(ValueError, match="blocks must be a list of 4 positive ints"):
        vov3d_tf.create_model("vov3d_m", 10, blocks=(1, 2, 3))
    with pytest.raises(ValueError, match="num_conv applies to VoV3D only"):
        vov3d_tf.create_model("x3d_m", 10, num_conv=3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        vov3d_tf.create_model("vov3d_m", 0)
    with pytest.raises(ValueError, match="input_shape must be"):
        count_flops("vov3d_m", (16, 224, 224))


def test_runs_with_onednn_enabled(tmp_path):
    """Some TF builds enable oneDNN, which aborts on depthwise conv + bias with EXPLICIT padding."""
    script = (
        "import numpy as np, vov3d_tf\n"
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from test_models import tiny, randomize_bn\n"
        "import keras; keras.utils.set_random_seed(0)\n"
        "outs = []\n"
        "for name in ('vov3d_m', 'x3d_m'):\n"
        "    m = tiny(name); randomize_bn(m, 4)\n"
        "    x = np.random.default_rng(5).normal(size=(1, 4, 34, 34, 3)).astype('float32')\n"
        "    outs.append(vov3d_tf.fold_batchnorm(m)(x).numpy())\n"
        "np.save(__import__('sys').argv[1], np.concatenate(outs))\n")
    results = []
    for flag in ("0", "1"):
        out = tmp_path / f"onednn{flag}.npy"
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag, "PYTHONPATH": str(
            pathlib.Path(__file__).resolve().parents[1])}
        proc = subprocess.run([sys.executable, "-c", script, str(out),
                               str(pathlib.Path(__file__).parent)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(np.load(out))
    assert np.abs(results[0] - results[1]).max() <= 1e-4 * max(1.0, np.abs(results[0]).max())


@pytest.mark.parametrize("name", ["vov3d_m", "x3d_m"])
def test_empty_batch_and_static_shapes(name):
    model = tiny(name)
    out = model(np.zeros((0, 4, 32, 32, 3), "float32"), training=False)
    assert tuple(out.shape) == (0, 5)
    out = vov3d_tf.fold_batchnorm(model)(np.zeros((0, 4, 32, 32, 3), "float32"))
    assert tuple(out.shape) == (0, 5)
    # A model built for a fixed clip shape has static shapes all the way to the logits.
    fixed = tiny(name, input_shape=(4, 32, 32, 3))
    widths = vov3d_widths(8) if name == "vov3d_m" else x3d_widths(8)
    assert tuple(fixed.get_layer("s5_b0_relu").output.shape) == (None, 4, 1, 1, widths[1][3][1])
    spec = tf.function(lambda x: fixed(x)).get_concrete_function(
        tf.TensorSpec((2, 4, 32, 32, 3), tf.float32))
    assert tuple(spec.output_shapes) == (2, 5)
