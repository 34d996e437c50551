"""``qallegro study report``: the study's result, regenerated from its storage, never typed.

Writes into the report folder: ``report.md`` (per data set a table of the retrained points and a figure
of the three kinds' fronts, then the claims table), ``<data set>.png`` (fronts: every tuning trial's
validation error against latency, the front of each kind as a line, the retrained points with their
test error ± std over seeds), ``<data set>_learning.png`` (validation error against training time of
the most accurate point, mean over seeds), and the raw results ``trials.jsonl`` (stage 1) and
``final.jsonl`` (stage 2) that every number of the report comes from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qallegro.hpo.study_config import StudyConfig
from qallegro.hpo.study_data import error_key
from qallegro.hpo.study_verdicts import claims_rows, mean_std, scale_notes

LABELS = {"allegro": "Allegro", "allegro_mlp": "Allegro+MLP", "allegro_qdi": "Allegro+QDI"}
MARKERS = {"allegro": "o", "allegro_mlp": "s", "allegro_qdi": "D"}
COLORS = {"allegro": "tab:blue", "allegro_mlp": "tab:orange", "allegro_qdi": "tab:green"}
_HISTORY_KEYS = ("history",)


def _trial_row(cfg: StudyConfig, ds: str, kind: str, t, on_front: bool) -> Dict[str, Any]:
    attrs = {k: v for k, v in t.user_attrs.items() if k not in _HISTORY_KEYS}
    return {"dataset": ds, "kind": kind, "trial": t.number, "state": t.state.name, "params": t.params,
            "values": t.values, "on_front": on_front, **attrs}


def collect(cfg: StudyConfig) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(stage-1 trials, stage-2 runs) as JSON-able rows, read from the study's storage."""
    import optuna

    from qallegro.hpo.sampler import feasible_pareto_trials
    from qallegro.hpo.study_run import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(cfg.storage)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    trials: List[Dict[str, Any]] = []
    for ds in cfg.datasets:
        for kind in cfg.kinds:
            name = cfg.study_name(ds, kind)
            if not cfg.tuned(ds, kind) or name not in names:
                continue
            study = optuna.load_study(study_name=name, storage=storage)
            front = {t.number for t in feasible_pareto_trials(study)}
            trials += [_trial_row(cfg, ds, kind, t, t.number in front) for t in study.get_trials(deepcopy=False)]
    runs: List[Dict[str, Any]] = []
    if cfg.final_study_name in names:
        study = optuna.load_study(study_name=cfg.final_study_name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            if "job" in t.user_attrs and t.state.name != "PRUNED":
                runs.append({"state": t.state.name, **t.user_attrs["job"],
                             **{k: v for k, v in t.user_attrs.items() if k != "job"}})
    return trials, runs


def group_points(runs: List[Dict[str, Any]]) -> Dict[Tuple[str, str, int], List[Dict[str, Any]]]:
    """Completed final runs grouped by (data set, kind, tuning trial)."""
    out: Dict[Tuple[str, str, int], List[Dict[str, Any]]] = {}
    for r in runs:
        if r["state"] == "COMPLETE":
            out.setdefault((r["dataset"], r["kind"], r["trial"]), []).append(r)
    return out


def _fmt(values: List[float], digits: int = 1) -> str:
    m, s = mean_std(values)
    if m is None:
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def _hparams_text(params: Dict[str, Any]) -> str:
    short = []
    for k, v in sorted(params.items()):
        short.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(short)


def dataset_table(cfg: StudyConfig, ds: str, points, energy_only: bool) -> str:
    lines = ["| kind | point | tuned on | seeds | E MAE (meV/atom) | E RMSE (meV/atom) | F MAE (meV/Å) | F RMSE (meV/Å) "
             "| latency (ms) | atoms / edges | parameters | hyperparameters |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind in cfg.kinds:
        for (d, k, trial), rows in sorted(points.items(), key=lambda kv: kv[0][2]):
            if d != ds or k != kind:
                continue
            first = rows[0]
            m = [r["metrics"] for r in rows]
            forces = ["n/a", "n/a"] if energy_only else [
                _fmt([x["forces_mae_meV_per_A"] for x in m]), _fmt([x["forces_rmse_meV_per_A"] for x in m])]
            lat = first["latency"]
            lines.append(
                f"| {LABELS.get(kind, kind)} | {'/'.join(first['points'])} (trial {trial}) | {first['tuned_on']} "
                f"| {len(rows)} | {_fmt([x['energy_mae_meV_per_atom'] for x in m], 2)} "
                f"| {_fmt([x['energy_rmse_meV_per_atom'] for x in m], 2)} | {forces[0]} | {forces[1]} "
                f"| {_fmt([r['latency_ms'] for r in rows], 2)} | {lat['num_atoms']} / {lat['num_edges']} "
                f"| {first['num_parameters']:,} | {_hparams_text(first['params'])} |")
    return "\n".join(lines)


def front_figure(cfg: StudyConfig, ds: str, trials, points, energy_only: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qallegro.utils import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for kind in cfg.kinds:
        rows = [t for t in trials if t["dataset"] == ds and t["kind"] == kind and t["state"] == "COMPLETE"]
        c, mk = COLORS.get(kind), MARKERS.get(kind, "o")
        if rows:
            ax.scatter([t["values"][1] for t in rows], [t["values"][0] for t in rows], s=14, alpha=0.35, color=c,
                       marker=mk)
            front = sorted((t for t in rows if t["on_front"]), key=lambda t: t["values"][1])
            ax.step([t["values"][1] for t in front], [t["values"][0] for t in front], where="post", color=c,
                    alpha=0.6, label=f"{LABELS.get(kind, kind)}: tuning trials (val) and front")
        for (d, k, _), runs in points.items():
            if d != ds or k != kind:
                continue
            key = error_key(energy_only)
            ym, ys = mean_std([r["metrics"][key] for r in runs])
            xm, xs = mean_std([r["latency_ms"] for r in runs])
            transferred = runs[0]["tuned_on"] != ds
            ax.errorbar([xm], [ym], xerr=[xs], yerr=[ys], color=c, marker=mk, markersize=8, markeredgecolor="black",
                        capsize=3, linestyle="none",
                        label=f"{LABELS.get(kind, kind)} {'/'.join(runs[0]['points'])}"
                              + (f" (from {runs[0]['tuned_on']})" if transferred else "") + f", test, {len(runs)} seeds")
    clock = cfg.latency.clock
    ax.set_xlabel(f"latency of the exported model, energy+forces (ms, {clock} clock, "
                  f"{cfg.latency.threads or 'auto'} thread(s))")
    ax.set_ylabel("energy MAE (meV/atom)" if energy_only else "force MAE (meV/Å)")
    ax.set_title(f"{cfg.name}: {ds}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6.5, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


def learning_figure(cfg: StudyConfig, ds: str, points, energy_only: bool, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qallegro.utils import atomic_write

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    drawn = False
    for (d, kind, _), runs in points.items():
        if d != ds or "most_accurate" not in runs[0]["points"]:
            continue
        for i, r in enumerate(runs):
            h = [x for x in r.get("history", []) if math.isfinite(x["val"]) and math.isfinite(x["time"])]
            if h:
                ax.plot([x["time"] for x in h], [x["val"] * 1e3 for x in h], color=COLORS.get(kind), alpha=0.7,
                        label=LABELS.get(kind, kind) if i == 0 else None)
                drawn = True
    ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation " + ("energy MAE (meV/atom)" if energy_only else "force MAE (meV/Å)"))
    ax.set_title(f"{ds}: most accurate points, every seed")
    ax.grid(alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
    return drawn


def _budget_text(cfg: StudyConfig, stage: str) -> str:
    parts = []
    for ds in cfg.datasets:
        seconds, epochs = cfg.budget(ds, stage)
        parts.append(f"{ds} {epochs} epochs" + (f" or {seconds:.0f} s" if seconds else ""))
    return ", ".join(parts)


def progress_lines(cfg: StudyConfig, trials, runs) -> List[str]:
    """How far the study is: a report of a study still running says so, with the counts."""
    tuned = [(d, k) for d in cfg.datasets for k in cfg.kinds if cfg.tuned(d, k)]
    complete = {(d, k): sum(1 for t in trials if t["dataset"] == d and t["kind"] == k and t["state"] == "COMPLETE")
                for d, k in tuned}
    studies_done = sum(n >= cfg.trials for n in complete.values())
    finished = sum(r["state"] == "COMPLETE" for r in runs)
    retried = {r["key"] for r in runs if r["state"] == "COMPLETE"}
    runs = [r for r in runs if r["state"] != "FAIL" or r["key"] not in retried]  # a re-run replaced it
    status = ("complete" if studies_done == len(tuned) and runs
              and all(r["state"] in ("COMPLETE", "FAIL") for r in runs) else "in progress")
    return [f"**Status: {status}.** Tuning: {studies_done} of {len(tuned)} studies have their {cfg.trials} trials "
            f"({sum(complete.values())} trials in all); final stage: {finished} runs complete"
            + (f", {sum(r['state'] == 'FAIL' for r in runs)} failed" if any(r["state"] == "FAIL" for r in runs) else "")
            + ("" if runs else " (starts when every study is tuned)") + "."]


def write_report(cfg: StudyConfig, out: Optional[str] = None) -> Path:
    """Regenerate the report of ``cfg`` from its storage into ``out`` (default ``<out>/report``)."""
    from qallegro.hpo.study_data import load_splits
    from qallegro.utils import atomic_write_text

    folder = Path(out) if out else cfg.out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    trials, runs = collect(cfg)
    atomic_write_text(folder / "trials.jsonl", "".join(json.dumps(t) + "\n" for t in trials))
    atomic_write_text(folder / "final.jsonl", "".join(json.dumps(r) + "\n" for r in runs))
    points = group_points(runs)
    lat = cfg.latency
    text = [f"# {cfg.name}: tuned Pareto fronts of Allegro, Allegro+MLP and Allegro+QDI", "",
            f"Generated by `qallegro study report {cfg.source}` from the stored studies ({cfg.storage.split('/')[-1]}); "
            f"raw results: `trials.jsonl` (tuning, validation split) and `final.jsonl` (retrained points, test split).",
            "",
            f"Tuning: SAMO-COBRA, {cfg.trials} trials per study ({cfg.n_init or 'dim + 1'} initial design), "
            f"training per trial: {_budget_text(cfg, 'trial')} ({cfg.trial.dtype}, batch {cfg.trial.batch_size}). "
            f"Final stage: points {', '.join(cfg.final.points)} of each front retrained for {cfg.final.seeds} seeds, "
            f"{_budget_text(cfg, 'final')} each, errors on the test split (never seen by the tuning), mean ± std "
            f"over seeds.",
            "",
            f"Latency: the exported TorchScript model (`qallegro export`), in its own process with {lat.threads or 'the worker’s'} "
            f"thread(s), {lat.dtype}, {lat.device}, {lat.clock} clock; a pass is one energy+forces call per benchmark "
            f"structure (the first {cfg.latency_structures} validation structures of the data set, neighbour list "
            f"prebuilt), {lat.warmup} warm-up passes, then the median of {lat.repeats} blocks of {lat.calls} passes "
            f"(table: mean ± std of that median over the seeds' models). Atoms and edges of the benchmark structures "
            f"are in each table (edges depend on the tuned r_max).", ""]
    text += progress_lines(cfg, trials, runs) + [""]
    verdict_inputs: Dict[str, Any] = {}
    for ds in cfg.datasets:
        try:
            splits = load_splits(cfg, ds)
            sizes = f"{len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test; {splits.source}"
            energy_only = splits.energy_only
            bench = "; ".join(Path(s.source).name for s in splits.latency_structures(cfg.latency_structures))
        except (OSError, ValueError) as err:
            sizes, energy_only, bench = f"data not available here ({err})", cfg.datasets[ds].target == "energy", "?"
        verdict_inputs[ds] = energy_only
        text += [f"## {ds}", "", f"{sizes}; target {'energy (U0)' if energy_only else 'forces'}. "
                 f"Benchmark structures: {bench}.", ""]
        front_figure(cfg, ds, trials, points, energy_only, folder / f"{ds}.png")
        text += [f"![{ds}]({ds}.png)", "", dataset_table(cfg, ds, points, energy_only), ""]
        done_keys = {r["key"] for r in runs if r["state"] == "COMPLETE"}
        failed = [r for r in runs if r["dataset"] == ds and r["state"] == "FAIL" and r["key"] not in done_keys]
        if failed:
            text += [f"Failed final runs: " + "; ".join(f"{r['key']}: {r.get('error', '?')}" for r in failed), ""]
        if learning_figure(cfg, ds, points, energy_only, folder / f"{ds}_learning.png"):
            text += [f"Learning curves: ![{ds} learning]({ds}_learning.png)", ""]
    text += ["## The paper's claims on our data", "",
             "Relative difference d of the test error (forces; energy for energy-only sets) of the most accurate "
             "retrained points, mean over seeds, ± its standard error from the seeds' spread. Verdict: **holds** "
             "when the claim's inequality holds by more than two standard errors, **does not hold** when the "
             "opposite does, **within noise** otherwise.", "",
             "| claim | data set | compared | d | verdict |", "|---|---|---|---|---|"]
    rows, overall = claims_rows(cfg, points, verdict_inputs)
    text += rows + [""] + overall + [""] + scale_notes(cfg, points, verdict_inputs) + [""]
    atomic_write_text(folder / "report.md", "\n".join(text))
    return folder / "report.md"
