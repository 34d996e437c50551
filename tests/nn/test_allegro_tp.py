"""allegro_tp: reference vs nequip-allegro's Contracter, CG table vs e3nn, derivatives, edge cases."""

from typing import List, Tuple

import pytest
import torch
from tests.nn.nn_tolerances import DTYPES, TOL

from qallegro.ops import reference
from qallegro.ops.allegro_tp import allegro_tp, cg_table, irreps_dim, tp_paths

IRREPS_CASES = {
    "lmax1_parity": ([(0, 1), (1, -1)], [(0, 1), (1, -1)], [(0, 1), (1, -1), (1, 1), (0, -1)]),
    "lmax2_parity": (
        [(0, 1), (1, -1), (2, 1), (1, 1), (2, -1)],
        [(0, 1), (1, -1), (2, 1)],
        [(0, 1), (1, -1), (2, 1), (1, 1), (2, -1), (0, -1)],
    ),
    "lmax3_to_scalar": ([(0, 1), (1, -1), (2, 1), (3, -1)], [(0, 1), (1, -1), (2, 1), (3, -1)], [(0, 1)]),
}


def sample_inputs(irreps, mul: int, num_edges: int, num_nodes: int, dtype, seed: int = 0):
    """Random inputs of allegro_tp for irreps (in1, in2, out)."""
    g = torch.Generator().manual_seed(seed)
    i1, i2, io = irreps
    idx, val = cg_table(i1, i2, io, dtype=dtype)
    num_paths = len(tp_paths(i1, i2, io))
    x1 = torch.randn(num_edges, mul, irreps_dim(i1), generator=g, dtype=dtype)
    env_edge = torch.randn(num_edges, mul, irreps_dim(i2), generator=g, dtype=dtype)
    center = torch.randint(0, max(num_nodes, 1), (num_edges,), generator=g)
    node_norm = torch.rand(num_nodes, generator=g, dtype=dtype) + 0.5
    weights = torch.randn(mul, num_paths, generator=g, dtype=dtype)
    return x1, env_edge, center, node_norm, weights, idx, val, irreps_dim(io)


def _to_e3nn(irreps: List[Tuple[int, int]]):
    from e3nn.o3 import Irreps

    return Irreps([(1, (l, p)) for l, p in irreps])


@pytest.mark.parametrize("case", list(IRREPS_CASES))
@pytest.mark.parametrize("coupling", [True, False])
def test_matches_nequip_allegro_contracter(case, coupling):
    contract = pytest.importorskip("allegro.nn._strided").Contracter
    i1, i2, io = IRREPS_CASES[case]
    dtype = torch.float64
    x1, env_edge, center, node_norm, _, idx, val, dim_out = sample_inputs(IRREPS_CASES[case], 3, 50, 9, dtype, seed=1)
    old_default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # nequip builds its w3j buffer in the default dtype
    try:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            c = contract(_to_e3nn(i1), _to_e3nn(i2), _to_e3nn(io), mul=3, path_channel_coupling=coupling)
    finally:
        torch.set_default_dtype(old_default)
    env = torch.zeros(9, 3, env_edge.shape[2], dtype=dtype).index_add_(0, center, env_edge) * node_norm[:, None, None]
    expected = c(x1, env, center)
    w = c.weights.detach().reshape(3 if coupling else 1, -1).expand(3, -1)
    got = allegro_tp(x1, env_edge, center, node_norm, w, idx, val, dim_out)
    rtol, atol = TOL[dtype]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)


def test_cg_table_is_e3nn_component_normalised():
    from e3nn.o3 import wigner_3j

    i1, i2, io = [(1, -1)], [(2, 1)], [(1, -1), (2, 1), (3, -1)]
    idx, val = cg_table(i1, i2, io)
    paths = tp_paths(i1, i2, io)
    assert paths == [(0, 0, 0), (0, 0, 2)]  # (1o x 2e -> 2e) is forbidden by parity
    dense = torch.zeros(len(paths), 3, 5, irreps_dim(io), dtype=torch.float64)
    dense[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = val
    torch.testing.assert_close(dense[0, :, :, 0:3], wigner_3j(1, 2, 1, dtype=torch.float64) * 3**0.5)
    torch.testing.assert_close(dense[1, :, :, 8:15], wigner_3j(1, 2, 3, dtype=torch.float64) * 7**0.5)
    assert dense[:, :, :, 3:8].abs().max() == 0
    # component normalisation: sum over i, j of C^2 = 1 for each output component
    torch.testing.assert_close((dense[1] ** 2).sum(dim=(0, 1))[8:15], torch.ones(7, dtype=torch.float64))


def test_gradcheck_and_gradgradcheck():
    x1, env_edge, center, node_norm, weights, idx, val, dim_out = sample_inputs(
        IRREPS_CASES["lmax1_parity"], 2, 6, 3, torch.float64, seed=2
    )
    args = [t.requires_grad_() for t in (x1, env_edge, node_norm, weights)]

    def f(a, b, n, w):
        return allegro_tp(a, b, center, n, w, idx, val, dim_out, use_kernel=False)

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("num_edges", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_and_one_edge(num_edges, dtype):
    x1, env_edge, center, node_norm, weights, idx, val, dim_out = sample_inputs(
        IRREPS_CASES["lmax2_parity"], 4, num_edges, 2, dtype, seed=4
    )
    out = allegro_tp(x1, env_edge, center, node_norm, weights, idx, val, dim_out)
    assert out.shape == (num_edges, 4, dim_out) and out.dtype == dtype
    if num_edges == 1:
        # one edge: its centre's environment is its own (normalised) contribution
        rtol, atol = TOL[dtype]
        env = env_edge[0] * node_norm[center[0]]
        dense = torch.zeros(weights.shape[1], x1.shape[2], env_edge.shape[2], dim_out, dtype=dtype)
        dense[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = val
        manual = torch.einsum("ui,uj,up,pijk->uk", x1[0], env, weights, dense)
        torch.testing.assert_close(out[0], manual, rtol=rtol, atol=atol)


def test_bad_inputs_are_named():
    x1, env_edge, center, node_norm, weights, idx, val, dim_out = sample_inputs(
        IRREPS_CASES["lmax1_parity"], 2, 5, 3, torch.float64
    )
    with pytest.raises(ValueError, match="env_edge"):
        allegro_tp(x1, env_edge[:, :1], center, node_norm, weights, idx, val, dim_out)
    with pytest.raises(ValueError, match="edge_center"):
        allegro_tp(x1, env_edge, center + 10, node_norm, weights, idx, val, dim_out)
    with pytest.raises(TypeError, match="weights"):
        allegro_tp(x1, env_edge, center, node_norm, weights.float(), idx, val, dim_out)
    with pytest.raises(ValueError, match="cg_indices"):
        allegro_tp(x1, env_edge, center, node_norm, weights, idx, val, 1)


def test_reference_is_scriptable():
    scripted = torch.jit.script(reference.allegro_tp_reference)
    inputs = sample_inputs(IRREPS_CASES["lmax2_parity"], 3, 20, 5, torch.float64, seed=5)
    torch.testing.assert_close(scripted(*inputs), reference.allegro_tp_reference(*inputs))
