"""Neighbour lists: ``qallegro.neighbor_list`` (one structure) and ``batched_neighbor_list``.

Full list (both directions), no self pair at zero shift, strictly ``r < cutoff``; cell-list kernel
with O(N) cost, triclinic cells, cutoffs larger than the cell, mixed pbc, molecules without a cell.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from qallegro.ops import reference
from qallegro.ops._library import HAS_KERNELS

_PbcLike = Union[None, bool, Sequence[bool], torch.Tensor]

if HAS_KERNELS:

    @torch.library.register_fake("qallegro::neighbor_list")
    def _neighbor_list_fake(positions, cutoff, cells, pbc, ptr):
        num_edges = torch.library.get_ctx().new_dynamic_size()
        edge_index = positions.new_empty((2, num_edges), dtype=torch.long)
        return edge_index, positions.new_empty((num_edges, 3))


def periodic_cell_is_singular(cell: torch.Tensor, pbc: torch.Tensor) -> bool:
    """True when the lattice vectors of the periodic directions are (nearly) linearly dependent.

    Vectors along non-periodic directions may be anything, zero included (a slab given without its
    vacuum vector is fine).
    """
    rows = cell.double()[pbc.bool()]
    if rows.shape[0] == 0:
        return False
    scale = float(rows.abs().max())
    gram = float(torch.det(rows @ rows.T))
    return not (scale > 0 and gram > 1e-12 * scale ** (2 * rows.shape[0]))


def _check(positions: torch.Tensor, cutoff: float, cells: torch.Tensor, pbc: torch.Tensor, ptr: torch.Tensor):
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [N, 3], got {tuple(positions.shape)}")
    if not positions.is_floating_point():
        raise TypeError(f"positions must be float32 or float64, got {positions.dtype}")
    if not (cutoff > 0.0) or cutoff != cutoff or cutoff == float("inf"):
        raise ValueError(f"cutoff must be a positive finite number of Å, got {cutoff}")
    if not torch.isfinite(positions).all():
        bad = int(torch.nonzero(~torch.isfinite(positions).all(dim=1))[0, 0])
        raise ValueError(f"positions contain NaN/inf (first at atom {bad})")
    for b in range(cells.shape[0]):
        if periodic_cell_is_singular(cells[b], pbc[b]):
            raise ValueError(
                f"structure {b}: cell {cells[b].tolist()} is singular along its periodic directions "
                f"(pbc={pbc[b].tolist()})"
            )


def _as_pbc(pbc: _PbcLike, has_cell: bool, device: torch.device) -> torch.Tensor:
    if pbc is None:
        pbc = has_cell
    if isinstance(pbc, bool):
        pbc = [pbc] * 3
    out = torch.as_tensor(pbc, dtype=torch.bool, device=device).reshape(-1)
    if out.numel() != 3:
        raise ValueError(f"pbc must be a bool or 3 bools, got {pbc}")
    return out


def batched_neighbor_list(
    positions: torch.Tensor,
    cutoff: float,
    cells: torch.Tensor,
    pbc: torch.Tensor,
    ptr: torch.Tensor,
    use_kernel: Optional[bool] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Neighbour lists of B structures stored back to back.

    positions: [N, 3] Å; cells: [B, 3, 3] Å (rows are lattice vectors, zeros when a structure has no
    cell); pbc: [B, 3] bool; ptr: [B+1] int64 offsets of each structure's atoms.
    Returns ``edge_index`` [2, E] int64 (global indices, grouped by centre atom ascending) and
    ``cell_shifts`` [E, 3] (positions' dtype, integer-valued): ``r_ij = pos[j] - pos[i] + shift @ cell``.
    """
    cells = cells.to(positions.dtype)
    pbc = pbc.to(torch.bool)
    ptr = ptr.to(torch.long)
    _check(positions, float(cutoff), cells, pbc, ptr)
    if use_kernel is None:
        use_kernel = HAS_KERNELS
    if use_kernel:
        return torch.ops.qallegro.neighbor_list(positions, float(cutoff), cells, pbc, ptr)
    return reference.neighbor_list_reference(positions, float(cutoff), cells, pbc, ptr)


def neighbor_list(
    positions: torch.Tensor,
    cutoff: float,
    cell: Optional[torch.Tensor] = None,
    pbc: _PbcLike = None,
    use_kernel: Optional[bool] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Full neighbour list of one structure.

    positions: [N, 3] Å; cutoff: Å; cell: [3, 3] Å (rows are lattice vectors) or None for a molecule;
    pbc: bool or 3 bools (default: periodic in all directions iff a cell is given).
    Returns ``edge_index`` [2, E] int64 and ``cell_shifts`` [E, 3] (integer-valued, positions' dtype)
    with ``r_ij = positions[j] - positions[i] + cell_shifts @ cell`` and ``|r_ij| < cutoff``.
    """
    positions = torch.as_tensor(positions)
    if not positions.is_floating_point():
        positions = positions.to(torch.get_default_dtype())
    has_cell = cell is not None
    if cell is None:
        cell = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
    cell = torch.as_tensor(cell, dtype=positions.dtype, device=positions.device).reshape(3, 3)
    pbc_t = _as_pbc(pbc, has_cell, positions.device)
    ptr = torch.tensor([0, positions.shape[0]], dtype=torch.long, device=positions.device)
    return batched_neighbor_list(positions, cutoff, cell[None], pbc_t[None], ptr, use_kernel=use_kernel)


def neighbor_list_cuda_emulated(
    positions: torch.Tensor,
    cutoff: float,
    cells: torch.Tensor,
    pbc: torch.Tensor,
    ptr: torch.Tensor,
    reverse_threads: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The CUDA neighbour list run on the CPU, for tests only (``qallegro::_neighbor_list_cuda_emulated``).

    Same arguments and results as :func:`batched_neighbor_list` (CPU tensors): the CUDA op's host code
    and kernel bodies, launched one thread after the other (last to first when ``reverse_threads``;
    a result that depends on the order is a race on a GPU), so that code is tested without a GPU.
    Single-threaded and slow; models never call it.
    """
    return torch.ops.qallegro._neighbor_list_cuda_emulated(
        positions, float(cutoff), cells.to(positions.dtype), pbc.to(torch.bool), ptr.to(torch.long), reverse_threads
    )
