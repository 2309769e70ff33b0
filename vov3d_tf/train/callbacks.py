"""The callbacks of a run's fit: step checkpoints (and the NaN/inf stop), periodic eval, logs.
"""
import math
import os
import tempfile

import keras
import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.train import evaluation

__all__ = ["TrainingDiverged", "StepCheckpoint", "LearningRateLogger", "PeriodicEval",
           "GfileCSVLogger"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


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
