"""The search's report: results.csv, the Pareto plot (score against GFLOPs) and best.json.
"""
import csv
import io
import os

import tensorflow as tf

from vov3d_tf import fileio
from vov3d_tf.config import save_config
from vov3d_tf.search import space as search_space
from vov3d_tf.search.oracle import OBJECTIVES
from vov3d_tf.search.tuner import ERROR_FILE

__all__ = ["RESULTS_CSV", "PARETO_PNG", "BEST_CONFIG", "results_rows", "write_results_csv",
           "pareto_front", "best_row", "plot_pareto", "write_best_config", "write_report"]

RESULTS_CSV = "results.csv"
PARETO_PNG = "pareto.png"
BEST_CONFIG = "best.json"


CSV_FIELDS = ("trial", "status", "base_width", "num_conv", "blocks", "num_frames", "crop_size",
              "epochs", "params", "gflops", "score", "val_top1", "val_top5", "error")


def _short_error(message):
    """Last meaningful line of a keras-tuner trial message (a traceback)."""
    lines = [ln.strip() for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _read_text(path):
    try:
        return fileio.read_text(path)
    except (OSError, tf.errors.OpError):
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
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for row in rows:
        row = dict(row)
        if row.get("epochs") is None and row["status"] != "rejected":
            row["epochs"] = epochs_per_trial
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})
    fileio.write_text(path, f.getvalue())
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
    with fileio.open(path, "wb") as f:  # matplotlib writes to the gfile handle
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png")
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
    elif fileio.exists(best_path):
        fileio.remove(best_path)
    return summary
