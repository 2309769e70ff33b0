"""The search's tuner: a trial is train.py's training run of one candidate config.
"""
import gc
import math
import os
import traceback

import keras_tuner as kt

from vov3d_tf import fileio
from vov3d_tf.search import space as search_space
from vov3d_tf.search.oracle import OBJECTIVES, log
from vov3d_tf.train import rundir

__all__ = ["SearchTuner", "PROJECT_NAME", "ERROR_FILE"]

PROJECT_NAME = "search"  # <train.output_dir>/search/ holds the oracle, the trials and the report
ERROR_FILE = "error.txt"  # a failed trial's traceback, beside its trial.json


def _write_error(run_dir, text):
    trial_dir = os.path.dirname(run_dir)
    fileio.makedirs(trial_dir)
    fileio.write_text(os.path.join(trial_dir, ERROR_FILE), text)


class SearchTuner(kt.engine.base_tuner.BaseTuner):
    """Runs each trial with `train_fn(trial_config) -> {"top1", "top5", ...}`.

    `train_fn` defaults to `vov3d_tf.train.training.run` (exactly what `train.py` runs: train for
    the trial's epochs, then the multi-view test on `data.eval_files`). Each trial trains in
    `<project>/trial_<id>/run/`, which is also what makes an interrupted trial resumable.
    """

    def __init__(self, oracle, cfg, *, train_fn=None, directory, overwrite=False, verbose=2):
        self.cfg = cfg
        self.train_fn = train_fn
        self.verbose = verbose
        super().__init__(oracle, hypermodel=None, directory=directory,
                         project_name=PROJECT_NAME, overwrite=overwrite)

    def trial_run_dir(self, trial_id):
        return os.path.join(self.project_dir, f"trial_{trial_id}", "run")

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        epochs = values.get("tuner/epochs", self.cfg.search.epochs_per_trial)
        out = self.trial_run_dir(trial.trial_id)
        tcfg = search_space.trial_config(self.cfg, values, epochs=epochs, output_dir=out)
        previous = values.get("tuner/trial_id")
        if previous:  # Hyperband continues a promising trial from its checkpoint
            src = os.path.join(self.trial_run_dir(previous), rundir.CHECKPOINTS)
            dst = os.path.join(out, rundir.CHECKPOINTS)
            if fileio.isdir(src) and not fileio.exists(dst):
                fileio.copytree(src, dst)
        log(f"trial {trial.trial_id}: {search_space.arch_values(values)}, {epochs} epoch(s) "
             f"-> {out}")
        try:
            if self.train_fn is None:
                from vov3d_tf.train import training
                result = training.run(tcfg, source=f"search trial {trial.trial_id}",
                                      verbose=self.verbose)
            else:
                result = self.train_fn(tcfg)
        except Exception:
            # keras-tuner keeps the traceback in trial.message, but its gRPC messages drop it:
            # a worker writes it next to the trial for the chief's report.
            _write_error(out, traceback.format_exc())
            raise
        metrics = {}
        for name, (key, _) in OBJECTIVES.items():
            if key in result:
                metrics[name] = float(result[key])
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad or self.oracle.objective.name not in metrics:
            msg = (f"trial {trial.trial_id}: training returned no finite "
                   f"{self.oracle.objective.name} ({result!r})")
            _write_error(out, f"FailedTrialError: {msg}\n")
            raise kt.errors.FailedTrialError(msg)
        return metrics

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        import keras
        keras.backend.clear_session()  # trials build many models in one process
        gc.collect()
