"""Starting structures for the generator: Cu_xLi_(1-x) alloys, molecules, structure files.

A *system* hands the samplers fresh starting structures drawn with a caller's random generator, so
every frame of a generated data set is a pure function of (seed, sampler, frame index).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

# Experimental volume per atom (Å³) of the stable phases: fcc Cu a = 3.615 Å, bcc Li a = 3.51 Å.
# Alloy cells take Vegard's law on the volume per atom; the strain sampler covers the rest.
VOLUME_PER_ATOM = {"Cu": 3.615**3 / 4.0, "Li": 3.51**3 / 2.0}
ATOMS_PER_CUBIC_CELL = {"fcc": 4, "bcc": 2, "sc": 1}


class System:
    """Source of starting structures. ``periodic`` says which samplers apply."""

    periodic: bool = False
    name: str = "system"

    def bulk(self, rng: np.random.Generator) -> Tuple[Atoms, str]:
        """A starting structure and a short description (``"fcc Cu20Li12"``)."""
        raise NotImplementedError

    def surface(self, rng: np.random.Generator) -> Tuple[Atoms, str]:
        """A periodic slab with vacuum, for the ``surface`` sampler."""
        raise ValueError(f"system {self.name!r} has no surfaces (the surface sampler needs a periodic system)")


def cubic_repeats(atoms_per_cell: int, n_min: int, n_max: int) -> List[Tuple[int, int, int]]:
    """Near-cubic supercell repeats (a <= b <= c <= 2a) whose atom count lies in [n_min, n_max]."""
    out = []
    for a, b, c in itertools.product(range(1, 9), repeat=3):
        if a <= b <= c <= 2 * a and n_min <= atoms_per_cell * a * b * c <= n_max:
            out.append((a, b, c))
    return out


def assign_composition(atoms: Atoms, x_cu: float, rng: np.random.Generator) -> Atoms:
    """Random occupation of the sites with round(x_cu * N) Cu atoms and Li elsewhere (in place)."""
    n = len(atoms)
    n_cu = int(round(x_cu * n))
    symbols = np.array(["Li"] * n, dtype=object)
    symbols[rng.permutation(n)[:n_cu]] = "Cu"
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def vegard_lattice_constant(lattice: str, x_cu: float, volumes: Optional[Dict[str, float]] = None) -> float:
    """Cubic lattice constant (Å) of a ``lattice`` cell with Vegard's volume per atom (Å³ per element in
    ``volumes``, the experimental ones by default)."""
    volumes = VOLUME_PER_ATOM if volumes is None else volumes
    volume = x_cu * volumes["Cu"] + (1.0 - x_cu) * volumes["Li"]
    return float((ATOMS_PER_CUBIC_CELL[lattice] * volume) ** (1.0 / 3.0))


@dataclass
class CuLiAlloy(System):
    """Cu_xLi_(1-x) on fcc and bcc lattices with random site occupation.

    compositions: Cu fractions x to draw from; lattices: subset of fcc, bcc;
    atoms: inclusive range of atoms per cell (surfaces use the same range).
    volumes: volume per atom (Å³) of pure Cu and Li for Vegard's law; the experimental ones by default.
        A reference method with other equilibrium volumes (GFN1-xTB: Cu 14.5, Li 36 Å³) samples best
        around its own.
    """

    compositions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    lattices: Sequence[str] = ("fcc", "bcc")
    atoms: Tuple[int, int] = (32, 64)
    vacuum: float = 6.0
    volumes: Dict[str, float] = field(default_factory=lambda: dict(VOLUME_PER_ATOM))
    periodic: bool = True
    name: str = "culi"
    _repeats: Dict[str, List[Tuple[int, int, int]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if set(self.volumes) != {"Cu", "Li"} or min(self.volumes.values()) <= 0:
            raise ValueError(f"culi: volumes must give positive Cu and Li volumes per atom, got {self.volumes}")
        for x in self.compositions:
            if not 0.0 <= float(x) <= 1.0:
                raise ValueError(f"culi: composition x={x} is not a Cu fraction in [0, 1]")
        for lattice in self.lattices:
            if lattice not in ("fcc", "bcc"):
                raise ValueError(f"culi: lattice {lattice!r} is not one of fcc, bcc")
            repeats = cubic_repeats(ATOMS_PER_CUBIC_CELL[lattice], *self.atoms)
            if not repeats:
                raise ValueError(f"culi: no {lattice} supercell has {self.atoms[0]}-{self.atoms[1]} atoms")
            self._repeats[lattice] = repeats

    def _draw(self, rng: np.random.Generator) -> Tuple[str, float, float]:
        lattice = str(rng.choice(list(self.lattices)))
        x_cu = float(rng.choice(np.asarray(self.compositions, dtype=float)))
        return lattice, x_cu, vegard_lattice_constant(lattice, x_cu, self.volumes)

    def bulk(self, rng: np.random.Generator) -> Tuple[Atoms, str]:
        from ase.build import bulk

        lattice, x_cu, a = self._draw(rng)
        repeats = self._repeats[lattice]
        rep = repeats[int(rng.integers(len(repeats)))]
        atoms = bulk("Cu", lattice, a=a, cubic=True).repeat(rep)
        assign_composition(atoms, x_cu, rng)
        return atoms, f"{lattice} {atoms.get_chemical_formula()}"

    def surface(self, rng: np.random.Generator) -> Tuple[Atoms, str]:
        from ase.build import bcc100, bcc110, fcc100, fcc111

        lattice, x_cu, a = self._draw(rng)
        builders = {"fcc": {"100": fcc100, "111": fcc111}, "bcc": {"100": bcc100, "110": bcc110}}[lattice]
        facet = str(rng.choice(sorted(builders)))
        # Lateral size 2x2 or 3x3 (111/110 need an even second repeat for an orthogonal cell),
        # then as many layers as fit the atom range; at least 4 layers so a bulk-like centre remains.
        options = []
        for nxy in ((2, 2), (3, 2), (2, 4), (3, 4), (4, 4)):
            for layers in range(4, 17):
                if self.atoms[0] <= nxy[0] * nxy[1] * layers <= self.atoms[1]:
                    options.append((nxy[0], nxy[1], layers))
        if not options:
            raise ValueError(f"culi: no slab has {self.atoms[0]}-{self.atoms[1]} atoms")
        size = options[int(rng.integers(len(options)))]
        kwargs = {"orthogonal": True} if facet in ("111", "110") else {}
        atoms = builders[facet]("Cu", size=size, a=a, vacuum=self.vacuum, **kwargs)
        # Periodic in all directions (a slab with vacuum) so every calculator sees one cell and a stress.
        atoms.pbc = True
        assign_composition(atoms, x_cu, rng)
        return atoms, f"{lattice}({facet}) slab {atoms.get_chemical_formula()}"


@dataclass
class FixedStructures(System):
    """Starting structures given as a list of Atoms (a molecule, or frames read from a file)."""

    structures: Sequence[Atoms] = ()
    name: str = "structures"

    def __post_init__(self) -> None:
        if not self.structures:
            raise ValueError(f"system {self.name!r}: no starting structures")
        pbcs = {bool(a.pbc.any()) for a in self.structures}
        if len(pbcs) != 1:
            raise ValueError(f"system {self.name!r}: mixes periodic and non-periodic structures")
        self.periodic = pbcs.pop()

    def bulk(self, rng: np.random.Generator) -> Tuple[Atoms, str]:
        atoms = self.structures[int(rng.integers(len(self.structures)))].copy()
        atoms.calc = None
        return atoms, atoms.get_chemical_formula()


def molecule_from_smiles(smiles: str, seed: int = 0) -> Atoms:
    """A 3D molecule (with hydrogens) from a SMILES string: RDKit's ETKDG embedding, then MMFF94.

    The geometry is only a starting point (MD and rattles move it); ``seed`` fixes the embedding.
    Needs the optional package rdkit.
    """
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as err:
        raise ImportError("system 'smiles:...' needs the package rdkit: pip install rdkit") from err
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"system smiles:{smiles}: RDKit cannot parse this SMILES string")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"system smiles:{smiles}: RDKit could not embed a 3D geometry")
    AllChem.MMFFOptimizeMolecule(mol)
    positions = mol.GetConformer().GetPositions()
    return Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=positions)


def parse_system(spec: str, compositions: Optional[Sequence[float]] = None,
                 lattices: Optional[Sequence[str]] = None,
                 atoms_range: Optional[Tuple[int, int]] = None,
                 volumes: Optional[Dict[str, float]] = None) -> System:
    """A system from its command-line spelling.

    ``culi`` (Cu-Li alloys; ``compositions``, ``lattices``, ``atoms_range``, ``volumes`` apply), a molecule name of
    ASE's g2 set (``C6H6``, ``benzene``, ``H2O``), ``smiles:SMILES`` (embedded by RDKit), or
    ``file:PATH`` (every frame of PATH is a start).
    """
    if spec == "culi":
        kwargs = {}
        if compositions is not None:
            kwargs["compositions"] = tuple(compositions)
        if lattices is not None:
            kwargs["lattices"] = tuple(lattices)
        if atoms_range is not None:
            kwargs["atoms"] = tuple(atoms_range)
        if volumes is not None:
            kwargs["volumes"] = dict(volumes)
        return CuLiAlloy(**kwargs)
    if spec.startswith("file:"):
        import ase.io

        path = spec[len("file:"):]
        try:
            frames = ase.io.read(path, ":")
        except FileNotFoundError as err:
            raise ValueError(f"system file {path!r} does not exist") from err
        return FixedStructures(structures=list(frames), name=spec)
    if spec.startswith("smiles:"):
        return FixedStructures(structures=[molecule_from_smiles(spec[len("smiles:"):])], name=spec)
    from ase.build import molecule
    from ase.collections import g2

    aliases = {"benzene": "C6H6", "water": "H2O", "methane": "CH4", "ethanol": "CH3CH2OH"}
    name = aliases.get(spec.lower(), spec)
    if name not in g2.names:
        raise ValueError(f"unknown system {spec!r}: use 'culi', a g2 molecule name such as C6H6, smiles:SMILES or file:PATH")
    return FixedStructures(structures=[molecule(name)], name=spec)
