"""The MLIP objectives of a study: validation force error, inference latency, size and memory.

Objective 1, :func:`train_and_validate`: train the candidate with ``qallegro.train.fit`` for a fixed
budget (epochs and/or seconds) and return the validation force MAE (meV/Å) from
``qallegro.train.evaluate``.
Objective 2, :func:`measure_latency`: median wall time (s) of one energy+forces evaluation of the
model on a fixed batch of benchmark structures, through qallegro's own ops, on the device the model
will run on: warm-up calls first, then timed repeats, each bracketed by device synchronisation.
Constraints: :func:`count_parameters`, :func:`peak_memory_bytes`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch


@dataclass
class Latency:
    """Wall times of ``repeats`` energy+forces evaluations (s) of ``num_atoms`` atoms on ``device``."""

    median_s: float
    times_s: List[float]
    num_atoms: int
    num_structures: int
    device: str

    @property
    def median_us_per_atom(self) -> float:
        return self.median_s / max(self.num_atoms, 1) * 1e6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        return p.dtype
    return torch.get_default_dtype()


def benchmark_batch(model: torch.nn.Module, structures: Sequence, device: torch.device) -> Dict[str, torch.Tensor]:
    """All ``structures`` collated into one batch dict on ``device`` in the model's dtype."""
    from qallegro.data import collate

    if not structures:
        raise ValueError("latency: no benchmark structures given")
    batch = collate(list(structures), float(model.r_max), list(model.type_names))
    dtype = _model_dtype(model)
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


def measure_latency(
    model: torch.nn.Module,
    structures: Sequence,
    device: Optional[str] = None,
    warmup: int = 3,
    repeats: int = 20,
) -> Latency:
    """Median time of ``model(batch)`` (energies and forces) over ``repeats`` calls after ``warmup``.

    The neighbour list is built once outside the timing (MD codes reuse it over several steps); the
    model runs in eval mode with its kernels, forces by autograd as in deployment.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"latency: need warmup >= 0 and repeats >= 1, got {warmup}, {repeats}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    batch = benchmark_batch(model, structures, dev)
    times: List[float] = []
    for i in range(warmup + repeats):
        inputs = dict(batch)  # the model may add keys to its input dict
        _sync(dev)
        t0 = time.perf_counter()
        out = model(inputs)
        forces = out["forces"]
        _sync(dev)
        elapsed = time.perf_counter() - t0
        if not torch.isfinite(forces).all():
            raise ValueError("latency: the model produced non-finite forces on the benchmark structures")
        if i >= warmup:
            times.append(elapsed)
    return Latency(
        median_s=float(statistics.median(times)),
        times_s=times,
        num_atoms=int(batch["pos"].shape[0]),
        num_structures=len(structures),
        device=str(dev),
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def peak_memory_bytes(model: torch.nn.Module, structures: Sequence, device: Optional[str] = None) -> int:
    """Peak memory (bytes) of one energy+forces evaluation.

    CUDA: ``torch.cuda.max_memory_allocated`` around the call (exact for the caching allocator).
    CPU (no allocator statistics in torch): parameters plus every distinct tensor autograd saves
    for the force backward pass plus the inputs, a lower bound dominated by the same terms.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    batch = benchmark_batch(model, structures, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        model(dict(batch))["forces"].sum().item()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - base + sum(v.nbytes for v in batch.values()))
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except RuntimeError:  # tensors without storage (e.g. functional wrappers)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(dict(batch))["forces"].sum().item()
    params = sum(p.nbytes for p in model.parameters())
    return int(params + sum(seen.values()) + sum(v.nbytes for v in batch.values()))


@dataclass
class TrainSettings:
    """How every candidate is trained: budget (``max_epochs`` and/or ``time_budget`` s), loss
    weights, batch size, precision, device and seed, passed to ``qallegro.train.fit``."""

    max_epochs: int = 20
    time_budget: Optional[float] = None
    batch_size: int = 5
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)  # more training-config sections/keys


def train_config(kind: str, r_max: float, hparams: Dict[str, Any], lr: float, settings: TrainSettings) -> Dict[str, Any]:
    """The ``qallegro.train`` config dict of one candidate."""
    config: Dict[str, Any] = {
        "seed": settings.seed,
        "dtype": settings.dtype,
        "device": settings.device,
        "model": {"kind": kind, "r_max": float(r_max), **hparams},
        "loss": {"energy_weight": settings.energy_weight, "forces_weight": settings.forces_weight},
        "optimizer": {"lr": float(lr)},
        "training": {
            "max_epochs": int(settings.max_epochs),
            "time_budget": settings.time_budget,
            "batch_size": settings.batch_size,
            "monitor": "forces_mae",
            "progress": False,
            "tensorboard": False,
            "early_stopping_patience": None,
        },
    }
    for section, values in settings.extra.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


@dataclass
class TrialOutcome:
    """Objectives and constraints of one trained candidate."""

    force_mae_meV_per_A: float
    latency: Latency
    num_parameters: int
    peak_memory_bytes: int
    train_seconds: float
    epochs: int
    model: Any = None
    deployed_latency: Any = None  # qallegro.hpo.latency.DeployedLatency when latency_settings were given


def train_and_validate(
    kind: str,
    r_max: float,
    hparams: Dict[str, Any],
    lr: float,
    train_structures: Sequence,
    val_structures: Sequence,
    latency_structures: Sequence,
    settings: TrainSettings,
    latency_repeats: int = 20,
    callback=None,
    latency_settings=None,
) -> TrialOutcome:
    """Train one candidate, then measure its validation force MAE, latency, size and memory.

    latency_settings: a :class:`~qallegro.hpo.latency.LatencySettings` times the exported model in its
    own process (``deployed_latency``; what ``qallegro optimize`` and ``study`` use); without it the
    eager model is timed in this process (``latency``)."""
    from qallegro.train import evaluate, fit

    config = train_config(kind, r_max, hparams, lr, settings)
    t0 = time.perf_counter()
    result = fit(config, list(train_structures), list(val_structures), write_files=False, progress=False, callback=callback)
    seconds = time.perf_counter() - t0
    model = result.model
    metrics = evaluate(model, list(val_structures), device=settings.device, source="validation set")
    deployed = None
    if latency_settings is not None:
        from qallegro.hpo.latency import measure_deployed

        deployed = measure_deployed(model, latency_structures, latency_settings)
        latency = Latency(median_s=deployed.median_ms / 1e3, times_s=[t / 1e3 for t in deployed.block_medians_ms],
                          num_atoms=deployed.num_atoms, num_structures=deployed.num_structures, device=deployed.device)
    else:
        latency = measure_latency(model, latency_structures, device=settings.device, repeats=latency_repeats)
    return TrialOutcome(
        force_mae_meV_per_A=float(metrics["forces_mae_meV_per_A"]),
        latency=latency,
        num_parameters=count_parameters(model),
        peak_memory_bytes=peak_memory_bytes(model, latency_structures, device=settings.device),
        train_seconds=seconds,
        epochs=len(result.history),
        model=model,
        deployed_latency=deployed,
    )
