"""A small TorchScript-able model on qallegro's data contract, for deployment tests.

A Morse pair potential with per-type-pair parameters and a smooth polynomial cutoff; per-atom
energies split each pair equally between its two atoms. It is strictly local (every energy term
sits on an edge whose centre is a given atom), as Allegro is, so it runs in LAMMPS with ghost
atoms exactly as the real models do. Used until, and next to, the real Allegro models.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import Tensor


class MorsePairModel(torch.nn.Module):
    """E = Σ_i shift[t_i] + ½ Σ_{i≠j} D_ab [(1 - exp(-α_ab (r_ij - r0_ab)))² - 1] · u(r_ij / r_max).

    u is the p=6 polynomial envelope of Gasteiger et al. (DimeNet), smooth at r_max.
    Inputs/outputs follow the qallegro batch dict (``pos``, ``atom_type``, ``edge_index``,
    ``edge_cell_shift``, ``cell``, ``batch``) and return ``atomic_energy`` [N, 1] (eV) and
    ``total_energy`` [B, 1] (eV).
    """

    def __init__(self, type_names: Sequence[str], r_max: float, seed: int = 0) -> None:
        super().__init__()
        self.type_names: List[str] = list(type_names)
        self.r_max: float = float(r_max)
        self.kind: str = "test_morse"
        n = len(self.type_names)
        g = torch.Generator().manual_seed(seed)
        sym = lambda m: 0.5 * (m + m.T)  # noqa: E731  (pair parameters are symmetric in a, b)
        self.depth = torch.nn.Parameter(sym(0.3 + 0.2 * torch.rand(n, n, generator=g)))
        self.alpha = torch.nn.Parameter(sym(1.2 + 0.4 * torch.rand(n, n, generator=g)))
        self.r0 = torch.nn.Parameter(sym(2.3 + 0.4 * torch.rand(n, n, generator=g)))
        self.shift = torch.nn.Parameter(-1.0 - torch.rand(n, generator=g))

    def forward(self, data: Dict[str, Tensor]) -> Dict[str, Tensor]:
        pos = data["pos"]
        atom_type = data["atom_type"]
        edge_index = data["edge_index"]
        cell = data["cell"]
        batch = data["batch"]
        i = edge_index[0]
        j = edge_index[1]
        shift_vec = torch.einsum("ek,ekl->el", data["edge_cell_shift"], cell[batch[i]])
        r = torch.linalg.norm(pos[j] - pos[i] + shift_vec, dim=1)
        a = atom_type[i]
        b = atom_type[j]
        x = r / self.r_max
        p = 6.0
        envelope = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        envelope = torch.where(x < 1.0, envelope, torch.zeros_like(envelope))
        morse = self.depth[a, b] * ((1.0 - torch.exp(-self.alpha[a, b] * (r - self.r0[a, b]))) ** 2 - 1.0)
        atomic = self.shift[atom_type].clone()
        atomic = atomic.index_add(0, i, 0.5 * morse * envelope)
        num_frames = int(data["num_atoms"].shape[0])
        total = torch.zeros(num_frames, dtype=pos.dtype, device=pos.device).index_add(0, batch, atomic)
        return {"atomic_energy": atomic.unsqueeze(1), "total_energy": total.unsqueeze(1)}
