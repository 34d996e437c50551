"""``qallegro optimize``: a multi-objective hyperparameter study (force MAE vs latency) on Optuna storage.

Rerunning the same command continues the study until it holds ``--trials`` completed trials; several
workers (processes or machines) may run it at once against one storage (PostgreSQL across machines).
A worker that dies mid-trial is noticed by its missing heartbeat: the trial is marked FAIL and
re-queued once with the same parameters.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List

EXAMPLE = (
    "qallegro optimize allegro --data ethanol.extxyz --trials 12 --storage sqlite:///study.db\n"
    "  (SPACE is a YAML file or a shipped space: allegro, allegro_mlp, allegro_qdi;\n"
    "   --storage postgresql+psycopg2://user@host/db lets workers on many machines share one study)"
)

SAMPLERS = ("samo-cobra", "nsga2", "tpe", "random")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", metavar="SPACE", help="search-space YAML file or shipped space name")
    parser.add_argument("--data", required=True,
                        help="structures with energies and forces: a file (any qallegro.data.read format) or a "
                             "shipped data set name (culi-gfn1xtb, culi-gpaw, benzene, aspirin)")
    parser.add_argument("--val", default=None, help="separate validation file (default: split --data as the space says)")
    parser.add_argument("--trials", type=int, required=True, help="completed trials the study should hold")
    parser.add_argument("--storage", default="sqlite:///qallegro_study.db", help="Optuna storage URL (sqlite:///file.db, postgresql+psycopg2://user@host/db)")
    parser.add_argument("--study-name", default=None, help="default: qallegro-<kind>")
    parser.add_argument("--sampler", choices=SAMPLERS, default="samo-cobra")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--device", default=None, help="training and latency device (default: the space's latency.device)")
    parser.add_argument("--epochs", type=int, default=None, help="override training.max_epochs")
    parser.add_argument("--time-budget", type=float, default=None, help="override training.time_budget (s)")
    parser.add_argument("--heartbeat", type=int, default=30, help="seconds between worker heartbeats (stale after 4x)")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a trial whose worker died")
    from qallegro.threads import add_threads_argument

    add_threads_argument(parser)


def make_sampler(name: str, space, seed: int):
    """The study's sampler; constraints come from ``trial.set_constraint`` (read by all three)."""
    import optuna

    from qallegro.hpo.sampler import SamoCobraSampler

    if name == "samo-cobra":
        ref = None if space.ref_point is None else list(space.ref_point)
        # each constraint is `value - limit`, set in name order (the order the sampler reads them): its
        # limit is the unit SAMO-COBRA's safety margin is measured in (a parameter count, megabytes)
        limits = [float(space.constraints[k]) for k in sorted(space.constraints) if space.constraints[k] is not None]
        options = {"con_scale": limits} if limits else {}
        return SamoCobraSampler(search_space=dict(space.distributions), ref_point=ref, seed=seed, **options)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, 8 + 4 * len(space.distributions)))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"--sampler must be one of {SAMPLERS}, got {name!r}")


def make_storage(url: str, heartbeat: int, retries: int):
    """RDB storage with heartbeats: a trial whose worker stops beating for 4 heartbeats is marked
    FAIL and re-queued up to ``retries`` times (see :func:`qallegro.hpo.study_run.make_storage`)."""
    from qallegro.hpo.study_run import make_storage as storage_with_heartbeat

    return storage_with_heartbeat(url, heartbeat, retries)


def suggest(trial, distributions: Dict[str, Any]) -> Dict[str, Any]:
    """Ask ``trial`` for every parameter of the space (the sampler decides the values)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out = {}
    for name, d in distributions.items():
        if isinstance(d, CategoricalDistribution):
            out[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            out[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            out[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    return out


def latency_settings(latency_cfg: Dict[str, Any], threads: int):
    """The space's ``latency`` section as :class:`~qallegro.hpo.latency.LatencySettings` (threads: the
    space's, else this worker's)."""
    from qallegro.hpo.latency import LatencySettings

    known = {k: latency_cfg[k] for k in ("warmup", "calls", "repeats", "device", "dtype", "clock", "threads")
             if k in latency_cfg}
    settings = LatencySettings(**known)
    if settings.threads is None:
        settings.threads = threads
    settings.check("latency")
    return settings


def make_objective(space, train_structures: List, val_structures: List, settings, latency_cfg: Dict[str, Any],
                   threads: int = 1):
    """Objective (force MAE meV/Å, latency ms) for ``study.optimize``; stores everything measured.

    Latency is that of the exported model in its own process (:mod:`qallegro.hpo.latency`), the
    same measurement ``qallegro study`` uses for its objective and its report.
    """
    from qallegro.hpo.objectives import train_and_validate
    from qallegro.hpo.study_run import worker_id

    n_lat = int(space.data.get("latency_structures", 4))
    latency_structures = val_structures[: max(1, n_lat)]
    max_params = space.constraints.get("max_parameters")
    max_mem = space.constraints.get("max_peak_memory_mb")
    lat_settings = latency_settings(latency_cfg, threads)

    def objective(trial) -> tuple:
        trial.set_user_attr("worker", worker_id())
        params = suggest(trial, space.distributions)
        hparams, r_max, lr = space.split(params)
        out = train_and_validate(
            space.kind, r_max, hparams, lr, train_structures, val_structures, latency_structures, settings,
            latency_settings=lat_settings,
        )
        latency = out.deployed_latency
        mae, latency_ms = out.force_mae_meV_per_A, latency.median_ms
        if not (mae == mae and mae < float("inf")):
            raise ValueError(f"trial {trial.number}: validation force MAE is not finite ({mae})")
        for key, value in (
            ("kind", space.kind),
            ("force_mae_meV_per_A", mae),
            ("latency_ms", latency_ms),
            ("latency", latency.as_dict()),
            ("latency_atoms", latency.num_atoms),
            ("device", latency.device),
            ("num_parameters", out.num_parameters),
            ("peak_memory_mb", out.peak_memory_bytes / 2**20),
            ("train_seconds", out.train_seconds),
            ("epochs", out.epochs),
        ):
            trial.set_user_attr(key, value)
        if max_params is not None:
            trial.set_constraint("max_parameters", float(out.num_parameters - max_params))
        if max_mem is not None:
            trial.set_constraint("max_peak_memory_mb", float(out.peak_memory_bytes / 2**20 - max_mem))
        print(
            f"trial {trial.number}: force MAE {mae:.1f} meV/Å, latency {latency_ms:.2f} ms, "
            f"{out.num_parameters} params, {out.epochs} epochs in {out.train_seconds:.0f} s",
            flush=True,
        )
        return mae, latency_ms

    return objective


def run(args: argparse.Namespace) -> int:
    import optuna
    from optuna.trial import TrialState

    from qallegro.hpo.study_run import Task, run_tasks
    from qallegro.threads import setup_threads

    from qallegro.data import random_split
    from qallegro.data.datasets import load_dataset
    from qallegro.hpo.objectives import TrainSettings
    from qallegro.hpo.space import SpaceError, load_space

    try:
        space = load_space(args.space)
    except SpaceError as err:
        print(f"qallegro optimize: {err}", file=sys.stderr)
        return 2
    if args.trials < 1:
        print("qallegro optimize: --trials must be >= 1", file=sys.stderr)
        return 2
    structures = load_dataset(args.data)
    if args.val is not None:
        train_structures, val_structures = structures, load_dataset(args.val)
    else:
        train_structures, val_structures = random_split(
            structures, [space.data.get("train_size", 0.8), space.data.get("val_size", 0.2)], seed=int(space.data.get("split_seed", 0))
        )
    device = args.device or space.latency.get("device", "cpu")
    training = dict(space.training)
    settings = TrainSettings(
        max_epochs=int(args.epochs or training.pop("max_epochs", 20)),
        time_budget=args.time_budget if args.time_budget is not None else training.pop("time_budget", None),
        batch_size=int(training.pop("batch_size", 5)),
        dtype=str(training.pop("dtype", "float32")),
        seed=int(training.pop("seed", 0)),
        energy_weight=float(training.pop("energy_weight", 1.0)),
        forces_weight=float(training.pop("forces_weight", 1.0)),
        device=device,
    )
    threads = setup_threads("optimize", args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(args.storage, args.heartbeat, args.retries)
    name = args.study_name or f"qallegro-{space.kind}"
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=["minimize", "minimize"],
        sampler=make_sampler(args.sampler, space, args.seed),
        load_if_exists=True,
    )
    known = study.user_attrs.get("space")
    if known is not None and known.get("kind") != space.kind:
        print(f"qallegro optimize: study {name!r} tunes kind {known.get('kind')!r}, not {space.kind!r}", file=sys.stderr)
        return 2
    study.set_user_attr("space", {"kind": space.kind, "source": space.source, "data": args.data})
    study.set_metric_names(["force_mae_meV_per_A", "latency_ms"])
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = args.trials - done
    print(f"study {name!r} in {args.storage}: {done} completed trials, {max(remaining, 0)} to go ({args.sampler})")
    objective = make_objective(space, train_structures, val_structures, settings, space.latency, threads)
    # runs trials until --trials are complete, then waits for (or fails and re-runs) trials that other
    # workers still hold: a study never ends with a dead worker's trial RUNNING
    run_tasks([Task(study, objective, args.trials)], f"study {name!r}")
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    print(f"study {name!r}: {done} completed trials; see `qallegro pareto {name} --storage {args.storage}`")
    return 0 if done >= args.trials else 1
