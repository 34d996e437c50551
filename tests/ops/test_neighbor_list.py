"""qallegro::neighbor_list against ASE's primitive_neighbor_list and the pure-torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import primitive_neighbor_list

import qallegro
from qallegro.ops import HAS_KERNELS
from qallegro.ops.reference import neighbor_list_reference

needs_kernel = pytest.mark.skipif(not HAS_KERNELS, reason="compiled ops not built")


def sample_inputs(rng: np.random.Generator, n_max: int = 40):
    """A random structure: skewed cell (sometimes tiny), random pbc, atoms inside and outside it."""
    n = int(rng.integers(0, n_max))
    cell = rng.normal(size=(3, 3)) * rng.uniform(0.2, 3.0) + np.eye(3) * rng.uniform(0.8, 9.0)
    pbc = rng.random(3) < 0.6
    positions = rng.random((n, 3)) @ cell + rng.normal(size=(n, 3)) * rng.uniform(0, 2)
    spacing = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1).max()
    # up to ~3 plane spacings (many images); test_cutoff_larger_than_cell goes further
    cutoff = float(rng.uniform(0.3, min(7.0, 3.0 * spacing + 0.5)))
    return positions, cell, pbc, cutoff


def as_set(edge_index: torch.Tensor, shifts: torch.Tensor):
    triples = list(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, shifts.round().long().tolist())))
    assert len(triples) == len(set(triples)), "duplicate edges"
    return set(triples)


def ase_set(positions, cell, pbc, cutoff):
    i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False)
    return set(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))


@needs_kernel
@pytest.mark.parametrize("seed", range(4))
def test_matches_ase_on_random_systems(seed):
    rng = np.random.default_rng(1000 + seed)
    for _ in range(25):
        positions, cell, pbc, cutoff = sample_inputs(rng)
        ei, sh = qallegro.neighbor_list(torch.tensor(positions), cutoff, torch.tensor(cell), torch.tensor(pbc))
        assert ei.dtype == torch.long and sh.dtype == torch.float64
        assert as_set(ei, sh) == ase_set(positions, cell, pbc, cutoff)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_and_vectors(dtype):
    rng = np.random.default_rng(7)
    for _ in range(20):
        positions, cell, pbc, cutoff = sample_inputs(rng, 25)
        pos, c, p = torch.tensor(positions, dtype=dtype), torch.tensor(cell, dtype=dtype), torch.tensor(pbc)
        ei, sh = qallegro.neighbor_list(pos, cutoff, c, p)
        ref = qallegro.neighbor_list(pos, cutoff, c, p, use_kernel=False)
        assert sh.dtype == dtype
        if dtype == torch.float64:
            assert as_set(ei, sh) == as_set(*ref)
        vec = pos[ei[1]] - pos[ei[0]] + sh @ c
        assert bool((vec.norm(dim=1) < cutoff).all())


@needs_kernel
def test_cutoff_larger_than_cell_many_images():
    cell = np.diag([1.1, 0.7, 1.3]) + 0.3 * np.triu(np.ones((3, 3)), 1)
    positions = np.array([[0.1, 0.2, 0.3], [0.5, 0.1, 0.9]])
    ei, sh = qallegro.neighbor_list(torch.tensor(positions), 4.5, torch.tensor(cell), True)
    expected = ase_set(positions, cell, [True] * 3, 4.5)
    assert len(expected) > 500
    assert as_set(ei, sh) == expected


@needs_kernel
def test_one_atom_and_zero_atoms():
    cell = torch.eye(3, dtype=torch.float64) * 2.0
    ei, sh = qallegro.neighbor_list(torch.zeros(1, 3, dtype=torch.float64), 2.5, cell, True)
    # the atom sees its own 6 nearest images at 2 Å and 12 at 2.83 Å (> 2.5: excluded)
    assert ei.shape == (2, 6) and bool((ei == 0).all())
    assert sorted(map(tuple, sh.long().tolist())) == sorted(
        [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    )
    ei, sh = qallegro.neighbor_list(torch.zeros(1, 3, dtype=torch.float64), 2.5)  # molecule: no neighbours
    assert ei.shape == (2, 0) and sh.shape == (0, 3)
    ei, sh = qallegro.neighbor_list(torch.zeros(0, 3, dtype=torch.float64), 3.0, cell, True)
    assert ei.shape == (2, 0) and sh.shape == (0, 3)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exactly_at_cutoff_is_excluded(dtype):
    # dimer exactly 2.0 apart (exactly representable): r < cutoff is strict
    pos = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=dtype)
    assert qallegro.neighbor_list(pos, 2.0)[0].shape[1] == 0
    assert qallegro.neighbor_list(pos, 2.0 + 1e-3)[0].shape[1] == 2
    # periodic: nearest image exactly at the cutoff
    cell = torch.eye(3, dtype=dtype) * 3.0
    ei, _ = qallegro.neighbor_list(pos[:1], 3.0, cell, True)
    assert ei.shape[1] == 0


@needs_kernel
def test_molecule_without_cell_matches_brute_force():
    rng = np.random.default_rng(3)
    positions = rng.normal(size=(60, 3)) * 4.0
    ei, sh = qallegro.neighbor_list(torch.tensor(positions), 3.0)
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    i, j = np.nonzero((d < 3.0) & ~np.eye(60, dtype=bool))
    assert as_set(ei, sh) == {(a, b, (0, 0, 0)) for a, b in zip(i.tolist(), j.tolist())}


@needs_kernel
def test_slab_with_singular_cell_in_non_periodic_direction():
    rng = np.random.default_rng(5)
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.0, 0.0, 0.0]])  # no vector along z
    positions = rng.random((30, 3)) * [4.0, 3.5, 10.0]
    ei, sh = qallegro.neighbor_list(torch.tensor(positions), 2.7, torch.tensor(cell), [True, True, False])
    full = cell.copy()
    full[2, 2] = 100.0  # any vector along z gives the same list when z is not periodic
    assert as_set(ei, sh) == ase_set(positions, full, [True, True, False], 2.7)


@needs_kernel
def test_deterministic_order_grouped_by_centre():
    rng = np.random.default_rng(11)
    positions, cell, pbc, cutoff = sample_inputs(rng, 40)
    pbc[:] = True
    args = (torch.tensor(positions), cutoff, torch.tensor(cell), torch.tensor(pbc))
    first = qallegro.neighbor_list(*args)
    torch.set_num_threads(1)
    try:
        second = qallegro.neighbor_list(*args)
    finally:
        torch.set_num_threads(2)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert bool((first[0][0][1:] >= first[0][0][:-1]).all())


@needs_kernel
def test_batched_equals_one_by_one():
    rng = np.random.default_rng(13)
    systems = [sample_inputs(rng, 20) for _ in range(5)]
    cutoff = 3.1
    pos = torch.tensor(np.concatenate([s[0] for s in systems]))
    cells = torch.tensor(np.stack([s[1] for s in systems]))
    pbc = torch.tensor(np.stack([s[2] for s in systems]))
    ptr = torch.tensor(np.concatenate([[0], np.cumsum([len(s[0]) for s in systems])]))
    ei, sh = qallegro.batched_neighbor_list(pos, cutoff, cells, pbc, ptr)
    expected = set()
    for b, (positions, cell, p, _) in enumerate(systems):
        expected |= {(i + int(ptr[b]), j + int(ptr[b]), s) for i, j, s in ase_set(positions, cell, p, cutoff)}
    assert as_set(ei, sh) == expected


def test_reference_matches_ase():
    rng = np.random.default_rng(17)
    for _ in range(10):
        positions, cell, pbc, cutoff = sample_inputs(rng, 15)
        cutoff = min(cutoff, 4.0)
        ei, sh = neighbor_list_reference(
            torch.tensor(positions), cutoff, torch.tensor(cell)[None], torch.tensor(pbc)[None],
            torch.tensor([0, len(positions)]),
        )
        assert as_set(ei, sh) == ase_set(positions, cell, pbc, cutoff)


@pytest.mark.parametrize("use_kernel", [pytest.param(True, marks=needs_kernel), False])
def test_bad_input_errors(use_kernel):
    pos = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="cutoff"):
        qallegro.neighbor_list(pos, -1.0, use_kernel=use_kernel)
    with pytest.raises(ValueError, match="singular"):
        qallegro.neighbor_list(pos, 2.0, torch.zeros(3, 3), True, use_kernel=use_kernel)
    with pytest.raises(ValueError, match=r"NaN/inf \(first at atom 1\)"):
        qallegro.neighbor_list(torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]]), 2.0, use_kernel=use_kernel)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        qallegro.neighbor_list(torch.zeros(4, 2), 2.0, use_kernel=use_kernel)


@needs_kernel
def test_opcheck():
    rng = np.random.default_rng(19)
    positions, cell, pbc, cutoff = sample_inputs(rng, 10)
    args = (torch.tensor(positions), cutoff, torch.tensor(cell)[None], torch.tensor(pbc)[None],
            torch.tensor([0, len(positions)]))
    torch.library.opcheck(torch.ops.qallegro.neighbor_list.default, args,
                          test_utils=("test_schema", "test_faketensor"))
