"""The demo fine-tune (slow: ~8 min on 2 busy cores): `configs/finetune_demo.json` fine-tunes the
demo model (4 classes) to the 6-class task with a new head and must beat the same model trained
from scratch for the same 36 steps on the same data. Measured: 0.875 vs 0.146 top-1 (chance
0.167; 96 test videos x 3 views)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(cwd, config, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config",
           os.path.join(ROOT, "configs", config), *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stdout


@pytest.mark.slow
def test_demo_fine_tune_beats_scratch(tmp_path):
    _train(tmp_path, "demo.json")  # relative paths: tmp_path/data/demo, tmp_path/runs/demo
    tuned, log = _train(tmp_path, "finetune_demo.json")
    assert "re-initialised head_projection (num_classes differs: 4 -> 6)" in log
    record = json.loads((tmp_path / "runs" / "demo_finetune" / "init_weights.json").read_text())
    assert record["path"] == str(tmp_path / "runs" / "demo" / "best.keras")
    scratch, _ = _train(tmp_path, "finetune_demo.json", "--set", "model.init_weights=null",
                        "--set", "train.output_dir=runs/demo_finetune_scratch")
    print(f"fine-tune top-1 {tuned['top1']:.3f}, scratch {scratch['top1']:.3f}")
    assert tuned["steps"] == scratch["steps"] == 36
    assert tuned["top1"] >= 0.6 and tuned["top1"] > scratch["top1"] + 0.3, (tuned, scratch)
