"""Shared helpers of the Allegro model tests: tolerance table, batches from ASE, small models."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

#: one (dtype) -> (rtol, atol) table for every model test
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-4, 2e-5)}
#: nequip-allegro parity (relative, float64): measured at most 3.6e-15, asserted with a margin
PARITY_RTOL = 1e-12

SMALL = dict(
    l_max=2,
    num_layers=2,
    num_scalar_features=16,
    num_tensor_features=4,
    num_bessels=6,
    scalar_embed_mlp_hidden_layers_width=16,
    allegro_mlp_hidden_layers_width=16,
    readout_mlp_hidden_layers_width=8,
    avg_num_neighbors=8.0,
)


def batch_from_atoms(atoms_list: Sequence, r_max: float, type_names: Sequence[str], dtype=torch.float64) -> Dict[str, torch.Tensor]:
    """The data-contract dict of several ase.Atoms (ASE's neighbour list, full, both directions)."""
    from ase.neighborlist import primitive_neighbor_list

    pos, types, edges, shifts, cells, pbcs, batch, counts = [], [], [], [], [], [], [], []
    offset = 0
    for b, atoms in enumerate(atoms_list):
        i, j, s = primitive_neighbor_list(
            "ijS", atoms.pbc, atoms.cell.array, atoms.positions, r_max, self_interaction=False
        )
        pos.append(atoms.positions)
        types.append([type_names.index(z) for z in atoms.get_chemical_symbols()])
        edges.append(np.stack([i, j]) + offset)
        shifts.append(s)
        cells.append(atoms.cell.array if atoms.cell.rank == 3 else np.zeros((3, 3)))
        pbcs.append(atoms.pbc)
        batch.append(np.full(len(atoms), b))
        counts.append(len(atoms))
        offset += len(atoms)
    return {
        "pos": torch.tensor(np.concatenate(pos), dtype=dtype),
        "atom_type": torch.tensor(np.concatenate(types), dtype=torch.long),
        "edge_index": torch.tensor(np.concatenate(edges, axis=1), dtype=torch.long),
        "edge_cell_shift": torch.tensor(np.concatenate(shifts), dtype=dtype),
        "cell": torch.tensor(np.stack(cells), dtype=dtype),
        "pbc": torch.tensor(np.stack(pbcs), dtype=torch.bool),
        "batch": torch.tensor(np.concatenate(batch), dtype=torch.long),
        "num_atoms": torch.tensor(counts, dtype=torch.long),
    }


def read_builtin(name: str, index: str = ":") -> List:
    """ase.Atoms frames of a data set shipped with qallegro (see qallegro.data.datasets.BUILTIN)."""
    import ase.io

    from qallegro.data.datasets import builtin_path

    frames = ase.io.read(str(builtin_path(name)), index)
    return frames if isinstance(frames, list) else [frames]


def culi_cell(seed: int = 0, n_rep: int = 2, rattle: float = 0.1):
    """A periodic Cu-Li bcc supercell with random species and rattled positions (no data needed)."""
    from ase.build import bulk

    atoms = bulk("Cu", "bcc", a=2.9, cubic=True).repeat((n_rep, n_rep, n_rep))
    rng = np.random.default_rng(seed)
    symbols = rng.choice(["Cu", "Li"], size=len(atoms))
    atoms.set_chemical_symbols(symbols)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    atoms.cell = atoms.cell.array @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3)))  # triclinic
    return atoms


class ModelCalculator:
    """Minimal ASE calculator around a qallegro model (test-only; deployment has its own)."""

    @staticmethod
    def make(model, type_names: Sequence[str]):
        from ase.calculators.calculator import Calculator, all_changes

        class _Calc(Calculator):
            implemented_properties = ["energy", "free_energy", "forces", "stress"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                data = batch_from_atoms([self.atoms], model.r_max, type_names, dtype=torch.float64)
                out = model(data)
                self.results["energy"] = float(out["total_energy"].detach().sum())
                self.results["free_energy"] = self.results["energy"]
                self.results["forces"] = out["forces"].detach().numpy().copy()
                if self.atoms.cell.rank == 3:
                    s = out["stress"][0].detach().numpy()
                    self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])

        return _Calc()
