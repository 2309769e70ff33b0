"""The benchmark CLI runs and prints well-formed figures (tiny setting; speed is not asserted)."""
import json
import subprocess
import sys


def test_bench_prints_one_line_per_case():
    proc = subprocess.run(
        [sys.executable, "-m", "vov3d_tf.bench", "--models", "vov3d_m", "--sizes", "32",
         "--batches", "1", "--train-batch", "2", "--frames", "4", "--num-classes", "5"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert [(l["mode"], l["batch"]) for l in lines] == [("infer", 1), ("train", 2)]
    for line in lines:
        assert line["clips_per_s"] > 0 and line["best_clips_per_s"] >= line["clips_per_s"]
        assert line["peak_rss_mb"] > line["import_rss_mb"] > 100
        assert abs(line["working_mb"] - (line["peak_rss_mb"] - line["import_rss_mb"])) < 0.2


def test_bench_rejects_unknown_model_and_too_few_runs():
    for args in (["--models", "resnet"], ["--runs", "3"]):
        proc = subprocess.run([sys.executable, "-m", "vov3d_tf.bench", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and ("unknown model" in proc.stderr or ">= 5" in proc.stderr)
