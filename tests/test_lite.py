"""LiteRT (TensorFlow Lite) inference: conversion, parity with the official logits, shapes, errors;
quantization (fp16, dynamic range, int8 calibrated on eval views) and its accuracy report."""
import numpy as np
import pytest

import vov3d_tf
from vov3d_tf.data.specs import EvalViews
from vov3d_tf.deploy import lite
from vov3d_tf.model.convert import load_torch_weights

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


# --- quantization: fp16 / dynamic-range / int8 -------------------------------------------------

def _tiny(num_classes=5):
    # VoV3D with squeeze-excite, pools and the head: every op kind of the full model.
    return vov3d_tf.create_model("vov3d_m", num_classes, base_width=8, blocks=(1, 1, 1, 1),
                                 num_conv=2)


def _views(**changes):
    """The eval views of the quantization shards: 4 frames at 32 px, 2 clips x 3 crops."""
    return EvalViews(num_frames=4, short_side=32, **changes)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Synthetic labeled shards: 6 train and 4 eval videos of 8 frames at 32 px."""
    from vov3d_tf.data.build.synthetic import write_synthetic_dataset
    root = tmp_path_factory.mktemp("quant_shards")
    write_synthetic_dataset(root, num_train=6, num_eval=4, num_frames=8, size=32, num_classes=3,
                            num_shards=2)
    return root


def test_eval_clips_are_the_eval_pipeline_views(shards):
    from vov3d_tf.data import eval_dataset
    clips = lite.EvalClips(str(shards / "eval-*"), _views(num_clips=1))
    got = np.stack(list(clips))
    assert clips.count == 4 * 3 and len(clips.labels) == 4  # videos x (1 clip x 3 crops)
    want = np.concatenate([v.numpy()[0] for v, _ in eval_dataset(
        str(shards / "eval-*"), _views(num_clips=1), batch_size=1)])
    assert got.shape == (12, 4, 32, 32, 3) and np.array_equal(got, want)
    capped = lite.EvalClips(str(shards / "eval-*"), _views(), max_clips=5)
    assert len(list(capped)) == 5 and capped.count == 5
    with pytest.raises(FileNotFoundError, match="no shard files match"):
        lite.EvalClips(str(shards / "nothing-*"), _views())


@pytest.mark.slow
def test_quantize_modes_convert_and_run(shards):
    model = _tiny()
    calibration = lite.EvalClips(str(shards / "train-*"), _views(), max_clips=8)
    x = np.stack(list(lite.EvalClips(str(shards / "eval-*"), _views())))  # 24 views
    want = model(x, training=False).numpy()
    scale = float(want.std())
    blobs = {"float": lite.to_tflite(model, frames=4, height=32)}
    for mode in lite.QUANTIZE_MODES:
        kwargs = {"calibration": calibration} if mode == "int8" else {}
        blobs[mode] = lite.to_tflite(model, frames=4, height=32, quantize=mode, **kwargs)
    assert calibration.count == 8  # the int8 ranges come from exactly the clips asked for
    sizes = {k: len(b) for k, b in blobs.items()}
    assert sizes["fp16"] < 0.7 * sizes["float"] and sizes["int8"] < 0.6 * sizes["float"]
    got = {}
    for mode, blob in blobs.items():
        runner = lite.TFLiteRunner(blob, num_threads=1)
        assert runner.input["dtype"] == np.float32  # float clips in, whatever the inside
        got[mode] = runner(x)
        assert got[mode].shape == (24, 5) and got[mode].dtype == np.float32
    assert np.abs(got["float"] - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    # fp16 weights: computed in float32 from weights rounded to 11 significant bits.
    assert np.abs(got["fp16"] - want).max() <= 1e-2 * scale
    assert np.array_equal(got["fp16"].argmax(1), want.argmax(1))
    # Dynamic range (measured 0.014 x the logits' std): every clip whose float top-1 is not a
    # near tie keeps it. Full int8 of an untrained net (measured 0.17-0.31): bounded error only; its
    # top-1 agreement is tested on a trained model (test_int8_keeps_a_trained_models_answers).
    rmse = float(np.sqrt(np.mean((got["dynamic"] - want) ** 2)))
    agreement, clear = lite.clear_agreement(want, got["dynamic"])
    assert rmse <= 0.05 * scale and clear >= 12 and agreement == 1.0, (rmse / scale, clear)
    rmse = float(np.sqrt(np.mean((got["int8"] - want) ** 2)))
    assert rmse <= 0.6 * scale, rmse / scale
    bad = [np.zeros((4, 40, 40, 3), np.float32)]
    with pytest.raises(ValueError, match=r"calibration clip of shape \(4, 40, 40, 3\) does not "
                                         r"fit the model's input \(4, 32, 32, 3\)"):
        lite.to_tflite(model, frames=4, height=32, quantize="int8", calibration=bad)


def test_int8_model_is_integer_from_input_to_output():
    # TFLite has no integer ADD_N: the T-OSA sums are converted as chains of ADDs, so the int8
    # file quantizes once at the input and dequantizes once at the output, with no float island
    # (an ADD_N per aggregation block cost a DEQUANTIZE per input and a float sum each).
    from ai_edge_litert.interpreter import Interpreter
    model = _tiny()
    for layer in model.layers:  # as after training: a fresh model's zero-gamma aggregation BNs
        if layer.name.endswith("_agg_bn"):  # give all-zero outputs, which XNNPACK declines
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([np.ones_like(gamma), beta, mean, var])
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((4, 32, 32, 3), dtype=np.float32) for _ in range(2)]
    blob = lite.to_tflite(model, frames=4, height=32, quantize="int8", calibration=calibration)
    interpreter = Interpreter(model_content=blob, num_threads=1)
    ops = [d["op_name"] for d in interpreter._get_ops_details()]
    assert "ADD_N" not in ops and ops.count("QUANTIZE") == 1 and ops.count("DEQUANTIZE") == 1
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    # ... and XNNPACK runs all of it as one partition (an op it cannot run splits the graph).
    interpreter.allocate_tensors()
    assert [d["op_name"] for d in interpreter._get_ops_details()].count("DELEGATE") == 1
    # TensorFlow keeps its one-pass AddN; the LiteRT form is only traced for conversion.
    import tensorflow as tf
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, 4, 32, 32, 3))).graph.as_graph_def()
    assert sum(n.op == "AddN" for n in graph.node) == 4  # one T-OSA block per stage


def test_clear_agreement_ignores_near_ties():
    want = np.array([[5.0, 0.0, 0.0], [1.0, 0.9, 0.0], [0.0, 0.0, 4.0], [0.0, 3.0, 0.0]])
    got = want + np.array([[0.0, 0.5, 0.0], [-0.2, 0.2, 0.0], [0.0, 0.0, 0.0],
                           [2.0, -2.0, 0.0]])
    # RMS difference 0.83: clips 0, 2 and 3 lead by more than 2.5 and count; of them clip 3
    # flips. Clip 1 (a 0.1 lead) flips too, but as a near tie it does not count.
    assert lite.clear_agreement(want, got) == (2 / 3, 3)
    assert lite.clear_agreement(want, got, factor=10.0) == (None, 0)


def test_quantize_errors(shards, tmp_path, capsys):
    model = _tiny()
    with pytest.raises(ValueError, match=r"quantize must be None or one of \('fp16', 'dynamic', "
                                         r"'int8'\), got 'int4'"):
        lite.to_tflite(model, frames=4, height=32, quantize="int4")
    with pytest.raises(ValueError, match="int8 quantization needs calibration clips"):
        lite.to_tflite(model, frames=4, height=32, quantize="int8")
    with pytest.raises(ValueError, match="only used by quantize='int8', not 'fp16'"):
        lite.to_tflite(model, frames=4, height=32, quantize="fp16", calibration=[])
    model.save(tmp_path / "m.keras")
    base = [str(tmp_path / "m.keras"), "--output", str(tmp_path / "m.tflite"), "--frames", "4",
            "--size", "32"]
    for extra, msg in ((["--quantize", "int4"], "invalid choice: 'int4'"),
                       (["--quantize", "int8"], "--quantize int8 needs --calibration-shards"),
                       (["--quantize", "int8", "--calibration-shards", str(tmp_path / "no-*")],
                        "no shard files match"),
                       (["--quantize", "fp16", "--calibration-shards", str(shards / "train-*")],
                        "only used with --quantize int8")):
        with pytest.raises(SystemExit):
            lite.main(base + extra)
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_int8_keeps_a_trained_models_answers(tmp_path):
    # The demo (configs/demo.json, ~100% top-1): a model whose answers mean something. int8
    # calibrated on the training shards' eval views must keep the float top-1 of >= 97% of the
    # eval views and lose <= 2 points of video top-1 (96 videos).
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data, out = tmp_path / "demo_data", tmp_path / "run"
    res = subprocess.run(
        [sys.executable, os.path.join(root, "train.py"), "--config",
         os.path.join(root, "configs", "demo.json"), "--set", f"data.train_files={data}/train-*",
         "--set", f"data.eval_files={data}/eval-*", "--set", f"train.output_dir={out}"],
        capture_output=True, text=True, timeout=2400)
    assert res.returncode == 0, res.stderr[-3000:]
    trained = json.loads(res.stdout.strip().splitlines()[-1])
    from vov3d_tf.deploy.loading import load_trained_model
    model = load_trained_model(out / "best.keras")
    clips = EvalViews(num_frames=16, short_side=40, num_clips=1)
    calibration = lite.EvalClips(str(data / "train-*"), clips, max_clips=64)
    blobs = {m: lite.to_tflite(model, frames=16, height=40, quantize=m,
                               calibration=calibration if m == "int8" else None)
             for m in ("dynamic", "int8")}
    result = lite.compare(model, blobs, lite.EvalClips(str(data / "eval-*"), clips))
    print(json.dumps(result))
    assert result["reference"]["videos"] == 96 and result["reference"]["top1"] >= 0.9
    assert result["reference"]["top1"] == pytest.approx(trained["top1"], abs=0.011)
    for mode in ("dynamic", "int8"):
        assert result[mode]["top1_agreement"] >= 0.97, result[mode]
        assert result[mode]["top1_delta"] >= -0.02, result[mode]


@pytest.mark.slow
def test_cli_int8_reports_accuracy_against_float(shards, tmp_path, capsys):
    import json
    model = _tiny(3)
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m8.tflite"
    assert lite.main([str(tmp_path / "m.keras"), "--output", str(out), "--frames", "4",
                      "--size", "32", "--quantize", "int8", "--calibration-shards",
                      str(shards / "train-*"), "--calibration-clips", "10",
                      "--eval-shards", str(shards / "eval-*"), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "MB, int8)" in printed and "int8 calibrated on 10 eval views of 2 videos" in printed
    report = json.loads(printed.splitlines()[-1])
    ref, q = report["float32"], report["int8"]
    assert ref["videos"] == q["videos"] == 4 and q["views"] == 4 * 6
    assert 0 <= q["top1_agreement"] <= 1 and q["top1_delta"] == pytest.approx(
        q["top1"] - ref["top1"], abs=1e-4)
    # The reported float figures are the Keras model's own multi-view test on the same views.
    from vov3d_tf.train.evaluation import multi_view_scores, topk_accuracy
    clips = lite.EvalClips(str(shards / "eval-*"), _views())
    views, labels = zip(*clips.videos())
    probs = [tf_softmax(model(v, training=False).numpy()) for v in views]
    assert ref["top1"] == pytest.approx(topk_accuracy(multi_view_scores(probs), labels, 1),
                                        abs=1e-4)


def tf_softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
