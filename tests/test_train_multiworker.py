"""Two-worker MultiWorkerMirroredStrategy run on localhost: two `train.py` processes with
TF_CONFIG, tiny model and shards. The workers must end with identical weights."""
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np

from vov3d_tf.config import config_from_dict, save_config
from test_train import ROOT, tiny_config


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_on_localhost(tmp_path):
    from vov3d_tf.data.build.synthetic import write_synthetic_dataset
    data = tmp_path / "shards"
    write_synthetic_dataset(str(data), num_train=32, num_eval=8, num_frames=8, size=32,
                            num_classes=3, num_shards=2)
    out = tmp_path / "run"
    config_path = tmp_path / "tiny.json"
    save_config(config_from_dict(tiny_config(str(data), out, train={"precise_bn_batches": 0})),
                config_path)
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), "--config", str(config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"worker {i}:\n{log[-4000:]}"
    finals = [json.loads(log.strip().splitlines()[-1]) for log in logs]
    assert [f["steps"] for f in finals] == [8, 8]  # 2 epochs x 32 videos / global batch 8
    assert finals[0]["top1"] == finals[1]["top1"]
    # Both workers trained the same replicated model; only the chief (worker 0) wrote files.
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["steps"] == 8
    assert sorted(n for n in os.listdir(out) if n.startswith(".")) == []
    model = keras.models.load_model(out / "last.keras")
    assert np.all([np.isfinite(w).all() for w in model.get_weights()])
    history = (out / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + 2 epochs, written once (by the chief)
