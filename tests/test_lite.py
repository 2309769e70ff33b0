"""LiteRT (TensorFlow Lite) inference: conversion, parity with the official logits, shapes, errors."""
import numpy as np
import pytest

import vov3d_tf
from vov3d_tf import lite
from vov3d_tf.convert import load_torch_weights

pytest.importorskip("ai_edge_litert", reason="the `lite` extra (ai-edge-litert) is not installed")


def test_official_weights_reproduce_reference_logits(parity_npz, parity_weights, tmp_path):
    model = vov3d_tf.create_model("vov3d_m", 10)
    load_torch_weights(model, parity_weights)
    x = parity_npz["input"].transpose(0, 2, 3, 4, 1)  # NCTHW -> NTHWC: (2, 8, 112, 112, 3)
    path = lite.save_tflite(model, tmp_path / "m" / "vov3d_m.tflite", frames=8, height=112,
                            batch_size=2)
    assert not (tmp_path / "m" / "vov3d_m.tflite.partial").exists()
    logits = lite.run_tflite(path, x, num_threads=2)
    assert logits.shape == (2, 10)
    assert np.abs(logits - parity_npz["logits"]).max() <= 1e-4
    # Only TFLite builtin ops (no TensorFlow fallback that the LiteRT runtime lacks), and the
    # whole model fits in one float32 file: 3.2M weights, ~12.8 MB.
    assert 11e6 < len(open(path, "rb").read()) < 15e6


def test_x3d_and_dynamic_batch_match_keras():
    model = vov3d_tf.create_model("x3d_m", 7, base_width=8, blocks=(1, 1, 1, 1))
    x = np.random.RandomState(0).normal(size=(3, 4, 40, 56, 3)).astype("float32")
    want = model(x, training=False).numpy()
    blob = lite.to_tflite(model, frames=4, height=40, width=56, batch_size=None)
    for n in (1, 3):  # a dynamic batch is resized per call
        got = lite.run_tflite(blob, x[:n], num_threads=1)
        assert got.shape == (n, 7)
        assert np.abs(got - want[:n]).max() <= 1e-4 * max(1.0, np.abs(want).max())
    with pytest.raises(ValueError, match=r"do not fit the model's input \(-1, 4, 40, 56, 3\)"):
        lite.run_tflite(blob, x[:, :, :32])


def test_bad_shapes_and_cli_errors(tmp_path, capsys):
    model = vov3d_tf.create_model("vov3d_m", 3, base_width=8, blocks=(1, 1, 1, 1), num_conv=2)
    for kwargs in ({"frames": 0}, {"height": -1}, {"batch_size": 1.5}):
        with pytest.raises(ValueError, match="must be a positive int"):
            lite.to_tflite(model, **kwargs)
    with pytest.raises(SystemExit):
        lite.main([str(tmp_path / "missing.keras"), "--output", str(tmp_path / "m.tflite")])
    assert "weights file not found" in capsys.readouterr().err


def test_cli_converts_a_saved_model(tmp_path, capsys):
    model = vov3d_tf.create_model("vov3d_m", 3, base_width=8, blocks=(1, 1, 1, 1), num_conv=2)
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m.tflite"
    assert lite.main([str(tmp_path / "m.keras"), "--output", str(out), "--frames", "4",
                      "--size", "32", "--batch", "2"]) == 0
    assert "input (2, 4, 32, 32, 3)" in capsys.readouterr().out
    x = np.random.RandomState(1).normal(size=(2, 4, 32, 32, 3)).astype("float32")
    want = model(x, training=False).numpy()
    assert np.abs(lite.run_tflite(out, x) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_fixed_window_head_converts():
    # The reference head (window pooling, per-position softmax mean) in LiteRT: 2x2 positions.
    model = vov3d_tf.create_model("vov3d_m", 4, base_width=8, blocks=(1, 1, 1, 1), num_conv=2,
                                  head_pool_size=(4, 1, 1))
    x = np.random.RandomState(3).normal(size=(1, 4, 64, 64, 3)).astype("float32")
    want = model(x, training=False).numpy()
    got = lite.run_tflite(lite.to_tflite(model, frames=4, height=64), x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
