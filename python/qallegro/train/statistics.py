"""Training-set statistics that initialise a model's per-type energy shifts and scales.

As nequip does: the per-atom energy is ``scale[type] * network + shift[type]``, with shifts from a
least-squares fit of total energies on element counts (or the mean energy per atom) and scales from
the RMS of the force components (all types together, or per type). ``avg_num_neighbors`` normalises
Allegro's environment sums.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

Batch = Dict[str, torch.Tensor]


def type_counts(batch: Batch, num_types: int) -> torch.Tensor:
    """[B, T] float64: how many atoms of each type each structure has."""
    num_structures = batch["num_atoms"].shape[0]
    counts = torch.zeros(num_structures, num_types, dtype=torch.float64)
    ones = torch.ones_like(batch["batch"], dtype=torch.float64)
    counts.index_put_((batch["batch"], batch["atom_type"]), ones, accumulate=True)
    return counts


def least_squares_energy_shifts(batch: Batch, num_types: int, ridge: float = 0.0) -> torch.Tensor:
    """Per-type shifts [T] (eV) minimising Σ_s (E_s − Σ_t n_st·shift_t)² (+ ridge·|shift|²).

    Types whose counts are collinear (e.g. every structure has the same composition, as in an MD
    trajectory of one molecule) are not identifiable; ``torch.linalg.lstsq`` with the 'gelsd' driver
    returns the minimum-norm solution then, which spreads the energy evenly by count, as nequip does.
    """
    counts = type_counts(batch, num_types)
    energy = batch["total_energy"].reshape(-1).to(torch.float64)
    if ridge > 0:
        counts = torch.cat([counts, ridge**0.5 * torch.eye(num_types, dtype=torch.float64)])
        energy = torch.cat([energy, torch.zeros(num_types, dtype=torch.float64)])
    sol = torch.linalg.lstsq(counts, energy[:, None], driver="gelsd").solution
    return sol[:, 0]


def per_atom_energy_mean(batch: Batch) -> float:
    """Mean over structures of E/N (eV/atom)."""
    e = batch["total_energy"].reshape(-1).to(torch.float64)
    return float((e / batch["num_atoms"].to(torch.float64)).mean())


def forces_rms(batch: Batch) -> float:
    """RMS of all force components (eV/Å)."""
    return float(batch["forces"].to(torch.float64).square().mean().sqrt())


def per_type_forces_rms(batch: Batch, num_types: int) -> torch.Tensor:
    """[T] RMS of force components of the atoms of each type (eV/Å); NaN for absent types."""
    sq = batch["forces"].to(torch.float64).square().mean(dim=1)
    total = torch.zeros(num_types, dtype=torch.float64).index_add_(0, batch["atom_type"], sq)
    n = torch.bincount(batch["atom_type"], minlength=num_types).to(torch.float64)
    return (total / n).sqrt()


def avg_num_neighbors(batch: Batch) -> float:
    """Mean number of neighbours (edges with that atom as centre) per atom."""
    return float(batch["edge_index"].shape[1]) / float(batch["pos"].shape[0])


def resolve_model_statistics(
    batch: Batch,
    type_names: Sequence[str],
    shifts_spec,
    scales_spec,
    avg_num_neighbors_spec,
) -> Dict[str, object]:
    """Turn the config's statistic specs into numbers for the model builder.

    ``batch``: all training structures collated together. Returns a dict with the keys
    ``per_type_energy_shifts`` (list of T floats, eV or None), ``per_type_energy_scales`` (float,
    list of T floats, or None) and ``avg_num_neighbors`` (float or None).
    """
    num_types = len(type_names)
    out: Dict[str, object] = {}
    if shifts_spec == "least_squares":
        out["per_type_energy_shifts"] = least_squares_energy_shifts(batch, num_types).tolist()
    elif shifts_spec == "per_atom_mean":
        out["per_type_energy_shifts"] = [per_atom_energy_mean(batch)] * num_types
    elif isinstance(shifts_spec, (int, float)):
        out["per_type_energy_shifts"] = [float(shifts_spec)] * num_types
    else:
        out["per_type_energy_shifts"] = _per_type_list(shifts_spec, type_names, "per_type_energy_shifts")
    if scales_spec == "forces_rms":
        out["per_type_energy_scales"] = forces_rms(batch)
    elif scales_spec == "per_type_forces_rms":
        out["per_type_energy_scales"] = per_type_forces_rms(batch, num_types).tolist()
    elif isinstance(scales_spec, (int, float)):
        out["per_type_energy_scales"] = float(scales_spec)
    else:
        out["per_type_energy_scales"] = _per_type_list(scales_spec, type_names, "per_type_energy_scales")
    if avg_num_neighbors_spec == "auto":
        out["avg_num_neighbors"] = avg_num_neighbors(batch)
    else:
        out["avg_num_neighbors"] = None if avg_num_neighbors_spec is None else float(avg_num_neighbors_spec)
    return out


def _per_type_list(spec, type_names: Sequence[str], key: str) -> Optional[List[float]]:
    if spec is None:
        return None
    if isinstance(spec, dict):
        missing = [t for t in type_names if t not in spec]
        if missing:
            raise ValueError(f"model.{key}: no value for type(s) {missing}")
        return [float(spec[t]) for t in type_names]
    spec = list(spec)
    if len(spec) != len(type_names):
        raise ValueError(f"model.{key}: {len(spec)} values for {len(type_names)} types {list(type_names)}")
    return [float(v) for v in spec]
