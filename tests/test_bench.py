"""The benchmark CLI runs and prints well-formed figures (tiny setting; speed is not asserted)."""
import importlib.util
import json
import subprocess
import sys


def test_bench_prints_one_line_per_case():
    litert = importlib.util.find_spec("ai_edge_litert") is not None
    runtimes = ["tf", "litert"] if litert else ["tf"]
    proc = subprocess.run(
        [sys.executable, "-m", "vov3d_tf.bench", "--models", "vov3d_m", "--sizes", "32",
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
        proc = subprocess.run([sys.executable, "-m", "vov3d_tf.bench", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and msg in proc.stderr
