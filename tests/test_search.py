"""vov3d_tf.search.tuner with fake training/cost functions: budget, failures, report, resume.

The real training and FLOPs counter are exercised in test_search_e2e.py; here `train_fn`
returns a score computed from the candidate and `cost_fn` a hand-made cost, so every number
in the results table is known in advance.
"""
import csv
import json
import math
import os

import pytest

from vov3d_tf.search import oracle, report, space
from vov3d_tf.search import run as search_run
from vov3d_tf.config import config_from_dict, load_config

SPACE = {"base_width": [8, 16, 24, 32], "num_conv": [1, 2, 3],
         "blocks": [[1, 1, 1, 1], [1, 2, 2, 1]]}


def make_cfg(tmp_path, search_section=None, **sections):
    d = {"model": {"name": "vov3d_m", "num_classes": 4},
         "data": {"num_frames": 8, "crop_size": 32, "train_short_side": [36, 40],
                  "test_short_side": 40},
         "train": {"epochs": 7, "warmup_epochs": 2.0, "output_dir": str(tmp_path / "out")},
         "search": {"tuner": "random", "max_trials": 5, "epochs_per_trial": 1, "seed": 3,
                    "max_gflops": 40.0, "space": SPACE, **(search_section or {})}}
    for k, v in sections.items():
        d[k].update(v)
    return config_from_dict(d)


def fake_cost(values):
    """gflops = width x units x (2 if deep); params = 1000 x width."""
    deep = 2 if values["blocks"] == "1-2-2-1" else 1
    return {"gflops": float(values["base_width"] * values["num_conv"] * deep),
            "params": 1000 * values["base_width"]}


class FakeTrain:
    """Score = width/100 + units/1000 (+0.0001 if deep); records every trained config."""

    def __init__(self, crash=(), nan=()):
        self.calls = []
        self.crash, self.nan = set(crash), set(nan)

    def __call__(self, cfg):
        m = cfg.model
        key = (m.base_width, m.num_conv)
        self.calls.append((m.base_width, m.num_conv, m.blocks, cfg.train.epochs,
                           cfg.train.output_dir))
        if key in self.crash:
            raise RuntimeError(f"simulated crash for width {m.base_width}")
        if key in self.nan:
            return {"top1": float("nan"), "top5": 1.0}
        deep = 1e-4 if m.blocks == (1, 2, 2, 1) else 0.0
        return {"top1": m.base_width / 100 + m.num_conv / 1000 + deep, "top5": 1.0}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(cfg, train, **kw):
    return search_run.run_search(cfg, train_fn=train, cost_fn=fake_cost, verbose=0, **kw)


def test_budget_rejects_before_training_and_never_counts_as_a_trial(tmp_path):
    cfg = make_cfg(tmp_path, {"max_trials": 6, "max_gflops": 40.0, "max_params": 30000})
    train = FakeTrain()
    summary = run(cfg, train)
    trained = [c[:3] for c in train.calls]
    assert len(trained) == 6 == summary["completed"]  # max_trials counts trained ones only
    for width, units, blocks in trained:
        deep = 2 if blocks == (1, 2, 2, 1) else 1
        assert width * units * deep <= 40 and width * 1000 <= 30000
    rows = read_csv(summary["results_csv"])
    trials = [r for r in rows if r["status"] != "rejected"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert [r["trial"] for r in trials] == ["0", "1", "2", "3", "4", "5"]  # consecutive ids
    assert rejected, "seed 3 proposes over-budget candidates; none was recorded"
    for r in rejected:
        assert r["trial"] == "" and r["score"] == ""
        assert float(r["gflops"]) > 40 or int(r["params"]) > 30000
        assert "max_gflops 40" in r["error"] or "max_params 30000" in r["error"]
    # Nothing rejected was ever trained.
    assert not {(int(r["base_width"]), int(r["num_conv"])) for r in rejected
                if r["blocks"] == "1-1-1-1"} & {(w, u) for w, u, b in trained if b == (1, 1, 1, 1)}
    for r in trials:
        assert r["status"] == "completed" and r["epochs"] == "1"
        w, u = int(r["base_width"]), int(r["num_conv"])
        deep = 2 if r["blocks"] == "1-2-2-1" else 1
        assert float(r["gflops"]) == w * u * deep and int(r["params"]) == 1000 * w
        assert math.isclose(float(r["score"]), w / 100 + u / 1000 + (1e-4 if deep == 2 else 0))
        assert float(r["val_top5"]) == 1.0


def test_nothing_affordable_stops_without_trials(tmp_path):
    cfg = make_cfg(tmp_path, {"max_gflops": 1.0})
    train = FakeTrain()
    summary = run(cfg, train)
    assert train.calls == [] and summary["completed"] == 0 and summary["best_config"] is None
    assert summary["rejected"] == 24  # the whole space, each candidate once
    assert not os.path.exists(tmp_path / "out" / "search" / "best.json")
    assert os.path.getsize(summary["pareto_png"]) > 1000


def test_crashed_and_nan_trials_fail_and_the_search_goes_on(tmp_path):
    space = {"base_width": [8, 16], "num_conv": [1, 2], "blocks": [[1, 1, 1, 1]]}
    cfg = make_cfg(tmp_path, {"max_trials": 4, "max_gflops": None, "space": space})
    train = FakeTrain(crash={(8, 1), (16, 1)}, nan={(8, 2)})  # 3 consecutive failures at most
    summary = run(cfg, train)
    assert len(train.calls) == 4
    rows = {(int(r["base_width"]), int(r["num_conv"])): r
            for r in read_csv(summary["results_csv"])}
    for key in [(8, 1), (16, 1)]:
        assert rows[key]["status"] == "failed" and rows[key]["score"] == ""
        assert f"RuntimeError: simulated crash for width {key[0]}" in rows[key]["error"]
    assert rows[(8, 2)]["status"] == "failed" and "no finite val_top1" in rows[(8, 2)]["error"]
    assert rows[(16, 2)]["status"] == "completed"
    assert math.isclose(float(rows[(16, 2)]["score"]), 0.162)
    assert (summary["completed"], summary["failed"]) == (1, 3)
    best = load_config(summary["best_config"])
    assert (best.model.base_width, best.model.num_conv) == (16, 2)


def test_report_best_config_is_a_complete_training_config(tmp_path):
    cfg = make_cfg(tmp_path, {"max_trials": 5, "max_gflops": None})
    train = FakeTrain()
    summary = run(cfg, train)
    rows = [r for r in read_csv(summary["results_csv"]) if r["status"] == "completed"]
    top = max(rows, key=lambda r: float(r["score"]))
    assert summary["best_trial"] == top["trial"]
    assert math.isclose(summary["best_score"], float(top["score"]))
    best = load_config(summary["best_config"])
    assert best.model.base_width == int(top["base_width"])
    assert best.model.num_conv == int(top["num_conv"])
    assert best.model.blocks == tuple(int(b) for b in top["blocks"].split("-"))
    # Full schedule and recipe of the base config, own output folder.
    assert (best.train.epochs, best.train.warmup_epochs) == (7, 2.0)
    assert best.train.output_dir == str(tmp_path / "out" / "best")
    assert best.data == cfg.data and best.eval == cfg.eval
    with open(summary["best_config"]) as f:
        assert set(json.load(f)) == {"model", "data", "train", "eval", "search"}
    with open(summary["pareto_png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Each trial trained in its own folder for epochs_per_trial (warm-up capped to fit).
    project = tmp_path / "out" / "search"
    assert [c[4] for c in train.calls] == [str(project / f"trial_{i}" / "run") for i in range(5)]
    assert {c[3] for c in train.calls} == {1}


def test_pareto_front_by_hand():
    pts = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (0.5, 0.1), (4.0, 0.9)]
    # (2, .4) dominated by (1, .5); (3, .7) by (2, .7)
    assert report.pareto_front(pts) == [4, 0, 2, 5]
    assert report.pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # equal points both stay
    assert report.pareto_front([]) == []


def test_resume_continues_and_extends(tmp_path):
    cfg = make_cfg(tmp_path, {"max_trials": 3})
    first = FakeTrain()
    run(cfg, first)
    assert len(first.calls) == 3
    again = FakeTrain()
    summary = run(cfg, again)  # same command: nothing left to do, report rewritten
    assert again.calls == [] and summary["completed"] == 3
    more = FakeTrain()
    summary = run(make_cfg(tmp_path, {"max_trials": 5}), more)
    assert len(more.calls) == 2 and summary["completed"] == 5
    trained = {c[:3] for c in first.calls} | {c[:3] for c in more.calls}
    assert len(trained) == 5  # no candidate trained twice
    assert [r["trial"] for r in read_csv(summary["results_csv"]) if r["trial"]] == \
        ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match=r"different config \(search\.max_gflops changed\)"):
        run(make_cfg(tmp_path, {"max_trials": 5, "max_gflops": 30.0}), FakeTrain())
    fresh = FakeTrain()
    summary = run(make_cfg(tmp_path, {"max_trials": 2, "max_gflops": 30.0}), fresh,
                  overwrite=True)
    assert len(fresh.calls) == 2 and summary["completed"] == 2


def test_interrupted_trial_is_retrained_on_resume(tmp_path):
    cfg = make_cfg(tmp_path, {"max_trials": 4})

    class Interrupt(FakeTrain):
        def __call__(self, c):
            if len(self.calls) == 2:
                self.calls.append("interrupted")
                raise KeyboardInterrupt
            return super().__call__(c)

    first = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        run(cfg, first)
    second = FakeTrain()
    summary = run(cfg, second)
    assert len(second.calls) == 2 and summary["completed"] == 4
    # The interrupted trial 2 was retrained in its own folder.
    assert second.calls[0][4].endswith(os.path.join("trial_2", "run"))


def test_model_based_proposal_over_budget_is_replaced_before_a_trial_exists(tmp_path):
    """The Bayesian GP proposes a point without the random filter: the mixin catches it."""
    import keras_tuner as kt

    class AlwaysBig(kt.Oracle):
        def populate_space(self, trial_id):
            return {"status": "RUNNING",
                    "values": {"base_width": 32, "num_conv": 3, "blocks": "1-2-2-1"}}

    class Oracle(oracle._BudgetMixin, AlwaysBig):
        pass

    cfg = make_cfg(tmp_path)
    hp = space.declare_space(kt.HyperParameters(), cfg)
    budget = Oracle(objective=kt.Objective("val_top1", "max"), max_trials=3,
                    hyperparameters=hp, seed=1)
    budget._init_budget(fake_cost, 40.0, None)
    response = budget.populate_space("0")
    values = response["values"]
    assert response["status"] == "RUNNING"
    assert fake_cost(values)["gflops"] <= 40
    key = budget.candidate_key({"base_width": 32, "num_conv": 3, "blocks": "1-2-2-1"})
    assert budget.rejected[key]["reason"] == "gflops 192 > max_gflops 40"
    state = budget.get_state()  # costs and rejections survive a resume
    assert state["budget"]["rejected"][key]["proposals"] == 1
    assert state["budget"]["costs"][key] == {"gflops": 192.0, "params": 32000}


@pytest.mark.parametrize("tuner_name", [pytest.param("bayesian", marks=pytest.mark.slow),
                                        "hyperband"])
def test_bayesian_and_hyperband_respect_the_budget(tmp_path, tuner_name):
    # 14 of the 24 candidates are affordable (width x units x (2 if deep) <= 48)
    cfg = make_cfg(tmp_path, {"tuner": tuner_name, "max_trials": 10, "epochs_per_trial": 3,
                              "max_gflops": 48.0})

    class Checkpointing(FakeTrain):
        """Notes whether a trial started with checkpoints, then leaves one of its own."""
        started_with = {}

        def __call__(self, c):
            ckpt = os.path.join(c.train.output_dir, "checkpoints", "ckpt")
            self.started_with[c.train.output_dir] = (open(ckpt).read()
                                                     if os.path.exists(ckpt) else None)
            result = super().__call__(c)
            os.makedirs(os.path.dirname(ckpt), exist_ok=True)
            with open(ckpt, "w") as f:
                f.write(c.train.output_dir)
            return result

    train = Checkpointing()
    summary = run(cfg, train)
    assert 1 <= len(train.calls) <= 10 and summary["completed"] == len(train.calls)
    for width, units, blocks, epochs, _ in train.calls:
        assert width * units * (2 if blocks == (1, 2, 2, 1) else 1) <= 48
        assert epochs in ((1, 3) if tuner_name == "hyperband" else (3,))
    if tuner_name == "bayesian":
        assert len(train.calls) == 10  # 9 random initial points + 1 GP proposal
    else:  # max_epochs 3, factor 3: 3 one-epoch trials, then the best continued to 3 epochs
        assert sorted(c[3] for c in train.calls)[:3] == [1, 1, 1]
        assert 3 in [c[3] for c in train.calls]
        # A continued trial starts from the checkpoints of the trial it continues.
        project = tmp_path / "out" / "search"
        continued = 0
        for c in train.calls:
            trial_dir = os.path.dirname(c[4])
            with open(os.path.join(trial_dir, "trial.json")) as f:
                values = json.load(f)["hyperparameters"]["values"]
            previous = values.get("tuner/trial_id")
            expect = str(project / f"trial_{previous}" / "run") if previous else None
            assert train.started_with[c[4]] == expect
            continued += previous is not None
        assert continued >= 1


def test_config_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"search\.objective: 'val_loss' is not supported"):
        run(make_cfg(tmp_path, {"objective": "val_loss"}), FakeTrain())
    with pytest.raises(ValueError, match=r"search\.epochs_per_trial: hyperband needs at least 2"):
        run(make_cfg(tmp_path, {"tuner": "hyperband"}), FakeTrain())
    with pytest.raises(ValueError, match=r"search\.space\.base_width: VoV3D needs even"):
        run(make_cfg(tmp_path, {"space": {**SPACE, "base_width": [9]}}), FakeTrain())
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "train-0.tfrecord").write_bytes(b"")
    cfg = make_cfg(tmp_path, data={"train_files": str(shards / "*.tfrecord"),
                                   "eval_files": str(shards / "train-*.tfrecord")})
    with pytest.raises(ValueError, match=r"data\.eval_files matches training shards"):
        search_run.check_eval_is_not_train(cfg)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"search": {"tuner": "grid"}}))
    assert search_run.main(["--config", str(path)]) == 2
    assert "search.tuner: expected one of 'random', 'bayesian', 'hyperband'" in \
        capsys.readouterr().err
    assert search_run.main(["--config", str(path), "--set", "search.tuner=random",
                        "--set", "search.max_tirals=3"]) == 2
    assert "search: unknown key(s) 'max_tirals'" in capsys.readouterr().err


def test_candidate_cost_is_the_model_counter_at_the_trial_clip(tmp_path):
    from vov3d_tf.model.flops import count_flops
    cfg = make_cfg(tmp_path, model={"name": "x3d_m", "num_classes": 4},
                   search_section={"space": {"base_width": [12], "blocks": [[1, 1, 1, 1]],
                                             "num_frames": [4, 8]}})
    cost = oracle.candidate_cost(cfg, {"base_width": 12, "blocks": "1-1-1-1", "num_frames": 4})
    ref = count_flops("x3d_m", input_shape=(4, 32, 32, 3), num_classes=4, base_width=12,
                      blocks=(1, 1, 1, 1))
    assert cost == {"gflops": ref["gflops"], "macs": ref["macs"], "params": ref["params"]}
    assert cost["macs"] > 0 and cost["params"] > 0
    doubled = oracle.candidate_cost(cfg, {"base_width": 12, "blocks": "1-1-1-1",
                                          "num_frames": 8})
    assert doubled["params"] == cost["params"]
    # No temporal stride: the convolutions double with T; what runs on pooled features (SE
    # gates, lin_5, the classifier: once per clip) does not, so just under 2x.
    assert 1.8 * cost["macs"] < doubled["macs"] < 2 * cost["macs"]
