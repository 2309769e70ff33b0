"""Training: schedule numbers, a tiny end-to-end run, resume after kill -9, finished runs,
NaN stop, clear data errors. Models and shards are tiny (2 CPU cores)."""
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from vov3d_tf import create_model
from vov3d_tf.adapters import model_from_config
from vov3d_tf.config import config_from_dict, load_config, save_config
from vov3d_tf.data.pipeline import count_records
from vov3d_tf.train import distribute, optim, rundir, training
from vov3d_tf.train.data import make_datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 3


def tiny_config(data_dir, output_dir, **sections):
    d = {"model": {"name": "vov3d_m", "num_classes": NUM_CLASSES, "base_width": 8,
                   "num_conv": 2, "blocks": [1, 1, 1, 1], "dropout_rate": 0.0},
         "data": {"train_files": f"{data_dir}/train-*.tfrecord",
                  "eval_files": f"{data_dir}/eval-*.tfrecord", "num_frames": 4,
                  "crop_size": 32, "train_short_side": [32, 36],
                  "inverse_uniform_scale": False, "test_short_side": 32},
         "train": {"batch_size": 8, "epochs": 2, "base_lr": 0.05, "warmup_epochs": 0.5,
                   "output_dir": str(output_dir), "checkpoint_every_steps": 2,
                   "precise_bn_batches": 2},
         "eval": {"batch_size": 4, "num_clips": 1, "num_crops": 1, "every_epochs": 0}}
    for section, values in sections.items():
        d.setdefault(section, {}).update(values)
    return d


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from vov3d_tf.data.build.synthetic import write_synthetic_dataset
    out = tmp_path_factory.mktemp("shards")
    write_synthetic_dataset(str(out), num_train=32, num_eval=8, num_frames=8, size=32,
                            num_classes=NUM_CLASSES, num_shards=2)
    return str(out)


# --- schedule, optimizer, adapter -------------------------------------------------------------

def test_warmup_cosine_matches_the_reference_formula():
    s = optim.WarmupCosineDecay(peak_lr=0.2, total_steps=100, warmup_steps=10,
                                   warmup_start_lr=0.01)
    lr = lambda e: 0.5 * 0.2 * (1 + math.cos(math.pi * e / 100))  # noqa: E731
    assert float(s(0)) == pytest.approx(0.01)
    assert float(s(5)) == pytest.approx(0.01 + (lr(10) - 0.01) * 0.5, rel=1e-6)
    assert float(s(10)) == pytest.approx(lr(10), rel=1e-6)
    assert float(s(50)) == pytest.approx(0.1, rel=1e-6)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(s(150)) == pytest.approx(0.0, abs=1e-7)  # never negative past the end
    again = optim.WarmupCosineDecay.from_config(s.get_config())
    assert float(again(37)) == float(s(37))


def test_lr_scaling_and_weight_decay_exclusions():
    cfg = config_from_dict({"model": {"num_classes": 5, "base_width": 8, "num_conv": 2,
                                      "blocks": [1, 1, 1, 1]},
                            "train": {"batch_size": 128, "base_lr": 0.1, "epochs": 10,
                                      "lr_reference_batch": 64, "optimizer": "keras"}})
    assert optim.scaled_learning_rate(cfg.train) == pytest.approx(0.2)
    model = model_from_config(cfg.model)
    assert (model.base_width, model.num_conv, model.blocks) == (8, 2, (1, 1, 1, 1))
    opt = optim.make_optimizer(cfg.train, model, steps_per_epoch=10)
    assert opt.nesterov and opt.momentum == 0.9 and opt.weight_decay == pytest.approx(5e-5)
    assert float(opt.learning_rate) == pytest.approx(0.01)  # step 0: warm-up start
    decayed = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
    kept = {v.path for v in model.trainable_variables} - decayed
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(kept) == 2 * len(bns) + sum(1 for v in model.trainable_variables
                                           if v.name == "bias")
    assert all(p.endswith(("gamma", "beta", "bias")) for p in kept)
    assert all(p.endswith("kernel") for p in decayed) and len(decayed) > 10
    wrapped = optim.make_optimizer(
        config_from_dict({"train": {"mixed_precision": "mixed_float16"}}).train, model, 10)
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    from vov3d_tf.train.optim import ReferenceSGD  # the default form (tests/test_optim.py)
    assert isinstance(wrapped.inner_optimizer, ReferenceSGD)


def test_strategy_selection(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.select_strategy()
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert distribute.is_chief(strategy)


def test_sync_bn_flags_every_batchnorm():
    model = create_model("x3d_m", 4, base_width=8, blocks=(1, 1, 1, 1))
    n = distribute.use_synchronized_batchnorm(model)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert n == len(bns) > 5 and all(l.synchronized for l in bns)


# --- data checks ----------------------------------------------------------------------------

def test_missing_shards_fail_before_anything_is_built(tmp_path):
    out = tmp_path / "run"
    cfg = config_from_dict(tiny_config(str(tmp_path / "nowhere"), out), "tiny.json")
    with pytest.raises(FileNotFoundError) as e:
        training.run(cfg, source="tiny.json")
    assert "tiny.json: data.train_files: no file matches" in str(e.value)
    assert "does not exist" in str(e.value)
    assert not out.exists()  # nothing written, nothing trained


def test_class_count_mismatch_is_an_error(shards, tmp_path):
    d = tiny_config(shards, tmp_path / "run")
    d["model"]["num_classes"] = 5
    with pytest.raises(ValueError, match="model.num_classes is 5 but the dataset has 3 labels"):
        training.run(config_from_dict(d), source="x.json")


def test_count_records_from_manifest_and_files(shards, tmp_path):
    assert count_records(f"{shards}/train-*.tfrecord") == 32
    for f in glob.glob(f"{shards}/eval-*.tfrecord"):  # no manifest: counted by reading
        os.link(f, tmp_path / os.path.basename(f))
    assert count_records(f"{tmp_path}/eval-*.tfrecord") == 8


# --- end to end ---------------------------------------------------------------------------

def test_tiny_run_end_to_end_then_not_retrained(shards, tmp_path, capsys):
    out = tmp_path / "run"
    # Label smoothing and synchronized BN ride along (one run keeps the test time down).
    cfg = config_from_dict(tiny_config(shards, out, eval={"every_epochs": 1},
                                       train={"label_smoothing": 0.1, "sync_bn": True}))
    result = training.run(cfg, verbose=0)
    assert result["already_finished"] is False
    assert result["steps"] == result["steps_this_run"] == 2 * 4  # 32 videos / batch 8
    # (top-5 of 3 classes is 1.0 whatever the model: the top-1 is recomputed by hand below)
    assert (result["num_videos"], result["num_views"]) == (8, 1)
    for name in ("config.json", "best.keras", "last.keras", "history.csv", "final_metrics.json",
                 "per_class_accuracy.csv", "confusion_matrix.png", "predictions.csv"):
        assert (out / name).exists(), name
    with open(out / "predictions.csv") as f:  # the final test's per-video top-5
        assert len(f.read().splitlines()) == 1 + 8
    assert load_config(str(out / "config.json")) == cfg
    with open(out / "history.csv") as f:
        rows = f.read().strip().splitlines()
    assert rows[0].split(",") == ["epoch", "accuracy", "learning_rate", "loss", "top5",
                                  "val_top1", "val_top5"]
    assert len(rows) == 3
    assert glob.glob(str(out / "logs" / "train" / "events.out.tfevents.*"))
    ckpt = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert ckpt.endswith("ckpt-8")

    # The saved inference model is plain Keras and gives the evaluated numbers.
    model = keras.models.load_model(out / "last.keras")
    assert model.count_params() == model_from_config(cfg.model).count_params()
    again = training.evaluate_run(cfg, weights=str(out / "last.keras"))
    assert again["top1"] == pytest.approx(result["top1"])
    # The reported top-1, recomputed without vov3d_tf.train.evaluation: argmax of each video's logits.
    _, eval_ds = make_datasets(cfg, training=False)
    hits = [np.argmax(model(views[:, 0], training=False), axis=-1) == labels
            for views, labels in eval_ds.as_numpy_iterator()]  # one view per video here
    hits = np.concatenate(hits)
    assert len(hits) == result["num_videos"] == 8
    assert result["top1"] == pytest.approx(hits.mean())

    # Same command again: reported, not retrained.
    capsys.readouterr()
    second = training.run(cfg, verbose=0)
    assert second["already_finished"] is True and second["top1"] == result["top1"]
    assert "already holds a finished run" in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(out / "checkpoints")) == ckpt


def test_force_deletes_the_previous_run_only(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for name in ("final_metrics.json", "history.csv", "best.keras", "notes.txt"):
        (out / name).write_text("{}")
    cfg = config_from_dict(tiny_config(str(tmp_path), out))
    assert rundir.prepare(cfg, "x.json", force=False, chief=True) == {}
    assert rundir.prepare(cfg, "x.json", force=True, chief=True) is None
    assert sorted(os.listdir(out)) == ["config.json", "notes.txt"]  # only run files go


def _toy_data(n, poison_batch=None, batch=4, views=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4, 32, 32, 3)).astype(np.float32)
    y = (np.arange(n) % NUM_CLASSES).astype(np.int32)
    if poison_batch is not None:
        x[poison_batch * batch:(poison_batch + 1) * batch] = np.nan
    if views:
        x = x[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    d = tiny_config(str(tmp_path), out, train={"steps_per_epoch": 4, "epochs": 2,
                                                "batch_size": 4, "checkpoint_every_steps": 2})
    # Batch 6 (step 7) is NaN: checkpoints 2, 4 (epoch end), 6 are good; nothing after.
    datasets = (_toy_data(32, poison_batch=6), _toy_data(4, views=True))
    with pytest.raises(training.TrainingDiverged) as e:
        training.run(config_from_dict(d), datasets=datasets, verbose=0)
    msg = str(e.value)
    assert "diverged at step 7 (epoch 2)" in msg and "the loss is nan" in msg
    assert msg.endswith("Lower train.base_lr, or check the data.")
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert latest.endswith("ckpt-6") and latest in msg
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    assert not (out / "final_metrics.json").exists()


# --- resume after kill -9 ---------------------------------------------------------------------

def _train_cmd(config_path):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--config", str(config_path)]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": ""}


def test_resume_after_kill_9(shards, tmp_path):
    out = tmp_path / "run"
    d = tiny_config(shards, out, train={"epochs": 6, "checkpoint_every_steps": 3,
                                        "precise_bn_batches": 0})
    config_path = tmp_path / "tiny.json"
    save_config(config_from_dict(d), config_path)
    total = 6 * 4
    ckpt_dir = out / "checkpoints"

    proc = subprocess.Popen(_train_cmd(config_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)
    killed_after = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        latest = tf.train.latest_checkpoint(str(ckpt_dir))
        if latest and 6 <= int(latest.rsplit("-", 1)[1]) < total - 6:
            proc.send_signal(signal.SIGKILL)
            killed_after = int(latest.rsplit("-", 1)[1])
            break
        time.sleep(0.05)
    proc.wait()
    log = proc.stdout.read().decode()
    assert killed_after is not None, f"run ended before it could be killed:\n{log[-3000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final_metrics.json").exists()

    # The same command resumes at the last checkpoint: only the remaining steps are trained.
    resumed = tf.train.latest_checkpoint(str(ckpt_dir))
    at = int(resumed.rsplit("-", 1)[1])
    assert at >= killed_after
    res = subprocess.run(_train_cmd(config_path), capture_output=True, text=True, env=_env(),
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resuming {out} from {resumed}: step {at}/{total}" in res.stdout
    final = json.loads(res.stdout.strip().splitlines()[-1])
    assert final["steps"] == total
    # A run restarted from scratch would train `total` steps here.
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["steps_this_run"] == total - at
    with open(out / "history.csv") as f:
        epochs = [int(r.split(",")[0]) for r in f.read().strip().splitlines()[1:]]
    assert epochs[-1] == 5 and sorted(set(epochs)) == list(range(epochs[0], 6))


def test_train_py_reports_config_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochs": -1}}))
    res = subprocess.run(_train_cmd(bad), capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert res.returncode == 2
    assert f"error: {bad}: train.epochs: -1 is out of range" in res.stderr


@pytest.mark.parametrize("policy", ["mixed_float16",
                                    pytest.param("mixed_bfloat16", marks=pytest.mark.slow)])
def test_mixed_precision_run_saves_float32_models(tmp_path, policy):
    out = tmp_path / "run"
    d = tiny_config(str(tmp_path), out, train={"steps_per_epoch": 2, "epochs": 1, "batch_size": 4,
                                                "mixed_precision": policy,
                                                "precise_bn_batches": 1})
    result = training.run(config_from_dict(d), verbose=0,
                          datasets=(_toy_data(8).repeat(), _toy_data(4, views=True)))
    assert result["steps"] == 2 and np.isfinite(result["top1"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    model = keras.models.load_model(out / "last.keras")
    assert model.dtype_policy.name == "float32"
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in model.get_weights())
