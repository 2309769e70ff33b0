"""A training run, top to bottom: `run(cfg)`, and `evaluate_run(cfg)` for `--eval-only`.

    vov3d-train --config configs/demo.json          (the same as `python train.py ...`)

`run(cfg)` (`_run`) is:

    setup     seeds, strategy (distribute.py: Mirrored, or MultiWorkerMirrored when TF_CONFIG is
              set), precision; the data (data.py `RunData`: shards, or in-memory datasets)
              checked, labelled and counted before anything is built; the run directory
              (rundir.py: a finished run is reported, a changed model refused)
    model     model_from_config(cfg.model) (the config stops there), optional synchronized BN;
              a fresh run starts from model.init_weights if set, then train.freeze
              (finetune.py); the reference's SGD step or Keras' SGD and the LR schedule
              (optim.py)
    restore   the latest tf.train checkpoint (weights, optimizer slots, step => schedule); a
              checkpoint of the other optimizer form is refused
    data      the datasets, the training stream seeded from the restored step
    fit       keras fit, resumed mid-epoch at the saved step (callbacks.py: checkpoints every N
              steps and at every epoch end; NaN/inf loss stops with the last good checkpoint)
    finish    precise BN, best/last .keras, the multi-view test (evaluation.py),
              final_metrics.json (=> finished)

Everything is written into `cfg.train.output_dir` (the files: rundir.py).
"""
import argparse
import json
import os
import sys
import time

import keras
import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.adapters import class_names, model_from_config
from vov3d_tf.train import evaluation, finetune, rundir
from vov3d_tf.train.callbacks import (GfileCSVLogger, LearningRateLogger, PeriodicEval,
                                      StepCheckpoint, TrainingDiverged)
from vov3d_tf.train.data import RunData, check_data, make_datasets
from vov3d_tf.train.distribute import (build_for_multi_worker, is_chief, select_strategy,
                                       use_synchronized_batchnorm, worker_path)
from vov3d_tf.train.optim import make_optimizer

__all__ = ["run", "evaluate_run", "TrainingDiverged", "main"]


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
                fileio.write_json(os.path.join(out, rundir.INIT_WEIGHTS), report, indent=2)
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
    ckpt_dir = worker_path(os.path.join(out, rundir.CHECKPOINTS), strategy)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2)
    latest = tf.train.latest_checkpoint(os.path.join(out, rundir.CHECKPOINTS))
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
    chief = is_chief(strategy)
    data = RunData(cfg, source, datasets)
    data.check(chief)
    finished = rundir.prepare(cfg, source, force, chief)
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
    latest = tf.train.latest_checkpoint(os.path.join(out, rundir.CHECKPOINTS))
    if latest:
        rundir.check_optimizer_form(latest, tc.optimizer, source)
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
        build_for_multi_worker(model, strategy, train_ds.element_spec)

    # --- fit with resume ------------------------------------------------------------------------
    best_path = os.path.join(out, rundir.BEST)
    last_path = os.path.join(out, rundir.LAST)
    saver = StepCheckpoint(manager, tc.checkpoint_every_steps, steps_per_epoch, strategy)
    save_fn = lambda m, p: rundir.save_inference_model(m, p, strategy)  # noqa: E731
    callbacks = [LearningRateLogger(),
                 PeriodicEval(eval_ds, cfg.model.num_classes, cfg.eval.every_epochs, best_path,
                              best_top1, save_fn, cfg.eval.max_views_per_batch), saver]
    if chief:
        callbacks += [GfileCSVLogger(os.path.join(out, rundir.HISTORY), append=True),
                      keras.callbacks.TensorBoard(os.path.join(out, rundir.LOGS),
                                                  update_freq="epoch")]
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
        fileio.atomic_write_json(os.path.join(out, rundir.FINAL_METRICS), metrics, indent=2)
    print(f"[vov3d] final multi-view test ({result['num_videos']} videos x "
          f"{result['num_views']} views): {evaluation.describe(result)}; trained {step} steps "
          f"in {train_seconds:.0f} s", flush=True)
    return {**metrics, "already_finished": False}


def evaluate_run(cfg, *, weights=None, source="config", datasets=None, output_dir=None):
    """`--eval-only`: multi-view test of saved weights (default: output_dir/best.keras, then
    last.keras). Writes eval/metrics.json, per-class CSV, confusion PNG and predictions.csv
    (every video's top-5, with its `video/filename`) under output_dir. On a split whose labels
    are hidden (a test split) the predictions are the result: top-1/top-5 are null."""
    out = output_dir or os.path.join(cfg.train.output_dir, rundir.EVAL_DIR)
    if weights is None:
        weights = rundir.trained_weights(cfg.train.output_dir)
        if weights is None:
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
    fileio.write_json(os.path.join(out, rundir.EVAL_METRICS), metrics, indent=2)
    print(f"[vov3d] {weights}: multi-view test ({result['num_videos']} videos x "
          f"{result['num_views']} views): {evaluation.describe(result)}", flush=True)
    return metrics


def main(argv=None):
    """`vov3d-train` / `python train.py`: train a config (resuming), or `--eval-only`."""
    from vov3d_tf import runtime
    from vov3d_tf.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(
        prog="vov3d-train", description="Train and evaluate VoV3D / X3D from a JSON config.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    add_config_arguments(parser)
    parser.add_argument("--eval-only", action="store_true",
                        help="only the multi-view test of saved weights")
    parser.add_argument("--weights", help="with --eval-only: a .keras file (default: "
                                          "train.output_dir/best.keras)")
    parser.add_argument("--force", action="store_true",
                        help="delete the run in train.output_dir and train from scratch")
    args = parser.parse_args(argv)
    if args.weights and not args.eval_only:
        parser.error("--weights needs --eval-only")
    runtime.configure()  # TF process settings, before the first tensor
    try:
        cfg, source = config_from_args(args)
        if args.eval_only:
            metrics = evaluate_run(cfg, weights=args.weights, source=source)
        else:
            metrics = run(cfg, source=source, force=args.force)
    except (ValueError, FileNotFoundError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, TrainingDiverged) else 2
    print(json.dumps({k: v for k, v in metrics.items()
                      if k in ("top1", "top5", "num_videos", "num_views", "steps",
                               "train_seconds", "best_weights", "last_weights", "weights",
                               "already_finished")}))
    return 0


EPILOG = """examples:
  vov3d-train --config configs/demo.json                     # synthetic demo on CPU
  vov3d-train --config configs/ssv2.json --set train.epochs=3 train.batch_size=32
  vov3d-train --config configs/ssv2.json --eval-only [--weights runs/x/best.keras]
  vov3d-train --config configs/ssv2.json --force              # retrain a finished run

A killed run (even kill -9) resumes where it was when the same command is run again; a
finished run is reported, not retrained. Several machines: set TF_CONFIG on each and run the
same command everywhere (docs/training.md). `python train.py` is the same command.
"""

if __name__ == "__main__":
    sys.exit(main())
