"""The benchmark CLI runs and prints well-formed figures (tiny setting; speed is not asserted)."""
import importlib.util
import json
import subprocess
import sys

import pytest


def test_bench_prints_one_line_per_case():
    litert = importlib.util.find_spec("ai_edge_litert") is not None
    runtimes = ["tf", "litert"] if litert else ["tf"]
    proc = subprocess.run(
        [sys.executable, "-m", "vov3d_tf.deploy.bench", "--models", "vov3d_m", "--sizes", "32",
         "--batches", "1", "--train-batch", "2", "--frames", "4", "--num-classes", "5",
         "--runtimes", ",".join(runtimes)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert [(l["runtime"], l["mode"], l["batch"]) for l in lines] == [
        *((r, "infer", 1) for r in runtimes), ("tf", "train", 2)]
    for line in lines:
        assert line["clips_per_s"] > 0 and line["best_clips_per_s"] >= line["clips_per_s"]
        assert line["peak_rss_mb"] > line["import_rss_mb"] > 10
        assert abs(line["working_mb"] - (line["peak_rss_mb"] - line["import_rss_mb"])) < 0.2
    tf_import = lines[0]["import_rss_mb"]
    assert tf_import > 300  # TensorFlow's libraries
    if litert:  # the LiteRT process never imports TensorFlow
        assert lines[1]["peak_rss_mb"] < tf_import / 2


def test_bench_rejects_unknown_model_and_too_few_runs():
    for args, msg in ((["--models", "resnet"], "unknown model"), (["--runs", "3"], ">= 5"),
                      (["--runtimes", "onnx"], "unknown runtime")):
        proc = subprocess.run([sys.executable, "-m", "vov3d_tf.deploy.bench", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and msg in proc.stderr


def test_bench_rejects_bad_quantized_and_openvino_options(tmp_path, capsys):
    from vov3d_tf.deploy import bench

    for args, msg in ((["--runtimes", "litert-int4"], "allowed: tf, litert, litert-fp16, "
                                                      "litert-dynamic, litert-int8"),
                      (["--openvino"], "--openvino runs OpenVINO on the PyTorch peer: pass --peer"),
                      (["--runtimes", "litert", "--eval-shards", "x-*"],
                       "--eval-shards compares quantized LiteRT runtimes with litert"),
                      (["--weights", str(tmp_path / "m.keras")],
                       "--weights times one model: pass its name as the only --models entry"),
                      (["--models", "vov3d_m", "--weights", str(tmp_path / "m.keras")],
                       "--weights file not found")):
        with pytest.raises(SystemExit) as exit_info:  # in-process: argument errors come first
            bench.main(args)
        assert exit_info.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quantized_litert_with_accuracy_line(tmp_path):
    pytest.importorskip("ai_edge_litert")
    import vov3d_tf
    from vov3d_tf.data.build.synthetic import write_synthetic_dataset
    write_synthetic_dataset(tmp_path / "d", num_train=4, num_eval=3, num_frames=8, size=32,
                            num_classes=3, num_shards=1)
    vov3d_tf.create_model("vov3d_m", 3, base_width=8, blocks=(1, 1, 1, 1), num_conv=2).save(
        tmp_path / "m.keras")
    proc = subprocess.run(
        [sys.executable, "-m", "vov3d_tf.deploy.bench", "--models", "vov3d_m", "--sizes", "32",
         "--batches", "1", "--train-batch", "0", "--frames", "4", "--weights",
         str(tmp_path / "m.keras"), "--runtimes", "litert,litert-fp16,litert-int8",
         "--calibration-shards", str(tmp_path / "d" / "train-*"), "--calibration-clips", "6",
         "--eval-shards", str(tmp_path / "d" / "eval-*")],
        capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    timed = [l for l in lines if "runtime" in l and "ratio" not in l]
    assert [l["runtime"] for l in timed] == ["litert", "litert-fp16", "litert-int8"]
    assert all(l["clips_per_s"] > 0 and l["peak_rss_mb"] > l["import_rss_mb"] for l in timed)
    (acc,) = [l for l in lines if "accuracy" in l]
    assert acc["litert"]["videos"] == 3 and acc["litert"]["views"] == 3 * 6
    for runtime in ("litert-fp16", "litert-int8"):
        assert 0 <= acc[runtime]["top1_agreement"] <= 1
    assert acc["litert-fp16"]["logit_rel_rmse"] < 0.01  # fp16 weights: nearly the float model
