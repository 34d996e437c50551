"""Neighbour list: qallegro vs vesin vs ASE on periodic fcc Cu (cutoff 5 Å), 1k / 20k / 100k atoms.

    python -m pytest bench/bench_neighbor_list.py --benchmark-only

Each size is one group; the summary prints qallegro's time over vesin's and ASE's (same run). vesin
and ASE run on one thread, so the ratio is taken with qallegro on one torch thread too ("qallegro");
qallegro on two threads is timed separately ("qallegro_2threads") and reported beside it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qallegro

CUTOFF = 5.0
SIZES = {1_000: (7, 6, 6), 20_000: (17, 17, 17), 100_000: (29, 29, 29)}


def fcc_copper(reps):
    """A thermally rattled fcc Cu supercell (a = 3.61 Å): realistic density, [N, 3] and cell."""
    a = 3.61
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 1, 3)
    positions = ((grid + basis[None]).reshape(-1, 3)) * a
    positions += np.random.default_rng(0).normal(scale=0.05, size=positions.shape)
    return positions, np.diag(np.array(reps, dtype=float) * a)


@pytest.fixture(scope="module", params=list(SIZES), ids=lambda n: f"{n // 1000}k")
def system(request):
    positions, cell = fcc_copper(SIZES[request.param])
    return request.param, positions, cell


def _rounds(n):
    return 3 if n >= 100_000 else 30  # more rounds: the median of short runs on a shared machine


@pytest.mark.parametrize("threads", [1, 2])
def test_qallegro(benchmark, record, system, threads):
    n, positions, cell = system
    pos, c = torch.tensor(positions), torch.tensor(cell)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        qallegro.neighbor_list(pos, CUTOFF, c, True)  # warm-up
        ei, _ = benchmark.pedantic(qallegro.neighbor_list, args=(pos, CUTOFF, c, True), rounds=_rounds(n),
                                   iterations=1)
        impl = "qallegro" if threads == 1 else f"qallegro_{threads}threads"
        record(benchmark, f"neighbor_list {n // 1000}k atoms", impl)
    finally:
        torch.set_num_threads(before)
    assert ei.shape[1] > 40 * len(positions)  # 42 neighbours per fcc Cu atom within 5 Å (12 + 6 + 24)


def test_vesin(benchmark, record, system):
    vesin = pytest.importorskip("vesin")  # vesin's CPU list is single-threaded
    n, positions, cell = system
    nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    nl.compute(points=positions, box=cell, periodic=True, quantities="ijS")
    benchmark.pedantic(nl.compute, kwargs=dict(points=positions, box=cell, periodic=True, quantities="ijS"),
                       rounds=_rounds(n), iterations=1)
    record(benchmark, f"neighbor_list {n // 1000}k atoms", "vesin")


def test_ase(benchmark, record, system):
    from ase.neighborlist import primitive_neighbor_list

    n, positions, cell = system
    args = ("ijS", [True] * 3, cell, positions, CUTOFF)
    benchmark.pedantic(primitive_neighbor_list, args=args, rounds=1 if n >= 20_000 else 3, iterations=1)
    record(benchmark, f"neighbor_list {n // 1000}k atoms", "ase")
