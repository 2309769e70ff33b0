"""Keras Tuner width/depth search under a compute budget, trained and scored like `train.py`.

    python -m vov3d_tf.search --config configs/search_demo.json [--set search.max_trials=8]

reads the `search` section of an experiment config (tuner, max_trials, epochs_per_trial,
objective, max_gflops / max_params, seed, space) and searches base width, D(2+1)D units per
T-OSA, blocks per stage and optionally frames / crop size:

    oracle    keras-tuner's random / bayesian / hyperband oracle, wrapped so that a candidate
              over the budget (FLOPs and params from `vov3d_tf.flops.count_flops` at the
              training clip) is rejected while the oracle proposes it: it never becomes a
              trial and never counts against max_trials
    trial     the base config with the candidate's keys set (`vov3d_tf.tuner.trial_config`),
              trained for epochs_per_trial by `vov3d_tf.training.run` (the code of train.py:
              same optimiser, same multi-view test on the eval shards, never the train shards)
    failure   an exception or a NaN/inf loss marks the trial FAILED with its error; the search
              goes on
    report    results.csv (every trial + rejected candidates), pareto.png (score vs GFLOPs),
              best.json: the winner as a complete config for `python train.py --config best.json`

Everything lives in `<train.output_dir>/search/`. Rerunning the same command resumes (finished
trials are kept, an interrupted one is retrained from its checkpoint); raising
`search.max_trials` extends a finished search. Distributed tuning: start the same command
once with KERASTUNER_TUNER_ID=chief (the oracle, it trains nothing) and once per worker with
KERASTUNER_TUNER_ID=tuner0, tuner1, ..., all with KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT
of the chief and the same output folder (docs/search.md).
"""
import argparse
import csv
import gc
import glob
import itertools
import json
import math
import os
import random
import shutil
import sys
import traceback

import keras_tuner as kt

from vov3d_tf import _compat, runtime
from vov3d_tf import tuner as search_space
from vov3d_tf.config import config_to_dict, load_config, save_config

__all__ = ["OBJECTIVES", "make_oracle", "SearchTuner", "run_search", "pareto_front",
           "results_rows", "write_results_csv", "plot_pareto", "write_best_config",
           "candidate_cost", "main"]

# search.objective -> (key of training.run's result, direction)
OBJECTIVES = {"val_top1": ("top1", "max"), "val_top5": ("top5", "max")}
PROJECT_NAME = "search"
RESULTS_CSV = "results.csv"
PARETO_PNG = "pareto.png"
BEST_CONFIG = "best.json"
ERROR_FILE = "error.txt"  # a failed trial's traceback, beside its trial.json
SEARCH_CONFIG = "search_config.json"  # the config the search was started with (resume check)
MAX_REJECTIONS_PER_PROPOSAL = 1000


def _log(msg):
    print(f"[vov3d.search] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# Compute budget
# ----------------------------------------------------------------------------------------------

def candidate_cost(cfg, values):
    """{"gflops", "macs", "params"} of one candidate's model at its training clip."""
    from vov3d_tf.flops import count_flops
    tcfg = search_space.trial_config(cfg, values)
    c = count_flops(tcfg.model.name, **search_space.cost_kwargs(tcfg))
    return {"gflops": float(c["gflops"]), "macs": int(c["macs"]), "params": int(c["params"])}


def over_budget(cost, max_gflops, max_params):
    """Why `cost` breaks the budget ('' when it does not)."""
    why = []
    if max_gflops is not None and cost["gflops"] > max_gflops:
        why.append(f"gflops {cost['gflops']:.4g} > max_gflops {max_gflops:g}")
    if max_params is not None and cost["params"] > max_params:
        why.append(f"params {cost['params']} > max_params {max_params}")
    return "; ".join(why)


class _BudgetMixin(_compat.RandomProposalFilter):
    """Oracle mixin: over-budget candidates are rejected inside `populate_space`.

    keras-tuner creates a trial only from what `populate_space` returns, so a rejected
    candidate never becomes a trial (trial ids stay consecutive, max_trials counts trained
    candidates only). Rejected values are added to the oracle's tried-set, so random proposals
    never repeat them and a space with nothing affordable left ends the search (STOPPED).
    Costs and rejections are part of the oracle state (oracle.json), so they survive a resume.
    """

    def _init_budget(self, cost_fn, max_gflops, max_params):
        self._cost_fn = cost_fn
        self.max_gflops = max_gflops
        self.max_params = max_params
        self.costs = {}      # candidate key -> cost dict, or {"error": str}
        self.rejected = {}   # candidate key -> {"values", "reason", "proposals"}

    @staticmethod
    def candidate_key(values):
        return json.dumps(search_space.arch_values(values), sort_keys=True)

    def cost(self, values):
        key = self.candidate_key(values)
        if key not in self.costs:
            try:
                self.costs[key] = self._cost_fn(search_space.arch_values(values))
            except Exception as e:  # cannot be built (e.g. crop too small): never trained
                self.costs[key] = {"error": f"{type(e).__name__}: {e}"}
        return self.costs[key]

    def _rejection(self, values):
        cost = self.cost(values)
        if "error" in cost:
            return f"cannot be built: {cost['error']}"
        return over_budget(cost, self.max_gflops, self.max_params)

    def _reject(self, values, reason):
        key = self.candidate_key(values)
        entry = self.rejected.setdefault(
            key, {"values": search_space.arch_values(values), "reason": reason, "proposals": 0})
        entry["proposals"] += 1
        _compat.mark_tried(self, values)
        if entry["proposals"] == 1:
            _log(f"rejected before training: {entry['values']} ({reason})")

    def _untried_values(self):
        """A random untried point of the (all-Choice) space, or None when all were tried.

        keras-tuner gives up after 20 random collisions in a row; with many candidates
        rejected that happens long before the finite space is exhausted.
        """
        names = [hp.name for hp in self.hyperparameters.space]
        choices = [list(hp.values) for hp in self.hyperparameters.space]
        untried = [dict(zip(names, combo)) for combo in itertools.product(*choices)]
        untried = [v for v in untried if not _compat.is_tried(self, v)]
        if not untried:
            return None
        return random.Random(_compat.next_seed(self)).choice(untried)

    def filter_random_proposal(self, propose):
        """The first affordable random proposal (rejecting the others), None when none is."""
        for _ in range(MAX_REJECTIONS_PER_PROPOSAL):
            values = propose() or self._untried_values()
            if values is None:  # every candidate was tried or rejected
                return None
            reason = self._rejection(values)
            if not reason:
                return values
            self._reject(values, reason)
        return None

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        values = response.get("values")
        if response.get("status") != kt.engine.trial.TrialStatus.RUNNING or not values:
            return response
        reason = self._rejection(values)
        if not reason:
            return response
        # Only a model-based proposal (Bayesian) gets here; random ones are filtered above.
        self._reject(values, reason)
        values = self.random_proposal()
        if values is None:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}

    def get_state(self):
        state = super().get_state()
        state["budget"] = {"costs": self.costs, "rejected": self.rejected}
        return state

    def set_state(self, state):
        super().set_state(state)
        budget = state.get("budget", {})
        self.costs = dict(budget.get("costs", {}))
        self.rejected = dict(budget.get("rejected", {}))


class BudgetRandomSearchOracle(_BudgetMixin, kt.oracles.RandomSearchOracle):
    pass


class BudgetBayesianOptimizationOracle(_BudgetMixin, kt.oracles.BayesianOptimizationOracle):
    pass


class BudgetHyperbandOracle(_BudgetMixin, kt.oracles.HyperbandOracle):
    pass


def make_oracle(cfg, cost_fn=None):
    """The budgeted oracle for `cfg.search`, its space declared by `vov3d_tf.tuner`.

    `cost_fn(values) -> {"gflops", "params", ...}` defaults to the FLOPs counter.
    """
    s = cfg.search
    metric, direction = OBJECTIVES[s.objective]
    hp = search_space.declare_space(kt.HyperParameters(), cfg)
    common = dict(objective=kt.Objective(s.objective, direction), hyperparameters=hp,
                  allow_new_entries=False, tune_new_entries=True,
                  # keras-tuner treats seed 0 as "no seed": shift by one to stay reproducible
                  seed=s.seed + 1,
                  max_retries_per_trial=0,
                  # a failed trial must not stop the search (keras-tuner stops after 3)
                  max_consecutive_failed_trials=10 ** 9)
    if s.tuner == "random":
        oracle = BudgetRandomSearchOracle(max_trials=s.max_trials, **common)
    elif s.tuner == "bayesian":
        oracle = BudgetBayesianOptimizationOracle(max_trials=s.max_trials, **common)
    else:  # Hyperband: epochs_per_trial is the longest training; max_trials still caps it
        oracle = BudgetHyperbandOracle(max_epochs=s.epochs_per_trial, factor=3,
                                       hyperband_iterations=1, **common)
        oracle.max_trials = s.max_trials
    if cost_fn is None:
        def cost_fn(values):
            return candidate_cost(cfg, values)
    oracle._init_budget(cost_fn, s.max_gflops, s.max_params)
    return oracle


# ----------------------------------------------------------------------------------------------
# Tuner: a trial = train.py's training run of one candidate config
# ----------------------------------------------------------------------------------------------

def _write_error(run_dir, text):
    trial_dir = os.path.dirname(run_dir)
    os.makedirs(trial_dir, exist_ok=True)
    with open(os.path.join(trial_dir, ERROR_FILE), "w") as f:
        f.write(text)


class SearchTuner(kt.engine.base_tuner.BaseTuner):
    """Runs each trial with `train_fn(trial_config) -> {"top1", "top5", ...}`.

    `train_fn` defaults to `vov3d_tf.training.run` (exactly what `train.py` runs: train for the
    trial's epochs, then the multi-view test on `data.eval_files`). Each trial trains in
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
            src = os.path.join(self.trial_run_dir(previous), "checkpoints")
            dst = os.path.join(out, "checkpoints")
            if os.path.isdir(src) and not os.path.exists(dst):
                shutil.copytree(src, dst)
        _log(f"trial {trial.trial_id}: {search_space.arch_values(values)}, {epochs} epoch(s) "
             f"-> {out}")
        try:
            if self.train_fn is None:
                from vov3d_tf import training
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


# ----------------------------------------------------------------------------------------------
# Report: results table, Pareto plot, best config
# ----------------------------------------------------------------------------------------------

CSV_FIELDS = ("trial", "status", "base_width", "num_conv", "blocks", "num_frames", "crop_size",
              "epochs", "params", "gflops", "score", "val_top1", "val_top5", "error")


def _short_error(message):
    """Last meaningful line of a keras-tuner trial message (a traceback)."""
    lines = [ln.strip() for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def results_rows(oracle, project_dir):
    """One dict per trial (in trial order), then one per rejected candidate."""
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        cost = oracle.cost(values)
        row = {"trial": trial_id, "status": trial.status.lower(),
               **search_space.arch_values(values),
               "epochs": values.get("tuner/epochs", None),
               "params": cost.get("params"), "gflops": cost.get("gflops"),
               "score": trial.score if trial.status == "COMPLETED" else None}
        for name in OBJECTIVES:
            if trial.metrics.exists(name):
                row[name] = trial.metrics.get_last_value(name)
        if trial.status in ("FAILED", "INVALID"):
            row["error"] = _short_error(trial.message) or _short_error(
                _read_text(os.path.join(project_dir, f"trial_{trial_id}", ERROR_FILE))) or \
                "failed (no message)"
        rows.append(row)
    for entry in oracle.rejected.values():
        cost = oracle.costs.get(oracle.candidate_key(entry["values"]), {})
        rows.append({"trial": "", "status": "rejected", **entry["values"],
                     "params": cost.get("params"), "gflops": cost.get("gflops"),
                     "error": entry["reason"]})
    return rows


def write_results_csv(rows, path, epochs_per_trial=None):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            row = dict(row)
            if row.get("epochs") is None and row["status"] != "rejected":
                row["epochs"] = epochs_per_trial
            w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})
    return path


def pareto_front(points):
    """Indices of the points (gflops, score) not dominated by another (less or equal GFLOPs
    and higher or equal score, one strictly), sorted by GFLOPs."""
    front = []
    for i, (g, s) in enumerate(points):
        dominated = any((g2 <= g and s2 >= s) and (g2 < g or s2 > s)
                        for j, (g2, s2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def best_row(rows):
    """The completed trial with the highest score; ties go to the fewer GFLOPs."""
    done = [r for r in rows if r["status"] == "completed" and r.get("score") is not None]
    if not done:
        return None
    return max(done, key=lambda r: (r["score"], -(r.get("gflops") or 0.0)))


def plot_pareto(rows, path, objective="val_top1", budget_gflops=None):
    """Score vs GFLOPs of the completed trials, the Pareto front joined, the best starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "completed" and r.get("gflops") is not None
            and r.get("score") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    if done:
        pts = [(r["gflops"], r["score"]) for r in done]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c="tab:blue", label="trials",
                   zorder=2)
        for r in done:
            ax.annotate(str(r["trial"]), (r["gflops"], r["score"]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-o", c="tab:red",
                label="Pareto front", zorder=3)
        b = best_row(done)
        ax.scatter([b["gflops"]], [b["score"]], marker="*", s=250, c="gold",
                   edgecolors="k", label=f"best (trial {b['trial']})", zorder=4)
    rejected = [r for r in rows if r["status"] == "rejected" and r.get("gflops") is not None]
    if budget_gflops is not None:
        ax.axvline(budget_gflops, ls="--", c="gray", label=f"max_gflops {budget_gflops:g}")
    ax.set_xlabel("GFLOPs per clip (multiply-adds, training clip)")
    ax.set_ylabel(f"{objective} (multi-view test, eval shards)")
    n_failed = sum(r["status"] == "failed" for r in rows)
    ax.set_title(f"{len(done)} completed, {n_failed} failed, {len(rejected)} rejected "
                 f"over budget")
    ax.grid(alpha=0.3)
    if done or budget_gflops is not None:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_best_config(cfg, values, path):
    """The winner as a complete training config: the base config (its full `train.epochs`)
    with the winning keys set and its own output folder `<train.output_dir>/best`."""
    best = search_space.trial_config(cfg, values,
                                     output_dir=os.path.join(cfg.train.output_dir, "best"))
    save_config(best, path)
    return best


def write_report(oracle, cfg, project_dir):
    """results.csv, pareto.png and (when a trial completed) best.json; returns a summary."""
    rows = results_rows(oracle, project_dir)
    csv_path = write_results_csv(rows, os.path.join(project_dir, RESULTS_CSV),
                                 cfg.search.epochs_per_trial)
    png_path = plot_pareto(rows, os.path.join(project_dir, PARETO_PNG), cfg.search.objective,
                           cfg.search.max_gflops)
    summary = {"results_csv": csv_path, "pareto_png": png_path, "best_config": None,
               "best_trial": None, "best_score": None,
               "completed": sum(r["status"] == "completed" for r in rows),
               "failed": sum(r["status"] == "failed" for r in rows),
               "rejected": sum(r["status"] == "rejected" for r in rows), "rows": rows}
    best = best_row(rows)
    best_path = os.path.join(project_dir, BEST_CONFIG)
    if best is not None:
        values = oracle.trials[best["trial"]].hyperparameters.values
        write_best_config(cfg, values, best_path)
        summary.update(best_config=best_path, best_trial=best["trial"], best_score=best["score"])
    elif os.path.exists(best_path):
        os.remove(best_path)
    return summary


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

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
    train = {os.path.realpath(p) for p in glob.glob(cfg.data.train_files)}
    ev = {os.path.realpath(p) for p in glob.glob(cfg.data.eval_files)}
    shared = sorted(train & ev)
    if shared:
        raise ValueError(f"{source}: data.eval_files matches training shards ({shared[0]}, ...); "
                         f"search trials must be scored on held-out eval shards")


def _check_resume(cfg, project_dir, source):
    """A resumed search must use the config it started with (max_trials may grow)."""
    path = os.path.join(project_dir, SEARCH_CONFIG)
    now = config_to_dict(cfg)
    now["search"].pop("max_trials")
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        before.get("search", {}).pop("max_trials", None)
        if before != now:
            diff = [f"{sec}.{k}" for sec in now for k in now[sec]
                    if before.get(sec, {}).get(k) != now[sec][k]] or ["sections"]
            raise ValueError(f"{source}: {project_dir} holds a search started with a different "
                             f"config ({', '.join(diff)} changed); use another train.output_dir "
                             f"or --overwrite to start over")
    else:
        os.makedirs(project_dir, exist_ok=True)
        tmp = path + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(now, f, indent=2)
        os.replace(tmp, path)


def run_search(cfg, *, source="config", overwrite=False, train_fn=None, cost_fn=None,
               verbose=2):
    """Run (or resume) the search of `cfg`; returns the report summary (None on a worker).

    `train_fn(trial_cfg) -> {"top1", "top5", ...}` replaces `vov3d_tf.training.run` and
    `cost_fn(values) -> {"gflops", "params"}` the FLOPs counter (tests).
    """
    check_search_config(cfg, source)
    directory = cfg.train.output_dir
    project_dir = os.path.join(directory, PROJECT_NAME)
    distributed = _compat.has_chief_oracle()
    chief = not distributed or _compat.is_chief_oracle()
    worker = distributed and not chief
    if overwrite and chief and os.path.isdir(project_dir):
        shutil.rmtree(project_dir)
    if train_fn is None and chief:  # data first (the chief writes demo shards before any worker
        from vov3d_tf.data import datasets  # can get a trial: it serves trials after this)
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
            _log(f"resuming {project_dir}: {done} trial(s) so far, max_trials "
                 f"{cfg.search.max_trials}")
    role = ("chief (oracle)" if distributed and chief else
            f"worker {os.environ.get('KERASTUNER_TUNER_ID')}" if worker else "single process")
    _log(f"{cfg.search.tuner} search, {role}: objective {cfg.search.objective}, max_trials "
         f"{cfg.search.max_trials}, budget max_gflops={cfg.search.max_gflops} "
         f"max_params={cfg.search.max_params} -> {project_dir}")
    tuner.search(verbose=1 if verbose and not worker else 0)
    if worker:
        return None
    summary = write_report(tuner.oracle, cfg, project_dir)
    _log(f"{summary['completed']} completed, {summary['failed']} failed, {summary['rejected']} "
         f"rejected over budget; table {summary['results_csv']}, plot {summary['pareto_png']}")
    if summary["best_config"]:
        _log(f"best: trial {summary['best_trial']} ({cfg.search.objective} "
             f"{summary['best_score']:.4f}) -> train it with "
             f"`python train.py --config {summary['best_config']}`")
    else:
        _log("no trial completed: no best.json written")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vov3d_tf.search",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment JSON with a `search` section")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable), e.g. search.max_trials=8")
    p.add_argument("--overwrite", action="store_true",
                   help="delete <train.output_dir>/search and start over (default: resume)")
    args = p.parse_args(argv)
    runtime.configure()  # TF process settings, before the first tensor
    try:
        cfg = load_config(args.config, args.set)
        source = args.config + (f" (with --set {' '.join(args.set)})" if args.set else "")
        summary = run_search(cfg, source=source, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary is not None and summary["best_config"] is None:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
