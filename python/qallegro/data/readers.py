"""Readers for the published formats. Every reader returns a list of :class:`Structure` in eV, Å,
eV/Å and eV/Å³, and says in its docstring which units it converts from.

- extxyz and every other ASE-readable format (``ase.io.read``): taken as eV/Å units (ASE's own).
- rMD17 npz (``nuclear_charges, coords, energies, forces``): kcal/mol and kcal/mol/Å -> eV, eV/Å.
- original MD17 / sGDML npz (``z, R, E, F``): kcal/mol unless the file's ``e_unit``/``r_unit`` say
  otherwise (sGDML writes them); converted to eV, Å.
- QM9 from the ``qm9pack`` wheel's CSV files or original ``dsgdb9nsd_*.xyz`` files: Hartree -> eV,
  with the energy target U0, U, H or G (0 K / 298 K values as in QM9).
"""

from __future__ import annotations

import ast
import csv
import glob
import importlib.util
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
from ase import units
from ase.data import atomic_numbers

from qallegro.data.structure import DataError, Structure

KCAL_MOL = units.kcal / units.mol  # eV per kcal/mol
HARTREE = units.Hartree  # eV per Hartree
_ENERGY_UNITS = {"kcal/mol": KCAL_MOL, "ev": 1.0, "hartree": HARTREE, "ha": HARTREE, "kj/mol": units.kJ / units.mol}
_LENGTH_UNITS = {"ang": 1.0, "angstrom": 1.0, "a": 1.0, "bohr": units.Bohr, "nm": 10.0}

QM9_TARGETS = {"U0": "InternalEnergy_0K_au", "U": "InternalEnergy_298K_au", "H": "Enthalphy_298K_au",
               "G": "GibbsFreeEnergy_298K_au"}
_QM9_XYZ_COLUMNS = ["A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv"]

PathLike = Union[str, os.PathLike]


def _select(frames: List[Structure], index: Union[int, slice, str, Sequence[int]]) -> List[Structure]:
    if isinstance(index, str):
        if index == ":":
            return frames
        parts = [int(p) if p else None for p in index.split(":")]
        return frames[slice(*parts)] if len(parts) > 1 else [frames[parts[0]]]
    if isinstance(index, int):
        return [frames[index]]
    if isinstance(index, slice):
        return frames[index]
    return [frames[i] for i in index]


def read_ase(path: PathLike, index: str = ":", format: Optional[str] = None) -> List[Structure]:
    """Any ASE-readable file (extxyz, VASP OUTCAR/vasprun, CIF, ASE db/traj, ...). Units are ASE's
    (eV, Å, eV/Å, eV/Å³), so nothing is converted; labels come from the frames' calculators."""
    import ase.io

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as exc:  # ASE raises many types; name the file (and frame) as a data error
        located = _locate_xyz_error(path) if _is_xyz(path, format) else None
        raise DataError(located or f"{path}: ASE could not read it ({type(exc).__name__}: {exc})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    return [Structure.from_ase(atoms, source=f"{path}, {_frame_label(index, k)}") for k, atoms in enumerate(frames)]


def _frame_label(index: Union[str, int, slice], k: int) -> str:
    """"frame <i>" with ``i`` the frame's index in the file, for the ``k``-th frame read with ``index``."""
    from ase.io.formats import string2index

    selection = string2index(index) if isinstance(index, str) else index
    if isinstance(selection, int) and selection >= 0:
        return f"frame {selection}"
    if isinstance(selection, slice) and (selection.start or 0) >= 0 and (selection.step or 1) > 0:
        return f"frame {(selection.start or 0) + k * (selection.step or 1)}"
    return f"frame {k} of index {index!r}"  # counted from the end: the file index needs the length


def _is_xyz(path: str, format: Optional[str]) -> bool:
    return format in ("extxyz", "xyz") or (format is None and path.lower().endswith((".xyz", ".extxyz")))


def _xyz_columns(properties: str) -> List[tuple]:
    """``"species:S:1:pos:R:3"`` -> [("species", "S", 1), ("pos", "R", 3)]."""
    parts = properties.split(":")
    return [(parts[i], parts[i + 1].upper(), int(parts[i + 2])) for i in range(0, len(parts) - 2, 3)]


def _locate_xyz_error(path: str) -> Optional[str]:
    """After ASE failed on an (ext)xyz file: the first defect with its frame, atom, line and key,
    or None if this simple scan finds none (ASE's own message is used then)."""
    from ase.io.extxyz import key_val_str_to_dict

    with open(path, errors="replace") as handle:
        lines = handle.read().splitlines()
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}, frame {frame} (line {i + 1})"
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            return f"{where}: expected the number of atoms, got {lines[i][:40]!r}"
        if i + 1 >= len(lines):
            return f"{where}: the file ends after the atom count (truncated)"
        try:
            info = key_val_str_to_dict(lines[i + 1])
            columns = _xyz_columns(str(info.get("Properties", "species:S:1:pos:R:3")))
        except Exception as exc:  # ASE's parser raises several types for a bad comment line
            return f"{path}, frame {frame} (line {i + 2}): cannot parse the comment line ({exc})"
        atoms = lines[i + 2 : i + 2 + n]
        if len(atoms) < n:
            return f"{where}: {len(atoms)} atom lines, expected {n} (the file is truncated inside this frame)"
        expected = sum(c for _, _, c in columns)
        for k, line in enumerate(atoms):
            problem = _check_xyz_atom(line.split(), columns, expected, "Properties" in info)
            if problem:
                return f"{path}, frame {frame}, atom {k} (line {i + 3 + k}): {problem}"
        i += 2 + n
        frame += 1
    return None


def _check_xyz_atom(values: List[str], columns: List[tuple], expected: int, strict: bool) -> Optional[str]:
    if len(values) < expected or (strict and len(values) != expected):
        start = 0
        for name, _, count in columns:  # the first property the short line cannot fill
            if len(values) < start + count:
                break
            start += count
        layout = " ".join(f"{n}:{c}" for n, _, c in columns)
        return f"{len(values)} columns, expected {expected} ({layout}); '{name}' is incomplete"
    start = 0
    for name, kind, count in columns:
        for value in values[start : start + count]:
            if kind == "S" and name in ("species", "symbols") and value not in atomic_numbers:
                return f"unknown element {value!r} in '{name}'"
            try:
                if kind == "R":
                    float(value)
                elif kind == "I":
                    int(value)
            except ValueError:
                return f"'{name}' holds {value!r}, not a number"
        start += count
    return None


def _open_npz(path: str):
    """``np.load`` of an npz archive (no pickles); a missing, damaged or non-npz file names itself."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    import zipfile

    if not zipfile.is_zipfile(path):  # np.load would guess "pickle" and advise allow_pickle=True
        raise DataError(f"{path}: not an npz archive (empty, truncated or another format)")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc})") from exc
    if not hasattr(data, "files"):  # a plain .npy array saved under an .npz name
        raise DataError(f"{path}: a single array, not an npz archive of named arrays")
    return data


def _npz_key(data, path: str, key: str) -> np.ndarray:
    if key not in data:
        raise DataError(f"{path}: missing key {key!r} (keys present: {sorted(data.keys())})")
    try:
        return np.asarray(data[key])
    except ValueError as exc:  # e.g. a ragged array stored as objects (needs pickles)
        raise DataError(f"{path}: key {key!r} cannot be read ({exc}); ragged arrays are not supported") from exc


def _frames_from_arrays(path: str, z: np.ndarray, coords: np.ndarray, energies: np.ndarray,
                        forces: Optional[np.ndarray], e_scale: float, r_scale: float) -> List[Structure]:
    z = z.astype(np.int64).reshape(-1)
    if coords.ndim != 3 or coords.shape[1:] != (z.shape[0], 3):
        raise DataError(f"{path}: coordinates have shape {coords.shape}, expected (frames, {z.shape[0]}, 3)")
    energies = energies.reshape(-1)
    if energies.shape[0] != coords.shape[0]:
        raise DataError(f"{path}: {energies.shape[0]} energies for {coords.shape[0]} frames")
    if forces is not None and forces.shape != coords.shape:
        raise DataError(f"{path}: forces have shape {forces.shape}, expected {coords.shape} (ragged or missing)")
    f_scale = e_scale / r_scale
    return [
        Structure(positions=coords[k] * r_scale, numbers=z, energy=float(energies[k]) * e_scale,
                  forces=None if forces is None else forces[k] * f_scale, source=f"{path}, frame {k}")
        for k in range(coords.shape[0])
    ]


def read_rmd17(path: PathLike) -> List[Structure]:
    """rMD17 npz (Christensen & von Lilienfeld 2020): ``nuclear_charges`` [N], ``coords`` [F, N, 3] Å,
    ``energies`` [F] kcal/mol, ``forces`` [F, N, 3] kcal/mol/Å. Converted to eV and eV/Å."""
    path = str(path)
    with _open_npz(path) as data:
        return _frames_from_arrays(path, _npz_key(data, path, "nuclear_charges"), _npz_key(data, path, "coords"),
                                   _npz_key(data, path, "energies"), _npz_key(data, path, "forces"), KCAL_MOL, 1.0)


def read_md17(path: PathLike) -> List[Structure]:
    """Original MD17 / sGDML npz: ``z`` [N], ``R`` [F, N, 3], ``E`` [F] or [F, 1], ``F`` [F, N, 3].
    Units: kcal/mol and Å (MD17), unless ``e_unit`` / ``r_unit`` keys (sGDML) name others."""
    path = str(path)
    with _open_npz(path) as data:
        e_unit = str(data["e_unit"]) if "e_unit" in data else "kcal/mol"
        r_unit = str(data["r_unit"]) if "r_unit" in data else "Ang"
        if e_unit.lower() not in _ENERGY_UNITS:
            raise DataError(f"{path}: unknown energy unit e_unit={e_unit!r}")
        if r_unit.lower() not in _LENGTH_UNITS:
            raise DataError(f"{path}: unknown length unit r_unit={r_unit!r}")
        return _frames_from_arrays(path, _npz_key(data, path, "z"), _npz_key(data, path, "R"),
                                   _npz_key(data, path, "E"), _npz_key(data, path, "F"),
                                   _ENERGY_UNITS[e_unit.lower()], _LENGTH_UNITS[r_unit.lower()])


def qm9pack_csv_files() -> List[Path]:
    """The CSV parts shipped in the ``qm9pack`` wheel (130,831 molecules)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("QM9 needs the qm9pack wheel: pip install qm9pack")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = sorted(folder.glob("qm9_part*.csv"))
    if not files:
        raise DataError(f"{folder}: no qm9_part*.csv files")
    return files


def read_qm9_csv(paths: Optional[Iterable[PathLike]] = None, target: str = "U0",
                 limit: Optional[int] = None) -> List[Structure]:
    """QM9 from qm9pack-style CSV files (default: the qm9pack wheel's). Columns used: ``Elements``,
    ``XYZ_Ang`` (Å) and the target's column in Hartree (U0, U, H or G), converted to eV. The other
    scalar properties are kept in ``info`` in their original units."""
    if target not in QM9_TARGETS:
        raise ValueError(f"QM9 energy target must be one of {list(QM9_TARGETS)}, got {target!r}")
    column = QM9_TARGETS[target]
    files = [Path(p) for p in paths] if paths is not None else qm9pack_csv_files()
    out: List[Structure] = []
    for path in files:
        with open(path, newline="") as handle:
            for row_number, row in enumerate(csv.DictReader(handle), start=2):
                where = f"{path}, line {row_number} ({row.get('XYZ_file', '?')})"
                try:
                    symbols = ast.literal_eval(row["Elements"])
                    positions = np.array(ast.literal_eval(row["XYZ_Ang"]), dtype=np.float64)
                    energy = float(row[column]) * HARTREE
                except KeyError as exc:
                    raise DataError(f"{where}: missing column {exc}") from exc
                except (ValueError, SyntaxError) as exc:
                    raise DataError(f"{where}: cannot parse ({exc})") from exc
                numbers = _numbers(symbols, where)
                info = {"qm9_id": row.get("XYZ_file", ""), "smiles": row.get("SMILES", ""), "target": target}
                out.append(Structure(positions=positions, numbers=numbers, energy=energy, info=info, source=where))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def _qm9_float(text: str) -> float:
    return float(text.replace("*^", "e"))  # the original files use Mathematica's exponent notation


def read_qm9_xyz(paths: Union[PathLike, Iterable[PathLike]], target: str = "U0") -> List[Structure]:
    """Original QM9 ``dsgdb9nsd_*.xyz`` files (a file, a list, or a folder/glob). Line 2 holds
    ``gdb id A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv`` (energies in Hartree, converted to
    eV); atom lines are ``element x y z mulliken_charge`` in Å."""
    if target not in QM9_TARGETS:
        raise ValueError(f"QM9 energy target must be one of {list(QM9_TARGETS)}, got {target!r}")
    if isinstance(paths, (str, os.PathLike)):
        p = str(paths)
        files = sorted(glob.glob(os.path.join(p, "dsgdb9nsd_*.xyz"))) if os.path.isdir(p) else sorted(glob.glob(p))
        if not files:
            raise FileNotFoundError(f"{p}: no QM9 xyz files")
    else:
        files = [str(p) for p in paths]
    out = []
    for path in files:
        with open(path) as handle:
            lines = handle.read().splitlines()
        try:
            n = int(lines[0])
            props = lines[1].split()
            values = dict(zip(_QM9_XYZ_COLUMNS, (_qm9_float(v) for v in props[2:2 + len(_QM9_XYZ_COLUMNS)])))
            atoms = [lines[2 + k].split() for k in range(n)]
            symbols = [a[0] for a in atoms]
            positions = np.array([[_qm9_float(x) for x in a[1:4]] for a in atoms])
        except (ValueError, IndexError) as exc:
            raise DataError(f"{path}: not a QM9 xyz file ({exc})") from exc
        if target not in values:
            raise DataError(f"{path}: line 2 has no {target} value")
        info = {k: v for k, v in values.items()}
        info.update({"qm9_id": os.path.basename(path), "target": target})
        out.append(Structure(positions=positions, numbers=_numbers(symbols, path),
                             energy=values[target] * HARTREE, info=info, source=path))
    return out


def _numbers(symbols: Sequence[str], where: str) -> np.ndarray:
    try:
        return np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"{where}: unknown element {exc}") from exc


def read(path: PathLike, index: str = ":", format: Optional[str] = None, **kwargs) -> List[Structure]:
    """Reads any supported file; the format is taken from ``format`` or guessed from the file.

    format: None (guess), "rmd17", "md17", "qm9-csv", "qm9-xyz", or any ASE format name.
    """
    p = str(path)
    fmt = format
    if fmt is None:
        if p.endswith(".npz"):
            with _open_npz(p) as data:
                keys = set(data.keys())
            if {"nuclear_charges", "coords"} <= keys:
                fmt = "rmd17"
            elif {"z", "R"} <= keys:
                fmt = "md17"
            else:
                raise DataError(f"{p}: npz file with keys {sorted(keys)} is neither rMD17 nor MD17/sGDML")
        elif p.endswith(".csv"):
            fmt = "qm9-csv"
        elif os.path.basename(p).startswith("dsgdb9nsd_") or os.path.isdir(p):
            fmt = "qm9-xyz"
    if fmt == "rmd17":
        frames = read_rmd17(p)
    elif fmt == "md17":
        frames = read_md17(p)
    elif fmt == "qm9-csv":
        frames = read_qm9_csv([p], **kwargs)
    elif fmt == "qm9-xyz":
        frames = read_qm9_xyz(p, **kwargs)
    else:
        return read_ase(p, index=index, format=fmt)
    return _select(frames, index)
