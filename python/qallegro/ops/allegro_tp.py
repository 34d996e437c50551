"""Allegro's per-layer tensor product: ``qallegro.ops.allegro_tp.allegro_tp`` (issue 3 / issue 4).

One call does what each Allegro layer does between its scalar MLPs (Musaelian et al. 2023, eq. 6-8):

1. environment embedding of every centre atom n (a normalised neighbour sum)::

       env[n, u, j] = node_norm[n] * sum_{e : edge_center[e] == n} env_edge[e, u, j]

2. gather of that embedding back onto every edge whose centre is n, and
3. channel-wise ("uuu") tensor product with the edge's tensor features through Clebsch-Gordan paths
   with per-path, per-channel weights::

       out[e, u, k] = sum_{(p, i, j, k, c) in cg table}
                      c * weights[u, p] * tensor_features[e, u, i] * env[edge_center[e], u, j]

Why the op takes the *per-edge* weighted spherical harmonics (``env_edge``) and the centre index
rather than the gathered ``[E, mul, dim2]`` embedding: so that a fused kernel can do the scatter (1),
the gather (2) and the contraction (3) in one pass and never materialise the gathered tensor
(issue 4). The node-level embedding ``[N, mul, dim2]`` is small (N << E) and may be kept. The
pure-torch reference (:func:`qallegro.ops.reference.allegro_tp_reference`) does the three steps with
``index_add_``, ``index_select`` and einsum, in the same order nequip-allegro 0.8.3 does them.

Layout (strided, as in nequip-allegro): features are ``[edges, channels (mul), irrep components]``,
irreps of multiplicity one laid out back to back in the order of the ``irreps`` lists below, each
irrep's ``2l+1`` components in e3nn's order (for l=1: y, z, x).

CG table format (see :func:`cg_table`): ``cg_indices`` [K, 4] int64 rows ``(path, i, j, k)`` and
``cg_values`` [K] float with ``i`` < dim1 an index into ``tensor_features``' last axis, ``j`` < dim2
into ``env_edge``'s, ``k`` < dim_out into the output's. ``cg_values`` are e3nn's real Wigner-3j
symbols ``e3nn.o3.wigner_3j(l1, l2, l_out)[i', j', k']`` times ``sqrt(2 l_out + 1)`` (e3nn's
"component" irrep normalisation, as nequip-allegro's ``Contracter``); only nonzero entries are
listed, sorted by (path, i, j, k). Paths are numbered as nequip-allegro numbers them: for each output
irrep, for each first input irrep, for each second input irrep that can couple to it by the O(3)
selection rules (|l1-l2| <= l_out <= l1+l2 and p1 p2 = p_out).

Dispatch: :func:`allegro_tp` calls the compiled ``torch.ops.qallegro.allegro_tp`` when
``qallegro.ops.HAS_KERNELS`` and the op exists, unless :data:`FORCE_REFERENCE` is set (or
``use_kernel=False``). TorchScript cannot read module-level switches, so modules that must be
scriptable decide once at construction (:func:`kernel_available`), store the result in a
``Final[bool]`` attribute, and call :func:`allegro_tp_kernel` or
:func:`~qallegro.ops.reference.allegro_tp_reference` in the two branches (the dead branch is not
compiled, so scripting works without the compiled op).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from qallegro.ops import reference
from qallegro.ops._library import HAS_KERNELS

#: Set to True to make :func:`allegro_tp` (and modules built afterwards) use the pure-torch reference.
FORCE_REFERENCE: bool = False

Irrep = Tuple[int, int]  # (l, parity) with parity +1 (even) or -1 (odd); multiplicity is 1


if HAS_KERNELS and hasattr(torch.ops.qallegro, "allegro_tp"):

    @torch.library.register_fake("qallegro::allegro_tp")
    def _allegro_tp_fake(tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out):
        return tensor_features.new_empty((tensor_features.shape[0], tensor_features.shape[1], dim_out))

    @torch.library.register_fake("qallegro::allegro_tp_backward")
    def _allegro_tp_backward_fake(grad_out, x, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, mask):
        return (
            torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(env_edge, memory_format=torch.contiguous_format),
            torch.empty_like(node_norm, memory_format=torch.contiguous_format),
            weights.new_empty(weights.shape),
        )

    # autograd (allegro_tp -> allegro_tp_backward -> allegro_tp / allegro_tp_backward, every order) is
    # registered in C++ (csrc/cpu/allegro_tp_autograd.cpp), so TorchScript and C++ hosts such as LAMMPS
    # differentiate through the op too


def kernel_available() -> bool:
    """True when the compiled ``qallegro::allegro_tp`` op is loaded and not disabled."""
    return (not FORCE_REFERENCE) and HAS_KERNELS and hasattr(torch.ops.qallegro, "allegro_tp")


def allegro_tp_kernel(
    tensor_features: torch.Tensor,
    env_edge: torch.Tensor,
    edge_center: torch.Tensor,
    node_norm: torch.Tensor,
    weights: torch.Tensor,
    cg_indices: torch.Tensor,
    cg_values: torch.Tensor,
    dim_out: int,
) -> torch.Tensor:
    """The compiled op, same contract as :func:`allegro_tp` (TorchScript-callable)."""
    return torch.ops.qallegro.allegro_tp(
        tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out
    )


def _check(
    tensor_features: torch.Tensor,
    env_edge: torch.Tensor,
    edge_center: torch.Tensor,
    node_norm: torch.Tensor,
    weights: torch.Tensor,
    cg_indices: torch.Tensor,
    cg_values: torch.Tensor,
    dim_out: int,
) -> None:
    if tensor_features.dim() != 3:
        raise ValueError(f"allegro_tp: tensor_features must be [E, mul, dim1], got {tuple(tensor_features.shape)}")
    num_edges, mul, dim1 = tensor_features.shape
    if env_edge.dim() != 3 or env_edge.shape[0] != num_edges or env_edge.shape[1] != mul:
        raise ValueError(
            f"allegro_tp: env_edge must be [E={num_edges}, mul={mul}, dim2], got {tuple(env_edge.shape)}"
        )
    if edge_center.shape != (num_edges,) or edge_center.dtype != torch.long:
        raise ValueError(
            f"allegro_tp: edge_center must be [E={num_edges}] int64, got {tuple(edge_center.shape)} {edge_center.dtype}"
        )
    if node_norm.dim() != 1:
        raise ValueError(f"allegro_tp: node_norm must be [N], got {tuple(node_norm.shape)}")
    if weights.dim() != 2 or weights.shape[0] != mul:
        raise ValueError(f"allegro_tp: weights must be [mul={mul}, num_paths], got {tuple(weights.shape)}")
    if cg_indices.dim() != 2 or cg_indices.shape[1] != 4 or cg_values.shape != (cg_indices.shape[0],):
        raise ValueError(
            f"allegro_tp: cg_indices must be [K, 4] and cg_values [K], got {tuple(cg_indices.shape)} "
            f"and {tuple(cg_values.shape)}"
        )
    for name, t in (("env_edge", env_edge), ("node_norm", node_norm), ("weights", weights), ("cg_values", cg_values)):
        if t.dtype != tensor_features.dtype:
            raise TypeError(f"allegro_tp: {name} is {t.dtype} but tensor_features is {tensor_features.dtype}")
    if cg_indices.numel() > 0:
        hi = cg_indices.max(dim=0).values.tolist()
        lo = int(cg_indices.min())
        limits = (weights.shape[1], dim1, env_edge.shape[2], dim_out)
        if lo < 0 or any(h >= m for h, m in zip(hi, limits)):
            raise ValueError(
                f"allegro_tp: cg_indices out of range: max (path, i, j, k) = {hi}, limits {limits}"
            )
    if num_edges > 0:
        if int(edge_center.min()) < 0 or int(edge_center.max()) >= node_norm.shape[0]:
            raise ValueError(
                f"allegro_tp: edge_center has values outside [0, N={node_norm.shape[0]}) "
                f"(min {int(edge_center.min())}, max {int(edge_center.max())})"
            )


def allegro_tp(
    tensor_features: torch.Tensor,
    env_edge: torch.Tensor,
    edge_center: torch.Tensor,
    node_norm: torch.Tensor,
    weights: torch.Tensor,
    cg_indices: torch.Tensor,
    cg_values: torch.Tensor,
    dim_out: int,
    use_kernel: Optional[bool] = None,
) -> torch.Tensor:
    """Fused Allegro layer tensor product (scatter env embedding, gather, channel-wise CG contraction).

    Args:
        tensor_features: [E, mul, dim1] float, each edge's tensor track (the previous layer's output).
        env_edge: [E, mul, dim2] float, each edge's neighbour contribution to its centre's environment
            embedding: spherical harmonics of the edge direction [E, dim2] weighted per channel (and per
            irrep) by the layer's scalar latent.
        edge_center: [E] int64, centre atom i of each edge (row 0 of ``edge_index``); no ordering is
            assumed (the neighbour list happens to group edges by centre).
        node_norm: [N] float, per-atom factor applied to the neighbour sum (1/sqrt(avg_num_neighbors)
            of the atom's species); N = number of atoms, which sizes the scatter.
        weights: [mul, num_paths] float, per-channel per-path weights (a model without path-channel
            coupling passes a [num_paths] parameter expanded to [mul, num_paths]).
        cg_indices: [K, 4] int64, rows (path, i, j, k) of the nonzero CG coefficients (see module doc).
        cg_values: [K] float, the coefficients (e3nn Wigner-3j x sqrt(2 l_out + 1)).
        dim_out: size of the output's irrep axis.
        use_kernel: None = compiled op if available (see :func:`kernel_available`); False = reference.

    Returns:
        [E, mul, dim_out] float. Differentiable (twice) with respect to ``tensor_features``,
        ``env_edge``, ``node_norm`` and ``weights``; ``cg_values`` is a constant.
    """
    _check(tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out)
    if use_kernel is None:
        use_kernel = kernel_available()
    if use_kernel:
        return allegro_tp_kernel(
            tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out
        )
    return reference.allegro_tp_reference(
        tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out
    )


def tp_paths(irreps_in1: Sequence[Irrep], irreps_in2: Sequence[Irrep], irreps_out: Sequence[Irrep]) -> List[Tuple[int, int, int]]:
    """All (slot_in1, slot_in2, slot_out) paths allowed by O(3) selection rules, nequip-allegro's order."""
    paths = []
    for i_out, (l_out, p_out) in enumerate(irreps_out):
        for i_1, (l1, p1) in enumerate(irreps_in1):
            for i_2, (l2, p2) in enumerate(irreps_in2):
                if abs(l1 - l2) <= l_out <= l1 + l2 and p1 * p2 == p_out:
                    paths.append((i_1, i_2, i_out))
    return paths


def irreps_dim(irreps: Sequence[Irrep]) -> int:
    """Number of components of a list of multiplicity-one irreps."""
    return sum(2 * l + 1 for l, _ in irreps)


def cg_table(
    irreps_in1: Sequence[Irrep],
    irreps_in2: Sequence[Irrep],
    irreps_out: Sequence[Irrep],
    paths: Optional[Sequence[Tuple[int, int, int]]] = None,
    dtype: torch.dtype = torch.float64,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sparse CG table ``(cg_indices [K, 4] int64, cg_values [K] dtype)`` for :func:`allegro_tp`.

    irreps_*: lists of (l, parity) of multiplicity one, in layout order; paths: default
    :func:`tp_paths`. Coefficients come from e3nn's ``wigner_3j`` in float64 and are cast at the end.
    """
    from e3nn.o3 import wigner_3j  # e3nn is the definition of the convention we match

    if paths is None:
        paths = tp_paths(irreps_in1, irreps_in2, irreps_out)
    offsets = []
    for irreps in (irreps_in1, irreps_in2, irreps_out):
        acc, off = 0, []
        for l, _ in irreps:
            off.append(acc)
            acc += 2 * l + 1
        offsets.append(off)
    rows, values = [], []
    for p, (a, b, c) in enumerate(paths):
        l1, l2, l3 = irreps_in1[a][0], irreps_in2[b][0], irreps_out[c][0]
        w3j = wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1)
        nz = torch.nonzero(w3j)
        for i, j, k in nz.tolist():
            rows.append((p, i + offsets[0][a], j + offsets[1][b], k + offsets[2][c]))
            values.append(float(w3j[i, j, k]))
    if not rows:
        return torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=dtype)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(values, dtype=torch.float64).to(dtype)


def allegro_tp_cuda_emulated(
    tensor_features: torch.Tensor,
    env_edge: torch.Tensor,
    edge_center: torch.Tensor,
    node_norm: torch.Tensor,
    weights: torch.Tensor,
    cg_indices: torch.Tensor,
    cg_values: torch.Tensor,
    dim_out: int,
    reverse_threads: bool = False,
) -> torch.Tensor:
    """The CUDA ``allegro_tp`` run on the CPU, for tests only (``qallegro::_allegro_tp_cuda_emulated``).

    Same contract as :func:`allegro_tp` on CPU tensors, not differentiable: the CUDA op's host code and
    kernel bodies launched one thread after the other (last to first when ``reverse_threads``; a result
    that depends on the order is a race on a GPU), so that code is tested without a GPU.
    """
    return torch.ops.qallegro._allegro_tp_cuda_emulated(
        tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out, reverse_threads
    )


def allegro_tp_backward_cuda_emulated(
    grad_out: torch.Tensor,
    tensor_features: torch.Tensor,
    env_edge: torch.Tensor,
    edge_center: torch.Tensor,
    node_norm: torch.Tensor,
    weights: torch.Tensor,
    cg_indices: torch.Tensor,
    cg_values: torch.Tensor,
    output_mask: Sequence[bool] = (True, True, True, True),
    reverse_threads: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CUDA ``allegro_tp_backward`` run on the CPU, for tests only.

    Returns the vector-Jacobian product (d tensor_features [E, mul, dim1], d env_edge [E, mul, dim2],
    d node_norm [N], d weights [mul, P]) of ``sum(grad_out * allegro_tp(...))``; entries whose
    ``output_mask`` flag is False are zeros. ``reverse_threads``: as in :func:`allegro_tp_cuda_emulated`.
    """
    return torch.ops.qallegro._allegro_tp_backward_cuda_emulated(
        grad_out, tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values,
        [bool(m) for m in output_mask], reverse_threads,
    )
