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
    """A Cu-Li frame of the shared VASP data (skipped without it): energy = sum of atom energies
    and forces are finite differences of the energy."""
    atoms = culi_dft_frame()
    if atoms is None:
        pytest.skip("shared data culi_vasp_rss.extxyz not present")
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
