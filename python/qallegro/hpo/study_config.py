"""STUDY.yaml: the paper's study (Laskaris et al. 2026) as one file, validated with errors that name the key.

::

    name: laskaris2026_cpu            # prefix of every Optuna study in the storage
    out: results/laskaris2026_cpu     # folder of the data subsets, the SQLite storage and the report
                                      #   (relative paths are relative to this file's folder)
    storage: null                     # Optuna URL; null: sqlite:///<out>/studies.db
    datasets:                         # name -> where the structures come from and how they are split
      culi: {source: culi-gfn1xtb, split: {train: 200, val: 50, test: 100, seed: 0}}
      qm9: {source: qm9, size: 1000, target: energy, split: {train: 600, val: 150, test: 250, seed: 0}}
      culi_gpaw: {source: culi-gpaw, transfer_from: culi, split: ...}   # no tuning: every kind takes culi's
    kinds:                            # kind -> search space (shipped name or file) and overrides
      allegro: {space: allegro}
      allegro_mlp: {space: allegro_mlp, params: {mlp_readout_depth: {type: int, low: 1, high: 3}}}
      allegro_qdi: {space: allegro_qdi, transfer_from: culi}   # tuned on culi only, transferred elsewhere
    samo_cobra: {trials: 12, n_init: 6, seed: 0}
    trial: {time_budget: 40, max_epochs: 1000, batch_size: 5, dtype: float32, lr_schedule: plateau}
    final: {points: [most_accurate, knee], seeds: 3, time_budget: 150, max_epochs: 5000}
    latency: {structures: 2, threads: 1, warmup: 5, calls: 20, repeats: 5, device: cpu, dtype: float32, clock: wall}

``source`` is a shipped data set name (``qallegro.data.datasets``), ``qm9`` (the ``qm9pack`` wheel) or a
file; ``limit`` keeps the first N structures, ``size`` then draws a random subset of N (seeded by
``subset_seed``), written once to ``<out>/data/<name>.extxyz`` so every worker and every later run
uses the very same structures. ``target: energy`` tunes and reports energy errors (QM9 has no forces).
A data set's own ``trial: {max_epochs, time_budget}`` and ``final: {...}`` replace the global budgets
there: an epoch budget is the same work on an idle and on a busy machine, and epochs scale with size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from qallegro.hpo.latency import LatencySettings
from qallegro.hpo.space import SearchSpace, SpaceError, _check_keys, load_space, parse_space

_TOP = {"name", "out", "storage", "datasets", "kinds", "samo_cobra", "trial", "final", "latency", "description"}
_DATASET = {"source", "limit", "size", "subset_seed", "target", "qm9_target", "split", "transfer_from", "trial", "final"}
_BUDGET = {"max_epochs", "time_budget"}
_SPLIT = {"train", "val", "test", "seed"}
_KIND = {"space", "params", "transfer_from"}
_SAMO = {"trials", "n_init", "seed", "ref_point"}
_TRIAL = {"time_budget", "max_epochs", "batch_size", "dtype", "seed", "lr_schedule"}
_FINAL = {"points", "seeds", "time_budget", "max_epochs"}
_LATENCY = {"structures", "threads", "warmup", "calls", "repeats", "device", "dtype", "clock"}
POINTS = ("most_accurate", "knee", "fastest")


class StudyConfigError(ValueError):
    """A STUDY.yaml is wrong; the message names the file and the key."""


@dataclass
class DatasetSpec:
    name: str
    source: str
    split: Dict[str, Any]
    target: str = "forces"
    limit: Optional[int] = None
    size: Optional[int] = None
    subset_seed: int = 0
    qm9_target: str = "U0"
    transfer_from: Optional[str] = None
    trial_budget: Dict[str, Any] = field(default_factory=dict)  # max_epochs / time_budget over `trial`
    final_budget: Dict[str, Any] = field(default_factory=dict)  # ... over `final`


@dataclass
class KindSpec:
    kind: str
    space: SearchSpace
    transfer_from: Optional[str] = None


@dataclass
class TrialSettings:
    time_budget: Optional[float] = 40.0
    max_epochs: int = 1000
    batch_size: int = 5
    dtype: str = "float32"
    seed: int = 0
    lr_schedule: str = "plateau"


@dataclass
class FinalSettings:
    points: List[str] = field(default_factory=lambda: ["most_accurate", "knee"])
    seeds: int = 3
    time_budget: Optional[float] = 150.0
    max_epochs: int = 5000


@dataclass
class StudyConfig:
    source: str
    name: str
    out: Path
    storage: str
    datasets: Dict[str, DatasetSpec]
    kinds: Dict[str, KindSpec]
    trials: int
    n_init: Optional[int]
    sampler_seed: int
    ref_point: Optional[List[float]]
    trial: TrialSettings
    final: FinalSettings
    latency: LatencySettings
    latency_structures: int

    def tuned(self, dataset: str, kind: str) -> bool:
        """Whether (dataset, kind) has its own study (else it takes another set's hyperparameters)."""
        return self.transfer_source(dataset, kind) is None

    def transfer_source(self, dataset: str, kind: str) -> Optional[str]:
        """The data set whose study gives (dataset, kind) its hyperparameters, or None if tuned here."""
        ds = self.datasets[dataset].transfer_from
        if ds is not None:
            return ds
        k = self.kinds[kind].transfer_from
        return k if k is not None and k != dataset else None

    def budget(self, dataset: str, stage: str) -> Tuple[Optional[float], int]:
        """(time_budget s, max_epochs) of a ``trial`` or ``final`` training on ``dataset``."""
        base = self.trial if stage == "trial" else self.final
        own = self.datasets[dataset].trial_budget if stage == "trial" else self.datasets[dataset].final_budget
        return own.get("time_budget", base.time_budget), own.get("max_epochs", base.max_epochs)

    def study_name(self, dataset: str, kind: str) -> str:
        return f"{self.name}/{dataset}/{kind}"

    @property
    def final_study_name(self) -> str:
        return f"{self.name}/final"


def _fail(source: str, where: str, msg: str) -> StudyConfigError:
    return StudyConfigError(f"{source}: {where}: {msg}")


def _mapping(value: Any, allowed: set, source: str, where: str, required: bool = False) -> Dict[str, Any]:
    """A mapping with only ``allowed`` keys (the search-space files' rule, with this file's error type)."""
    if value is None and required:
        raise _fail(source, where, "required")
    try:
        return _check_keys(value, allowed, source, where)
    except SpaceError as err:
        raise StudyConfigError(str(err)) from None


def _int(value: Any, source: str, where: str, low: int = 0, none_ok: bool = False) -> Optional[int]:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(source, where, f"must be a whole number >= {low}{' or null' if none_ok else ''}, got {value!r}")
    return value


def _number(value: Any, source: str, where: str, none_ok: bool = False) -> Optional[float]:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(source, where, f"must be a positive number{' or null' if none_ok else ''}, got {value!r}")
    return float(value)


def _choice(value: Any, choices, source: str, where: str) -> str:
    if value not in choices:
        raise _fail(source, where, f"must be one of {list(choices)}, got {value!r}")
    return value


def _split(value: Any, source: str, where: str) -> Dict[str, Any]:
    split = _mapping(value, _SPLIT, source, where, required=True)
    for part in ("train", "val", "test"):
        v = split.get(part)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (isinstance(v, float) and v > 1):
            raise _fail(source, f"{where}.{part}", f"must be a count >= 1 or a fraction in (0, 1], got {v!r}")
    split["seed"] = _int(split.get("seed", 0), source, f"{where}.seed")
    return split


def _dataset(name: str, value: Any, source: str) -> DatasetSpec:
    where = f"datasets.{name}"
    d = _mapping(value, _DATASET, source, where, required=True)
    src = d.get("source")
    if not isinstance(src, str) or not src:
        raise _fail(source, f"{where}.source", f"required: a shipped data set name, qm9 or a file, got {src!r}")
    from qallegro.data.readers import QM9_TARGETS

    return DatasetSpec(
        name=name, source=src, split=_split(d.get("split"), source, f"{where}.split"),
        target=_choice(d.get("target", "forces"), ("forces", "energy"), source, f"{where}.target"),
        limit=_int(d.get("limit"), source, f"{where}.limit", low=1, none_ok=True),
        size=_int(d.get("size"), source, f"{where}.size", low=1, none_ok=True),
        subset_seed=_int(d.get("subset_seed", 0), source, f"{where}.subset_seed"),
        qm9_target=_choice(d.get("qm9_target", "U0"), tuple(QM9_TARGETS), source, f"{where}.qm9_target"),
        transfer_from=d.get("transfer_from"),
        trial_budget=_budget(d.get("trial"), source, f"{where}.trial"),
        final_budget=_budget(d.get("final"), source, f"{where}.final"),
    )


def _budget(value: Any, source: str, where: str) -> Dict[str, Any]:
    """A data set's own training budget (epochs scale with its size): max_epochs and/or time_budget."""
    b = _mapping(value, _BUDGET, source, where)
    out: Dict[str, Any] = {}
    if "max_epochs" in b:
        out["max_epochs"] = _int(b["max_epochs"], source, f"{where}.max_epochs", low=1)
    if "time_budget" in b:
        out["time_budget"] = _number(b["time_budget"], source, f"{where}.time_budget", none_ok=True)
    return out


def _kind(kind: str, value: Any, source: str, base: Path) -> KindSpec:
    where = f"kinds.{kind}"
    d = _mapping(value, _KIND, source, where)
    space_ref = d.get("space", kind)
    if not isinstance(space_ref, str):
        raise _fail(source, f"{where}.space", f"must be a shipped space name or a file, got {space_ref!r}")
    path = base / space_ref
    try:
        space = load_space(path if path.exists() else space_ref)
    except SpaceError as err:
        raise _fail(source, f"{where}.space", str(err)) from None
    if space.kind != kind:
        raise _fail(source, f"{where}.space", f"{space.source} tunes kind {space.kind!r}, not {kind!r}")
    overrides = d.get("params")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise _fail(source, f"{where}.params", f"expected a mapping, got {type(overrides).__name__}")
        params = {**{n: _spec_of(dist) for n, dist in space.distributions.items()}, **space.fixed, **overrides}
        try:
            space = parse_space({"kind": kind, "params": params}, f"{Path(space.source).name} + these overrides")
        except SpaceError as err:
            raise _fail(source, f"{where}.params", str(err)) from None
    return KindSpec(kind=kind, space=space, transfer_from=d.get("transfer_from"))


def _spec_of(dist) -> Dict[str, Any]:
    """A distribution back in the space file's notation (so overrides merge with shipped ranges)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return {"type": "categorical", "choices": list(dist.choices)}
    spec: Dict[str, Any] = {"type": "int" if isinstance(dist, IntDistribution) else "float",
                            "low": dist.low, "high": dist.high}
    if dist.log:
        spec["log"] = True
    elif dist.step not in (None, 1):
        spec["step"] = dist.step
    return spec


def parse_study(values: Any, source: str = "<study>", base: Optional[Path] = None) -> StudyConfig:
    """Validate a loaded STUDY.yaml mapping (``base``: folder relative paths start from)."""
    base = Path(base if base is not None else ".")
    top = _mapping(values, _TOP, source, "top level", required=True)
    name = top.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise _fail(source, "name", f"required: a name without '/', got {name!r}")
    out = Path(top.get("out") or f"results/{name}")
    out = out if out.is_absolute() else (base / out)
    storage = top.get("storage") or f"sqlite:///{(out / 'studies.db').resolve()}"
    if not isinstance(storage, str) or not storage.startswith(("sqlite", "postgresql", "mysql")):
        raise _fail(source, "storage", f"must be an SQLAlchemy URL (sqlite:///x.db, postgresql+psycopg2://...), got {storage!r}")

    raw_ds = top.get("datasets")
    if not isinstance(raw_ds, dict) or not raw_ds:
        raise _fail(source, "datasets", "required: a mapping of data set names to {source, split, ...}")
    datasets = {str(n): _dataset(str(n), v, source) for n, v in raw_ds.items()}
    raw_kinds = top.get("kinds")
    if not isinstance(raw_kinds, dict) or not raw_kinds:
        raise _fail(source, "kinds", "required: a mapping of model kinds (allegro, allegro_mlp, allegro_qdi) to settings")
    from qallegro.models import readout_kinds

    for k in raw_kinds:
        if k not in readout_kinds():
            raise _fail(source, f"kinds.{k}", f"unknown model kind; known: {list(readout_kinds())}")
    kinds = {str(k): _kind(str(k), v, source, base) for k, v in raw_kinds.items()}
    for ds in datasets.values():
        if ds.transfer_from is not None and (ds.transfer_from not in datasets or ds.transfer_from == ds.name):
            raise _fail(source, f"datasets.{ds.name}.transfer_from", f"must name another data set of this study "
                        f"({sorted(set(datasets) - {ds.name})}), got {ds.transfer_from!r}")
    for ks in kinds.values():
        if ks.transfer_from is not None and ks.transfer_from not in datasets:
            raise _fail(source, f"kinds.{ks.kind}.transfer_from", f"must name a data set of this study "
                        f"({sorted(datasets)}), got {ks.transfer_from!r}")

    samo = _mapping(top.get("samo_cobra"), _SAMO, source, "samo_cobra")
    trials = _int(samo.get("trials", 12), source, "samo_cobra.trials", low=2)
    n_init = _int(samo.get("n_init"), source, "samo_cobra.n_init", low=1, none_ok=True)
    if n_init is not None and n_init > trials:
        raise _fail(source, "samo_cobra.n_init", f"the initial design ({n_init}) cannot exceed trials ({trials})")
    ref = samo.get("ref_point")
    if ref is not None and (not isinstance(ref, list) or len(ref) != 2
                            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ref)):
        raise _fail(source, "samo_cobra.ref_point", f"must be [error, latency ms] or null, got {ref!r}")

    t = _mapping(top.get("trial"), _TRIAL, source, "trial")
    trial = TrialSettings(
        time_budget=_number(t.get("time_budget", 40.0), source, "trial.time_budget", none_ok=True),
        max_epochs=_int(t.get("max_epochs", 1000), source, "trial.max_epochs", low=1),
        batch_size=_int(t.get("batch_size", 5), source, "trial.batch_size", low=1),
        dtype=_choice(t.get("dtype", "float32"), ("float32", "float64"), source, "trial.dtype"),
        seed=_int(t.get("seed", 0), source, "trial.seed"),
        lr_schedule=_choice(t.get("lr_schedule", "plateau"), ("plateau", "none"), source, "trial.lr_schedule"),
    )
    f = _mapping(top.get("final"), _FINAL, source, "final")
    points = f.get("points", ["most_accurate", "knee"])
    if not isinstance(points, list) or not points or any(p not in POINTS for p in points):
        raise _fail(source, "final.points", f"must be a non-empty list of {list(POINTS)}, got {points!r}")
    final = FinalSettings(
        points=list(dict.fromkeys(points)), seeds=_int(f.get("seeds", 3), source, "final.seeds", low=1),
        time_budget=_number(f.get("time_budget", 150.0), source, "final.time_budget", none_ok=True),
        max_epochs=_int(f.get("max_epochs", 5000), source, "final.max_epochs", low=1),
    )
    lat = _mapping(top.get("latency"), _LATENCY, source, "latency")
    latency = LatencySettings(
        threads=lat.get("threads"), warmup=lat.get("warmup", 5), calls=lat.get("calls", 20),
        repeats=lat.get("repeats", 5), device=str(lat.get("device", "cpu")), dtype=lat.get("dtype", "float32"),
        clock=lat.get("clock", "wall"),
    )
    try:
        latency.check("latency")
    except ValueError as err:
        raise _fail(source, "latency", str(err)) from None
    return StudyConfig(
        source=source, name=name, out=out, storage=storage, datasets=datasets, kinds=kinds, trials=trials,
        n_init=n_init, sampler_seed=_int(samo.get("seed", 0), source, "samo_cobra.seed"),
        ref_point=None if ref is None else [float(v) for v in ref], trial=trial, final=final, latency=latency,
        latency_structures=_int(lat.get("structures", 2), source, "latency.structures", low=1),
    )


def load_study_config(path) -> StudyConfig:
    """Read and validate a STUDY.yaml (relative ``out`` and space files start from its folder)."""
    path = Path(path)
    if not path.is_file():
        raise StudyConfigError(f"{path}: no such study file")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_study(values, str(path), path.parent)
