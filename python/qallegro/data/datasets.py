"""Named data sets: the reference data shipped with qallegro (``python/qallegro/data/builtin``, see
its README for provenance), QM9 from the ``qm9pack`` wheel, or any file ``qallegro.data.read`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from qallegro.data.readers import read, read_qm9_csv
from qallegro.data.structure import DataError, Structure

BUILTIN_DIR = Path(__file__).parent / "builtin"

#: name -> (file in builtin/, description)
BUILTIN: Dict[str, tuple] = {
    "culi-gfn1xtb": ("culi_gfn1xtb.extxyz", "Cu_xLi_(1-x) fcc/bcc cells, 32-64 atoms, GFN1-xTB (tblite)"),
    "culi-gpaw": ("culi_gpaw_pbe.extxyz", "8-atom Cu-Li cells, PBE (GPAW LCAO dzp)"),
    "benzene": ("benzene_pbe_def2svp.extxyz", "benzene MD at 500 K, PBE/def2-SVP (PySCF)"),
    "aspirin": ("aspirin_pbe_def2svp.extxyz", "aspirin MD at 500 K, PBE/def2-SVP (PySCF)"),
}


def builtin_path(name: str) -> Path:
    """Path of a shipped data set by name (see :data:`BUILTIN`)."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in data set {name!r}; known: {sorted(BUILTIN)}")
    path = BUILTIN_DIR / BUILTIN[name][0]
    if not path.exists():
        raise DataError(f"built-in data set {name!r} has not been generated yet ({path} is missing)")
    return path


def available() -> List[str]:
    """Names of the shipped data sets present in this installation, and ``qm9``."""
    return [name for name, (file, _) in BUILTIN.items() if (BUILTIN_DIR / file).exists()] + ["qm9"]


def load_dataset(name_or_path: str, limit: Optional[int] = None, qm9_target: str = "U0") -> List[Structure]:
    """Structures of a named data set (a built-in name, ``qm9``) or of a file.

    limit: keep only the first ``limit`` structures (QM9 has 130,831).
    """
    if name_or_path == "qm9":
        return read_qm9_csv(target=qm9_target, limit=limit)
    path = builtin_path(name_or_path) if name_or_path in BUILTIN else Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"{name_or_path}: neither a file nor a data set name (built-in: {sorted(BUILTIN)}, or qm9)"
        )
    frames = read(path)
    return frames[:limit] if limit is not None else frames
