"""``qallegro study``: the paper's study from one YAML file: ``run`` (resumable, many workers), ``status``, ``report``."""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path
from typing import Tuple

EXAMPLE = (
    "qallegro study run studies/laskaris2026_cpu.yaml --workers 2\n"
    "  qallegro study status studies/laskaris2026_cpu.yaml\n"
    "  qallegro study report studies/laskaris2026_cpu.yaml -o results/laskaris2026_cpu/report\n"
    "  (rerun `study run` after a stop or a crash: it continues where it was; several machines share one\n"
    "   study when the YAML's storage is a postgresql+psycopg2://user@host/db URL)"
)

STAGES = {"all": ("tune", "final"), "tune": ("tune",), "final": ("final",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qallegro.threads import add_threads_argument

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="tune (stage 1) and retrain the chosen points (stage 2); resumable")
    run.add_argument("study", metavar="STUDY.yaml")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    run.add_argument("--stage", choices=sorted(STAGES), default="all", help="tune, final or all (default)")
    add_threads_argument(run)
    status = sub.add_parser("status", help="trials done per study and final runs done")
    status.add_argument("study", metavar="STUDY.yaml")
    report = sub.add_parser("report", help="markdown + PNG report from the stored studies and runs")
    report.add_argument("study", metavar="STUDY.yaml")
    report.add_argument("-o", "--out", default=None, help="report folder (default: <out>/report)")


def _child(source: str, threads: int, stages: Tuple[str, ...]) -> None:
    from qallegro.hpo.study_config import load_study_config
    from qallegro.hpo.study_run import run_worker

    run_worker(load_study_config(source), threads, stages)


def run_study(cfg, workers: int, threads_requested, stages: Tuple[str, ...]) -> int:
    """Prepare the data once, then run ``workers`` worker processes (this one when ``workers`` is 1)."""
    from qallegro.hpo.study_data import load_splits
    from qallegro.hpo.study_run import make_storage, run_worker
    from qallegro.threads import setup_threads

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    threads = setup_threads("study", threads_requested, workers)
    lat = cfg.latency.threads or threads
    print(f"study {cfg.name}: storage {cfg.storage}; latency measured with {lat} thread(s), {cfg.latency.dtype}, "
          f"{cfg.latency.device}", flush=True)
    for name in cfg.datasets:  # draws and writes subsets once, before workers race for them
        s = load_splits(cfg, name)
        print(f"  {name}: {s.source}: {len(s.train)} train / {len(s.val)} val / {len(s.test)} test, "
              f"{'energy' if s.energy_only else 'forces'} target", flush=True)
    if workers == 1:
        run_worker(cfg, threads, stages)
        return 0
    # the storage's tables exist before the workers start: two processes creating them at once collide
    make_storage(cfg.storage)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(cfg.source, threads, stages), name=f"study-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    bad = [p.name for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"study {cfg.name}: worker(s) {bad} failed; rerun `qallegro study run` to continue")
    return 0


def status(cfg) -> int:
    import optuna
    from optuna.trial import TrialState

    from qallegro.hpo.study_run import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(cfg.storage)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    for ds in cfg.datasets:
        for kind in cfg.kinds:
            src = cfg.transfer_source(ds, kind)
            if src is not None:
                print(f"{ds}/{kind}: transferred from {src}")
                continue
            name = cfg.study_name(ds, kind)
            if name not in names:
                print(f"{name}: not started (0 of {cfg.trials})")
                continue
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            n = {s: sum(t.state == s for t in trials) for s in TrialState}
            print(f"{name}: {n[TrialState.COMPLETE]} of {cfg.trials} complete, {n[TrialState.RUNNING]} running, "
                  f"{n[TrialState.FAIL]} failed, {n[TrialState.WAITING]} waiting")
    if cfg.final_study_name in names:
        trials = optuna.load_study(study_name=cfg.final_study_name, storage=storage).get_trials(deepcopy=False)
        jobs = [t for t in trials if "job" in t.user_attrs]
        done = sum(t.state == TrialState.COMPLETE for t in jobs)
        print(f"{cfg.final_study_name}: {done} final runs complete, "
              f"{sum(t.state == TrialState.RUNNING for t in jobs)} running, "
              f"{sum(t.state == TrialState.WAITING for t in jobs)} waiting, {sum(t.state == TrialState.FAIL for t in jobs)} failed")
    else:
        print(f"{cfg.final_study_name}: not started")
    return 0


def run(args: argparse.Namespace) -> int:
    from qallegro.hpo.study_config import load_study_config

    cfg = load_study_config(args.study)
    if args.action == "run":
        return run_study(cfg, args.workers, args.threads, STAGES[args.stage])
    if cfg.storage.startswith("sqlite:///") and not Path(cfg.storage[len("sqlite:///"):]).is_file():
        # reading a study must not create an empty database where a typo pointed
        raise FileNotFoundError(f"{cfg.storage[len('sqlite:///'):]}: no results of study {cfg.name!r} yet "
                                f"(run: qallegro study run {args.study})")
    if args.action == "status":
        return status(cfg)
    from qallegro.hpo.study_report import write_report

    path = write_report(cfg, args.out)
    print(f"report: {path}")
    return 0
