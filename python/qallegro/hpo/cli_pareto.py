"""``qallegro pareto``: the Pareto front (force MAE vs latency) of one or more studies, as a table and a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

from qallegro.utils import atomic_write

EXAMPLE = (
    "qallegro pareto qallegro-allegro qallegro-allegro_mlp --storage sqlite:///study.db --out pareto.png"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", metavar="STUDY", nargs="+", help="study name(s) in the storage")
    parser.add_argument("--storage", default="sqlite:///qallegro_study.db", help="Optuna storage URL")
    parser.add_argument("--out", default="pareto.png", help="PNG file to write")
    parser.add_argument("--all", action="store_true", help="list every completed trial, not only the front")


def _rows(study) -> List[Dict]:
    from optuna.trial import TrialState

    from qallegro.hpo.sampler import feasible_pareto_trials, trial_constraints

    front = {t.number for t in feasible_pareto_trials(study)}
    kind = (study.user_attrs.get("space") or {}).get("kind", study.study_name)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.values is None:
            continue
        rows.append(
            {
                "study": study.study_name,
                "kind": t.user_attrs.get("kind", kind),
                "trial": t.number,
                "force_mae": t.values[0],
                "latency_ms": t.values[1],
                "params": t.user_attrs.get("num_parameters"),
                "feasible": all(c <= 0 for c in trial_constraints(t)),
                "pareto": t.number in front,
                "hparams": t.params,
            }
        )
    return rows


def format_table(rows: List[Dict]) -> str:
    """Plain-text table sorted by study then latency."""
    head = f"{'study':<24} {'kind':<12} {'trial':>5} {'force MAE meV/Å':>16} {'latency ms':>11} {'params':>9}  pareto  hyperparameters"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["study"], r["latency_ms"])):
        hp = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(r["hparams"].items()))
        lines.append(
            f"{r['study']:<24} {r['kind']:<12} {r['trial']:>5} {r['force_mae']:>16.2f} {r['latency_ms']:>11.3f} "
            f"{r['params'] if r['params'] is not None else '-':>9}  {'*' if r['pareto'] else ' ':^6}  {hp}"
        )
    return "\n".join(lines)


def plot(rows: List[Dict], out: str) -> Path:
    """Scatter of every trial and each kind's feasible front as a step line; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    kinds = sorted({r["kind"] for r in rows})
    for i, kind in enumerate(kinds):
        color = f"C{i}"
        mine = [r for r in rows if r["kind"] == kind]
        ax.scatter([r["latency_ms"] for r in mine], [r["force_mae"] for r in mine], s=14, alpha=0.35, color=color)
        front = sorted((r for r in mine if r["pareto"]), key=lambda r: r["latency_ms"])
        if front:
            xs, ys = [r["latency_ms"] for r in front], [r["force_mae"] for r in front]
            ax.step(xs, ys, where="post", color=color, lw=1.5)
            ax.scatter(xs, ys, s=30, color=color, edgecolor="k", lw=0.5, label=f"{kind} ({len(mine)} trials)")
    ax.set_xlabel("inference latency (ms, energy + forces)")
    ax.set_ylabel("validation force MAE (meV/Å)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Pareto fronts: force error vs latency")
    fig.tight_layout()
    path = atomic_write(out, lambda handle: fig.savefig(handle, format="png"))
    plt.close(fig)
    return path


def check_storage_exists(url: str) -> None:
    """A reader must not create databases: Optuna's sqlite storage creates a missing file (empty)."""
    if not url.startswith("sqlite:///"):
        return
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if path and path != ":memory:" and not Path(path).is_file():
        raise FileNotFoundError(
            f"--storage {url}: database file {path} does not exist (qallegro optimize creates it)"
        )


def run(args: argparse.Namespace) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_storage_exists(args.storage)
    rows: List[Dict] = []
    for name in args.studies:
        try:
            study = optuna.load_study(study_name=name, storage=args.storage)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(args.storage)]
            raise ValueError(f"no study {name!r} in {args.storage}; studies there: {names}") from None
        if len(study.directions) != 2:
            raise ValueError(f"study {name!r} has {len(study.directions)} objectives, expected 2")
        rows += _rows(study)
    if not rows:
        print("qallegro pareto: no completed trials yet", file=sys.stderr)
        return 1
    shown = rows if args.all else [r for r in rows if r["pareto"]]
    print(format_table(shown))
    path = plot(rows, args.out)
    print(f"\n{sum(r['pareto'] for r in rows)} Pareto-optimal of {len(rows)} completed trials; plot: {path}")
    return 0
