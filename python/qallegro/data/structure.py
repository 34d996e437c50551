"""One atomic structure (a frame) with optional DFT labels, in eV, Å, eV/Å and eV/Å³."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch
from ase.data import chemical_symbols

from qallegro.errors import QAllegroError
from qallegro.ops.neighbor_list import periodic_cell_is_singular


class DataError(QAllegroError):
    """Bad input data; the message names the file, frame and key at fault."""


@dataclass
class Structure:
    """One frame.

    positions: [N, 3] Å; numbers: [N] atomic numbers; cell: [3, 3] Å (rows are lattice vectors,
    zeros when there is none); pbc: [3] bool; energy: eV (total); forces: [N, 3] eV/Å;
    stress: [3, 3] eV/Å³ with ASE's sign (negative diagonal = compressed cell); info: free-form.
    ``source`` says where the frame came from (file and frame index) for error messages.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    info: Dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        pbc = np.asarray(self.pbc, dtype=bool).reshape(-1)
        self.pbc = np.repeat(pbc, 3) if pbc.size == 1 else pbc
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        if self.stress is not None:
            self.stress = _full_stress(np.asarray(self.stress, dtype=np.float64), self.source)
        if self.energy is not None:
            self.energy = float(self.energy)
        self.validate()

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def validate(self) -> None:
        """Raise :class:`DataError` naming the frame and key of any inconsistency."""
        where = self.source
        n = self.numbers.shape[0]
        if self.positions.shape != (n, 3):
            raise DataError(f"{where}: 'positions' has shape {self.positions.shape}, expected ({n}, 3)")
        if self.pbc.shape != (3,):
            raise DataError(f"{where}: 'pbc' must be 3 bools, got {self.pbc.tolist()}")
        bad = [int(z) for z in self.numbers if z < 1 or z >= len(chemical_symbols)]
        if bad:
            raise DataError(f"{where}: unknown element with atomic number {bad[0]}")
        _finite(self.positions, where, "positions")
        _finite(self.cell, where, "cell")
        if periodic_cell_is_singular(torch.from_numpy(self.cell), torch.from_numpy(self.pbc)):
            raise DataError(
                    f"{where}: 'cell' is singular along periodic directions (pbc={self.pbc.tolist()}, "
                    f"cell={self.cell.tolist()})"
                )
        if self.energy is not None and not np.isfinite(self.energy):
            raise DataError(f"{where}: 'energy' is {self.energy}")
        if self.forces is not None:
            if self.forces.shape != (n, 3):
                raise DataError(f"{where}: 'forces' has shape {self.forces.shape}, expected ({n}, 3)")
            _finite(self.forces, where, "forces")
        if self.stress is not None:
            _finite(self.stress, where, "stress")

    @property
    def symbols(self) -> list:
        return [chemical_symbols[z] for z in self.numbers]

    def to_ase(self):
        """An ``ase.Atoms`` with the labels attached as a SinglePointCalculator."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            s = self.stress
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_ase(cls, atoms, source: str = "<ase.Atoms>") -> "Structure":
        """From an ``ase.Atoms``; labels are taken from its calculator results (if any)."""
        energy = forces = stress = None
        calc = atoms.calc
        results = getattr(calc, "results", {}) if calc is not None else {}
        if "energy" in results:
            energy = results["energy"]
        elif "free_energy" in results:
            energy = results["free_energy"]
        if "forces" in results:
            forces = results["forces"]
        if "stress" in results:
            stress = results["stress"]
        info = {k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str, bool, np.number))}
        return cls(
            positions=atoms.get_positions(),
            numbers=atoms.get_atomic_numbers(),
            cell=np.asarray(atoms.get_cell()),
            pbc=atoms.get_pbc(),
            energy=energy,
            forces=forces,
            stress=stress,
            info=info,
            source=source,
        )


def _finite(array: np.ndarray, where: str, key: str) -> None:
    if not np.isfinite(array).all():
        index = np.argwhere(~np.isfinite(array))[0]
        raise DataError(f"{where}: '{key}' contains NaN/inf (at index {index.tolist()})")


def _full_stress(stress: np.ndarray, where: str) -> np.ndarray:
    """Voigt (xx, yy, zz, yz, xz, xy) or full [3, 3] stress to [3, 3]."""
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if stress.shape == (9,):
        return stress.reshape(3, 3)
    raise DataError(f"{where}: 'stress' has shape {stress.shape}; expected 6 (Voigt), 9 or (3, 3)")
