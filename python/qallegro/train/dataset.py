"""Training data: per-structure graphs computed once, batching by concatenation, label checks.

Each structure is collated alone once (``qallegro.data.collate``, which builds its neighbour list);
a training batch is then the concatenation of those one-structure dicts with atom and structure
indices offset, so neighbour lists are not recomputed every epoch.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

Batch = Dict[str, torch.Tensor]

# keys whose first dimension runs over atoms / edges; everything else runs over structures
PER_ATOM = {"pos", "atom_type", "forces", "atomic_energy", "batch", "initial_charges", "charges"}
PER_EDGE = {"edge_cell_shift", "edge_vectors", "edge_lengths"}


def to_graphs(
    structures: Sequence, r_max: float, type_names: Sequence[str], source: str = "data"
) -> List[Batch]:
    """One collated dict per structure (``qallegro.data.collate([s], r_max, type_names)``)."""
    from qallegro.data import collate

    # collate's errors already name the frame (Structure.source)
    return [collate([s], r_max, list(type_names)) for s in structures]


def concat(graphs: Sequence[Batch]) -> Batch:
    """Concatenate one-or-more-structure dicts into one batch (offsets ``edge_index`` and ``batch``).

    Every graph must carry the same keys; a label present in some graphs only is dropped with the
    caller's checks (:func:`check_labels`) having decided whether that is allowed.
    """
    if len(graphs) == 1:
        return dict(graphs[0])
    keys = set(graphs[0])
    for g in graphs[1:]:
        keys &= set(g)
    out: Batch = {}
    atom_offset = 0
    struct_offset = 0
    edge_index, batch = [], []
    for g in graphs:
        edge_index.append(g["edge_index"] + atom_offset)
        batch.append(g["batch"] + struct_offset)
        atom_offset += g["pos"].shape[0]
        struct_offset += g["num_atoms"].shape[0]
    out["edge_index"] = torch.cat(edge_index, dim=1)
    out["batch"] = torch.cat(batch)
    for k in keys - {"edge_index", "batch", "ptr"}:
        out[k] = torch.cat([g[k] for g in graphs], dim=0)
    if "ptr" in keys:
        out["ptr"] = torch.cat([out["num_atoms"].new_zeros(1), out["num_atoms"].cumsum(0)])
    return out


def to_device(batch: Batch, device: torch.device, dtype: Optional[torch.dtype] = None) -> Batch:
    """Move a batch; floating tensors take ``dtype`` (labels and positions in the model's precision)."""
    out = {}
    for k, v in batch.items():
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.to(device)
    return out


def check_labels(graphs: Sequence[Batch], needs: Sequence[str], source: str, reason: Optional[str] = None) -> None:
    """Raise if a structure lacks a label the loss needs (e.g. 'forces' with forces_weight > 0)."""
    weight_key = {"total_energy": "energy_weight", "forces": "forces_weight", "stress": "stress_weight"}
    for key in needs:
        why = reason or f"the loss asks for it (loss.{weight_key.get(key, key)} > 0); set that weight to 0 or provide the labels"
        missing = [i for i, g in enumerate(graphs) if key not in g or not bool(torch.isfinite(g[key]).all())]
        if missing:
            head = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"{source}: {len(missing)} of {len(graphs)} structures have no '{key}' label (structures {head}) "
                f"but {why}"
            )


def check_types_present(graphs: Sequence[Batch], type_names: Sequence[str], source: str) -> None:
    """Raise if a configured element never occurs in the data (its shift and scale would be undefined)."""
    counts = torch.zeros(len(type_names), dtype=torch.long)
    for g in graphs:
        counts += torch.bincount(g["atom_type"].cpu(), minlength=len(type_names))[: len(type_names)]
    absent = [t for t, c in zip(type_names, counts.tolist()) if c == 0]
    if absent:
        raise ValueError(
            f"{source}: data.type_names names element(s) {absent} that do not occur in the training data "
            f"(found: {[t for t, c in zip(type_names, counts.tolist()) if c > 0]})"
        )
