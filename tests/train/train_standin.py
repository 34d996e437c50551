"""A small stand-in model obeying the model contract, for trainer tests that must not depend on Allegro.

A pair potential with learnable per-type-pair radial weights (sine basis times a smooth cutoff);
forces and stress come from autograd exactly as the real model computes them (nequip's conventions:
forces = -dE/dpos, stress = (1/V) dE/dstrain, virial = -dE/dstrain).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Union

import torch


class PairPotential(torch.nn.Module):
    def __init__(
        self,
        type_names: Sequence[str],
        r_max: float,
        num_basis: int = 8,
        per_type_energy_shifts: Optional[Sequence[float]] = None,
        per_type_energy_scales: Union[None, float, Sequence[float]] = None,
        avg_num_neighbors: Optional[float] = None,
    ):
        super().__init__()
        self.type_names: List[str] = list(type_names)
        self.r_max = float(r_max)
        t = len(self.type_names)
        self.weights = torch.nn.Parameter(0.3 * torch.randn(t, t, num_basis))
        self.register_buffer("freqs", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / r_max)
        shifts = torch.zeros(t) if per_type_energy_shifts is None else torch.as_tensor(per_type_energy_shifts, dtype=torch.get_default_dtype())
        scales = torch.ones(t) if per_type_energy_scales is None else torch.as_tensor(per_type_energy_scales, dtype=torch.get_default_dtype()).expand(t).clone()
        self.register_buffer("shifts", shifts)
        self.register_buffer("scales", scales)
        self.norm = 1.0 / float(avg_num_neighbors) if avg_num_neighbors else 1.0

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        pos, batch, cell = data["pos"], data["batch"], data["cell"]
        num_structures = data["num_atoms"].shape[0]
        strain = torch.zeros(num_structures, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
        pos = pos.detach().requires_grad_(True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        pos_s = pos + torch.einsum("ni,nij->nj", pos, sym[batch])
        cell_s = cell + torch.bmm(cell, sym)
        i, j = data["edge_index"]
        vec = pos_s[j] - pos_s[i] + torch.einsum("ek,ekl->el", data["edge_cell_shift"], cell_s[batch[i]])
        r = vec.norm(dim=1, keepdim=True)
        envelope = (1.0 - r / self.r_max).clamp(min=0.0) ** 3
        basis = torch.sin(self.freqs * r) / r * envelope
        w = 0.5 * (self.weights + self.weights.transpose(0, 1))
        t = data["atom_type"]
        edge_energy = 0.5 * (w[t[i], t[j]] * basis).sum(-1)
        atomic = torch.zeros_like(pos[:, 0]).index_add(0, i, edge_energy) * self.norm
        atomic = self.scales[t] * atomic + self.shifts[t]
        total = torch.zeros(num_structures, dtype=pos.dtype, device=pos.device).index_add(0, batch, atomic)
        d_pos, d_strain = torch.autograd.grad(total.sum(), [pos, strain], create_graph=self.training)
        volume = torch.linalg.det(cell).abs()
        safe = torch.where(volume > 0, volume, torch.ones_like(volume))
        stress = torch.where((volume > 0)[:, None, None], d_strain / safe[:, None, None], torch.zeros_like(d_strain))
        return {
            "atomic_energy": atomic[:, None],
            "total_energy": total[:, None],
            "forces": -d_pos,
            "virial": -d_strain,
            "stress": stress,
        }


def build(kind: str, type_names: Sequence[str], r_max: float, **hparams) -> PairPotential:
    if kind != "pair":
        raise ValueError(f"stand-in builder only knows kind='pair', got {kind!r}")
    return PairPotential(type_names, r_max, **hparams)
