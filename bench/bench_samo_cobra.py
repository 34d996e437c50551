"""Validation table of SAMO-COBRA against Optuna's NSGA-II and TPE on problems with known fronts.

For BNH, SRN, TNK, CTP1 and OSY (see qallegro.hpo.problems), budget 40 d evaluations, seeds
0..S-1: mean (std) hypervolume as a fraction of the true front's, and the number of evaluations
needed to reach 95% of it. NSGA-II also runs on for ``--nsga-factor`` times the budget so that its
evaluations-to-95% can be given when it needs more than 40 d ("> N" when it never gets there).

Every run is cached in ``--cache`` (JSON lines; new runs go to the first file, all files are read),
so an interrupted table resumes where it stopped. The table always has a row for each of the five
problems, from every cached run, whichever ``--problems`` were run this time; text after a line
``<!-- notes -->`` in an existing ``--out`` file is kept. Two processes can share the work with
``--first-seed`` and different first cache files.

    OMP_NUM_THREADS=1 nice python bench/bench_samo_cobra.py --seeds 10 --out bench/results/samo_cobra.md
    OMP_NUM_THREADS=1 nice python bench/bench_samo_cobra.py --problems OSY --first-seed 5 --seeds 10
        --cache bench/results/samo_cobra_runs_osy2.jsonl,bench/results/samo_cobra_runs.jsonl   (one command)
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

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


def run_samo(problem: problems.Problem, budget: int, seed: int) -> Tuple[np.ndarray, int]:
    """HV trace and the number of COBYLA starts the stall guard stopped (see qallegro.hpo.cpu_guard)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = minimize(problem, problem.bounds, 2, problem.n_con, problem.ref_point, budget, seed=seed)
    return res.hv_progress, sum("stalled" in str(w.message) for w in caught)


def run_optuna(problem: problems.Problem, budget: int, seed: int, sampler_name: str) -> np.ndarray:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constraints = lambda t: t.user_attrs["g"]  # noqa: E731
    if sampler_name == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
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
    return hv_progress(np.array(fs), np.array(gs), np.asarray(problem.ref_point, float))


def evals_to(progress: np.ndarray, target: float) -> Optional[int]:
    hit = np.flatnonzero(progress >= target)
    return int(hit[0]) + 1 if len(hit) else None


ALL_PROBLEMS = ("BNH", "SRN", "TNK", "CTP1", "OSY")
NOTES_MARK = "<!-- notes -->"


def read_caches(caches: List[Path]) -> Dict[str, dict]:
    done: Dict[str, dict] = {}
    for path in caches:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done[rec["key"]] = rec
    return done


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="BNH,SRN,TNK,CTP1,OSY")
    ap.add_argument("--seeds", type=int, default=10, help="run seeds first-seed..seeds-1 (the table has every cached seed)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--nsga-factor", type=int, default=10, help="NSGA-II long-run budget / (40 d)")
    ap.add_argument(
        "--cache",
        default="bench/results/samo_cobra_runs.jsonl,bench/results/samo_cobra_runs_ctp1.jsonl,"
        "bench/results/samo_cobra_runs_osy.jsonl,bench/results/samo_cobra_runs_osy2.jsonl",
        help="JSON-lines run cache(s), comma-separated; new runs go to the first, all are read",
    )
    ap.add_argument("--out", default="bench/results/samo_cobra.md")
    ap.add_argument("--render-only", action="store_true", help="write the table from the cache, run nothing")
    args = ap.parse_args(argv)
    caches = [Path(c) for c in args.cache.split(",")]
    cache_path = caches[0]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_caches(caches)
    names = [n.strip().upper() for n in args.problems.split(",") if n.strip()]
    for name in [] if args.render_only else names:
        p = problems.get(name)
        budget = 40 * p.dim
        for seed in range(args.first_seed, args.seeds):
            for method, n in (("samo-cobra", budget), ("nsga2", budget * args.nsga_factor), ("tpe", budget)):
                key = f"{name}/{method}/{seed}"
                if key in done:
                    continue
                t0 = time.perf_counter()
                extra = {}
                if method == "samo-cobra":
                    prog, extra["stalled_starts"] = run_samo(p, n, seed)
                else:
                    prog = run_optuna(p, n, seed, method)
                rec = {"key": key, "seconds": time.perf_counter() - t0, "hv": prog.tolist(), **extra}
                with cache_path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                done[key] = rec
                print(f"{key}: HV {prog[min(budget, len(prog)) - 1]:.6g} in {rec['seconds']:.1f} s", flush=True)
    # re-read: another process may have added runs to the other caches meanwhile; count every cached seed
    done = read_caches(caches)
    seeds = max([args.seeds] + [int(k.rsplit("/", 1)[1]) + 1 for k in done])
    table = render(list(ALL_PROBLEMS), seeds, done, args.nsga_factor)
    out = Path(args.out)
    notes = ""
    if out.exists() and NOTES_MARK in out.read_text():
        notes = "\n" + out.read_text()[out.read_text().index(NOTES_MARK) :]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(table + notes)
    os.replace(tmp, out)
    print(table)
    return 0


def render(names: List[str], seeds: int, done: Dict[str, dict], nsga_factor: int) -> str:
    lines = [
        f"Budget 40·d evaluations, up to {seeds} seeds (column 'runs'); HV as % of the true front's (mean ± std); "
        "evals to 95% = median over seeds of the first evaluation reaching 95% of the true HV "
        f"(NSGA-II run to {nsga_factor}×budget for this column; '>N' = not reached in N).",
        "",
        "| problem | d | runs | true HV | SAMO-COBRA HV % | NSGA-II HV % | TPE HV % | SAMO-COBRA evals to 95% | NSGA-II evals to 95% | TPE evals to 95% | SAMO-COBRA s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        p = problems.get(name)
        budget, true_hv = 40 * p.dim, p.true_hypervolume()
        cells, n95, secs, runs = {}, {}, 0.0, 0
        for method in ("samo-cobra", "nsga2", "tpe"):
            recs = [done[k] for k in (f"{name}/{method}/{s}" for s in range(seeds)) if k in done]
            if not recs:
                cells[method], n95[method] = "n/a", "n/a"
                continue
            final = np.array([r["hv"][budget - 1] for r in recs]) / true_hv * 100
            cells[method] = f"{final.mean():.2f} ± {final.std():.2f}"
            hits = [evals_to(np.array(r["hv"]) / true_hv, 0.95) for r in recs]
            limit = len(recs[0]["hv"])
            # a run that never reaches 95% counts as "beyond its budget" for the median
            vals = sorted(h if h is not None else np.inf for h in hits)
            med = vals[len(vals) // 2] if len(vals) % 2 else 0.5 * (vals[len(vals) // 2 - 1] + vals[len(vals) // 2])
            n95[method] = f">{limit}" if not np.isfinite(med) else f"{med:g}"
            if method == "samo-cobra":
                secs, runs = float(np.mean([r["seconds"] for r in recs])), len(recs)
        lines.append(
            f"| {name} | {p.dim} | {runs} | {true_hv:.6g} | {cells['samo-cobra']} | {cells['nsga2']} | {cells['tpe']} | "
            f"{n95['samo-cobra']} | {n95['nsga2']} | {n95['tpe']} | {secs:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
