"""Error metrics: MAE and RMSE of energies, forces (overall and per element) and stress.

:class:`ErrorAccumulator` keeps sums (|err|, err², count) so that batches and ranks combine exactly:
``reduce()`` all-reduces one flat float64 tensor across a process group.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.distributed as dist

Batch = Dict[str, torch.Tensor]


class ErrorAccumulator:
    """Accumulates errors of model outputs against labels, in eV, eV/atom, eV/Å and eV/Å³.

    Quantities: ``energy`` (per structure, eV), ``energy_per_atom`` (eV/atom), ``forces`` (per
    component, eV/Å), ``forces_<element>`` (components of atoms of that element), ``stress``.
    A quantity only counts where both the prediction and the label exist.
    """

    def __init__(self, type_names: Sequence[str]):
        self.type_names = list(type_names)
        self.names = ["energy", "energy_per_atom", "forces", "stress"] + [f"forces_{t}" for t in self.type_names]
        # per quantity: [sum |err|, sum err², count]; float64 so sums over many atoms stay exact enough
        self.sums = torch.zeros(len(self.names), 3, dtype=torch.float64)

    def _add(self, name: str, err: torch.Tensor) -> None:
        err = err.detach().to(torch.float64).cpu().reshape(-1)
        i = self.names.index(name)
        self.sums[i, 0] += err.abs().sum()
        self.sums[i, 1] += err.square().sum()
        self.sums[i, 2] += err.numel()

    def update(self, pred: Batch, batch: Batch) -> None:
        """Add one batch (prediction and labels under nequip's key names)."""
        if "total_energy" in pred and "total_energy" in batch:
            err = pred["total_energy"].reshape(-1) - batch["total_energy"].reshape(-1)
            self._add("energy", err)
            self._add("energy_per_atom", err / batch["num_atoms"].to(err.dtype))
        if "forces" in pred and "forces" in batch:
            err = pred["forces"] - batch["forces"]
            self._add("forces", err)
            types = batch["atom_type"]
            for t, name in enumerate(self.type_names):
                mask = types == t
                if bool(mask.any()):
                    self._add(f"forces_{name}", err[mask])
        if "stress" in pred and "stress" in batch:
            self._add("stress", pred["stress"] - batch["stress"])

    def reduce(self, group=None) -> None:
        """Sum the accumulators over all ranks (no-op without an initialised process group)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        flat = self.sums.reshape(-1).clone()
        backend = dist.get_backend(group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        flat = flat.to(device)
        dist.all_reduce(flat, group=group)
        self.sums = flat.cpu().reshape(self.sums.shape)

    def compute(self) -> Dict[str, float]:
        """``{quantity}_mae`` and ``{quantity}_rmse`` (same units as the quantity)."""
        out: Dict[str, float] = {}
        for i, name in enumerate(self.names):
            n = float(self.sums[i, 2])
            if n > 0:
                out[f"{name}_mae"] = float(self.sums[i, 0]) / n
                out[f"{name}_rmse"] = (float(self.sums[i, 1]) / n) ** 0.5
        return out
