"""The run directory (`train.output_dir`): its file names, the resume checks, the .keras files.

    config.json            the resolved config (every key)
    checkpoints/           tf.train checkpoints (the resume state)
    history.csv, logs/     Keras CSV history and TensorBoard (loss, accuracy, learning rate)
    best.keras, last.keras inference models (no optimizer; best = highest periodic eval top-1)
    final_metrics.json     top-1/top-5 of the final multi-view test; its presence = finished
    per_class_accuracy.csv, confusion_matrix.png, predictions.csv   the final test (evaluation.py)
    init_weights.json      model.init_weights: source path, sha256, what was loaded/re-initialised
    eval/                  `--eval-only` results (metrics.json and the final test's files)
"""
import os

import keras
import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.config import config_to_dict, save_config
from vov3d_tf.model.networks import VideoClassifier
from vov3d_tf.train.distribute import worker_path

__all__ = ["CONFIG", "CHECKPOINTS", "LOGS", "HISTORY", "BEST", "LAST", "FINAL_METRICS",
           "INIT_WEIGHTS", "EVAL_DIR", "EVAL_METRICS", "PER_CLASS_CSV", "CONFUSION_PNG",
           "PREDICTIONS_CSV",
           "RUN_FILES", "prepare", "trained_weights", "check_optimizer_form",
           "save_inference_model"]

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = "history.csv"
BEST = "best.keras"
LAST = "last.keras"
FINAL_METRICS = "final_metrics.json"
INIT_WEIGHTS = "init_weights.json"
EVAL_DIR = "eval"
EVAL_METRICS = "metrics.json"  # in EVAL_DIR: the --eval-only result
PER_CLASS_CSV = "per_class_accuracy.csv"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_CSV = "predictions.csv"
RUN_FILES = (CONFIG, CHECKPOINTS, LOGS, HISTORY, BEST, LAST, FINAL_METRICS, INIT_WEIGHTS,
             EVAL_DIR, PER_CLASS_CSV, CONFUSION_PNG, PREDICTIONS_CSV)
# The checkpoint records which optimizer form wrote its momentum slots; checkpoints from before
# this marker existed were written by Keras' SGD.
OPTIMIZER_FORM_KEY = "optimizer_form/.ATTRIBUTES/VARIABLE_VALUE"


def trained_weights(output_dir):
    """The inference model a run left: best.keras, else last.keras; None when neither exists."""
    for name in (BEST, LAST):
        path = os.path.join(output_dir, name)
        if fileio.exists(path):
            return path
    return None


def prepare(cfg, source, force, chief):
    """Before training: `--force` clears the run (chief), a finished run returns its final
    metrics, a checkpoint of another `model` section is refused, changed `train` keys warn;
    the chief writes config.json. Returns the final metrics of a finished run, else None."""
    out = cfg.train.output_dir
    final = os.path.join(out, FINAL_METRICS)
    if force and chief:
        for name in RUN_FILES:
            p = os.path.join(out, name)
            if fileio.isdir(p):
                fileio.rmtree(p)
            elif fileio.exists(p):
                fileio.remove(p)
    elif fileio.exists(final):
        return fileio.read_json(final)
    saved = os.path.join(out, CONFIG)
    ckpt = tf.train.latest_checkpoint(os.path.join(out, CHECKPOINTS))
    if ckpt and fileio.exists(saved):
        before = fileio.read_json(saved)
        now = config_to_dict(cfg)
        for section in ("model",):  # init_weights only matters for a fresh run
            if ({k: v for k, v in (before.get(section) or {}).items() if k != "init_weights"}
                    != {k: v for k, v in now[section].items() if k != "init_weights"}):
                raise ValueError(
                    f"{source}: train.output_dir {out!r} holds a checkpoint of a different "
                    f"{section!r} section ({before.get(section)} vs {now[section]}); use another "
                    f"output_dir or --force to start over")
        for key in ("batch_size", "epochs", "steps_per_epoch", "base_lr"):
            if before.get("train", {}).get(key) != now["train"][key]:
                print(f"[vov3d] warning: train.{key} changed since the checkpoint "
                      f"({before['train'].get(key)} -> {now['train'][key]}); resuming anyway",
                      flush=True)
    if chief:
        fileio.makedirs(out)
        save_config(cfg, saved)
    return None


def check_optimizer_form(path, wanted, source):
    """Refuse to resume momentum slots written by the other optimizer form (they hold
    different quantities: raw gradient sums vs LR-scaled velocities)."""
    # The reader of the prefix itself: tf.train.load_checkpoint first asks whether `path` is a
    # directory, which ram:// (prefix listing) answers yes for a checkpoint prefix.
    reader = tf.compat.v1.train.NewCheckpointReader(path)
    if reader.has_tensor(OPTIMIZER_FORM_KEY):
        written = reader.get_tensor(OPTIMIZER_FORM_KEY)
        written = written.decode() if isinstance(written, bytes) else str(written)
    else:
        written = "keras"  # written before train.optimizer existed: Keras' SGD
    if written != wanted:
        raise ValueError(
            f"{source}: train.optimizer is {wanted!r} but the checkpoint {path} was written with "
            f"the {written!r} optimizer form ({_FORMS[written]}); its momentum slots mean "
            f"something else under {wanted!r} ({_FORMS[wanted]}). Resume with "
            f"--set train.optimizer={written}, or start over with --force or another "
            f"train.output_dir")


_FORMS = {"reference": "torch.optim.SGD: buffer = m * buffer + grad, coupled L2 decay",
          "keras": "Keras SGD: velocity = m * velocity - lr * grad, decoupled decay"}


def save_inference_model(model, path, strategy=None):
    """`.keras` file of the bare model (float32, no optimizer): loadable with only vov3d_tf."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clean = VideoClassifier.from_config(model.get_config())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clean.set_weights(model.get_weights())
    target = worker_path(path, strategy) if strategy is not None else path
    fileio.makedirs(os.path.dirname(target) or ".")
    tmp = target + ".tmp.keras"
    clean.save(tmp)  # Keras 3 writes .keras files through gfile: local, gs://, ram://, ...
    fileio.rename(tmp, target)  # never a half-written .keras under the final name
    if strategy is not None and target != path:
        fileio.rmtree(os.path.dirname(target))
    return path
