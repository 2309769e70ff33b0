"""Training: distribution strategy, the paper's optimiser and schedule, fault tolerance, run(cfg).

Read top to bottom, `run(cfg)` (`_run`) is:

    setup     strategy (Mirrored, or MultiWorkerMirrored when TF_CONFIG is set), precision,
              seeds; the data (`_RunData`: shards, or in-memory datasets) checked, labelled and
              counted before anything is built
    model     model_from_config(cfg.model) (the config stops there), optional synchronized BN;
              a fresh run starts from model.init_weights if set, then train.freeze; the
              reference's SGD step (vov3d_tf.optim: Nesterov 0.9, coupled L2 decay on the
              official no-"bn" parameters) or Keras' SGD (train.optimizer); base LR x batch /
              reference batch, linear warm-up then cosine or steps (train.lr_policy)
    restore   the latest tf.train checkpoint (weights, optimizer slots, step => schedule); a
              checkpoint of the other optimizer form is refused
    data      the datasets, the training stream seeded from the restored step
    fit       keras fit, resumed mid-epoch at the saved step; checkpoints every N steps and at
              every epoch end; NaN/inf loss stops with the last good checkpoint kept
    finish    precise BN, best/last .keras, multi-view test, final_metrics.json (=> finished)

Everything is written into `cfg.train.output_dir`:

    config.json            the resolved config (every key)
    checkpoints/           tf.train checkpoints (the resume state)
    history.csv, logs/     Keras CSV history and TensorBoard (loss, accuracy, learning rate)
    best.keras, last.keras inference models (no optimizer; best = highest periodic eval top-1)
    final_metrics.json     top-1/top-5 of the final multi-view test; its presence = finished
    per_class_accuracy.csv, confusion_matrix.png
    predictions.csv        every eval video's top-5 (video id, filename, true label, scores)
    init_weights.json      model.init_weights: source path, sha256, what was loaded/re-initialised
"""
import json
import math
import os
import sys
import tempfile
import time

import keras
import tensorflow as tf

from vov3d_tf import _compat, evaluation, fileio, finetune, optim
from vov3d_tf.adapters import class_names, lr_schedule_args, model_from_config
from vov3d_tf.config import config_to_dict, save_config
from vov3d_tf.data.datasets import check_data, count_records, ensure_synthetic, make_datasets
from vov3d_tf.models import VideoClassifier, create_model  # noqa: F401  (create_model: re-export)

# model_from_config, class_names (vov3d_tf.adapters) and check_data, count_records, make_datasets
# (vov3d_tf.data.datasets) live there; imported here for the callers of training.*.
__all__ = ["model_from_config", "select_strategy", "scaled_learning_rate", "WarmupCosineDecay",
           "make_optimizer", "check_data", "count_records", "class_names", "make_datasets",
           "run", "evaluate_run", "TrainingDiverged"]

CHECKPOINT_DIR = "checkpoints"
FINAL_METRICS = "final_metrics.json"
RUN_FILES = ("config.json", CHECKPOINT_DIR, "logs", "history.csv", "best.keras", "last.keras",
             FINAL_METRICS, "per_class_accuracy.csv", "confusion_matrix.png", "eval",
             "init_weights.json")
# The checkpoint records which optimizer form wrote its momentum slots; checkpoints from before
# this marker existed were written by Keras' SGD.
OPTIMIZER_FORM_KEY = "optimizer_form/.ATTRIBUTES/VARIABLE_VALUE"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def select_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, else MirroredStrategy
    over the local GPUs (the CPU when there are none)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _worker_dir(path, strategy):
    """Where this worker writes `path`: the chief writes the real path, the others a temporary
    sibling (every worker must save, since saving reads synchronised variables)."""
    if _is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    return os.path.join(os.path.dirname(path) or ".", f".worker_{resolver.task_type}_"
                        f"{resolver.task_id}", os.path.basename(path))


def scaled_learning_rate(train_cfg):
    """Linear scaling rule: base LR at the reference batch, scaled to the global batch."""
    return train_cfg.base_lr * train_cfg.batch_size / train_cfg.lr_reference_batch


@keras.saving.register_keras_serializable(package="vov3d_tf")
class WarmupCosineDecay(optim.LinearWarmup):
    """PySlowFast's cosine policy with linear warm-up, per step (ARCHITECTURE.md §12)::

        lr(s) = 0.5 * peak * (1 + cos(pi * s / total))                       s >= warmup
        lr(s) = start + (lr(warmup) - start) * s / warmup                     s <  warmup

    The cosine runs over the whole run (warm-up included) and ends at 0, as in the reference.
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, warmup_start_lr=0.0):
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_lr)

    def _policy(self, step):
        frac = tf.minimum(step / float(max(self.total_steps, 1)), 1.0)
        return 0.5 * self.peak_lr * (1.0 + tf.cos(math.pi * frac))

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_start_lr": self.warmup_start_lr}


def _no_decay_variables(model):
    """BatchNorm gamma/beta and every bias: excluded from weight decay."""
    out = []
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            out += layer.trainable_weights
        else:
            out += [w for w in layer.trainable_weights if w.name == "bias"]
    return out


def make_schedule(train_cfg, steps_per_epoch):
    """The LR schedule of `train.lr_policy` (with its linear warm-up), per step."""
    name, kwargs = lr_schedule_args(train_cfg, steps_per_epoch)
    return {"WarmupCosineDecay": WarmupCosineDecay,
            "WarmupStepsDecay": optim.WarmupStepsDecay}[name](**kwargs)


def make_optimizer(train_cfg, model, steps_per_epoch):
    """SGD Nesterov with the warm-up schedule, in the form `train.optimizer` names.

    `reference`: `vov3d_tf.optim.ReferenceSGD`, torch.optim.SGD's step with coupled L2 decay
    (`g += wd * w` before momentum) on every parameter whose official name has no "bn"
    (biases and the D(2+1)D `a.1`/`c.1` BNs included). `keras`: Keras' SGD, decoupled decay
    (`w -= lr * wd * w`) on kernels only. Build `model` (and freeze it) before calling this.
    """
    schedule = make_schedule(train_cfg, steps_per_epoch)
    if train_cfg.optimizer == "reference":
        optimizer = optim.reference_sgd(model, schedule, momentum=train_cfg.momentum,
                                        nesterov=train_cfg.nesterov,
                                        weight_decay=train_cfg.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=train_cfg.momentum,
                                         nesterov=train_cfg.nesterov,
                                         weight_decay=train_cfg.weight_decay or None)
        if train_cfg.weight_decay:
            optimizer.exclude_from_weight_decay(var_list=_no_decay_variables(model))
    if train_cfg.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def use_synchronized_batchnorm(model):
    """Compute BN batch statistics over all replicas (SyncBN) in every BN layer of `model`.

    The flag is read when traced, so setting it before the first train step equals building
    with `synchronized=True`; `vov3d_tf.layers.BatchNorm` then all-reduces the statistics with
    the fused BN's numbers (two-pass variance, unbiased moving variance). The saved model
    config is unchanged (inference does not use batch statistics).
    """
    n = 0
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            n += 1
    return n


# ----------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------

def _all_finite(model):
    return all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in model.weights
               if "float" in str(w.dtype))


class StepCheckpoint(keras.callbacks.Callback):
    """tf.train checkpoint every `every_steps` steps and at each epoch end; stops on NaN/inf.

    A checkpoint holds the model weights, the optimizer slots and its iteration counter (so the
    LR schedule resumes exactly). It is only written while the loss and the weights are finite;
    on a NaN/inf loss training stops and `diverged` describes what happened.
    """

    def __init__(self, manager, every_steps, steps_per_epoch, strategy):
        super().__init__()
        self.manager = manager
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        self.strategy = strategy
        self.diverged = None
        self.last_saved = None

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def save(self, step):
        if self.diverged or step == self.last_saved:
            return
        if not _all_finite(self.model):
            self._stop(step, "the weights contain NaN/inf")
            return
        self.manager.save(checkpoint_number=step)
        self.last_saved = step

    def _stop(self, step, what):
        last = self.manager.latest_checkpoint
        self.diverged = (f"training diverged at step {step} (epoch "
                         f"{step // self.steps_per_epoch + 1}): {what}. Stopped; the last good "
                         f"checkpoint is kept: {last or 'none (diverged before the first save)'}. "
                         f"Lower train.base_lr, or check the data.")
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.diverged:
            return
        loss = (logs or {}).get("loss")
        step = self._step()
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(step, f"the loss is {float(loss)}")
            return
        if step % self.every_steps == 0:
            self.save(step)

    def on_epoch_end(self, epoch, logs=None):
        self.save(self._step())


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (CSV history and TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            logs["learning_rate"] = float(opt.learning_rate.numpy()
                                          if hasattr(opt.learning_rate, "numpy")
                                          else opt.learning_rate)


class PeriodicEval(keras.callbacks.Callback):
    """Multi-view test every `every_epochs` epochs: adds val_top1/val_top5 to the epoch logs
    (NaN on other epochs, so the CSV keeps its columns) and keeps best.keras up to date."""

    def __init__(self, dataset, num_classes, every_epochs, best_path, best_var, save_fn,
                 max_views_per_batch=None):
        super().__init__()
        self.dataset = dataset
        self.max_views_per_batch = max_views_per_batch
        self.num_classes = num_classes
        self.every_epochs = every_epochs
        self.best_path = best_path
        self.best_var = best_var  # tf.Variable in the checkpoint: survives a resume
        self.save_fn = save_fn

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if not self.every_epochs or (epoch + 1) % self.every_epochs:
            logs["val_top1"] = logs["val_top5"] = float("nan")
            return
        result = evaluation.evaluate(self.model, self.dataset, self.num_classes, verbose=False,
                                     max_views_per_batch=self.max_views_per_batch)
        logs["val_top1"], logs["val_top5"] = result["top1"], result["top5"]
        print(f"\n[vov3d] epoch {epoch + 1}: eval {evaluation.describe(result)} "
              f"({result['num_videos']} videos x {result['num_views']} views)", flush=True)
        if result["top1"] > float(self.best_var.numpy()):
            self.best_var.assign(result["top1"])
            self.save_fn(self.model, self.best_path)


def save_inference_model(model, path, strategy=None):
    """`.keras` file of the bare model (float32, no optimizer): loadable with only vov3d_tf."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clean = VideoClassifier.from_config(model.get_config())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clean.set_weights(model.get_weights())
    target = _worker_dir(path, strategy) if strategy is not None else path
    fileio.makedirs(os.path.dirname(target) or ".")
    tmp = target + ".tmp.keras"
    clean.save(tmp)  # Keras 3 writes .keras files through gfile: local, gs://, ram://, ...
    fileio.rename(tmp, target)  # never a half-written .keras under the final name
    if strategy is not None and target != path:
        fileio.rmtree(os.path.dirname(target))
    return path


class GfileCSVLogger(keras.callbacks.CSVLogger):
    """keras.callbacks.CSVLogger for any path. Keras' logger keeps a file object open and asks
    it for `.closed`, which tf.io.gfile's GFile lacks, and object stores cannot append: so for a
    non-local path it logs into a local temporary copy (the previous rows downloaded first when
    appending) and copies it to the path after every epoch; the temporary file is deleted when
    training ends. Local paths use Keras' logger unchanged."""

    def __init__(self, filename, append=False):
        super().__init__(filename, append=append)
        self.target = filename

    def on_train_begin(self, logs=None):
        if not fileio.is_local(self.target):
            fd, self.filename = tempfile.mkstemp(suffix=".csv")
            os.close(fd)
            if self.append and fileio.exists(self.target):
                fileio.copy(self.target, self.filename)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.filename != self.target:
            self.csv_file.flush()
            fileio.copy(self.filename, self.target)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.filename != self.target:
            fileio.copy(self.filename, self.target)
            os.remove(self.filename)
            self.filename = self.target


# ----------------------------------------------------------------------------------------------
# run(cfg)
# ----------------------------------------------------------------------------------------------

def _build_for_multi_worker(model, strategy, element_spec):
    """Work around Keras 3's fit() under MultiWorkerMirroredStrategy (tensorflow#72388).

    Keras reduces with `strategy.reduce("MEAN", value, axis=0)`, which this strategy cannot do
    for the (x, y) tuple it uses to build the loss/metrics, nor for the scalar logs of each
    train step. So: build the loss and metrics here from the element spec and skip Keras'
    build step, and return each step's logs as shape (1,) (the MEAN over axis 0 of the
    per-worker values is then their average, a scalar). Training math is unchanged.
    """
    with strategy.scope():
        _compat.build_fit_state(model, element_spec)
    train_step = model.train_step

    def train_step_with_rank1_logs(data):
        return {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}
    model.train_step = train_step_with_rank1_logs


def _read_json(path):
    return fileio.read_json(path)


def _prepare_output_dir(cfg, source, force, chief):
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
        return _read_json(final)
    saved = os.path.join(out, "config.json")
    ckpt = tf.train.latest_checkpoint(os.path.join(out, CHECKPOINT_DIR))
    if ckpt and fileio.exists(saved):
        before = _read_json(saved)
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


def _check_optimizer_form(path, wanted, source):
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


def run(cfg, *, source="config", force=False, datasets=None, verbose=None):
    """Train `cfg` (resuming from its output_dir), then precise BN and the multi-view test.

    Returns a dict: `top1`, `top5`, `num_videos`, `num_views`, `steps` (total optimizer
    steps), `steps_this_run` (trained by this call; less after a resume), `epochs`,
    `best_weights`, `last_weights`, `output_dir`, `train_seconds`, `already_finished`.
    A run whose `final_metrics.json` exists is not retrained (its metrics are returned with
    `already_finished=True`) unless `force`. `datasets=(train, eval)` replaces the shard
    pipeline (tests, the search). Raises `TrainingDiverged` on a NaN/inf loss.
    """
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(cfg.train.mixed_precision or "float32")
    try:
        return _run(cfg, source=source, force=force, datasets=datasets, verbose=verbose)
    finally:  # the precision policy is global state: give it back
        keras.mixed_precision.set_global_policy(previous_policy)


class _RunData:
    """The data of a run: the config's shards, or in-memory `(train, eval)` datasets (tests,
    the search). The one place the two differ, so `_run` has no branch on it."""

    def __init__(self, cfg, source, datasets=None):
        self.cfg, self.source, self.given = cfg, source, datasets

    def check(self, chief):
        """Shards: demo data written if asked for (chief), every pattern matches files."""
        if self.given is None:
            if chief:
                ensure_synthetic(self.cfg, self.source)
            check_data(self.cfg, self.source)

    def class_names(self):
        """The label list (None for in-memory data), checked against model.num_classes."""
        names = class_names(self.cfg) if self.given is None else None
        if names is not None and len(names) != self.cfg.model.num_classes:
            raise ValueError(f"{self.source}: model.num_classes is {self.cfg.model.num_classes} "
                             f"but the dataset has {len(names)} labels")
        return names

    def steps_per_epoch(self):
        tc = self.cfg.train
        if tc.steps_per_epoch:
            return tc.steps_per_epoch
        if self.given is None:
            return max(1, count_records(self.cfg.data.train_files) // tc.batch_size)
        raise ValueError(f"{self.source}: train.steps_per_epoch must be set with in-memory "
                         f"datasets")

    def datasets(self, seed):
        """(train, eval); shards: the training stream starts from `seed`."""
        return make_datasets(self.cfg, seed=seed) if self.given is None else tuple(self.given)

    def precise_bn_batches(self, seed, train_ds):
        """Training batches for precise BN (None when off): a fresh stream for shards."""
        if not self.cfg.train.precise_bn_batches:
            return None
        if self.given is None:
            return make_datasets(self.cfg, seed=seed, evaluation_=False)[0]
        return train_ds


def _compile(cfg, strategy, steps_per_epoch, *, fresh, chief):
    """The model, compiled with the paper's optimiser and loss, and the best-top-1 variable.

    A `fresh` run (no checkpoint to resume) starts from `model.init_weights` if set (the
    chief records its source in init_weights.json); then `train.freeze` applies."""
    tc = cfg.train
    out = tc.output_dir
    with strategy.scope():
        model = model_from_config(cfg.model)
        if tc.sync_bn:
            use_synchronized_batchnorm(model)
        if cfg.model.init_weights and fresh:
            report = finetune.load_initial_weights(model, cfg.model.init_weights)
            if chief:
                fileio.write_json(os.path.join(out, "init_weights.json"), report, indent=2)
        frozen = finetune.freeze(model, tc.freeze)
        if frozen:
            print(f"[vov3d] train.freeze={tc.freeze}: {len(frozen)} layers frozen "
                  f"({frozen[0]} ... {frozen[-1]}), BN of those in inference mode", flush=True)
        optimizer = make_optimizer(tc, model, steps_per_epoch)
        if tc.label_smoothing:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                        label_smoothing=tc.label_smoothing)
            metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                       keras.metrics.TopKCategoricalAccuracy(5, name="top5")]
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                       keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")]
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=False)
        model.optimizer.build(model.trainable_variables)
        best_top1 = tf.Variable(-1.0, trainable=False, dtype=tf.float32)
    return model, best_top1


def _restore(model, best_top1, out, strategy, optimizer_form):
    """(checkpoint manager, restored step): the latest checkpoint of the run, if any. The
    checkpoint records `optimizer_form` (train.optimizer), see `_check_optimizer_form`."""
    form = tf.Variable(optimizer_form, trainable=False, dtype=tf.string)
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, best_top1=best_top1,
                               optimizer_form=form)
    ckpt_dir = _worker_dir(os.path.join(out, CHECKPOINT_DIR), strategy)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2)
    latest = tf.train.latest_checkpoint(os.path.join(out, CHECKPOINT_DIR))
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
    step = int(model.optimizer.iterations.numpy())
    return manager, step, latest


def _fit_with_resume(model, train_ds, callbacks, saver, *, step, steps_per_epoch, epochs,
                     verbose):
    """Train from optimizer step `step` to `epochs`: the interrupted epoch first, then the
    rest. Raises TrainingDiverged on a NaN/inf loss."""
    epoch0, in_epoch = divmod(step, steps_per_epoch)
    if step < epochs * steps_per_epoch and in_epoch:  # finish the interrupted epoch first
        model.fit(train_ds, initial_epoch=epoch0, epochs=epoch0 + 1,
                  steps_per_epoch=steps_per_epoch - in_epoch, callbacks=callbacks,
                  verbose=verbose, shuffle=False)
        epoch0 += 1
    if not saver.diverged and epoch0 < epochs:
        model.fit(train_ds, initial_epoch=epoch0, epochs=epochs,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    if saver.diverged:
        raise TrainingDiverged(saver.diverged)


def _run(cfg, *, source, force, datasets, verbose):
    # --- setup: seeds, strategy, data checked before anything is built, output dir ----------
    t_start = time.time()
    tc = cfg.train
    out = tc.output_dir
    keras.utils.set_random_seed(tc.seed)
    strategy = select_strategy()
    chief = _is_chief(strategy)
    data = _RunData(cfg, source, datasets)
    data.check(chief)
    finished = _prepare_output_dir(cfg, source, force, chief)
    if finished is not None:
        shown = ("labels hidden" if finished.get("top1") is None else
                 f"top-1 {finished['top1']:.4f}, top-5 {finished['top5']:.4f}")
        print(f"[vov3d] {out} already holds a finished run ({shown}); not retraining. Use "
              f"--force to train again or --eval-only to re-evaluate.", flush=True)
        return {**finished, "already_finished": True}
    names = data.class_names()
    steps_per_epoch = data.steps_per_epoch()
    total_steps = tc.epochs * steps_per_epoch

    # --- model and checkpoint: a resumed run continues at the saved step ----------------------
    latest = tf.train.latest_checkpoint(os.path.join(out, CHECKPOINT_DIR))
    if latest:
        _check_optimizer_form(latest, tc.optimizer, source)
    model, best_top1 = _compile(cfg, strategy, steps_per_epoch, fresh=not latest, chief=chief)
    manager, step, restored = _restore(model, best_top1, out, strategy, tc.optimizer)
    if restored:
        print(f"[vov3d] resuming {out} from {restored}: step {step}/{total_steps} "
              f"(epoch {step // steps_per_epoch + 1}, step {step % steps_per_epoch} of "
              f"{steps_per_epoch})", flush=True)

    # --- data: the training stream's seed moves with the step, so a resume sees new clips ----
    train_ds, eval_ds = data.datasets(seed=tc.seed + step)
    if tc.label_smoothing:
        k = cfg.model.num_classes
        train_ds = train_ds.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), k)))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _build_for_multi_worker(model, strategy, train_ds.element_spec)

    # --- fit with resume ------------------------------------------------------------------------
    best_path = os.path.join(out, "best.keras")
    last_path = os.path.join(out, "last.keras")
    saver = StepCheckpoint(manager, tc.checkpoint_every_steps, steps_per_epoch, strategy)
    save_fn = lambda m, p: save_inference_model(m, p, strategy)  # noqa: E731
    callbacks = [LearningRateLogger(),
                 PeriodicEval(eval_ds, cfg.model.num_classes, cfg.eval.every_epochs, best_path,
                              best_top1, save_fn, cfg.eval.max_views_per_batch), saver]
    if chief:
        callbacks += [GfileCSVLogger(os.path.join(out, "history.csv"), append=True),
                      keras.callbacks.TensorBoard(os.path.join(out, "logs"), update_freq="epoch")]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t_train = time.time()
    first_step = step
    _fit_with_resume(model, train_ds, callbacks, saver, step=step,
                     steps_per_epoch=steps_per_epoch, epochs=tc.epochs, verbose=verbose)
    train_seconds = time.time() - t_train
    step = int(model.optimizer.iterations.numpy())

    # --- finish: precise BN, weights, multi-view test ------------------------------------------
    precise_ds = data.precise_bn_batches(tc.seed + 10_000_019, train_ds)
    if precise_ds is not None:
        n = evaluation.precise_bn(model, precise_ds, tc.precise_bn_batches)
        print(f"[vov3d] precise BN: statistics recomputed over {n} training batches", flush=True)
    save_fn(model, last_path)
    if float(best_top1.numpy()) < 0:  # no periodic eval: best is the final model
        save_fn(model, best_path)
    if datasets is None:  # the final test also writes predictions.csv: carry the file names
        _, eval_ds = make_datasets(cfg, training=False, with_filename=True)
    result = evaluation.evaluate(model, eval_ds, cfg.model.num_classes, class_names=names,
                                 output_dir=out if chief else None, verbose=verbose == 1,
                                 max_views_per_batch=cfg.eval.max_views_per_batch)
    metrics = {**evaluation.json_metrics(result),  # top-1/top-5 null when labels are hidden
               "steps": step, "steps_this_run": step - first_step, "epochs": tc.epochs,
               "train_seconds": round(train_seconds, 1),
               "total_seconds": round(time.time() - t_start, 1),
               "best_weights": best_path, "last_weights": last_path, "output_dir": out,
               "per_class_csv": result.get("per_class_csv"),
               "confusion_png": result.get("confusion_png"),
               "predictions_csv": result.get("predictions_csv")}
    if not chief and fileio.exists(os.path.dirname(manager.directory)):  # this worker's copies
        fileio.rmtree(os.path.dirname(manager.directory))
    if chief:
        fileio.atomic_write_json(os.path.join(out, FINAL_METRICS), metrics, indent=2)
    print(f"[vov3d] final multi-view test ({result['num_videos']} videos x "
          f"{result['num_views']} views): {evaluation.describe(result)}; trained {step} steps "
          f"in {train_seconds:.0f} s", flush=True)
    return {**metrics, "already_finished": False}


def evaluate_run(cfg, *, weights=None, source="config", datasets=None, output_dir=None):
    """`--eval-only`: multi-view test of saved weights (default: output_dir/best.keras, then
    last.keras). Writes eval/metrics.json, per-class CSV, confusion PNG and predictions.csv
    (every video's top-5, with its `video/filename`) under output_dir. On a split whose labels
    are hidden (a test split) the predictions are the result: top-1/top-5 are null."""
    out = output_dir or os.path.join(cfg.train.output_dir, "eval")
    if weights is None:
        for name in ("best.keras", "last.keras"):
            candidate = os.path.join(cfg.train.output_dir, name)
            if fileio.exists(candidate):
                weights = candidate
                break
        else:
            raise FileNotFoundError(f"{source}: no best.keras/last.keras in train.output_dir "
                                    f"{cfg.train.output_dir!r}; pass --weights")
    if not fileio.exists(weights):
        raise FileNotFoundError(f"--weights: {weights!r} not found")
    if datasets is None:
        check_data(cfg, source, need_train=False)
        _, eval_ds = make_datasets(cfg, training=False, with_filename=True)
        names = class_names(cfg)
    else:
        eval_ds, names = datasets[1], None
    model = keras.models.load_model(weights, compile=False)
    if model.outputs[0].shape[-1] != cfg.model.num_classes:
        raise ValueError(f"{weights}: the model has {model.outputs[0].shape[-1]} classes, "
                         f"model.num_classes is {cfg.model.num_classes}")
    result = evaluation.evaluate(model, eval_ds, cfg.model.num_classes, class_names=names,
                                 output_dir=out, verbose=sys.stdout.isatty(),
                                 max_views_per_batch=cfg.eval.max_views_per_batch)
    metrics = evaluation.json_metrics(result)  # top-1/top-5 null when the labels are hidden
    metrics.update(weights=weights, per_class_csv=result["per_class_csv"],
                   confusion_png=result["confusion_png"],
                   predictions_csv=result["predictions_csv"])
    fileio.write_json(os.path.join(out, "metrics.json"), metrics, indent=2)
    print(f"[vov3d] {weights}: multi-view test ({result['num_videos']} videos x "
          f"{result['num_views']} views): {evaluation.describe(result)}", flush=True)
    return metrics
