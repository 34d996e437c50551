"""Smoke test of an installed qallegro: ``python -m qallegro.smoke``.

Checks that the compiled ops load from the installed package, that the neighbour-list kernel agrees
with the pure-torch reference, and that a small Allegro model gives finite energies and forces whose
sum vanishes (Newton's third law). Exits non-zero with a message on any failure.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def main() -> int:
    import qallegro
    from qallegro import ops

    print(f"qallegro {qallegro.__version__} from {qallegro.__file__}")
    if not ops.HAS_KERNELS:
        print(f"FAIL: compiled ops not loaded: {ops.LOAD_ERROR}")
        return 1
    print(f"ops library: {ops.library_path()}")
    rng = np.random.default_rng(0)
    cell = torch.tensor(np.eye(3) * 6.0 + rng.normal(scale=0.5, size=(3, 3)))
    pos = torch.tensor(rng.random((40, 3))) @ cell
    kernel = qallegro.neighbor_list(pos, 3.5, cell, True)
    reference = qallegro.neighbor_list(pos, 3.5, cell, True, use_kernel=False)
    if kernel[0].shape != reference[0].shape:
        print(f"FAIL: neighbour list {kernel[0].shape[1]} edges, reference {reference[0].shape[1]}")
        return 1
    print(f"neighbor_list: {kernel[0].shape[1]} edges, same as the reference")

    from qallegro import models
    from qallegro.data import Structure, collate

    model = models.build("allegro", ["Cu", "Li"], 3.5, l_max=2, num_layers=1, num_scalar_features=16,
                         num_tensor_features=4, avg_num_neighbors=10.0, model_dtype="float64")
    numbers = np.where(np.arange(40) % 3 == 0, 3, 29)
    data = collate([Structure(positions=pos.numpy(), numbers=numbers, cell=cell.numpy(), pbc=True)], 3.5,
                   model.type_names)
    out = model(data)
    energy, forces = out["total_energy"].detach(), out["forces"].detach()
    if not (torch.isfinite(energy).all() and torch.isfinite(forces).all()):
        print("FAIL: non-finite energy or forces")
        return 1
    if forces.sum(0).abs().max() > 1e-9:
        print(f"FAIL: forces do not sum to zero ({forces.sum(0).tolist()})")
        return 1
    print(f"allegro: E = {float(energy):.6f} eV, |F|max = {float(forces.abs().max()):.4f} eV/Å; smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
