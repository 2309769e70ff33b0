"""Keras-tuner oracles that keep a compute budget: over-budget candidates never become trials.

keras-tuner's random / bayesian / hyperband oracles, each wrapped by `_BudgetMixin`: a candidate
whose model is over `max_gflops` / `max_params` (FLOPs and parameters from
`vov3d_tf.model.flops.count_flops` at the training clip) is rejected while the oracle proposes
it, so it never becomes a trial and never counts against max_trials.
"""
import itertools
import json
import random

import keras_tuner as kt

from vov3d_tf import _compat
from vov3d_tf.search import space as search_space

__all__ = ["OBJECTIVES", "log", "candidate_cost", "over_budget", "make_oracle",
           "BudgetRandomSearchOracle", "BudgetBayesianOptimizationOracle",
           "BudgetHyperbandOracle"]

# search.objective -> (key of training.run's result, direction)
OBJECTIVES = {"val_top1": ("top1", "max"), "val_top5": ("top5", "max")}
MAX_REJECTIONS_PER_PROPOSAL = 1000


def log(msg):
    print(f"[vov3d.search] {msg}", flush=True)


def candidate_cost(cfg, values):
    """{"gflops", "macs", "params"} of one candidate's model at its training clip."""
    from vov3d_tf.model.flops import count_flops
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
            log(f"rejected before training: {entry['values']} ({reason})")

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
    """The budgeted oracle for `cfg.search`, its space declared by `vov3d_tf.search.space`.

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
