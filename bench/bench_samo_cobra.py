"""Validation table of SAMO-COBRA against Optuna's NSGA-II, TPE and GPSampler on problems with known fronts.

For BNH, SRN, TNK, CTP1, OSY, TBTD, WB, DBD, SRD and ZDT1 (see qallegro.hpo.problems), budget 40 d
evaluations, seeds 0..S-1: mean (std) hypervolume as a fraction of the true front's, and the number of
evaluations needed to reach 95% of it, at the SAMO-COBRA paper's reference point and (for runs that
stored their evaluations) at a tight one, 1.1 x the true front's nadir. NSGA-II also runs on for
``--nsga-factor`` times the budget so that its evaluations-to-95% can be given when it needs more than
40 d ("> N" when it never gets there). GPSampler is Optuna's Gaussian-process sampler (constrained
LogEHVI for two objectives), the strongest an Optuna user has. SAMO-COBRA's infill criterion is the
hypervolume at a reference point it is given: method "samo-cobra" is given the paper's point,
"samo-cobra-tight" the tight one; both are scored at both points.

Every run is cached in ``--cache`` (JSON lines; new runs go to the last file, all files are read),
so an interrupted table resumes where it stopped. The table always has rows for every problem
with cached runs, whichever ``--problems`` were run this time; text after a line
``<!-- notes -->`` in an existing ``--out`` file is kept, and the same figures go to ``--json``.
Two processes can share the work with ``--first-seed`` (or ``--problems``) and different last cache files.
``--quick`` (what ``make bench`` runs) is one seed of BNH and CTP1 with its own cache and outputs.

    OMP_NUM_THREADS=1 nice python bench/bench_samo_cobra.py --seeds 10 --out bench/results/samo_cobra.md
    OMP_NUM_THREADS=1 nice python bench/bench_samo_cobra.py --problems OSY --first-seed 5 --seeds 10
        --cache bench/results/samo_cobra_runs_baselines.jsonl,bench/results/samo_cobra_runs_osy.jsonl   (one command)
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from qallegro.hpo import problems
from qallegro.hpo.samo_cobra import minimize, pareto_mask
from qallegro.hpo.infill import hypervolume


def hv_progress(f: np.ndarray, g: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """HV of the feasible front after each evaluation [n]."""
    out = np.zeros(len(f))
    for i in range(len(f)):
        out[i] = hypervolume(f[: i + 1][pareto_mask(f[: i + 1], g[: i + 1])], ref)
    return out


Evaluations = Tuple[np.ndarray, np.ndarray]  # f [n, 2], g [n, n_con]


def run_samo(problem: problems.Problem, budget: int, seed: int, ref: Optional[Sequence[float]] = None) -> Tuple[Evaluations, int]:
    """Evaluations and the number of COBYLA starts the stall guard stopped (see qallegro.hpo.cpu_guard).
    Constraints written "value - limit" are scaled by their limits, as a user who states them would
    (qallegro's HPO constraints are such); the others by SAMO-COBRA's data-driven default."""
    fun = problem if problem.n_con else (lambda x: problem(x)[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = minimize(
            fun, problem.bounds, 2, problem.n_con, problem.ref_point if ref is None else ref, budget, seed=seed,
            con_scale=problem.con_limits,
        )
    return (res.f, res.g), sum("stalled" in str(w.message) for w in caught)


def run_optuna(problem: problems.Problem, budget: int, seed: int, sampler_name: str) -> Evaluations:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    constraints = (lambda t: t.user_attrs["g"]) if problem.n_con else None
    if sampler_name == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    elif sampler_name == "gp":
        sampler = optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    fs, gs = [], []

    def objective(trial):
        x = np.array([trial.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(problem.bounds)])
        f, g = problem(x)
        trial.set_user_attr("g", [float(v) for v in g])
        fs.append(f)
        gs.append(g)
        return tuple(float(v) for v in f)

    study.optimize(objective, n_trials=budget)
    return np.array(fs), np.array(gs).reshape(len(fs), problem.n_con)


def evals_to(progress: np.ndarray, target: float) -> Optional[int]:
    hit = np.flatnonzero(progress >= target)
    return int(hit[0]) + 1 if len(hit) else None


ALL_PROBLEMS = ("BNH", "SRN", "TNK", "CTP1", "OSY", "TBTD", "WB", "DBD", "SRD", "ZDT1")
# SAMO-COBRA needs a reference point: "samo-cobra" is given the paper's, "samo-cobra-tight" the tight one
METHODS = ("samo-cobra", "samo-cobra-tight", "nsga2", "tpe", "gp")
LABELS = {
    "samo-cobra": "SAMO-COBRA (paper ref)",
    "samo-cobra-tight": "SAMO-COBRA (tight ref)",
    "nsga2": "NSGA-II",
    "tpe": "TPE",
    "gp": "GPSampler",
}
NOTES_MARK = "<!-- notes -->"
# NSGA-II, TPE and GPSampler runs (they do not depend on qallegro's code), SAMO-COBRA's runs since the
# objectives' log transform (2 December 2026; earlier ones are in git history), then the BNH-OSY
# baselines rerun to store their evaluations (HV traces identical to the earlier records)
DEFAULT_CACHE = (
    "bench/results/samo_cobra_runs_baselines.jsonl,bench/results/samo_cobra_runs_v3a.jsonl,"
    "bench/results/samo_cobra_runs_v3b.jsonl,bench/results/samo_cobra_runs_v3c.jsonl"
)


def read_caches(caches: List[Path]) -> Dict[str, dict]:
    done: Dict[str, dict] = {}
    for path in caches:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done[rec["key"]] = rec
    return done


def trace(rec: dict, p: problems.Problem, ref: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """HV after each evaluation of a cached run at ``ref`` (None: the paper's point). Old records
    hold only the paper-point trace; records with their evaluations serve any point."""
    if "f" in rec:
        f = np.array(rec["f"], float)
        g = np.array(rec["g"], float).reshape(len(f), p.n_con)
        return hv_progress(f, g, np.asarray(p.ref_point if ref is None else ref, float))
    return np.array(rec["hv"]) if ref is None else None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default=",".join(ALL_PROBLEMS))
    ap.add_argument("--methods", default=",".join(METHODS), help="which methods to run this time")
    ap.add_argument("--seeds", type=int, default=10, help="run seeds first-seed..seeds-1 (the table has every cached seed)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--nsga-factor", type=int, default=10, help="NSGA-II long-run budget / (40 d)")
    ap.add_argument(
        "--cache", default=DEFAULT_CACHE,
        help="JSON-lines run cache(s), comma-separated; new runs go to the last, all are read",
    )
    ap.add_argument("--out", default="bench/results/samo_cobra.md")
    ap.add_argument("--json", default="bench/results/bench_samo_cobra.json", help="the table's figures as JSON (named like the pytest-benchmark suites')")
    ap.add_argument("--render-only", action="store_true", help="write the table from the cache, run nothing")
    ap.add_argument("--readme", default=None, help="also rewrite the table between README_MARKS in this file")
    ap.add_argument("--quick", action="store_true", help="one seed of BNH and CTP1, own cache and outputs")
    args = ap.parse_args(argv)
    if args.quick:
        args.problems, args.seeds, args.first_seed = "BNH,CTP1", 1, 0
        args.cache = "bench/results/samo_cobra_quick_runs.jsonl"
        args.out, args.json = "bench/results/samo_cobra_quick.md", "bench/results/bench_samo_cobra_quick.json"
    caches = [Path(c) for c in args.cache.split(",")]
    cache_path = caches[-1]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_caches(caches)
    names = [n.strip().upper() for n in args.problems.split(",") if n.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in [] if args.render_only else names:
        p = problems.get(name)
        budget = 40 * p.dim
        for seed in range(args.first_seed, args.seeds):
            for method in methods:
                n = budget * args.nsga_factor if method == "nsga2" else budget
                key = f"{name}/{method}/{seed}"
                if key in done:
                    continue
                t0 = time.perf_counter()
                extra = {}
                if method.startswith("samo-cobra"):
                    ref = p.tight_ref_point() if method == "samo-cobra-tight" else None
                    (f, g), extra["stalled_starts"] = run_samo(p, n, seed, ref)
                else:
                    f, g = run_optuna(p, n, seed, method)
                prog = hv_progress(f, g, np.asarray(p.ref_point, float))
                rec = {"key": key, "seconds": time.perf_counter() - t0, "hv": prog.tolist(), **extra,
                       "f": f.tolist(), "g": g.tolist()}
                with cache_path.open("a") as fh:  # one line per run: a killed table resumes after it
                    fh.write(json.dumps(rec) + "\n")
                done[key] = rec
                print(f"{key}: HV {prog[min(budget, len(prog)) - 1]:.6g} in {rec['seconds']:.1f} s", flush=True)
    # re-read: another process may have added runs to the other caches meanwhile; count every cached seed
    done = read_caches(caches)
    shown = [n for n in ALL_PROBLEMS if any(k.startswith(n + "/") for k in done)]
    seeds = max([args.seeds] + [int(k.rsplit("/", 1)[1]) + 1 for k in done])
    table, figures = render(shown, seeds, done, args.nsga_factor)
    out = Path(args.out)
    notes = ""
    if out.exists() and NOTES_MARK in out.read_text():
        notes = "\n" + out.read_text()[out.read_text().index(NOTES_MARK) :]
    for path, text in ((out, table + notes), (Path(args.json), json.dumps(figures, indent=1) + "\n")):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    if args.readme:
        write_readme_table(Path(args.readme), table)
    print(table)
    return 0


README_MARKS = ("<!-- samo_cobra table -->", "<!-- /samo_cobra table -->")


def write_readme_table(path: Path, table: str) -> None:
    """Replace the text between README_MARKS in ``path`` by the table (without its preamble)."""
    text = path.read_text()
    start, end = (text.find(m) for m in README_MARKS)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no {README_MARKS[0]} ... {README_MARKS[1]} block to rewrite")
    rows = table[table.index("| problem") :]
    text = text[: start + len(README_MARKS[0])] + "\n" + rows + text[end:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _median(vals: List[float]) -> float:
    vals = sorted(vals)
    k = len(vals)
    return vals[k // 2] if k % 2 else 0.5 * (vals[k // 2 - 1] + vals[k // 2])


def render(names: List[str], seeds: int, done: Dict[str, dict], nsga_factor: int) -> Tuple[str, List[dict]]:
    """The markdown table and its figures (one dict per problem and reference point)."""
    labels = [LABELS[m] for m in METHODS]
    lines = [
        f"Budget 40·d evaluations, up to {seeds} seeds (column 'runs': SAMO-COBRA's; every method ran the "
        "same seeds unless its cell says otherwise); HV as % of the true front's (mean ± std); ref 'paper' = "
        "the SAMO-COBRA paper's reference point, 'tight' = 1.1 × the true front's nadir (SAMO-COBRA is given "
        "one of the two for its infill criterion, the other methods need none); evals to 95% = "
        "median over seeds of the first evaluation reaching 95% of the true HV "
        f"(NSGA-II run to {nsga_factor}×budget for this column; '>N' = not reached in N).",
        "",
        "| problem | d | ref | runs | true HV | " + " | ".join(f"{x} HV %" for x in labels)
        + " | evals to 95%: " + " / ".join(labels) + " | SAMO-COBRA s/run (paper ref) |",
        "|---|---|---|---|---|" + "---|" * len(labels) + "---|---|",
    ]
    figures = []
    for name in names:
        p = problems.get(name)
        budget = 40 * p.dim
        for ref_kind in ("paper", "tight"):
            ref = None if ref_kind == "paper" else np.asarray(p.tight_ref_point(), float)
            true_hv = p.true_hypervolume(ref_point=ref)
            cells, n95, secs, runs, row = {}, {}, 0.0, 0, {"problem": name, "d": p.dim, "ref": ref_kind}
            row["ref_point"] = list(p.ref_point if ref is None else ref.tolist())
            row["true_hv"] = true_hv
            for method in METHODS:
                recs = [done[k] for k in (f"{name}/{method}/{s}" for s in range(seeds)) if k in done]
                traces = [t for t in (trace(r, p, ref) for r in recs) if t is not None]
                if not traces:
                    cells[method], n95[method] = "n/a", "n/a"
                    continue
                final = np.array([t[budget - 1] for t in traces]) / true_hv * 100
                cells[method] = f"{final.mean():.2f} ± {final.std():.2f}"
                if method != "samo-cobra" and runs and len(traces) != runs:
                    cells[method] += f" ({len(traces)} runs)"
                hits = [evals_to(t / true_hv, 0.95) for t in traces]
                # a run that never reaches 95% counts as "beyond its budget" for the median
                med = _median([h if h is not None else np.inf for h in hits])
                n95[method] = f">{len(traces[0])}" if not np.isfinite(med) else f"{med:g}"
                if method == "samo-cobra":
                    secs, runs = float(np.mean([r["seconds"] for r in recs])), len(traces)
                row[method] = {"runs": len(traces), "hv_percent": final.tolist(), "mean": final.mean(),
                               "std": final.std(), "evals_to_95": n95[method]}
            if all(method not in row for method in METHODS):
                continue
            row["samo_cobra_seconds_per_run"] = secs
            figures.append(row)
            lines.append(
                f"| {name} | {p.dim} | {ref_kind} | {runs} | {true_hv:.6g} | "
                + " | ".join(cells[m] for m in METHODS) + " | " + " / ".join(n95[m] for m in METHODS)
                + f" | {secs:.0f} |"
            )
    return "\n".join(lines) + "\n", figures


if __name__ == "__main__":
    raise SystemExit(main())
