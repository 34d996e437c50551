"""``qallegro study run``: the paper's two stages on Optuna storage, resumable, for many workers.

Stage 1 (tune): one multi-objective study per (data set, kind) that is tuned (not transferred), named
``<name>/<data set>/<kind>``: SAMO-COBRA proposes hyperparameters; each trial trains on the train split
for ``trial.time_budget`` seconds, and returns the validation error (force MAE meV/Å, or energy MAE
meV/atom for ``target: energy``) and the latency of the exported model (:mod:`qallegro.hpo.latency`).
The test split is never seen here.

Stage 2 (final): the chosen points of each front (``final.points``: most accurate, knee, fastest) are
retrained for ``final.seeds`` seeds with ``final.time_budget`` and evaluated on the test split. A kind
with ``transfer_from`` takes the most accurate front point of its study on that data set. The jobs are
trials of one more study, ``<name>/final``, whose params are empty and whose job is a user attribute:
Optuna hands each WAITING job to exactly one worker, on one machine or many.

Nothing is lost when a worker dies: each trial records its worker (``host:pid``); a restarted worker
fails the RUNNING trials of dead processes on its own host at once, Optuna's heartbeat fails those of
other hosts after the grace period, and either way the trial is re-queued with the same parameters
(up to ``RETRIES`` times). A worker only finishes when no trial of any study is WAITING or RUNNING.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

from qallegro.hpo.study_config import StudyConfig
from qallegro.hpo.study_data import StudySplits, error_key, load_splits

HEARTBEAT = 20   # s between heartbeats of a running trial; stale after 4 missed beats
RETRIES = 2      # re-runs of a trial whose worker died
POLL = 10.0      # s between looks at trials other workers are running


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def make_storage(url: str, heartbeat: int = HEARTBEAT, retries: int = RETRIES):
    """RDB storage with heartbeats (stale after 4 beats) and re-queueing of trials whose worker died."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # heartbeats and the retry callback have been "experimental" since Optuna 2.8; nothing to act on
    warnings.filterwarnings("ignore", category=ExperimentalWarning)

    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = ({"pool_pre_ping": True} if url.startswith("postgresql")
              else {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    if not url.startswith(("sqlite", "postgresql", "mysql")):
        raise ValueError(f"storage must be an SQLAlchemy URL (sqlite:///x.db, postgresql+psycopg2://...), got {url!r}")
    from sqlalchemy.exc import IntegrityError, OperationalError

    def build():
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=retries))

    for attempt in range(3):
        try:
            return build()
        except (IntegrityError, OperationalError) as err:
            # workers started together on a new database race to create its schema: the loser's insert
            # of the schema version (or CREATE TABLE) fails although the schema is now there; retry
            if not any(s in str(err) for s in ("UNIQUE", "already exists", "duplicate")):
                raise
            time.sleep(0.5 * (attempt + 1))
    return build()


def fail_dead_trials(study) -> int:
    """FAIL (and re-queue) the RUNNING trials whose worker was a process on this host that is gone.

    Optuna's heartbeat notices a dead worker only after the grace period; a worker restarted on the
    same machine at once knows better, and without this a study whose last trial died could end with
    that trial RUNNING forever.
    """
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    host, me, count = socket.gethostname(), os.getpid(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if h != host or not pid.isdigit() or int(pid) == me or _alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except RuntimeError:  # finished meanwhile
            continue
        RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)(study, study._storage.get_trial(t._trial_id))
        count += 1
    return count


def _states(study) -> Dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def objective_key(splits: StudySplits) -> str:
    return error_key(splits.energy_only)


def train_and_measure(cfg: StudyConfig, splits: StudySplits, kind: str, hparams: Dict[str, Any], r_max: float,
                      lr: float, seed: int, time_budget: Optional[float], max_epochs: int, evaluate_on: str,
                      threads: int) -> Dict[str, Any]:
    """Train one model on ``splits.train`` (best epoch by validation), evaluate it on the ``evaluate_on``
    split, and time its export. Returns a JSON-able record."""
    from qallegro.hpo.latency import measure_deployed
    from qallegro.hpo.objectives import TrainSettings, count_parameters, train_config
    from qallegro.train import evaluate, fit

    extra: Dict[str, Any] = {"data": {"type_names": splits.type_names},
                             "scheduler": {"name": cfg.trial.lr_schedule}}
    if splits.energy_only:  # no forces: no force-RMS energy scale, pick the best epoch by energy
        extra["model"] = {"per_type_energy_scales": None}
        extra["training"] = {"monitor": "energy_per_atom_mae"}
    settings = TrainSettings(max_epochs=max_epochs, time_budget=time_budget, batch_size=cfg.trial.batch_size,
                             dtype=cfg.trial.dtype, seed=seed, forces_weight=0.0 if splits.energy_only else 1.0,
                             extra=extra)
    config = train_config(kind, r_max, hparams, lr, settings)
    start = time.perf_counter()
    result = fit(config, splits.train, splits.val, write_files=False, progress=False)
    seconds = time.perf_counter() - start
    target = {"val": splits.val, "test": splits.test}[evaluate_on]
    metrics = evaluate(result.model, target, device="cpu", source=f"{splits.name} {evaluate_on} set")
    error = float(metrics[objective_key(splits)])
    if not math.isfinite(error):
        raise ValueError(f"{splits.name}/{kind}: {objective_key(splits)} on the {evaluate_on} set is {error}")
    latency = measure_deployed(result.model, splits.latency_structures(cfg.latency_structures), cfg.latency,
                               threads=cfg.latency.threads or threads)
    history = [{"epoch": int(r.get("epoch", i)), "time": float(r.get("time", float("nan"))),
                "val": float(r.get("val_" + ("energy_per_atom_mae" if splits.energy_only else "forces_mae"), float("nan")))}
               for i, r in enumerate(result.history)]
    return {
        "error": error, "latency_ms": latency.median_ms, "latency": latency.as_dict(),
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        "num_parameters": count_parameters(result.model), "epochs": len(result.history),
        "best_epoch": int(result.best_epoch), "train_seconds": seconds, "train_threads": threads,
        "evaluated_on": evaluate_on,
        "history": history,
    }


class Task:
    """One thing a worker can do a trial of: a stage-1 study, or the final study's job queue."""

    def __init__(self, study, objective, target: Optional[int]) -> None:
        self.study, self.objective, self.target = study, objective, target

    def startable(self) -> Tuple[bool, bool]:
        """(a trial can be started now, trials of other workers are still running)."""
        from optuna.storages import fail_stale_trials

        fail_dead_trials(self.study)
        fail_stale_trials(self.study)
        s = _states(self.study)
        if s["FAIL"] > 3 * (self.target or 1) + 2 * RETRIES:
            raise RuntimeError(f"study {self.study.study_name!r}: {s['FAIL']} failed trials; see their "
                               "'error' user attribute (qallegro study report lists them)")
        if s["WAITING"] > 0:
            return True, s["RUNNING"] > 0
        if self.target is not None and s["COMPLETE"] + s["RUNNING"] < self.target:
            return True, s["RUNNING"] > 0
        return False, s["RUNNING"] > 0


def run_tasks(tasks: List["Task"], label: str) -> None:
    """Run trials of the first task that has one to start, until no task has work or runs any."""
    while True:
        waiting_on_others = False
        for task in tasks:
            can_start, others = task.startable()
            waiting_on_others |= others
            if can_start:
                task.study.optimize(task.objective, n_trials=1, catch=(ValueError, RuntimeError), gc_after_trial=True)
                break
        else:
            if not waiting_on_others:
                return
            print(f"{label}: waiting for trials other workers are running", flush=True)
            time.sleep(POLL)


def _record(trial, record: Dict[str, Any]) -> None:
    for key, value in record.items():
        trial.set_user_attr(key, value)


def tune(cfg: StudyConfig, storage, threads: int) -> None:
    """Stage 1: every tuned (data set, kind) study up to ``samo_cobra.trials`` completed trials."""
    import optuna

    from qallegro.hpo.cli_optimize import suggest
    from qallegro.hpo.sampler import SamoCobraSampler

    tasks, cache = [], {}
    for ds in cfg.datasets:
        for kind, spec in cfg.kinds.items():
            if not cfg.tuned(ds, kind):
                continue
            options = {"n_init": cfg.n_init} if cfg.n_init else {}
            study = optuna.create_study(
                storage=storage, study_name=cfg.study_name(ds, kind), directions=["minimize", "minimize"],
                sampler=SamoCobraSampler(search_space=dict(spec.space.distributions), ref_point=cfg.ref_point,
                                         seed=cfg.sampler_seed, **options),
                load_if_exists=True)

            def objective(trial, ds=ds, kind=kind, space=spec.space):
                trial.set_user_attr("worker", worker_id())
                if ds not in cache:
                    cache[ds] = load_splits(cfg, ds)
                splits = cache[ds]
                hparams, r_max, lr = space.split(suggest(trial, space.distributions))
                try:
                    record = train_and_measure(cfg, splits, kind, hparams, r_max, lr, cfg.trial.seed,
                                               *cfg.budget(ds, "trial"), "val", threads)
                except (ValueError, RuntimeError) as err:
                    trial.set_user_attr("error", str(err).splitlines()[0][:500])
                    raise
                _record(trial, record)
                print(f"{cfg.study_name(ds, kind)} trial {trial.number}: {objective_key(splits)} "
                      f"{record['error']:.2f}, latency {record['latency_ms']:.2f} ms, {record['epochs']} epochs",
                      flush=True)
                return record["error"], record["latency_ms"]

            if study.user_attrs.get("dataset") is None:
                study.set_user_attr("dataset", ds)
                study.set_user_attr("kind", kind)
                study.set_user_attr("space", spec.space.source)
                study.set_metric_names(["validation_error", "latency_ms"])
            tasks.append(Task(study, objective, cfg.trials))
    run_tasks(tasks, "tune")


def front_points(study, points: List[str]) -> Dict[str, Any]:
    """The chosen trials of a finished study's feasible Pareto front, by point name.

    most_accurate: lowest validation error; fastest: lowest latency; knee: the front point nearest the
    ideal point (best error, best latency) once both objectives are scaled to [0, 1] over the front.
    """
    from qallegro.hpo.sampler import feasible_pareto_trials

    front = sorted(feasible_pareto_trials(study), key=lambda t: (t.values[0], t.values[1]))
    if not front:
        raise RuntimeError(f"study {study.study_name!r} has no completed feasible trial")
    out = {"most_accurate": front[0], "fastest": min(front, key=lambda t: (t.values[1], t.values[0]))}
    lo = [min(t.values[k] for t in front) for k in (0, 1)]
    hi = [max(t.values[k] for t in front) for k in (0, 1)]
    span = [max(h - low, 1e-12) for h, low in zip(hi, lo)]
    out["knee"] = min(front, key=lambda t: math.hypot((t.values[0] - lo[0]) / span[0], (t.values[1] - lo[1]) / span[1]))
    return {p: out[p] for p in points}


def final_jobs(cfg: StudyConfig, storage) -> List[Dict[str, Any]]:
    """Every (data set, kind, point, seed) to retrain, with the hyperparameters its study chose."""
    import optuna

    jobs = []
    for ds in cfg.datasets:
        for kind, spec in cfg.kinds.items():
            source = cfg.transfer_source(ds, kind) or ds
            study = optuna.load_study(study_name=cfg.study_name(source, kind), storage=storage)
            points = ["most_accurate"] if source != ds else cfg.final.points
            chosen: Dict[int, List[str]] = {}
            for point, trial in front_points(study, points).items():
                chosen.setdefault(trial.number, []).append(point)
            for number, names in chosen.items():
                params = study.trials[number].params
                for seed in range(cfg.final.seeds):
                    jobs.append({"key": f"{ds}/{kind}/{number}/{seed}", "dataset": ds, "kind": kind,
                                 "points": names, "trial": number, "tuned_on": source, "seed": seed,
                                 "params": params})
    return jobs


def final(cfg: StudyConfig, storage, threads: int) -> None:
    """Stage 2: retrain the chosen points with seeds, evaluate on the test split."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=cfg.final_study_name, direction="minimize",
                                load_if_exists=True)
    known = {t.user_attrs.get("job", {}).get("key") for t in study.get_trials(deepcopy=False)}
    for job in final_jobs(cfg, storage):
        if job["key"] not in known:
            study.enqueue_trial({}, user_attrs={"job": job})
    cache: Dict[str, StudySplits] = {}

    def objective(trial):
        from optuna.trial import TrialState

        job = trial.user_attrs.get("job")
        if job is None:  # another worker took the last job between our look and our ask
            raise optuna.TrialPruned()
        twins = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.number < trial.number and t.user_attrs.get("job", {}).get("key") == job["key"]]
        if twins:  # two workers enqueued the same job at once: the older one counts
            raise optuna.TrialPruned()
        trial.set_user_attr("worker", worker_id())
        ds, kind = job["dataset"], job["kind"]
        if ds not in cache:
            cache[ds] = load_splits(cfg, ds)
        hparams, r_max, lr = cfg.kinds[kind].space.split(dict(job["params"]))
        try:
            record = train_and_measure(cfg, cache[ds], kind, hparams, r_max, lr, job["seed"],
                                       *cfg.budget(ds, "final"), "test", threads)
        except (ValueError, RuntimeError) as err:
            trial.set_user_attr("error", str(err).splitlines()[0][:500])
            raise
        _record(trial, record)
        print(f"final {job['key']} ({'/'.join(job['points'])}): test {objective_key(cache[ds])} "
              f"{record['error']:.2f}, latency {record['latency_ms']:.2f} ms", flush=True)
        return record["error"]

    run_tasks([Task(study, objective, None)], "final")


def run_worker(cfg: StudyConfig, threads: int, stages: Tuple[str, ...]) -> None:
    """One worker: stage 1 then stage 2 (each waits until the other workers' trials are done)."""
    import optuna

    from qallegro.threads import apply_threads

    apply_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(cfg.storage)
    if "tune" in stages:
        tune(cfg, storage, threads)
    if "final" in stages:
        final(cfg, storage, threads)
