"""Training configuration: a typed schema, YAML loading, and validation (unknown keys are errors).

A config has six sections; every key and its default is listed in the dataclasses below and in
``configs/ethanol_allegro.yaml`` (the complete, documented example)::

    seed, run_dir, dtype, device          top-level keys
    data:      files, split, type names
    model:     kind, r_max, builder, statistics-derived shifts/scales, hyperparameters (free form,
               checked against the builder's signature)
    loss:      energy / forces / stress weights
    optimizer: adam | adamw and their settings
    scheduler: plateau (ReduceLROnPlateau) | none
    training:  epochs, time budget, batch sizes, EMA, clipping, early stopping, logging
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import yaml

from qallegro.errors import ConfigTypeError

Number = Union[int, float]


@dataclass
class DataConfig:
    """Where the structures come from and how they are split.

    ``train``: a file read with ``qallegro.data.read`` (extxyz, ASE formats, rMD17/MD17 npz, ...).
    ``val``: optional separate validation file; without it, ``train_size``/``val_size`` split
    ``train`` (a float <= 1 is a fraction, an int is a count), shuffled with ``split_seed``.
    ``type_names``: element symbols the model knows, in order (default: elements found, sorted by Z).
    """

    train: Optional[str] = None
    val: Optional[str] = None
    index: Union[str, int] = ":"
    train_size: Number = 0.8
    val_size: Number = 0.2
    split_seed: int = 0
    type_names: Optional[List[str]] = None


@dataclass
class LossConfig:
    """loss = energy_weight * MSE(E/atom) + forces_weight * MSE(F) + stress_weight * MSE(stress).

    Units: eV²/atom², eV²/Å², eV²/Å⁶. A zero weight switches a term (and its label check) off.
    """

    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 0.0


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw
    lr: float = 0.005
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    amsgrad: bool = False


@dataclass
class SchedulerConfig:
    """ReduceLROnPlateau on the validation ``training.monitor`` metric (``name: none`` keeps lr fixed)."""

    name: str = "plateau"  # plateau | none
    factor: float = 0.5
    patience: int = 10
    min_lr: float = 1e-6
    threshold: float = 1e-4


@dataclass
class TrainingConfig:
    """The loop. ``time_budget`` (s) and ``max_epochs`` both stop training, whichever comes first.

    ``monitor``: validation metric that picks the best checkpoint, drives the scheduler and early
    stopping: ``loss``, ``forces_mae``, ``energy_mae_per_atom``, ``forces_rmse``, ...
    ``ema_decay``: exponential moving average of the weights used for validation and the saved best
    model (null disables it). ``grad_clip_norm``: max global gradient norm (null disables it).
    ``early_stopping_patience``: epochs without improvement before stopping (null disables it).
    """

    max_epochs: int = 100
    time_budget: Optional[float] = None
    batch_size: int = 5
    val_batch_size: int = 10
    shuffle: bool = True
    monitor: str = "loss"
    ema_decay: Optional[float] = 0.99
    grad_clip_norm: Optional[float] = None
    early_stopping_patience: Optional[int] = 50
    early_stopping_min_delta: float = 0.0
    progress: bool = True
    tensorboard: bool = True
    validate_every: int = 1


@dataclass
class ModelConfig:
    """Model section. Any key not listed here is a hyperparameter passed to ``builder``.

    ``per_type_energy_shifts``: ``least_squares`` (fit E_total ≈ Σ_types n_t·shift_t on the training
    set), ``per_atom_mean`` (one shift for all types: mean E/atom), a list (one per type) or null.
    ``per_type_energy_scales``: ``forces_rms`` (RMS of all training force components),
    ``per_type_forces_rms``, a number, a list, or null.
    ``avg_num_neighbors``: ``auto`` (mean over training atoms) or a number.
    ``initialize_from``: a checkpoint or saved model whose weights start the training (its
    ``r_max`` and ``type_names`` must equal this config's).
    """

    kind: str = "allegro"
    r_max: float = 5.0
    builder: str = "qallegro.models:build"
    per_type_energy_shifts: Any = "least_squares"
    per_type_energy_scales: Any = "forces_rms"
    avg_num_neighbors: Any = "auto"
    initialize_from: Optional[str] = None
    hparams: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    seed: int = 0
    run_dir: str = "runs/qallegro"
    dtype: str = "float32"  # float32 | float64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (model hyperparameters flattened back into ``model``)."""
        out = dataclasses.asdict(self)
        out["model"].update(out["model"].pop("hparams"))
        return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-3`` is a float as in YAML 1.2 (YAML 1.1 wants ``1.0e-3`` and
    reads ``1e-3`` as a string, the commonest way to write a learning rate)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: Any) -> Any:
    """YAML text or stream -> Python values (safe; ``1e-3`` is a number)."""
    return yaml.load(text, Loader=_Loader)


def _describe(hint: Any) -> str:
    """Words for a type hint in an error message."""
    if hint is float or hint == Union[int, float]:
        return "a number"
    if hint is int:
        return "an integer"
    if hint is bool:
        return "true or false"
    if hint is str:
        return "a string"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Union:
        words = " or ".join(_describe(a) for a in args)
        return words + (" or null" if type(None) in typing.get_args(hint) else "")
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s" if args else "a list"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return str(hint)


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    # numbers.* so numpy scalars (as HPO samplers produce) count; a bool is not a number here
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_type_ok(value, a) for a in args)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return True


def check_types(cls: type, values: Dict[str, Any], where: str, source: str) -> Dict[str, Any]:
    """Check ``values`` against the field types of dataclass ``cls``; :class:`ConfigTypeError` (a
    ``TypeError`` and a ``ValueError``) names the key.

    Numbers must be finite; path-like values of string fields become strings, numpy scalars Python ones."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key, Any)
        if isinstance(value, os.PathLike) and _type_ok("", hint):
            out[key] = value = os.fspath(value)
        elif isinstance(value, np.generic):  # numpy scalars (HPO samplers) become plain Python ones
            out[key] = value = value.item()
        if _type_ok(value, hint):
            continue
        name = f"{where}.{key}" if where else key
        why = ""
        if isinstance(value, str):
            try:
                float(value)
                why = " (a quoted number is a string in YAML: remove the quotes)"
            except ValueError:
                pass
        elif isinstance(value, float) and not math.isfinite(value):
            why = " (must be finite)"
        raise ConfigTypeError(f"{source}: {name} must be {_describe(hint)}, got {value!r} ({type(value).__name__}){why}")
    return out


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "training": TrainingConfig,
}


def _build_section(cls, values: Any, where: str, source: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: '{where}' must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    if cls is ModelConfig:
        known = check_types(cls, {k: v for k, v in values.items() if k in names and k != "hparams"}, where, source)
        # numpy scalars (from HPO samplers) as Python numbers, so checkpoints hold plain values
        hparams = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items() if k not in names}
        if "hparams" in values:
            raise ValueError(f"{source}: write model hyperparameters directly under 'model', not in 'model.hparams'")
        return ModelConfig(**known, hparams=hparams)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(where + '.' + k for k in unknown)}; "
            f"allowed in '{where}': {', '.join(sorted(names))}"
        )
    return cls(**check_types(cls, values, where, source))


def config_from_dict(values: Dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict; unknown keys raise ``ValueError``, values of
    the wrong type ``TypeError`` (both name the key)."""
    if isinstance(values, TrainConfig):
        return copy.deepcopy(values)
    if not isinstance(values, dict):
        raise ValueError(f"{source}: top level must be a mapping, got {type(values).__name__}")
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - top)
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(top))}")
    kwargs = check_types(TrainConfig, {k: v for k, v in values.items() if k not in _SECTIONS}, "", source)
    for name, cls in _SECTIONS.items():
        kwargs[name] = _build_section(cls, copy.deepcopy(values.get(name)), name, source)
    cfg = TrainConfig(**kwargs)
    validate(cfg, source)
    return cfg


def load_config(path: Union[str, Path]) -> TrainConfig:
    """Read and validate a YAML config; relative data paths are resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as f:
        try:
            values = yaml_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
    cfg = config_from_dict(values or {}, source=str(path))
    try:  # model keys too, so their errors name this file (fit checks them again for dict configs)
        from qallegro.train.checkpoint import import_builder

        builder = import_builder(cfg.model.builder)
    except ImportError:
        pass  # fit reports an unimportable builder
    else:
        check_hparams_against(builder, cfg.model.hparams, source=str(path), kind=cfg.model.kind)
    base = path.resolve().parent
    for key in ("train", "val"):
        p = getattr(cfg.data, key)
        if p is not None and not Path(p).is_absolute() and not Path(p).exists() and (base / p).exists():
            setattr(cfg.data, key, str(base / p))
    return cfg


def _check_size(value: Any, where: str, source: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{source}: {where} must be a fraction in [0, 1] or a count >= 0, got {value!r}")
    if isinstance(value, float) and value > 1.0:
        raise ValueError(f"{source}: {where}={value} is a float > 1; write an int for a count")


def validate(cfg: TrainConfig, source: str = "config") -> None:
    """Check values (types and ranges) that do not need the data; raises ``ValueError`` naming the key."""
    if cfg.dtype not in ("float32", "float64"):
        raise ValueError(f"{source}: dtype must be float32 or float64, got {cfg.dtype!r}")
    if cfg.optimizer.name.lower() not in ("adam", "adamw"):
        raise ValueError(f"{source}: optimizer.name must be adam or adamw, got {cfg.optimizer.name!r}")
    if cfg.scheduler.name.lower() not in ("plateau", "none"):
        raise ValueError(f"{source}: scheduler.name must be plateau or none, got {cfg.scheduler.name!r}")
    if not cfg.optimizer.lr > 0:
        raise ValueError(f"{source}: optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    if not (isinstance(cfg.model.r_max, (int, float)) and cfg.model.r_max > 0):
        raise ValueError(f"{source}: model.r_max must be a positive number of Å, got {cfg.model.r_max!r}")
    if ":" not in cfg.model.builder:
        raise ValueError(f"{source}: model.builder must be 'module:function', got {cfg.model.builder!r}")
    for name in ("energy_weight", "forces_weight", "stress_weight"):
        w = getattr(cfg.loss, name)
        if not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"{source}: loss.{name} must be a number >= 0, got {w!r}")
    if cfg.loss.energy_weight + cfg.loss.forces_weight + cfg.loss.stress_weight <= 0:
        raise ValueError(f"{source}: all loss weights are zero; nothing to train")
    t = cfg.training
    for name in ("max_epochs", "batch_size", "val_batch_size", "validate_every"):
        if not isinstance(getattr(t, name), int) or getattr(t, name) < 1:
            raise ValueError(f"{source}: training.{name} must be an int >= 1, got {getattr(t, name)!r}")
    if t.time_budget is not None and not t.time_budget > 0:
        raise ValueError(f"{source}: training.time_budget must be > 0 seconds or null, got {t.time_budget!r}")
    if t.ema_decay is not None and not 0.0 <= t.ema_decay < 1.0:
        raise ValueError(f"{source}: training.ema_decay must be in [0, 1) or null, got {t.ema_decay!r}")
    if t.grad_clip_norm is not None and not t.grad_clip_norm > 0:
        raise ValueError(f"{source}: training.grad_clip_norm must be > 0 or null, got {t.grad_clip_norm!r}")
    if cfg.data.type_names is not None:
        from ase.data import atomic_numbers

        bad = [t for t in cfg.data.type_names if atomic_numbers.get(t, 0) == 0]  # "X" (0) is no element
        if bad:
            raise ValueError(f"{source}: data.type_names: {bad} are not chemical symbols (e.g. 'H', 'Cu')")
    _check_size(cfg.data.train_size, "data.train_size", source)
    _check_size(cfg.data.val_size, "data.val_size", source)
    for key in ("per_type_energy_shifts", "per_type_energy_scales"):
        v = getattr(cfg.model, key)
        allowed = ("least_squares", "per_atom_mean") if key.endswith("shifts") else ("forces_rms", "per_type_forces_rms")
        if isinstance(v, str) and v not in allowed:
            raise ValueError(f"{source}: model.{key} must be one of {allowed}, a number, a list or null; got {v!r}")
    a = cfg.model.avg_num_neighbors
    if not (a is None or a == "auto" or (isinstance(a, (int, float)) and a > 0)):
        raise ValueError(f"{source}: model.avg_num_neighbors must be 'auto', a positive number or null; got {a!r}")


def builder_accepts(builder, kind: str, name: str) -> bool:
    """Whether ``builder`` takes hyperparameter ``name`` (by signature or its module's resolve_hparams)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    if name in params:
        return True
    resolve = getattr(inspect.getmodule(builder), "resolve_hparams", None)
    if resolve is None:
        return False
    try:
        return name in resolve(kind, {})
    except ValueError:
        return False


def check_hparams_against(builder, hparams: Dict[str, Any], source: str = "config", kind: str = "allegro") -> None:
    """Unknown model hyperparameters are errors, found before any data is read.

    Uses the builder module's ``resolve_hparams(kind, hparams)`` when it has one (qallegro's
    builder does), else the builder's signature when it lists its arguments.
    """
    resolve = getattr(inspect.getmodule(builder), "resolve_hparams", None)
    if resolve is not None:
        try:
            defaults = resolve(kind, {})
            resolve(kind, dict(hparams))
        except (ValueError, KeyError) as e:
            raise ValueError(f"{source}: model section: {e}") from e
        for key, value in hparams.items():  # typed like its default (a default of None says nothing)
            default = defaults.get(key)
            hint = float if isinstance(default, float) else type(default)
            if default is not None and value is not None and not _type_ok(value, hint):
                raise ConfigTypeError(
                    f"{source}: model.{key} must be {_describe(hint)} (like its default {default!r}), "
                    f"got {value!r} ({type(value).__name__})"
                )
        return
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(hparams) - set(params))
    if unknown:
        allowed = sorted(set(params) - {"kind", "type_names", "r_max"})
        raise ValueError(
            f"{source}: unknown model key(s) {', '.join('model.' + k for k in unknown)}; "
            f"the builder accepts: {', '.join(allowed)}"
        )
