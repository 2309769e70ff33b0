"""The real search: FLOPs counter, `training.run`, multi-view test on the synthetic eval shards.

configs/search_demo.json shrunk further (fewer videos, 1 trial x 1 epoch) so the default test
stays under a minute on 2 CPU cores; the slow tests run the demo as documented and train the
winner with `python train.py --config best.json`.
"""
import csv
import itertools
import json
import os
import subprocess
import sys

import pytest

from vov3d_tf.search import oracle
from vov3d_tf.search import run as search_run
from vov3d_tf.config import load_config
from vov3d_tf.model.flops import count_flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "search_demo.json")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tiny_sets(tmp_path, **extra):
    sets = {"train.output_dir": tmp_path / "out",
            "data.train_files": f"{tmp_path}/data/train-*.tfrecord",
            "data.eval_files": f"{tmp_path}/data/eval-*.tfrecord",
            "data.synthetic.num_train": 32, "data.synthetic.num_eval": 16,
            "search.max_trials": 1, "search.epochs_per_trial": 1,
            "train.precise_bn_batches": 0, **extra}
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def test_demo_config_is_valid_and_its_budget_bites():
    cfg = load_config(DEMO)
    search_run.check_search_config(cfg, DEMO)
    s = cfg.search
    assert (s.tuner, s.objective, s.max_gflops, s.max_params) == ("random", "val_top1", 0.003,
                                                                   350000)
    # The 18-candidate space straddles the budget: 8 affordable (docs/search.md).
    affordable = []
    for w, u, b in itertools.product(s.space.base_width, s.space.num_conv, s.space.blocks):
        c = count_flops("vov3d_m", input_shape=(8, 32, 32, 3), num_classes=4, base_width=w,
                        num_conv=u, blocks=b)
        if not oracle.over_budget(c, s.max_gflops, s.max_params):
            affordable.append((w, u, b))
    assert len(affordable) == 8
    assert {w for w, _, _ in affordable} == {8, 16}


def test_real_search_budget_report_best_config_and_resume(tmp_path, capsys):
    argv = ["--config", DEMO] + tiny_sets(tmp_path)
    assert search_run.main(argv) == 0
    project = tmp_path / "out" / "search"
    rows = read_csv(project / "results.csv")
    trials = [r for r in rows if r["status"] != "rejected"]
    assert [r["trial"] for r in trials] == ["0"]
    cfg = load_config(DEMO, [a for a in tiny_sets(tmp_path) if a != "--set"])
    for r in trials:
        assert r["status"] == "completed" and r["epochs"] == "1"
        values = {"base_width": int(r["base_width"]), "num_conv": int(r["num_conv"]),
                  "blocks": r["blocks"]}
        # GFLOPs/params are the model counter's, at the 8x32x32 training clip, within budget.
        expect = oracle.candidate_cost(cfg, values)
        assert float(r["gflops"]) == pytest.approx(expect["gflops"], rel=1e-9)
        assert int(r["params"]) == expect["params"]
        assert float(r["gflops"]) <= 0.003 and int(r["params"]) <= 350000
        # The score is train.py's multi-view test over the 16 held-out eval videos.
        with open(project / f"trial_{r['trial']}" / "run" / "final_metrics.json") as f:
            metrics = json.load(f)
        assert metrics["num_videos"] == 16 and metrics["steps"] == 32 // 16
        assert float(r["score"]) == pytest.approx(metrics["top1"])
        assert float(r["score"]) in {k / 16 for k in range(17)}
    for r in rows:
        if r["status"] == "rejected":
            assert float(r["gflops"]) > 0.003 or int(r["params"]) > 350000
    best = load_config(project / "best.json")
    top = max(trials, key=lambda r: (float(r["score"]), -float(r["gflops"])))
    assert best.model.base_width == int(top["base_width"])
    assert best.model.num_conv == int(top["num_conv"])
    assert (best.train.epochs, best.train.output_dir) == (20, str(tmp_path / "out" / "best"))
    with open(project / "pareto.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Rerunning the same command resumes: nothing retrained, same table.
    stamps = {r["trial"]: os.path.getmtime(project / f"trial_{r['trial']}" / "run" /
                                           "final_metrics.json") for r in trials}
    capsys.readouterr()
    assert search_run.main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    assert read_csv(project / "results.csv") == rows
    for trial_id, stamp in stamps.items():
        assert os.path.getmtime(project / f"trial_{trial_id}" / "run" /
                                "final_metrics.json") == stamp


@pytest.mark.slow
def test_demo_search_then_train_best_json_without_edits(tmp_path):
    """The documented commands: the demo search, then `python train.py --config best.json`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    sets = ["--set", f"train.output_dir={tmp_path / 'out'}",
            "--set", f"data.train_files={tmp_path}/data/train-*.tfrecord",
            "--set", f"data.eval_files={tmp_path}/data/eval-*.tfrecord"]
    proc = subprocess.run([sys.executable, "-m", "vov3d_tf.search.run", "--config", DEMO] + sets,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_csv(tmp_path / "out" / "search" / "results.csv")
    assert sum(r["status"] == "completed" for r in rows) == 4
    best_json = tmp_path / "out" / "search" / "best.json"
    proc = subprocess.run([sys.executable, "train.py", "--config", str(best_json)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 20 * (128 // 16) and 0.0 <= result["top1"] <= 1.0
    assert os.path.exists(tmp_path / "out" / "best" / "final_metrics.json")
