"""Search-space files of ``qallegro optimize``: YAML, validated, with clear errors.

A space names the model kind, the parameters to tune (ranges) or fix (plain values), how each
candidate is trained, how latency is measured, and optional constraints::

    kind: allegro                       # allegro | allegro_mlp | allegro_qdi
    params:                             # a range ({type, low, high[, log, step]} or {type:
      num_layers: {type: int, low: 1, high: 3}            #   categorical, choices}) or a value
      learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
      r_max: 5.0
    training: {max_epochs: 30, time_budget: null, batch_size: 5, dtype: float32, seed: 0}
    data: {train_size: 0.8, val_size: 0.2, split_seed: 0, latency_structures: 4}
    latency: {device: cpu, warmup: 5, calls: 20, repeats: 5}   # see qallegro.hpo.latency
    constraints: {max_parameters: null, max_peak_memory_mb: null}
    ref_point: null                     # [force MAE meV/Å, latency ms] or null (adaptive)

``learning_rate`` and ``r_max`` are training/cutoff settings; every other parameter is a model
hyperparameter of ``qallegro.models.build`` (checked against it, unknown names are errors).
Shipped defaults: ``spaces/allegro.yaml``, ``allegro_mlp.yaml``, ``allegro_qdi.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

SPACES_DIR = Path(__file__).with_name("spaces")
_TOP = {"kind", "params", "training", "data", "latency", "constraints", "ref_point"}
_TRAINING = {"max_epochs", "time_budget", "batch_size", "dtype", "seed", "energy_weight", "forces_weight"}
_DATA = {"train_size", "val_size", "split_seed", "latency_structures"}
_LATENCY = {"device", "warmup", "calls", "repeats", "threads", "dtype", "clock"}
_CONSTRAINTS = {"max_parameters", "max_peak_memory_mb"}
_SPECIAL = {"learning_rate", "r_max"}


class SpaceError(ValueError):
    """A search-space file is wrong; the message names the file and the key."""


@dataclass
class SearchSpace:
    """A parsed search space (see the module docstring for the file format)."""

    source: str
    kind: str
    distributions: Dict[str, BaseDistribution]
    fixed: Dict[str, Any]
    training: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    latency: Dict[str, Any] = field(default_factory=dict)
    constraints: Dict[str, Optional[float]] = field(default_factory=dict)
    ref_point: Optional[List[float]] = None

    def split(self, params: Dict[str, Any]) -> tuple:
        """Trial params + fixed values -> (model hparams, r_max, learning_rate)."""
        values = {**self.fixed, **params}
        lr = float(values.pop("learning_rate", 5e-3))
        r_max = float(values.pop("r_max", 5.0))
        return values, r_max, lr


def _fail(source: str, where: str, msg: str) -> SpaceError:
    return SpaceError(f"{source}: {where}: {msg}")


def _check_keys(values: Any, allowed: set, source: str, where: str) -> Dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise _fail(source, where, f"expected a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(values)


def _distribution(name: str, spec: Dict[str, Any], source: str) -> BaseDistribution:
    where = f"params.{name}"
    kind = spec.get("type")
    if kind == "categorical":
        _check_keys(spec, {"type", "choices"}, source, where)
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(source, where, "categorical needs a non-empty list 'choices'")
        return CategoricalDistribution(choices)
    if kind not in ("int", "float"):
        raise _fail(source, where, f"'type' must be int, float or categorical, got {kind!r}")
    _check_keys(spec, {"type", "low", "high", "log", "step"}, source, where)
    if "low" not in spec or "high" not in spec:
        raise _fail(source, where, "a range needs 'low' and 'high'")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    for key, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(source, f"{where}.{key}", f"must be a number, got {v!r}")
    if not low < high:
        raise _fail(source, where, f"need low < high, got low={low}, high={high}")
    if log and low <= 0:
        raise _fail(source, where, f"log scale needs low > 0, got {low}")
    if log and step is not None:
        raise _fail(source, where, "'log' and 'step' cannot be combined")
    try:
        if kind == "int":
            if int(low) != low or int(high) != high:
                raise _fail(source, where, f"int range needs integer bounds, got {low}, {high}")
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as err:
        if isinstance(err, SpaceError):
            raise
        raise _fail(source, where, str(err)) from None


def parse_space(values: Any, source: str = "<space>") -> SearchSpace:
    """Validate a loaded YAML mapping and build a :class:`SearchSpace`."""
    values = _check_keys(values, _TOP, source, "top level")
    kind = values.get("kind")
    if not isinstance(kind, str):
        raise _fail(source, "kind", f"required, one of the model kinds (e.g. allegro), got {kind!r}")
    from qallegro.models import readout_kinds, resolve_hparams

    if kind not in readout_kinds():
        raise _fail(source, "kind", f"unknown model kind {kind!r}; known: {list(readout_kinds())}")
    params = values.get("params")
    if not isinstance(params, dict) or not params:
        raise _fail(source, "params", "required: a mapping of parameter names to ranges or values")
    dists: Dict[str, BaseDistribution] = {}
    fixed: Dict[str, Any] = {}
    for name, spec in params.items():
        if isinstance(spec, dict):
            dists[str(name)] = _distribution(str(name), spec, source)
        else:
            fixed[str(name)] = spec
    model_names = {n: None for n in list(dists) + list(fixed) if n not in _SPECIAL}
    try:
        resolve_hparams(kind, model_names)
    except ValueError as err:
        raise _fail(source, "params", str(err)) from None
    ref = values.get("ref_point")
    if ref is not None and (
        not isinstance(ref, list) or len(ref) != 2 or not all(isinstance(v, (int, float)) for v in ref)
    ):
        raise _fail(source, "ref_point", f"must be [force MAE meV/Å, latency ms] or null, got {ref!r}")
    return SearchSpace(
        source=source,
        kind=kind,
        distributions=dists,
        fixed=fixed,
        training=_check_keys(values.get("training"), _TRAINING, source, "training"),
        data=_check_keys(values.get("data"), _DATA, source, "data"),
        latency=_check_keys(values.get("latency"), _LATENCY, source, "latency"),
        constraints=_check_keys(values.get("constraints"), _CONSTRAINTS, source, "constraints"),
        ref_point=None if ref is None else [float(v) for v in ref],
    )


def shipped_spaces() -> List[str]:
    """Names of the default spaces shipped with qallegro."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(path_or_name: Union[str, Path]) -> SearchSpace:
    """Read a space file, or a shipped default by name (``allegro``, ``allegro_mlp``, ``allegro_qdi``)."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in shipped_spaces():
        path = SPACES_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        raise SpaceError(f"{path_or_name}: no such search-space file (shipped spaces: {shipped_spaces()})")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {err}") from None
    return parse_space(values, str(path))
