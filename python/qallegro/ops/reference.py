"""Pure-torch reference implementations of every qallegro op.

Readable and slow on purpose: they are the oracle the kernels are tested against (float64, fresh
random inputs) and the fallback used when the compiled ops are not available.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

# ---- neighbor_list ------------------------------------------------------------------------------


def _image_range(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> list:
    """Images needed along each periodic lattice vector: cutoff / plane spacing, plus the spread of
    the atoms' fractional coordinates (atoms need not lie inside the cell)."""
    n = [0, 0, 0]
    if not bool(pbc.any()) or positions.shape[0] == 0:
        return n
    rows = cell[pbc]
    frac = positions @ torch.linalg.pinv(rows)  # coordinates along the periodic vectors
    gram_det = torch.det(rows @ rows.T)
    for col, k in enumerate(torch.nonzero(pbc).flatten().tolist()):
        others = torch.cat([rows[:col], rows[col + 1:]])
        # distance between lattice planes spanned by the other periodic vectors
        spacing = float(torch.sqrt(gram_det / torch.det(others @ others.T))) if others.shape[0] else float(
            torch.linalg.norm(rows[col]))
        spread = float(frac[:, col].max() - frac[:, col].min())
        n[k] = int(math.ceil(cutoff / spacing + spread)) + 1
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
        n = _image_range(pos, cells[b], pbc[b], cutoff)
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
    Returns [E, mul, dim_out]. The steps of nequip-allegro 0.8.3's Contracter (scatter, normalise,
    index_select, weights x w3j pre-contraction, contraction); the contraction is ordered as a
    batched matmul over channels (x1 first, then the environment), ~7x faster than the broadcast outer
    product on CPU and equal to it up to float rounding.
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
    # 3. dense CG [P, dim1 * dim2 * dim_out] from the sparse table, pre-contracted with the weights
    flat = ((cg_indices[:, 0] * dim1 + cg_indices[:, 1]) * dim2 + cg_indices[:, 2]) * dim_out + cg_indices[:, 3]
    w3j = torch.zeros(
        num_paths * dim1 * dim2 * dim_out, dtype=cg_values.dtype, device=cg_values.device
    ).index_add_(0, flat, cg_values).view(num_paths, dim1 * dim2 * dim_out)
    ww3j = torch.mm(weights, w3j).view(mul, dim1, dim2 * dim_out)  # [u, i, (j k)]
    # t[e, u, j, k] = sum_i x1[e, u, i] ww3j[u, i, j, k] (one matmul per channel), then sum over j
    t = torch.bmm(tensor_features.transpose(0, 1), ww3j).view(mul, num_edges, dim2, dim_out).transpose(0, 1)
    return torch.sum(t * env_gathered.unsqueeze(-1), dim=2)


# ---- qdi (issue 5) ------------------------------------------------------------------------------

_QDI_AXES = ("X", "Y", "Z")


def _qdi_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """Pauli rotation exp(-i angle P / 2) as [..., 2, 2] complex (PennyLane's RX/RY/RZ)."""
    c = torch.cos(angle / 2).to(torch.complex128 if angle.dtype == torch.float64 else torch.complex64)
    s = torch.sin(angle / 2).to(c.dtype)
    zero = torch.zeros_like(c)
    if axis == "X":
        rows = [torch.stack([c, -1j * s], -1), torch.stack([-1j * s, c], -1)]
    elif axis == "Y":
        rows = [torch.stack([c, -s], -1), torch.stack([s, c], -1)]
    else:
        rows = [torch.stack([c - 1j * s, zero], -1), torch.stack([zero, c + 1j * s], -1)]
    return torch.stack(rows, -2)


def _qdi_apply(state: torch.Tensor, matrix: torch.Tensor, qubit: int) -> torch.Tensor:
    """state [B, 2, ..., 2] (one axis per qubit, qubit 0 first); matrix [2, 2] or [B, 2, 2]."""
    moved = state.movedim(qubit + 1, -1)
    if matrix.dim() == 2:
        out = moved @ matrix.transpose(-1, -2)
    else:
        out = torch.einsum("b...j,bij->b...i", moved, matrix)
    return out.movedim(-1, qubit + 1)


def _qdi_cnot(state: torch.Tensor, control: int, target: int) -> torch.Tensor:
    """CNOT on a [B, 2, ..., 2] state: flips the target axis where the control bit is 1."""
    moved = state.movedim((control + 1, target + 1), (1, 2))
    out = torch.stack([moved[:, 0], moved[:, 1].flip(1)], dim=1)
    return out.movedim((1, 2), (control + 1, target + 1))


def qdi_rings(n_qubits: int, depth: int, entangling: str) -> list:
    """The CNOT (control, target) pairs of each variational layer: StronglyEntanglingLayers' ring of
    range l mod (n-1) + 1, or BasicEntanglerLayers' ring (one CNOT for two qubits)."""
    rings = []
    for layer in range(depth):
        if n_qubits == 1:
            rings.append([])
        elif entangling == "strong":
            r = layer % (n_qubits - 1) + 1
            rings.append([(q, (q + r) % n_qubits) for q in range(n_qubits)])
        else:
            rings.append([(0, 1)] if n_qubits == 2 else [(q, (q + 1) % n_qubits) for q in range(n_qubits)])
    return rings


def qdi_measured_qubits(n_qubits: int, measurement_mode: str) -> list:
    """Qubits whose expectation the layer outputs, in output order."""
    if measurement_mode == "single":
        return [n_qubits - 1]
    return list(range(0, n_qubits, 2 if measurement_mode == "even" else 1))


def qdi_reference(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    rotation: str = "X",
    entangling: str = "strong",
    measure: str = "Y",
    measurement_mode: str = "none",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch QDI circuit with the contract of ``qallegro::qdi`` (differentiable to any order).

    inputs: [B, F] angles (rad), F = uploads * n_qubits; weights: [uploads, depth, n_qubits, K],
    K = 3 (Rot angles phi, theta, omega) for "strong", 1 (RX angle) for "basic".
    Returns expectations [B, M] of Pauli ``measure`` on the measured qubits and the final states
    [B, 2**n] (complex; qubit 0 is the most significant bit, as in PennyLane).
    """
    uploads, depth, n, _ = weights.shape
    batch = inputs.shape[0]
    cdtype = torch.complex128 if inputs.dtype == torch.float64 else torch.complex64
    state = torch.zeros((batch,) + (2,) * n, dtype=cdtype, device=inputs.device)
    state.view(batch, -1)[:, 0] = 1
    hadamard = torch.tensor([[1, 1], [1, -1]], dtype=cdtype, device=inputs.device) / 2**0.5
    rings = qdi_rings(n, depth, entangling)
    for u in range(uploads):
        for q in range(n):
            if rotation == "Z":  # a Z embedding of |0> would only be a phase
                state = _qdi_apply(state, hadamard, q)
            state = _qdi_apply(state, _qdi_rotation(rotation, inputs[:, u * n + q]), q)
        for layer in range(depth):
            for q in range(n):
                if entangling == "strong":  # Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)
                    phi, theta, omega = weights[u, layer, q]
                    for axis, angle in (("Z", phi), ("Y", theta), ("Z", omega)):
                        state = _qdi_apply(state, _qdi_rotation(axis, angle), q)
                else:
                    state = _qdi_apply(state, _qdi_rotation("X", weights[u, layer, q, 0]), q)
            for control, target in rings[layer]:
                state = _qdi_cnot(state, control, target)
    if measurement_mode == "single":
        for q in range(n - 1):
            state = _qdi_cnot(state, q, q + 1)
    pauli = {
        "X": torch.tensor([[0, 1], [1, 0]], dtype=cdtype),
        "Y": torch.tensor([[0, -1j], [1j, 0]], dtype=cdtype),
        "Z": torch.tensor([[1, 0], [0, -1]], dtype=cdtype),
    }[measure].to(inputs.device)
    outputs = []
    for q in qdi_measured_qubits(n, measurement_mode):
        flipped = _qdi_apply(state, pauli, q)
        outputs.append((state.conj() * flipped).reshape(batch, -1).sum(-1).real)
    return torch.stack(outputs, dim=-1), state.reshape(batch, -1)
