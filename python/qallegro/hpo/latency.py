"""Inference latency a user can trust and repeat: the exported model, timed in its own process.

What users deploy is the TorchScript export (``qallegro export``), run by ASE or LAMMPS in a process
that does nothing else. So the latency of a model is measured like that:

1. the model is exported (:func:`qallegro.deploy.export`) in the dtype asked for;
2. each benchmark structure becomes the export's input dict, neighbour list included (MD codes reuse a
   neighbour list over several steps, so building it is not part of a model's latency);
3. a fresh Python process (``python -m qallegro.hpo.latency``) with a pinned thread count
   (``torch.set_num_threads`` and ``OMP_NUM_THREADS``) loads the file, makes ``warmup`` passes
   (TorchScript's profiling executor specialises the graph in its first calls), then ``repeats``
   blocks of ``calls`` timed passes; a pass is one energy+forces call per benchmark structure;
4. the latency is the median over blocks of each block's median pass time, its spread the standard
   deviation of the block medians.

``clock: wall`` (default) times elapsed wall-clock time, what a user waits for. ``clock: cpu`` times the
CPU time the process spent per pass and needs ``threads: 1``: a single-threaded process does the same
work whether or not other processes share its core, so on a shared machine the CPU clock gives the
figure an idle machine would give as wall time, where the wall clock would add other jobs' time
slices to it. Both are always recorded.

The same function serves the objective of a study (each trial) and the report, so the two agree.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LatencySettings:
    """How latency is measured. ``threads`` None: the caller's thread count."""

    threads: Optional[int] = None
    warmup: int = 5
    calls: int = 20
    repeats: int = 5
    device: str = "cpu"
    dtype: str = "float32"
    clock: str = "wall"
    timeout: float = 600.0

    def check(self, where: str = "latency") -> None:
        for key in ("warmup", "calls", "repeats"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "warmup" else 1):
                raise ValueError(f"{where}.{key} must be a whole number >= {0 if key == 'warmup' else 1}, got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"{where}.threads must be null or a whole number >= 1, got {self.threads!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"{where}.dtype must be float32 or float64, got {self.dtype!r}")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"{where}.clock must be wall or cpu, got {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError(f"{where}.clock: cpu measures latency only with threads: 1 (the CPU time of "
                             f"several threads adds up), got threads {self.threads!r}")


@dataclass
class DeployedLatency:
    """One latency measurement of an exported model (times in ms per pass over the structures).

    ``median_ms`` / ``spread_ms`` are on the settings' clock; the ``wall_*`` and ``cpu_*`` fields
    keep both clocks."""

    median_ms: float
    spread_ms: float
    block_medians_ms: List[float]
    clock: str
    wall_median_ms: float
    wall_spread_ms: float
    cpu_median_ms: float
    cpu_spread_ms: float
    threads: int
    device: str
    dtype: str
    num_structures: int
    num_atoms: int
    num_edges: int
    calls: int
    repeats: int
    warmup: int
    torch_version: str

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.median_ms:.3f} ± {self.spread_ms:.3f} ms ({self.clock} clock) per pass: energy+forces of {self.num_structures} "
                f"structure(s), {self.num_atoms} atoms, {self.num_edges} edges, {self.dtype}, {self.device}, "
                f"{self.threads} thread(s), median of {self.repeats} × {self.calls} passes after {self.warmup} warm-up")


def export_inputs(structures: Sequence, r_max: float, type_names: Sequence[str], dtype: torch.dtype) -> List[Dict[str, torch.Tensor]]:
    """The exported model's input dicts of ``structures`` (one per structure, neighbour list built)."""
    from qallegro.data import collate

    if not structures:
        raise ValueError("latency: no benchmark structures given")
    out = []
    for s in structures:
        b = collate([s], float(r_max), list(type_names))
        out.append({
            "pos": b["pos"].to(dtype),
            "atom_types": b["atom_type"],
            "edge_index": b["edge_index"],
            "edge_cell_shift": b["edge_cell_shift"].to(dtype),
            "cell": b["cell"].to(dtype).reshape(1, 3, 3),
        })
    return out


def measure_exported(path: os.PathLike, inputs: List[Dict[str, torch.Tensor]], settings: LatencySettings,
                     threads: int) -> DeployedLatency:
    """Time an exported file in a fresh process with ``threads`` threads (see the module docstring)."""
    settings.check()
    with tempfile.TemporaryDirectory(prefix="qallegro-latency-") as tmp:
        inputs_path = Path(tmp) / "inputs.pt"
        torch.save(inputs, inputs_path)
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        cmd = [sys.executable, "-m", "qallegro.hpo.latency", str(path), str(inputs_path), "--threads", str(threads),
               "--warmup", str(settings.warmup), "--calls", str(settings.calls), "--repeats", str(settings.repeats),
               "--device", settings.device]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=settings.timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"latency: timing {path} took longer than {settings.timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"latency: timing process for {path} failed (exit {proc.returncode}): {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    clock = settings.clock
    return DeployedLatency(
        median_ms=result[f"{clock}_median_ms"], spread_ms=result[f"{clock}_spread_ms"],
        block_medians_ms=result[f"{clock}_block_medians_ms"], clock=clock,
        wall_median_ms=result["wall_median_ms"], wall_spread_ms=result["wall_spread_ms"],
        cpu_median_ms=result["cpu_median_ms"], cpu_spread_ms=result["cpu_spread_ms"], threads=result["threads"], device=settings.device, dtype=result["dtype"], num_structures=len(inputs),
        num_atoms=sum(int(x["pos"].shape[0]) for x in inputs),
        num_edges=sum(int(x["edge_index"].shape[1]) for x in inputs),
        calls=settings.calls, repeats=settings.repeats, warmup=settings.warmup, torch_version=torch.__version__,
    )


def measure_deployed(model: torch.nn.Module, structures: Sequence, settings: LatencySettings,
                     threads: Optional[int] = None) -> DeployedLatency:
    """Export ``model`` (a copy, cast to ``settings.dtype``) and time it in a fresh process.

    threads: overrides ``settings.threads``; when both are None, this process's torch thread count.
    """
    from qallegro.deploy.export import export

    settings.check()
    n = threads if threads is not None else settings.threads
    n = int(n if n is not None else torch.get_num_threads())
    dtype = _DTYPES[settings.dtype]
    model = copy.deepcopy(model).to("cpu", dtype).eval()
    inputs = export_inputs(structures, float(model.r_max), list(model.type_names), dtype)
    with tempfile.TemporaryDirectory(prefix="qallegro-export-") as tmp:
        path = Path(tmp) / "model.pt"
        export(model, path)
        return measure_exported(path, inputs, settings, n)


def _time_passes(module, inputs: List[Dict[str, torch.Tensor]], device: torch.device, count: int) -> Tuple[List[float], List[float]]:
    """(wall, CPU) seconds of ``count`` passes over ``inputs``."""
    wall, cpu = [], []
    for _ in range(count):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for x in inputs:
            out = module(dict(x))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if not torch.isfinite(out["forces"]).all():
            raise ValueError("latency: the model produced non-finite forces on a benchmark structure")
    return wall, cpu


def _worker(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qallegro.hpo.latency",
                                     description="time an exported qallegro model (used by qallegro study/optimize)")
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from qallegro.deploy.export import load

    device = torch.device(args.device)
    module, metadata = load(args.model, device=device)
    inputs = [{k: v.to(device) for k, v in x.items()} for x in torch.load(args.inputs)]
    if args.warmup:
        _time_passes(module, inputs, device, args.warmup)
    blocks = [_time_passes(module, inputs, device, args.calls) for _ in range(args.repeats)]
    result: Dict[str, Any] = {"threads": torch.get_num_threads(), "dtype": metadata["model_dtype"]}
    for k, clock in enumerate(("wall", "cpu")):
        medians = [statistics.median(b[k]) * 1e3 for b in blocks]
        result[f"{clock}_median_ms"] = statistics.median(medians)
        result[f"{clock}_spread_ms"] = statistics.stdev(medians) if len(medians) > 1 else 0.0
        result[f"{clock}_block_medians_ms"] = medians
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
