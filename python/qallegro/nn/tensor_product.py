"""Allegro's tensor track: irreps bookkeeping, per-channel weighting and the per-layer tensor product.

Irreps are lists of ``(l, parity)`` of multiplicity one (parity +1 even, -1 odd), laid out back to
back along the last axis of ``[edges, channels, components]`` tensors, as in nequip-allegro.
"""

from typing import Final, List, Sequence, Tuple

import torch

from qallegro.ops import allegro_tp as _tp
from qallegro.ops.reference import allegro_tp_reference

Irrep = Tuple[int, int]


def sh_irreps(l_max: int) -> List[Irrep]:
    """Irreps of the edge spherical harmonics 0e + 1o + 2e + ... (parity (-1)^l)."""
    return [(l, (-1) ** l) for l in range(l_max + 1)]


def _couples(a: Irrep, b: Irrep, c: Irrep) -> bool:
    return abs(a[0] - b[0]) <= c[0] <= a[0] + b[0] and a[1] * b[1] == c[1]


def layer_irreps(l_max: int, parity: bool, num_layers: int) -> List[Tuple[List[Irrep], List[Irrep]]]:
    """Per-layer (input irreps, output irreps) of the tensor track, nequip-allegro 0.8.3's rules.

    Tracked irreps are every (l, p) up to l_max with parity, or only the spherical-harmonic irreps
    without; the last layer outputs scalars only; irreps that cannot lead to the final scalars are
    pruned backwards. The first layer's input irreps are the spherical harmonics'.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    env = sh_irreps(l_max)
    allowed = [(l, p) for l in range(l_max + 1) for p in (1, -1)] if parity else list(env)
    tps = [env]
    arg = env
    for layer in range(num_layers):
        candidates = [(0, 1)] if layer == num_layers - 1 else allowed
        out = [c for c in candidates if any(_couples(a, e, c) for a in arg for e in env)]
        tps.append(out)
        arg = out
    # backwards pruning: keep an input irrep if it couples with some env irrep to a kept output
    pruned = [tps[-1]]
    out = tps[-1]
    for arg in reversed(tps[:-1]):
        keep = [a for a in arg if any(_couples(a, e, c) for e in env for c in out)]
        pruned.append(keep)
        out = keep
    tps = list(reversed(pruned))
    return list(zip(tps[:-1], tps[1:]))


class WeightedChannels(torch.nn.Module):
    """Per-channel (and per-irrep) weighting of multiplicity-one irreps.

    basis: [E, dim] (e.g. spherical harmonics), weights: [E, mul * num_irreps] ->
    [E, mul, dim] with out[e, u, i] = basis[e, i] * weights[e, u, irrep(i)].
    """

    multiplicity: int
    num_irreps: int
    weight_numel: int

    def __init__(self, irreps: Sequence[Irrep], multiplicity: int):
        super().__init__()
        self.multiplicity = multiplicity
        self.num_irreps = len(irreps)
        self.weight_numel = multiplicity * len(irreps)
        index = [k for k, (l, _) in enumerate(irreps) for _ in range(2 * l + 1)]
        self.register_buffer("irrep_of_component", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights.reshape(weights.shape[0], self.multiplicity, self.num_irreps)
        return basis.unsqueeze(1) * torch.index_select(w, 2, self.irrep_of_component)


class AllegroTensorProduct(torch.nn.Module):
    """One Allegro layer's tensor product through :func:`qallegro.ops.allegro_tp.allegro_tp`.

    forward(tensor_features [E, mul, dim1], env_edge [E, mul, dim2], edge_center [E], node_norm [N])
    -> [E, mul, dim_out]. Weights: [mul, num_paths] with ``path_channel_coupling`` (default, as
    nequip-allegro), else [num_paths] shared by all channels.
    """

    use_kernel: Final[bool]
    path_channel_coupling: Final[bool]
    dim_out: int
    mul: int

    def __init__(
        self,
        irreps_in1: Sequence[Irrep],
        irreps_in2: Sequence[Irrep],
        irreps_out: Sequence[Irrep],
        mul: int,
        path_channel_coupling: bool = True,
    ):
        super().__init__()
        self.irreps_in1, self.irreps_in2, self.irreps_out = list(irreps_in1), list(irreps_in2), list(irreps_out)
        self.paths = _tp.tp_paths(irreps_in1, irreps_in2, irreps_out)
        if not self.paths:
            raise ValueError(f"no tensor-product path from {irreps_in1} x {irreps_in2} to {irreps_out}")
        self.mul = mul
        self.dim_out = _tp.irreps_dim(irreps_out)
        self.path_channel_coupling = path_channel_coupling
        # decided once so that the module scripts with or without the compiled op (see ops.allegro_tp)
        self.use_kernel = _tp.kernel_available()
        cg_indices, cg_values = _tp.cg_table(irreps_in1, irreps_in2, irreps_out, dtype=torch.get_default_dtype())
        self.register_buffer("cg_indices", cg_indices, persistent=False)
        self.register_buffer("cg_values", cg_values, persistent=False)
        shape = (mul, len(self.paths)) if path_channel_coupling else (len(self.paths),)
        # unit-variance init as nequip-allegro's Contracter
        self.weights = torch.nn.Parameter(torch.empty(shape).uniform_(-(3.0**0.5), 3.0**0.5))

    def _apply(self, fn, recurse=True):
        # recompute the CG values from float64 when the dtype changes, so a float32-built model
        # moved to float64 still has exact coefficients (parity tests rely on it)
        out = super()._apply(fn, recurse)
        _, exact = _tp.cg_table(self.irreps_in1, self.irreps_in2, self.irreps_out, dtype=torch.float64)
        self.cg_values = exact.to(device=self.cg_values.device, dtype=self.cg_values.dtype)
        return out

    def forward(
        self, tensor_features: torch.Tensor, env_edge: torch.Tensor, edge_center: torch.Tensor, node_norm: torch.Tensor
    ) -> torch.Tensor:
        if self.path_channel_coupling:
            weights = self.weights
        else:
            weights = self.weights.unsqueeze(0).expand(self.mul, self.weights.shape[0])
        if self.use_kernel:
            return _tp.allegro_tp_kernel(
                tensor_features, env_edge, edge_center, node_norm, weights, self.cg_indices, self.cg_values, self.dim_out
            )
        return allegro_tp_reference(
            tensor_features, env_edge, edge_center, node_norm, weights, self.cg_indices, self.cg_values, self.dim_out
        )

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | {self.mul} channels | {len(self.paths)} paths"
