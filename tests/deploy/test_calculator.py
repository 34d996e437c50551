"""ASE calculator: properties, finite-difference checks of forces and stress, bad input."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.test import gradient_test
from ase.filters import FrechetCellFilter

from tests.deploy.conftest import assert_close, culi_cell, culi_dft_frame, molecule

from qallegro.calculator import QAllegroCalculator

# gradient_test steps eps = 1e-1 ... 1e-8; the best of them must agree with the analytic derivative
FD_TOL = 1e-6


def best_fd_error(obj, indices):
    """Smallest max|analytic - numeric| over the steps of ASE's gradient_test (it prints a table)."""
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        analytic, _ = gradient_test(obj, indices=indices)
    assert np.isfinite(analytic).all()
    errors = [float(line.split()[1]) for line in table.getvalue().splitlines()[1:] if line.strip()]
    assert len(errors) == 8, table.getvalue()
    return min(errors)


def test_properties_periodic(any_export):
    kind, path = any_export
    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(path)
    energy = atoms.get_potential_energy()
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert_close(energies.sum(), energy, what=f"{kind}: sum of per-atom energies")
    assert atoms.get_potential_energy(force_consistent=True) == energy  # free_energy
    assert atoms.get_forces().shape == (len(atoms), 3)
    assert atoms.get_stress().shape == (6,)
    assert np.isfinite(atoms.get_stress()).all()


def test_path_and_module_agree(morse_model, morse_export):
    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(morse_export)
    e1, f1, s1 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = QAllegroCalculator(morse_model)
    assert_close(atoms.get_potential_energy(), e1, what="energy")
    assert_close(atoms.get_forces(), f1, what="forces")
    assert_close(atoms.get_stress(), s1, what="stress")


@pytest.mark.parametrize("structure", ["periodic", "molecule"])
def test_qdi_export_equals_python_model(qdi_export, structure):
    """ASE with the exported Allegro+QDI file (both placements) == ASE with the Python model object:
    energy, per-atom energies, forces and stress, float64, to 1e-8 relative."""
    placement, model, path = qdi_export
    atoms = culi_cell() if structure == "periodic" else molecule()
    results = []
    for calc in (QAllegroCalculator(model), QAllegroCalculator(path)):
        atoms.calc = calc
        props = [atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces()]
        if structure == "periodic":
            props.append(atoms.get_stress())
        results.append(props)
    names = ("energy", "energies", "forces", "stress")
    for name, want, got in zip(names, *results):
        want, got = np.asarray(want), np.asarray(got)
        scale = float(np.abs(want).max())
        assert scale > 1e-4, f"{placement} {name}: reference is ~0, the comparison would be vacuous"
        err = float(np.abs(got - want).max())
        assert err <= 1e-8 * scale, f"{placement} {structure} {name}: max |difference| {err:.3g} (scale {scale:.3g})"


def test_forces_match_finite_differences(any_export):
    kind, path = any_export
    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(path)
    assert best_fd_error(atoms, indices=[0, 17]) < FD_TOL, kind


def test_stress_matches_finite_differences(any_export):
    kind, path = any_export
    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(path)
    cell_filter = FrechetCellFilter(atoms)
    n = len(atoms)
    assert best_fd_error(cell_filter, indices=[n, n + 2]) < FD_TOL, kind


def test_molecule_forces_and_no_stress(morse_export):
    atoms = molecule()
    atoms.calc = QAllegroCalculator(morse_export)
    assert best_fd_error(atoms, indices=[0, 3]) < FD_TOL
    assert_close(atoms.get_forces().sum(0), np.zeros(3), what="net force on a molecule")
    with pytest.raises(PropertyNotImplementedError, match="stress needs a periodic cell"):
        atoms.get_stress()


def test_real_dft_frame(morse_export):
    """A shipped Cu-Li DFT frame: energy = sum of atom energies
    and forces are finite differences of the energy."""
    atoms = culi_dft_frame()
    atoms.calc = QAllegroCalculator(morse_export)
    assert_close(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), what="energies")
    assert best_fd_error(atoms, indices=[0]) < FD_TOL


def test_unknown_element_is_named(morse_export):
    atoms = culi_cell()
    atoms.symbols[4] = "Au"
    atoms.calc = QAllegroCalculator(morse_export)
    with pytest.raises(ValueError, match=r"atom 4 is 'Au'.*Cu Li C H O"):
        atoms.get_potential_energy()


def test_not_an_export(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a qallegro export"):
        QAllegroCalculator(path)


def test_ase_md_example(morse_export):
    """examples/ase_md.py runs NVE with the calculator and keeps the total energy (float64 model)."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "ase_md.py"
    proc = subprocess.run([sys.executable, str(example), str(morse_export), "--steps", "40", "--timestep-fs", "0.5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("step")]
    assert len(rows) == 11, proc.stdout
    drifts = [abs(float(ln.split("drift")[1].split()[0])) for ln in rows]
    assert max(drifts) < 1e-4, proc.stdout
    assert rows[0].split()[1] == "0" and rows[-1].split()[1] == "40"


@pytest.mark.parametrize("kind", ["allegro", "allegro_qdi"])
def test_per_atom_stresses_and_edge_forces(kind, tmp_path):
    """Allegro exports give per-atom stresses that sum to the stress, and pair forces -dE/dr_ij from
    which the forces and the virial follow (float64, round-off)."""
    from qallegro.deploy.export import export, load

    from tests.deploy.conftest import TYPE_NAMES, build_real
    from tests.deploy.test_export import periodic_inputs

    path = tmp_path / f"{kind}.pt"
    export(build_real(kind), path)
    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(path)
    stress, stresses = atoms.get_stress(), atoms.get_stresses()
    module = load(path)[0]
    assert "atomic_virial" not in module(periodic_inputs(atoms, TYPE_NAMES))  # only on request
    assert stresses.shape == (len(atoms), 6)
    assert np.abs(stresses).max() > 1e-6 and np.abs(stresses - stresses[0]).max() > 1e-8  # not trivially equal
    assert_close(stresses.sum(0), stress, what=f"{kind}: sum of per-atom stresses")
    edge_index, edge_forces = atoms.calc.results["edge_index"], atoms.calc.results["edge_forces"]
    assert edge_forces.shape == (edge_index.shape[1], 3)
    # -dE/dr_ij acts on the neighbour j, its opposite on the centre i
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, edge_index[1], edge_forces)
    np.add.at(forces, edge_index[0], -edge_forces)
    assert_close(forces, atoms.get_forces(), what=f"{kind}: forces from pair forces")
    pos = atoms.positions
    from qallegro.ops import neighbor_list
    import torch

    _, shifts = neighbor_list(torch.tensor(pos), 4.0, torch.tensor(atoms.cell[:]), True)
    vectors = pos[edge_index[1]] - pos[edge_index[0]] + shifts.numpy() @ atoms.cell[:]
    virial = np.einsum("ea,eb->ab", vectors, edge_forces)  # W = -Σ r ⊗ dE/dr
    from ase.stress import full_3x3_to_voigt_6_stress

    assert_close(full_3x3_to_voigt_6_stress(-0.5 * (virial + virial.T) / atoms.get_volume()), stress,
                 what=f"{kind}: virial from pair forces")


def test_stresses_need_a_cell(tmp_path):
    from qallegro.deploy.export import export

    from tests.deploy.conftest import build_real

    export(build_real("allegro"), tmp_path / "a.pt")
    atoms = molecule()
    atoms.calc = QAllegroCalculator(tmp_path / "a.pt")
    with pytest.raises(PropertyNotImplementedError, match="stresses needs a periodic cell"):
        atoms.get_stresses()


def test_float32_model_total_energy_is_a_float64_sum():
    """A float32 model with large per-atom energies: the total is the float64 sum of the per-atom
    energies (the float32 total it computes itself is off by ~1e-3 eV here)."""
    import math

    import torch

    from tests.deploy.conftest import build_real

    model = build_real("allegro", dtype="float32", per_type_energy_shifts=[-6113.17, -203.9, -1029.4, -13.6, -2041.2])
    atoms = culi_cell() * (2, 2, 2)
    atoms.calc = QAllegroCalculator(model)
    energies = atoms.get_potential_energies()
    energy = atoms.get_potential_energy()
    assert energy == math.fsum(energies) or abs(energy - math.fsum(energies)) < 1e-9
    float32_total = float(torch.tensor(energies, dtype=torch.float32).sum())
    assert abs(float32_total - math.fsum(energies)) > 1e-4  # the case is one where float32 accumulation errs
