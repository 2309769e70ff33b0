"""Keras Tuner width/depth search under a compute budget, trained and scored like `train.py`.

    vov3d-search --config configs/search_demo.json [--set search.max_trials=8]

reads the `search` section of an experiment config (tuner, max_trials, epochs_per_trial,
objective, max_gflops / max_params, seed, space) and searches base width, D(2+1)D units per
T-OSA, blocks per stage and optionally frames / crop size:

    oracle    keras-tuner's random / bayesian / hyperband oracle, wrapped so that a candidate
              over the budget (FLOPs and params from `vov3d_tf.model.flops.count_flops` at the
              training clip) is rejected while the oracle proposes it: it never becomes a
              trial and never counts against max_trials
    trial     the base config with the candidate's keys set (`vov3d_tf.search.space.trial_config`),
              trained for epochs_per_trial by `vov3d_tf.train.training.run` (the code of train.py:
              same optimiser, same multi-view test on the eval shards, never the train shards)
    failure   an exception or a NaN/inf loss marks the trial FAILED with its error; the search
              goes on
    report    results.csv (every trial + rejected candidates), pareto.png (score vs GFLOPs),
              best.json: the winner as a complete config for `vov3d-train --config best.json`

Everything lives in `<train.output_dir>/search/`. Rerunning the same command resumes (finished
trials are kept, an interrupted one is retrained from its checkpoint); raising
`search.max_trials` extends a finished search. Distributed tuning: start the same command
once with KERASTUNER_TUNER_ID=chief (the oracle, it trains nothing) and once per worker with
KERASTUNER_TUNER_ID=tuner0, tuner1, ..., all with KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT
of the chief and the same output folder (docs/search.md).
"""
import argparse
import os
import sys

from vov3d_tf import _compat, fileio, runtime
from vov3d_tf.config import add_config_arguments, config_from_args, config_to_dict
from vov3d_tf.search import space as search_space
from vov3d_tf.search.oracle import OBJECTIVES, log, make_oracle
from vov3d_tf.search.report import write_report
from vov3d_tf.search.tuner import PROJECT_NAME, SearchTuner

__all__ = ["run_search", "check_search_config", "check_eval_is_not_train", "main"]

SEARCH_CONFIG = "search_config.json"  # the config the search was started with (resume check)


def check_search_config(cfg, source="config"):
    """Search rules beyond the config loader's; errors name the key."""
    s = cfg.search
    if s.objective not in OBJECTIVES:
        raise ValueError(f"{source}: search.objective: {s.objective!r} is not supported; "
                         f"allowed: {', '.join(OBJECTIVES)}")
    if s.tuner == "hyperband" and s.epochs_per_trial < 2:
        raise ValueError(f"{source}: search.epochs_per_trial: hyperband needs at least 2 "
                         f"(its longest training), got {s.epochs_per_trial}")
    search_space.check_space(cfg, source)


def check_eval_is_not_train(cfg, source="config"):
    """Trial scores must come from held-out shards."""
    real = lambda p: os.path.realpath(p) if fileio.is_local(p) else p  # noqa: E731
    train = {real(p) for p in fileio.glob(cfg.data.train_files)}
    ev = {real(p) for p in fileio.glob(cfg.data.eval_files)}
    shared = sorted(train & ev)
    if shared:
        raise ValueError(f"{source}: data.eval_files matches training shards ({shared[0]}, ...); "
                         f"search trials must be scored on held-out eval shards")


def _check_resume(cfg, project_dir, source):
    """A resumed search must use the config it started with (max_trials may grow)."""
    path = os.path.join(project_dir, SEARCH_CONFIG)
    now = config_to_dict(cfg)
    now["search"].pop("max_trials")
    if fileio.exists(path):
        before = fileio.read_json(path)
        before.get("search", {}).pop("max_trials", None)
        if before != now:
            diff = [f"{sec}.{k}" for sec in now for k in now[sec]
                    if before.get(sec, {}).get(k) != now[sec][k]] or ["sections"]
            raise ValueError(f"{source}: {project_dir} holds a search started with a different "
                             f"config ({', '.join(diff)} changed); use another train.output_dir "
                             f"or --overwrite to start over")
    else:
        fileio.makedirs(project_dir)
        fileio.atomic_write_json(path, now, indent=2)


def run_search(cfg, *, source="config", overwrite=False, train_fn=None, cost_fn=None,
               verbose=2):
    """Run (or resume) the search of `cfg`; returns the report summary (None on a worker).

    `train_fn(trial_cfg) -> {"top1", "top5", ...}` replaces `vov3d_tf.train.training.run` and
    `cost_fn(values) -> {"gflops", "params"}` the FLOPs counter (tests).
    """
    check_search_config(cfg, source)
    directory = cfg.train.output_dir
    project_dir = os.path.join(directory, PROJECT_NAME)
    distributed = _compat.has_chief_oracle()
    chief = not distributed or _compat.is_chief_oracle()
    worker = distributed and not chief
    if overwrite and chief and fileio.isdir(project_dir):
        fileio.rmtree(project_dir)
    if train_fn is None and chief:  # data first (the chief writes demo shards before any worker
        from vov3d_tf.train import data as datasets  # can get a trial: it serves trials after this)
        datasets.ensure_synthetic(cfg, source)
        datasets.check_data(cfg, source)
    if train_fn is None:
        check_eval_is_not_train(cfg, source)
    _check_resume(cfg, project_dir, source)

    oracle = make_oracle(cfg, cost_fn)
    tuner = SearchTuner(oracle, cfg, train_fn=train_fn, directory=directory, overwrite=False,
                        verbose=verbose)
    if not worker:
        # The reloaded oracle keeps its state; the config decides how far the search goes.
        tuner.oracle.max_trials = cfg.search.max_trials
        done = len(tuner.oracle.trials)
        if done:
            log(f"resuming {project_dir}: {done} trial(s) so far, max_trials "
                 f"{cfg.search.max_trials}")
    role = ("chief (oracle)" if distributed and chief else
            f"worker {os.environ.get('KERASTUNER_TUNER_ID')}" if worker else "single process")
    log(f"{cfg.search.tuner} search, {role}: objective {cfg.search.objective}, max_trials "
         f"{cfg.search.max_trials}, budget max_gflops={cfg.search.max_gflops} "
         f"max_params={cfg.search.max_params} -> {project_dir}")
    tuner.search(verbose=1 if verbose and not worker else 0)
    if worker:
        return None
    summary = write_report(tuner.oracle, cfg, project_dir)
    log(f"{summary['completed']} completed, {summary['failed']} failed, {summary['rejected']} "
         f"rejected over budget; table {summary['results_csv']}, plot {summary['pareto_png']}")
    if summary["best_config"]:
        log(f"best: trial {summary['best_trial']} ({cfg.search.objective} "
             f"{summary['best_score']:.4f}) -> train it with "
             f"`vov3d-train --config {summary['best_config']}`")
    else:
        log("no trial completed: no best.json written")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="vov3d-search", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="delete <train.output_dir>/search and start over (default: resume)")
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    try:
        cfg, source = config_from_args(args)
        summary = run_search(cfg, source=source, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary is not None and summary["best_config"] is None:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
