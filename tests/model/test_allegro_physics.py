"""Physics of the Allegro model in float64: symmetries, derivatives, locality, smoothness, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.model.allegro_helpers import SMALL, TOL, ModelCalculator, batch_from_atoms, culi_cell, read_builtin

import qallegro.models as models

R_MAX = 4.0
CULI = ["Cu", "Li"]
CHO = ["C", "H", "O"]


def _model(type_names, kind="allegro", seed=0, **overrides):
    hp = dict(SMALL, model_dtype="float64", seed=seed, per_type_energy_shifts=-1.0, per_type_energy_scales=2.0)
    hp.update(overrides)
    return models.build(kind, type_names, R_MAX, **hp)


def _molecule():
    """Frame 0 of the shipped aspirin set (C, H, O; a DFT-MD geometry at 500 K)."""
    return read_builtin("aspirin", "0")[0]


def _close(a, b, scale=1.0):
    rtol, atol = TOL[a.dtype]
    torch.testing.assert_close(a, b, rtol=rtol * scale, atol=atol * scale)


def _random_o3(seed: int, reflect: bool) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.linalg.det(q))  # proper rotation
    return -q if reflect else q


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_reflection_equivariance(reflect, dtype):
    model = _model(CULI, model_dtype=str(dtype).replace("torch.", ""))
    atoms = culi_cell(seed=4)
    out = model(batch_from_atoms([atoms], R_MAX, CULI, dtype=dtype))
    rot = _random_o3(1, reflect)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    turned.positions = atoms.positions @ rot.T
    out_r = model(batch_from_atoms([turned], R_MAX, CULI, dtype=dtype))
    R = torch.tensor(rot, dtype=dtype)
    _close(out_r["total_energy"], out["total_energy"])
    _close(out_r["atomic_energy"], out["atomic_energy"])
    _close(out_r["forces"], out["forces"] @ R.T)
    _close(out_r["stress"][0], R @ out["stress"][0] @ R.T)


def test_e3nn_assert_equivariant_molecule():
    from e3nn import o3
    from e3nn.util.test import assert_equivariant

    model = _model(CHO, l_max=3)
    data = batch_from_atoms([_molecule()], R_MAX, CHO)

    def f(pos):
        d = dict(data, pos=pos)
        out = model(d)
        return out["atomic_energy"], out["forces"]

    errors = assert_equivariant(
        f,
        args_in=[data["pos"]],
        irreps_in=[o3.Irreps("1o")],
        irreps_out=[o3.Irreps("0e"), o3.Irreps("1o")],
        tolerance=1e-9,
    )
    assert max(float(e.abs().max()) for e in errors.values()) < 1e-9


def test_translation_invariance():
    model = _model(CHO)
    atoms = _molecule()
    out = model(batch_from_atoms([atoms], R_MAX, CHO))
    moved = atoms.copy()
    moved.positions += np.array([3.1, -7.2, 0.4])
    out_t = model(batch_from_atoms([moved], R_MAX, CHO))
    _close(out_t["total_energy"], out["total_energy"], scale=10)
    _close(out_t["forces"], out["forces"], scale=10)


def test_permutation_equivariance():
    model = _model(CULI)
    atoms = culi_cell(seed=6)
    out = model(batch_from_atoms([atoms], R_MAX, CULI))
    perm = np.random.default_rng(0).permutation(len(atoms))
    out_p = model(batch_from_atoms([atoms[perm]], R_MAX, CULI))
    _close(out_p["total_energy"], out["total_energy"])
    _close(out_p["forces"], out["forces"][torch.tensor(perm)])
    _close(out_p["atomic_energy"], out["atomic_energy"][torch.tensor(perm)])
    _close(out_p["stress"], out["stress"])


def test_periodic_images_change_nothing():
    model = _model(CULI)
    atoms = culi_cell(seed=7)
    out = model(batch_from_atoms([atoms], R_MAX, CULI))
    wrapped = atoms.copy()
    n = np.random.default_rng(1).integers(-2, 3, size=(len(atoms), 3))
    wrapped.positions = atoms.positions + n @ atoms.cell.array
    out_w = model(batch_from_atoms([wrapped], R_MAX, CULI))
    _close(out_w["total_energy"], out["total_energy"])
    _close(out_w["forces"], out["forces"])
    _close(out_w["stress"], out["stress"])


def test_forces_match_finite_differences_gradient_test():
    from ase.calculators.test import gradient_test

    atoms = _molecule()
    atoms.calc = ModelCalculator.make(_model(CHO), CHO)
    f, fn = gradient_test(atoms)
    assert np.abs(f).max() > 1e-3
    np.testing.assert_allclose(fn, f, atol=1e-6)


def test_periodic_forces_and_stress_match_finite_differences():
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

    atoms = culi_cell(seed=8)
    calc = ModelCalculator.make(_model(CULI), CULI)
    atoms.calc = calc
    np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-5, force_consistent=False), atoms.get_forces(), atol=1e-7)
    stress = atoms.get_stress()
    assert np.abs(stress).max() > 1e-4
    numeric = calculate_numerical_stress(atoms, eps=1e-5, force_consistent=False)
    np.testing.assert_allclose(numeric, stress, atol=1e-8)


def test_frechet_cell_filter_gradient():
    from ase.filters import FrechetCellFilter

    atoms = culi_cell(seed=9)
    atoms.calc = ModelCalculator.make(_model(CULI), CULI)
    filt = FrechetCellFilter(atoms)
    x0 = filt.get_positions().copy()
    analytic = filt.get_forces()[-3:]
    numeric = np.zeros((3, 3))
    eps = 1e-5
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                x = x0.copy()
                x[len(atoms) + a, b] += sign * eps
                filt.set_positions(x)
                energies.append(filt.get_potential_energy())
            numeric[a, b] = -(energies[0] - energies[1]) / (2 * eps)
    filt.set_positions(x0)
    assert np.abs(analytic).max() > 1e-4
    np.testing.assert_allclose(numeric, analytic, atol=1e-7)


def test_smooth_at_r_max():
    from ase import Atoms

    model = _model(CULI, polynomial_cutoff_p=6)
    e_inf = model(batch_from_atoms([Atoms("CuLi", positions=[[0, 0, 0], [10, 0, 0]])], R_MAX, CULI))["total_energy"]
    energies, forces = [], []
    for delta in (1e-1, 1e-2, 1e-3):
        d = batch_from_atoms([Atoms("CuLi", positions=[[0, 0, 0], [R_MAX - delta, 0, 0]])], R_MAX, CULI)
        assert d["edge_index"].shape[1] == 2
        out = model(d)
        energies.append(float((out["total_energy"] - e_inf).detach().abs()))
        forces.append(float(out["forces"].abs().max()))
    # the envelope vanishes with its first two derivatives at r_max (u ~ (1-x)^3): energy at least
    # ~delta^3 and force ~delta^2 - both go to zero continuously
    assert energies[0] > 0 and forces[0] > 0
    for k in (1, 2):
        assert energies[k] < 1e-2 * energies[k - 1] and forces[k] < 1e-1 * forces[k - 1], (energies, forces)
    assert energies[2] < 1e-10 and forces[2] < 1e-7
    # just outside: no edge, exactly the isolated energy
    far = model(batch_from_atoms([Atoms("CuLi", positions=[[0, 0, 0], [R_MAX + 1e-3, 0, 0]])], R_MAX, CULI))
    _close(far["total_energy"], e_inf)


def test_fragments_add_up():
    model = _model(CHO)
    a = _molecule()
    b = _molecule()
    b.positions = b.positions @ _random_o3(2, False).T + np.array([R_MAX + 12.0, 0.0, 0.0])
    both = a + b
    out_ab = model(batch_from_atoms([both], R_MAX, CHO))
    out_a = model(batch_from_atoms([a], R_MAX, CHO))
    out_b = model(batch_from_atoms([b], R_MAX, CHO))
    _close(out_ab["total_energy"], out_a["total_energy"] + out_b["total_energy"])
    _close(out_ab["forces"], torch.cat([out_a["forces"], out_b["forces"]]))


def test_batch_equals_one_by_one():
    model = _model(CULI)
    frames = [culi_cell(seed=s, n_rep=1 + (s % 2)) for s in range(3)]
    out = model(batch_from_atoms(frames, R_MAX, CULI))
    start = 0
    for b, atoms in enumerate(frames):
        one = model(batch_from_atoms([atoms], R_MAX, CULI))
        sl = slice(start, start + len(atoms))
        _close(out["total_energy"][b], one["total_energy"][0])
        _close(out["forces"][sl], one["forces"])
        _close(out["stress"][b], one["stress"][0])
        _close(out["atomic_energy"][sl], one["atomic_energy"])
        start += len(atoms)


def test_molecule_stress_is_nan_and_virial_finite():
    model = _model(CHO)
    out = model(batch_from_atoms([_molecule()], R_MAX, CHO))
    assert torch.isnan(out["stress"]).all()
    assert torch.isfinite(out["virial"]).all()
