"""Distributed tuning on localhost: one chief (the oracle) and two workers.

keras-tuner's chief/worker mode is driven by KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT; every process runs the same search with the same output folder.
The fast test gives the workers a fake training function (this module is imported in the
subprocesses); the slow one runs the real command, `vov3d-search`, on synthetic
shards.
"""
import csv
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from vov3d_tf.config import load_config

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
SPACE = {"base_width": [8, 16, 24, 32], "num_conv": [1, 2, 3],
         "blocks": [[1, 1, 1, 1], [1, 2, 2, 1]]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cost(values):
    deep = 2 if values["blocks"] == "1-2-2-1" else 1
    return {"gflops": float(values["base_width"] * values["num_conv"] * deep),
            "params": 1000 * values["base_width"]}


def fake_train(cfg):
    """Records which worker trained the trial; score from the candidate.

    A worker's first trial waits until the other worker has started one too, so both
    workers train whatever their start-up times (TF imports) are.
    """
    me = os.environ["KERASTUNER_TUNER_ID"]
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    with open(os.path.join(cfg.train.output_dir, "worker.txt"), "w") as f:
        f.write(me)
    project = os.path.dirname(os.path.dirname(cfg.train.output_dir))
    open(os.path.join(project, f"started_{me}"), "w").close()
    deadline = time.time() + 120
    while time.time() < deadline and not all(
            os.path.exists(os.path.join(project, f"started_{w}")) for w in ("tuner0", "tuner1")):
        time.sleep(0.2)
    time.sleep(0.3)
    m = cfg.model
    if m.base_width == 8 and m.num_conv == 3:
        raise RuntimeError("simulated crash on a worker")
    return {"top1": m.base_width / 100 + m.num_conv / 1000, "top5": 1.0}


def worker_main(config_path):
    """Subprocess entry point: the search with the fake functions above."""
    from vov3d_tf.search import run as search_run
    search_run.run_search(load_config(config_path), train_fn=fake_train, cost_fn=fake_cost,
                          verbose=0)


def launch(tuner_id, port, argv, log_path):
    env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    log = open(log_path, "w")
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log


def run_cluster(argv, tmp_path, timeout):
    port = free_port()
    procs = [launch(name, port, argv, tmp_path / f"{name}.log")
             for name in ("chief", "tuner0", "tuner1")]
    deadline = time.time() + timeout
    try:
        for proc, log in procs:
            proc.wait(timeout=max(1, deadline - time.time()))
            log.close()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("chief", "tuner0", "tuner1")}
    for (proc, _), (name, text) in zip(procs, logs.items()):
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{text[-3000:]}"
    return logs


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_chief_and_two_workers_share_one_search(tmp_path):
    out = tmp_path / "out"
    cfg = {"model": {"name": "vov3d_m", "num_classes": 4},
           "data": {"num_frames": 8, "crop_size": 32, "train_short_side": [36, 40],
                    "test_short_side": 40},
           "train": {"epochs": 5, "warmup_epochs": 1.0, "output_dir": str(out)},
           "search": {"tuner": "random", "max_trials": 6, "epochs_per_trial": 1, "seed": 3,
                      "max_gflops": 40.0, "space": SPACE}}
    path = tmp_path / "search.json"
    path.write_text(json.dumps(cfg))
    code = (f"import sys; sys.path.insert(0, {TESTS!r}); import test_search_distributed as t; "
            f"t.worker_main({str(path)!r})")
    run_cluster([sys.executable, "-c", code], tmp_path, timeout=300)

    project = out / "search"
    rows = read_csv(project / "results.csv")  # written by the chief
    trials = [r for r in rows if r["status"] != "rejected"]
    assert sorted(int(r["trial"]) for r in trials) == list(range(6))
    candidates = {(r["base_width"], r["num_conv"], r["blocks"]) for r in trials}
    assert len(candidates) == 6  # the oracle never handed the same candidate to both workers
    for r in trials:
        w, u = int(r["base_width"]), int(r["num_conv"])
        assert float(r["gflops"]) == w * u * (2 if r["blocks"] == "1-2-2-1" else 1) <= 40
        if (w, u) == (8, 3):
            assert r["status"] == "failed"
            assert "RuntimeError: simulated crash on a worker" in r["error"]  # via error.txt
        else:
            assert r["status"] == "completed" and float(r["score"]) == w / 100 + u / 1000
    for r in rows:
        if r["status"] == "rejected":
            assert r["trial"] == "" and "max_gflops 40" in r["error"]
    # Both workers trained trials; the chief trained none.
    by = [(project / f"trial_{r['trial']}" / "run" / "worker.txt").read_text() for r in trials]
    assert set(by) == {"tuner0", "tuner1"}
    best = load_config(project / "best.json")
    done = [r for r in trials if r["status"] == "completed"]
    top = max(done, key=lambda r: float(r["score"]))
    assert (best.model.base_width, best.model.num_conv) == (int(top["base_width"]),
                                                            int(top["num_conv"]))
    assert os.path.getsize(project / "pareto.png") > 1000


@pytest.mark.slow
def test_real_command_chief_and_two_workers(tmp_path):
    """`vov3d-search` three times on localhost, real training on tiny shards."""
    data = tmp_path / "data"
    out = tmp_path / "out"
    sets = [f"train.output_dir={out}", f"data.train_files={data}/train-*.tfrecord",
            f"data.eval_files={data}/eval-*.tfrecord",
            "data.synthetic.num_train=32", "data.synthetic.num_eval=16",
            "search.max_trials=3", "search.epochs_per_trial=1", "train.precise_bn_batches=1"]
    argv = [sys.executable, "-m", "vov3d_tf.search.run", "--config",
            os.path.join(REPO, "configs", "search_demo.json")]
    for s in sets:
        argv += ["--set", s]
    logs = run_cluster(argv, tmp_path, timeout=900)
    rows = read_csv(out / "search" / "results.csv")
    trials = [r for r in rows if r["status"] != "rejected"]
    assert sorted(int(r["trial"]) for r in trials) == [0, 1, 2]
    assert all(r["status"] == "completed" and 0.0 <= float(r["score"]) <= 1.0 for r in trials)
    assert all(float(r["gflops"]) <= 0.003 for r in trials)
    for r in trials:
        with open(out / "search" / f"trial_{r['trial']}" / "run" / "final_metrics.json") as f:
            metrics = json.load(f)
        assert metrics["num_videos"] == 16 and float(r["score"]) == metrics["top1"]
    assert (out / "search" / "best.json").exists()
    assert "chief (oracle)" in logs["chief"]
    assert "[vov3d.search] trial " not in logs["chief"]  # the chief only serves the oracle
    assert sum(logs[w].count("[vov3d.search] trial ") for w in ("tuner0", "tuner1")) == 3
