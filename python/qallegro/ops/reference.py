"""Pure-torch reference implementations of every qallegro op.

Readable and slow on purpose: they are the oracle the kernels are tested against (float64, fresh
random inputs) and the fallback used when the compiled ops are not available.
"""

from __future__ import annotations

from typing import Tuple

import torch

# ---- neighbor_list ------------------------------------------------------------------------------


def _image_range(cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> list:
    """Number of periodic images needed along each lattice vector: cutoff / plane spacing."""
    n = [0, 0, 0]
    if bool(pbc.any()):
        volume = torch.abs(torch.det(cell))
        for k in range(3):
            if bool(pbc[k]):
                cross = torch.linalg.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
                spacing = float(volume / torch.linalg.norm(cross))
                n[k] = int(torch.ceil(torch.tensor(cutoff / spacing)).item())
    return n


def neighbor_list_reference(
    positions: torch.Tensor, cutoff: float, cells: torch.Tensor, pbc: torch.Tensor, ptr: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """All-pairs-over-images neighbour list with the same contract as ``qallegro::neighbor_list``.

    positions: [N, 3]; cells: [B, 3, 3] (rows are lattice vectors); pbc: [B, 3] bool; ptr: [B+1].
    Returns edge_index [2, E] int64 sorted by (i, j, shift) and cell_shifts [E, 3] (positions' dtype,
    integer-valued) with ``r_ij = pos[j] - pos[i] + shift @ cell`` and ``|r_ij| < cutoff``.
    """
    device, dtype = positions.device, positions.dtype
    edges, shifts = [], []
    for b in range(cells.shape[0]):
        start, stop = int(ptr[b]), int(ptr[b + 1])
        pos = positions[start:stop]
        if pos.shape[0] == 0:
            continue
        n = _image_range(cells[b], pbc[b], cutoff)
        grid = torch.stack(
            torch.meshgrid(*[torch.arange(-m, m + 1, device=device) for m in n], indexing="ij"), dim=-1
        ).reshape(-1, 3).to(dtype)
        offsets = grid @ cells[b]  # [S, 3]
        # vec[i, j, s] = pos[j] + offset[s] - pos[i]
        vec = pos[None, :, None, :] + offsets[None, None, :, :] - pos[:, None, None, :]
        dist = torch.linalg.norm(vec, dim=-1)
        keep = dist < cutoff
        zero = (grid == 0).all(dim=-1)
        eye = torch.eye(pos.shape[0], dtype=torch.bool, device=device)
        keep &= ~(eye[:, :, None] & zero[None, None, :])
        i, j, s = torch.nonzero(keep, as_tuple=True)
        order = torch.argsort(i * (pos.shape[0] * grid.shape[0]) + j * grid.shape[0] + s)
        edges.append(torch.stack([i[order], j[order]]) + start)
        shifts.append(grid[s[order]])
    if not edges:
        return (
            torch.zeros(2, 0, dtype=torch.long, device=device),
            torch.zeros(0, 3, dtype=dtype, device=device),
        )
    return torch.cat(edges, dim=1), torch.cat(shifts, dim=0)

# ---- allegro_tp (issue 4) -----------------------------------------------------------------------


def allegro_tp_reference(
    tensor_features: torch.Tensor,
    env_edge: torch.Tensor,
    edge_center: torch.Tensor,
    node_norm: torch.Tensor,
    weights: torch.Tensor,
    cg_indices: torch.Tensor,
    cg_values: torch.Tensor,
    dim_out: int,
) -> torch.Tensor:
    """Pure-torch ``qallegro::allegro_tp`` (contract: :mod:`qallegro.ops.allegro_tp`). TorchScript-able.

    tensor_features: [E, mul, dim1]; env_edge: [E, mul, dim2]; edge_center: [E] int64;
    node_norm: [N]; weights: [mul, P]; cg_indices: [K, 4] int64 (path, i, j, k); cg_values: [K].
    Returns [E, mul, dim_out]. Same steps and order as nequip-allegro 0.8.3 (scatter, normalise,
    index_select, weights x w3j pre-contraction, outer product, sum).
    """
    num_edges, mul, dim1 = tensor_features.shape
    dim2 = env_edge.shape[2]
    num_paths = weights.shape[1]
    # 1. environment embedding per centre atom, normalised per atom
    env = torch.zeros(
        (node_norm.shape[0], mul, dim2), dtype=env_edge.dtype, device=env_edge.device
    ).index_add_(0, edge_center, env_edge)
    env = env * node_norm.view(-1, 1, 1)
    # 2. gather back onto edges
    env_gathered = torch.index_select(env, 0, edge_center)
    # 3. dense CG [P, dim1, dim2, dim_out] from the sparse table, then pre-contract with weights
    flat = ((cg_indices[:, 0] * dim1 + cg_indices[:, 1]) * dim2 + cg_indices[:, 2]) * dim_out + cg_indices[:, 3]
    w3j = torch.zeros(
        num_paths * dim1 * dim2 * dim_out, dtype=cg_values.dtype, device=cg_values.device
    ).index_add_(0, flat, cg_values).view(num_paths, dim1, dim2, dim_out)
    ww3j = torch.einsum("up,pijk->uijk", weights, w3j)
    outer = tensor_features.unsqueeze(-1) * env_gathered.unsqueeze(-2)  # [E, mul, dim1, dim2]
    return torch.sum(outer.unsqueeze(-1) * ww3j, dim=(2, 3))


# ---- qdi (issue 5) ------------------------------------------------------------------------------
