"""ASE calculator for qallegro models: ``QAllegroCalculator(path_or_model, device=...)``.

It runs the same forward as the exported TorchScript file (:class:`~qallegro.deploy.export.
DeployedModel`), so ASE, LAMMPS and pair_allegro-style hosts see one contract.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

import qallegro.deploy.export as _export


def _voigt(tensors: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 6] in ASE's order xx yy zz yz xz xy, off-diagonals averaged (per-atom
    virials are not symmetric; their sum is)."""
    t = tensors
    return np.stack([t[..., 0, 0], t[..., 1, 1], t[..., 2, 2], 0.5 * (t[..., 1, 2] + t[..., 2, 1]),
                     0.5 * (t[..., 0, 2] + t[..., 2, 0]), 0.5 * (t[..., 0, 1] + t[..., 1, 0])], axis=-1)


class QAllegroCalculator(Calculator):
    """Energy (eV), free_energy (eV), forces (eV/Å), stress (eV/Å³, ASE sign), per-atom energies
    (eV) and, for Allegro models, per-atom stresses (``stresses``, eV/Å³, summing to ``stress``)
    from a qallegro model. The total energy is the float64 sum of the per-atom energies, whatever
    the model's precision. Allegro models also leave ``edge_index`` [2, E] and ``edge_forces``
    [E, 3] (eV/Å, -dE/dr_ij) in ``calc.results`` after each calculation.

    path_or_model: a file written by ``qallegro export`` or an ``nn.Module`` on the qallegro data
    contract (with ``type_names``, ``r_max`` and ``kind`` attributes, as ``qallegro.models.build``
    returns). device: torch device the model runs on ("cpu", "cuda", ...).
    Atoms are mapped to model types by chemical symbol; stress needs a cell with volume.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "stresses"]

    def __init__(
        self,
        path_or_model: Union[str, os.PathLike, torch.nn.Module],
        device: Union[str, torch.device] = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        if isinstance(path_or_model, torch.nn.Module):
            deployed = _export.wrap(path_or_model)
            dtype = _export.model_dtype(path_or_model)
            self.metadata: Dict[str, str] = _export.metadata_of(deployed, dtype)
            self.model = deployed.to(self.device)
        else:
            self.model, self.metadata = _export.load(path_or_model, device=self.device)
        self.dtype = _export.dtype_of(self.metadata)
        self.r_max = float(self.metadata["r_max"])
        self.type_names: List[str] = self.metadata["type_names"].split()
        self._type_index = {name: k for k, name in enumerate(self.type_names)}

    def atom_types(self, symbols: Sequence[str]) -> torch.Tensor:
        """[N] int64 type indices of ``symbols``; ValueError names the first unknown atom."""
        types = []
        for index, symbol in enumerate(symbols):
            if symbol not in self._type_index:
                raise ValueError(
                    f"atom {index} is {symbol!r}, which this model does not know "
                    f"(its types: {' '.join(self.type_names)})"
                )
            types.append(self._type_index[symbol])
        return torch.tensor(types, dtype=torch.long)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        atom_type = self.atom_types(atoms.get_chemical_symbols())
        pos = torch.tensor(atoms.get_positions(), dtype=self.dtype)
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        cell_np = np.asarray(atoms.get_cell()[:], dtype=float)
        has_cell = bool(pbc.any())
        cell = torch.tensor(cell_np if has_cell else np.zeros((3, 3)), dtype=self.dtype)
        # the neighbour list runs where the model does not matter: its output is small integers
        from qallegro.ops import neighbor_list

        edge_index, shifts = neighbor_list(pos, self.r_max, cell if has_cell else None, pbc.tolist())
        data = {
            "pos": pos.to(self.device),
            "atom_types": atom_type.to(self.device),
            "edge_index": edge_index.to(self.device),
            "edge_cell_shift": shifts.to(device=self.device, dtype=self.dtype),
            "cell": cell.reshape(1, 3, 3).to(self.device),
        }
        if "stresses" in properties:
            data["want_atomic_virial"] = torch.ones(1)
        out = self.model(data)
        energies = out["atomic_energy"].detach().reshape(-1).cpu().double().numpy()
        # summed in float64: a float32 model's own float32 total loses ~1e-2 eV on 10^5 eV
        energy = float(energies.sum())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = energies
        self.results["forces"] = out["forces"].detach().cpu().double().numpy()
        if "edge_forces" in out:
            self.results["edge_index"] = edge_index.cpu().numpy()
            self.results["edge_forces"] = out["edge_forces"].detach().cpu().double().numpy()
        volume = abs(float(np.linalg.det(cell_np))) if has_cell else 0.0
        if volume > 0.0:
            virial = out["virial"].detach().reshape(3, 3).cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(-virial / volume)
            if "atomic_virial" in out:
                atomic_virial = out["atomic_virial"].detach().cpu().double().numpy()
                self.results["stresses"] = _voigt(-atomic_virial / volume)
        for name in ("stress", "stresses"):
            if name in properties and name not in self.results:
                why = ("needs a periodic cell with non-zero volume; these atoms have pbc="
                       f"{pbc.tolist()} and cell volume {volume:.3g} Å^3")
                if volume > 0.0:
                    why = f"needs an Allegro model (this is {self.metadata.get('model_kind', '?')!r})"
                raise PropertyNotImplementedError(f"{name} {why}")


__all__ = ["QAllegroCalculator"]
