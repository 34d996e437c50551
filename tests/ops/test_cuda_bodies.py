"""The CUDA kernels, run on the CPU: no GPU exists here, so the CUDA ops' host code and kernel bodies
(csrc/cuda/*_driver.h, csrc/include/qallegro/*_kernels.h) are launched one thread after the other by
the ``*_cuda_emulated`` test ops and compared, in float64 on fresh random inputs, with the pure-torch
references, with ASE, and with the CPU kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qallegro.ops import HAS_KERNELS
from qallegro.ops.allegro_tp import (
    allegro_tp_backward_cuda_emulated,
    allegro_tp_cuda_emulated,
    allegro_tp_kernel,
)
from qallegro.ops.neighbor_list import neighbor_list_cuda_emulated
from qallegro.ops.reference import allegro_tp_reference, neighbor_list_reference

from .test_allegro_tp_kernel import sample_inputs as tp_sample_inputs
from .test_allegro_tp_kernel import tp_irreps
from .test_neighbor_list import as_set, ase_set
from .test_neighbor_list import sample_inputs as nl_sample_inputs

# like every kernel test, these skip when the op library is not loaded (the test session's gate turns
# that into a failure where kernels are required); a loaded library without the test ops fails
pytestmark = pytest.mark.skipif(not HAS_KERNELS, reason="compiled ops not built")

#: one (dtype) -> (rtol, atol) table; the emulation and the CPU kernel add in slightly different orders
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 2e-5)}


def test_the_emulated_ops_are_built():
    for name in ("_neighbor_list_cuda_emulated", "_allegro_tp_cuda_emulated", "_allegro_tp_backward_cuda_emulated"):
        assert hasattr(torch.ops.qallegro, name), name


# ---- neighbour list ------------------------------------------------------------------------------


def _one(positions, cutoff, cell, pbc, dtype=torch.float64):
    """(emulated CUDA, CPU kernel) lists of one structure."""
    pos = torch.as_tensor(positions, dtype=dtype)
    cells = torch.as_tensor(cell, dtype=dtype).reshape(1, 3, 3)
    pbc_t = torch.as_tensor(pbc, dtype=torch.bool).reshape(1, 3)
    ptr = torch.tensor([0, pos.shape[0]])
    emulated = neighbor_list_cuda_emulated(pos, cutoff, cells, pbc_t, ptr)
    _assert_same_lists(neighbor_list_cuda_emulated(pos, cutoff, cells, pbc_t, ptr, reverse_threads=True), emulated)
    cpu = torch.ops.qallegro.neighbor_list(pos, float(cutoff), cells, pbc_t, ptr)
    return emulated, cpu


def _assert_same_lists(got, want):
    """Same pairs in the same order (the kernels group by centre and visit bins in one fixed order)."""
    assert got[0].dtype == torch.long and got[1].dtype == want[1].dtype
    assert torch.equal(got[0], want[0]), "edge_index differs"
    assert torch.equal(got[1], want[1]), "cell_shifts differ"


@pytest.mark.parametrize("seed", range(3))
def test_neighbor_list_matches_ase_reference_and_cpu(seed):
    rng = np.random.default_rng(2000 + seed)
    print("seed", 2000 + seed)
    for _ in range(20):
        positions, cell, pbc, cutoff = nl_sample_inputs(rng, 30)
        emulated, cpu = _one(positions, cutoff, cell, pbc)
        got = as_set(*emulated)
        assert got == ase_set(positions, cell, pbc, cutoff)
        ref = neighbor_list_reference(
            torch.tensor(positions), cutoff, torch.tensor(cell)[None], torch.tensor(pbc)[None],
            torch.tensor([0, len(positions)]),
        )
        assert got == as_set(*ref)
        _assert_same_lists(emulated, cpu)
        ei = emulated[0]
        assert bool((ei[0][1:] >= ei[0][:-1]).all()), "not grouped by centre"


def test_neighbor_list_several_blocks_of_threads():
    # more atoms than one block of 128 threads: the last block's idle threads must write nothing
    rng = np.random.default_rng(2050)
    cell = np.diag([9.0, 8.0, 10.0]) + rng.normal(size=(3, 3)) * 0.5
    positions = rng.random((300, 3)) @ cell
    for pbc in ([True] * 3, [False, True, False]):
        emulated, cpu = _one(positions, 3.2, cell, pbc)
        assert as_set(*emulated) == ase_set(positions, cell, pbc, 3.2)
        _assert_same_lists(emulated, cpu)


def test_neighbor_list_float32_vectors_within_cutoff():
    rng = np.random.default_rng(2100)
    for _ in range(10):
        positions, cell, pbc, cutoff = nl_sample_inputs(rng, 25)
        (ei, sh), _ = _one(positions, cutoff, cell, pbc, torch.float32)
        pos, c = torch.tensor(positions, dtype=torch.float32), torch.tensor(cell, dtype=torch.float32)
        vec = pos[ei[1]] - pos[ei[0]] + sh @ c
        assert sh.dtype == torch.float32 and bool((vec.norm(dim=1) < cutoff).all())


def test_neighbor_list_empty_and_one_atom():
    cell = np.eye(3) * 2.0
    (ei, sh), cpu = _one(np.zeros((0, 3)), 3.0, cell, [True] * 3)
    assert ei.shape == (2, 0) and sh.shape == (0, 3)
    (ei, sh), cpu = _one(np.zeros((1, 3)), 2.5, cell, [True] * 3)
    # the atom's own 6 nearest images at 2 Å; the 12 at 2.83 Å are beyond the cutoff
    assert sorted(map(tuple, sh.long().tolist())) == sorted(
        [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    )
    _assert_same_lists((ei, sh), cpu)
    (ei, sh), _ = _one(np.zeros((1, 3)), 2.5, np.zeros((3, 3)), [False] * 3)  # a lone molecule atom
    assert ei.shape == (2, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neighbor_list_atoms_exactly_at_the_cutoff(dtype):
    # distances exactly representable: r == cutoff is excluded, r < cutoff included
    dimer = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert _one(dimer, 2.0, np.zeros((3, 3)), [False] * 3, dtype)[0][0].shape[1] == 0
    assert _one(dimer, 2.0 + 1e-3, np.zeros((3, 3)), [False] * 3, dtype)[0][0].shape[1] == 2
    assert _one(dimer[:1], 3.0, np.eye(3) * 3.0, [True] * 3, dtype)[0][0].shape[1] == 0
    # a simple cubic lattice at a cutoff of exactly the lattice constant: no pairs at all
    grid = np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
    emulated, cpu = _one(grid, 1.5, np.eye(3) * 4.5, [True] * 3, dtype)
    assert emulated[0].shape[1] == 0 and cpu[0].shape[1] == 0
    emulated, cpu = _one(grid, 1.5 + 1e-3, np.eye(3) * 4.5, [True] * 3, dtype)
    assert emulated[0].shape[1] == 27 * 6
    _assert_same_lists(emulated, cpu)


def test_neighbor_list_tiny_and_skewed_cells():
    rng = np.random.default_rng(2200)
    cells = [
        np.diag([1.1, 0.7, 1.3]) + 0.3 * np.triu(np.ones((3, 3)), 1),  # cutoff = several cells
        np.array([[3.0, 0.0, 0.0], [2.9, 0.4, 0.0], [2.8, 0.3, 0.5]]),  # strongly skewed
        np.array([[0.5, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]]),  # one very thin direction
    ]
    for cell in cells:
        for pbc in ([True] * 3, [True, False, True]):
            positions = rng.random((5, 3)) @ cell + rng.normal(size=(5, 3)) * 0.5  # some outside the cell
            emulated, cpu = _one(positions, 2.5, cell, pbc)
            assert as_set(*emulated) == ase_set(positions, cell, pbc, 2.5)
            _assert_same_lists(emulated, cpu)


def test_neighbor_list_slab_and_batch_with_empty_structures():
    rng = np.random.default_rng(2300)
    slab = np.array([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.0, 0.0, 0.0]])  # no vector along z
    systems = [
        (rng.random((20, 3)) * [4.0, 3.5, 8.0], slab, np.array([True, True, False])),
        (np.zeros((0, 3)), np.eye(3) * 3.0, np.array([True] * 3)),
        nl_sample_inputs(rng, 20)[:3],
        (rng.normal(size=(15, 3)) * 2.0, np.zeros((3, 3)), np.array([False] * 3)),
    ]
    pos = torch.tensor(np.concatenate([s[0] for s in systems]))
    cells = torch.tensor(np.stack([s[1] for s in systems]))
    pbc = torch.tensor(np.stack([s[2] for s in systems]))
    ptr = torch.tensor(np.concatenate([[0], np.cumsum([len(s[0]) for s in systems])]))
    emulated = neighbor_list_cuda_emulated(pos, 2.7, cells, pbc, ptr)
    _assert_same_lists(emulated, torch.ops.qallegro.neighbor_list(pos, 2.7, cells, pbc, ptr))
    _assert_same_lists(neighbor_list_cuda_emulated(pos, 2.7, cells, pbc, ptr, reverse_threads=True), emulated)
    expected = set()
    for b, (positions, cell, p) in enumerate(systems):
        full = cell.copy()
        if b == 0:
            full[2, 2] = 100.0  # any vector along z gives the same list when z is not periodic
        expected |= {(i + int(ptr[b]), j + int(ptr[b]), s) for i, j, s in ase_set(positions, full, p, 2.7)}
    assert as_set(*emulated) == expected


def test_neighbor_list_bad_inputs_are_named():
    pos = torch.zeros(2, 3, dtype=torch.float64)
    cells, pbc = torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="ptr must start at 0 and end at N"):
        neighbor_list_cuda_emulated(pos, 2.0, cells, pbc, torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="cells must be"):
        neighbor_list_cuda_emulated(pos, 2.0, cells[:0], pbc, torch.tensor([0, 2]))
    with pytest.raises(RuntimeError, match="cutoff must be positive"):
        neighbor_list_cuda_emulated(pos, float("inf"), cells, pbc, torch.tensor([0, 2]))


# ---- allegro tensor product ----------------------------------------------------------------------

MASKS = [(True, True, True, True), (True, False, False, False), (False, True, False, False),
         (False, False, True, False), (False, False, False, True), (False, True, True, False)]


def _reference_vjp(inputs, grad_out):
    x, y, c, n, w, idx, val, dim_out = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (x, y, n, w)]
    out = allegro_tp_reference(leaves[0], leaves[1], c, leaves[2], leaves[3], idx, val, dim_out)
    return torch.autograd.grad(out, leaves, grad_out, allow_unused=True)


@pytest.mark.parametrize("l_max,parity,layer", [(0, True, 0), (1, False, 0), (1, True, 2), (2, True, 0), (3, True, 2)])
def test_allegro_tp_forward_and_backward_match_reference_and_cpu(l_max, parity, layer):
    irreps = tp_irreps(l_max, parity, layer)
    rtol, atol = TOL[torch.float64]
    # (mul, edges, atoms, centres grouped): atoms without edges, mul = 1, and node and edge stages of
    # several blocks of threads (the last block's idle threads must write nothing)
    sizes = [(3, 50, 9, False), (8, 70, 12, True), (1, 9, 30, False), (5, 200, 60, False)]
    for seed, (mul, e, n, grouped) in enumerate(sizes):
        inputs = tp_sample_inputs(irreps, mul, e, n, torch.float64, seed=300 + seed, grouped=grouped)
        got = allegro_tp_cuda_emulated(*inputs)
        # threads that depend on each other's writes would change the result with their order
        assert torch.equal(allegro_tp_cuda_emulated(*inputs, reverse_threads=True), got)
        torch.testing.assert_close(got, allegro_tp_reference(*inputs), rtol=rtol, atol=atol)
        torch.testing.assert_close(got, allegro_tp_kernel(*inputs), rtol=rtol, atol=atol)
        grad_out = torch.randn(got.shape, dtype=got.dtype, generator=torch.Generator().manual_seed(seed))
        want = _reference_vjp(inputs, grad_out)
        cpu = torch.ops.qallegro.allegro_tp_backward(grad_out, *inputs[:7], [True] * 4)
        for mask in MASKS:
            grads = allegro_tp_backward_cuda_emulated(grad_out, *inputs[:7], mask)
            reversed_order = allegro_tp_backward_cuda_emulated(grad_out, *inputs[:7], mask, reverse_threads=True)
            assert all(torch.equal(a, b) for a, b in zip(grads, reversed_order)), "order-dependent threads"
            for name, on, g, r, k in zip(("x", "env_edge", "node_norm", "weights"), mask, grads, want, cpu):
                assert g.shape == k.shape, name
                if not on:
                    assert bool((g == 0).all()), f"d {name} is masked out but not zero"
                    continue
                torch.testing.assert_close(g, r, rtol=rtol, atol=10 * atol, msg=lambda m: f"d {name} vs ref: {m}")
                torch.testing.assert_close(g, k, rtol=rtol, atol=10 * atol, msg=lambda m: f"d {name} vs cpu: {m}")


def test_allegro_tp_float32_matches_cpu():
    inputs = tp_sample_inputs(tp_irreps(2, True), 4, 40, 7, torch.float32, seed=320)
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(allegro_tp_cuda_emulated(*inputs), allegro_tp_kernel(*inputs), rtol=rtol, atol=atol)
    grad_out = torch.randn(40, 4, inputs[-1], generator=torch.Generator().manual_seed(321))
    for g, k in zip(allegro_tp_backward_cuda_emulated(grad_out, *inputs[:7]),
                    torch.ops.qallegro.allegro_tp_backward(grad_out, *inputs[:7], [True] * 4)):
        torch.testing.assert_close(g, k, rtol=rtol, atol=10 * atol)


def test_allegro_tp_zero_edges_one_edge_and_empty_table():
    x, y, c, n, w, idx, val, dim_out = tp_sample_inputs(tp_irreps(2, True), 4, 0, 3, torch.float64, seed=330)
    out = allegro_tp_cuda_emulated(x, y, c, n, w, idx, val, dim_out)
    assert out.shape == (0, 4, dim_out)
    grads = allegro_tp_backward_cuda_emulated(torch.zeros_like(out), x, y, c, n, w, idx, val)
    assert [g.shape for g in grads] == [x.shape, y.shape, n.shape, w.shape]
    assert all(bool((g == 0).all()) for g in grads)
    # one edge out of atom 3 of 6: every other atom has an empty environment
    inputs = list(tp_sample_inputs(tp_irreps(3, True), 4, 1, 6, torch.float64, seed=331))
    inputs[2] = torch.tensor([3])
    rtol, atol = TOL[torch.float64]
    torch.testing.assert_close(allegro_tp_cuda_emulated(*inputs), allegro_tp_reference(*inputs), rtol=rtol, atol=atol)
    grad_out = torch.randn(1, 4, inputs[-1], dtype=torch.float64)
    gnn = allegro_tp_backward_cuda_emulated(grad_out, *inputs[:7])[2]
    assert bool((gnn[[0, 1, 2, 4, 5]] == 0).all()) and gnn[3] != 0
    # no CG rows: zero output and zero gradients
    x, y, c, n, w, idx, val, dim_out = tp_sample_inputs(tp_irreps(2, True), 3, 30, 7, torch.float64, seed=332)
    assert bool((allegro_tp_cuda_emulated(x, y, c, n, w, idx[:0], val[:0], dim_out) == 0).all())


def test_allegro_tp_bad_centre_is_named():
    x, y, c, n, w, idx, val, dim_out = tp_sample_inputs(tp_irreps(1, True), 2, 10, 4, torch.float64, seed=340)
    c = c.clone()
    c[5] = 4
    with pytest.raises(RuntimeError, match=r"edge_center has values outside \[0, N=4\)"):
        allegro_tp_cuda_emulated(x, y, c, n, w, idx, val, dim_out)
    with pytest.raises(RuntimeError, match="cg_indices row"):
        allegro_tp_cuda_emulated(x, y, c.clamp(max=3), n, w, idx + 100, val, dim_out)
