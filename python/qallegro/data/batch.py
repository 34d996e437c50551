"""Batches: structures concatenated with per-structure offsets, as nequip's AtomicDataDict.

Keys (nequip's names): ``pos`` [N, 3], ``atom_type`` [N] (index into ``type_names``), ``edge_index``
[2, E] (row 0 = centre i, row 1 = neighbour j), ``edge_cell_shift`` [E, 3] (integer-valued) with
``r_ij = pos[j] - pos[i] + edge_cell_shift @ cell[batch[i]]``, ``cell`` [B, 3, 3], ``pbc`` [B, 3],
``batch`` [N], ``num_atoms`` [B], ``ptr`` [B+1]; labels ``total_energy`` [B, 1] eV, ``forces`` [N, 3]
eV/Å, ``stress`` [B, 3, 3] eV/Å³ when every structure has them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from qallegro.data.structure import DataError, Structure
from qallegro.ops.neighbor_list import batched_neighbor_list

AtomicDataDict = Dict[str, torch.Tensor]


def type_mapper(type_names: Sequence[str]) -> np.ndarray:
    """Lookup table atomic number -> type index (-1 for elements the model does not know)."""
    table = np.full(len(chemical_symbols), -1, dtype=np.int64)
    for index, name in enumerate(type_names):
        if name not in atomic_numbers:
            raise ValueError(f"type name {name!r} is not a chemical symbol")
        table[atomic_numbers[name]] = index
    return table


def atom_types(structure: Structure, type_names: Sequence[str]) -> np.ndarray:
    """Per-atom type indices; :class:`DataError` names the first atom whose element is unknown."""
    types = type_mapper(type_names)[structure.numbers]
    if (types < 0).any():
        bad = int(np.argmax(types < 0))
        raise DataError(
            f"{structure.source}: atom {bad} is {chemical_symbols[structure.numbers[bad]]}, "
            f"which is not among the model's type_names {list(type_names)}"
        )
    return types


def collate(
    structures: Sequence[Structure],
    r_max: float,
    type_names: Sequence[str],
    dtype: torch.dtype = torch.float64,
    device: Optional[torch.device] = None,
) -> AtomicDataDict:
    """Concatenates structures into one batch dict and builds its neighbour list (cutoff ``r_max``)."""
    if len(structures) == 0:
        raise ValueError("collate needs at least one structure")
    if not r_max > 0:
        raise ValueError(f"r_max must be positive (Å), got {r_max}")
    n = np.array([s.num_atoms for s in structures], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(n)])
    pos = np.concatenate([s.positions for s in structures], axis=0) if n.sum() else np.zeros((0, 3))
    types = np.concatenate([atom_types(s, type_names) for s in structures]) if n.sum() else np.zeros(0)
    out: AtomicDataDict = {
        "pos": torch.as_tensor(pos, dtype=dtype),
        "atom_type": torch.as_tensor(types, dtype=torch.long),
        "cell": torch.as_tensor(np.stack([s.cell for s in structures]), dtype=dtype),
        "pbc": torch.as_tensor(np.stack([s.pbc for s in structures]), dtype=torch.bool),
        "batch": torch.repeat_interleave(torch.arange(len(structures)), torch.as_tensor(n)),
        "num_atoms": torch.as_tensor(n),
        "ptr": torch.as_tensor(ptr),
    }
    edge_index, shifts = batched_neighbor_list(out["pos"], float(r_max), out["cell"], out["pbc"], out["ptr"])
    out["edge_index"] = edge_index
    out["edge_cell_shift"] = shifts
    if all(s.energy is not None for s in structures):
        out["total_energy"] = torch.tensor([[s.energy] for s in structures], dtype=dtype)
    if all(s.forces is not None for s in structures):
        out["forces"] = torch.as_tensor(np.concatenate([s.forces for s in structures]), dtype=dtype)
    if all(s.stress is not None for s in structures):
        out["stress"] = torch.as_tensor(np.stack([s.stress for s in structures]), dtype=dtype)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def edge_vectors(data: AtomicDataDict) -> torch.Tensor:
    """[E, 3] Å: ``pos[j] - pos[i] + shift @ cell`` for every edge (differentiable in pos and cell)."""
    i, j = data["edge_index"][0], data["edge_index"][1]
    cell_of_edge = data["cell"][data["batch"][i]]
    return data["pos"][j] - data["pos"][i] + torch.einsum("ek,ekc->ec", data["edge_cell_shift"], cell_of_edge)


def split_batch(data: AtomicDataDict, key: str) -> List[torch.Tensor]:
    """Per-structure pieces of a per-atom field (e.g. forces) of a batch."""
    return list(torch.split(data[key], data["num_atoms"].tolist()))
