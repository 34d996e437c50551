"""Export to metatomic (``qallegro export --format metatomic``): one file for every metatomic engine.

metatomic (the ``metatomic-torch`` package) is the model interface of ASE (``metatomic-ase``), i-PI,
LAMMPS (its metatomic build), GROMACS, PLUMED, torch-sim and others. An export is a
``metatomic.torch.AtomisticModel``: the Allegro energy wrapped in :class:`MetatomicAllegro`, with

- capabilities: the ``energy`` output (per structure and per atom, eV), the atomic numbers of the
  model's types, ``interaction_range`` = r_max (Allegro is strictly local: an atom's energy depends
  on its neighbours within r_max only, so domain decomposition needs one r_max of ghosts), lengths in
  angstrom, the model's dtype and the devices our op library has kernels for;
- one neighbour-list request: full, strict, cutoff r_max;
- the qallegro op library recorded as a TorchScript extension (metatomic records every library
  loaded with ``torch.ops.load_library``), so engines load it without importing qallegro.

The engine computes the pair vectors r_ij and differentiates the energy through them; forces,
stress and virial are its job. Atoms are identified by atomic number, so the model's type names must
be chemical symbols.
"""

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

try:
    import metatomic.torch as mta
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import ModelOutput, NeighborListOptions, System
except ImportError as _exc:  # the message names the fix; qallegro itself does not need metatomic
    raise ImportError(
        "qallegro export --format metatomic needs metatomic-torch: pip install 'qallegro[metatomic]' "
        f"(or pip install metatomic-torch metatomic-ase) ({_exc})"
    ) from _exc

# no `from __future__ import annotations` here: TorchScript and metatomic read the real annotations


class MetatomicAllegro(torch.nn.Module):
    """Allegro's energy on metatomic's systems: forward(systems, outputs, selected_atoms).

    energy: an ``AllegroEnergy`` (``AllegroModel.energy``); atomic_numbers: the element of each
    model type, in type-index order; r_max: cutoff, Å.
    """

    def __init__(self, energy: torch.nn.Module, atomic_numbers: List[int], r_max: float) -> None:
        super().__init__()
        self.energy = energy
        table = torch.full((max(atomic_numbers) + 1,), -1, dtype=torch.long)
        table[torch.tensor(atomic_numbers)] = torch.arange(len(atomic_numbers))
        self.register_buffer("type_of_number", table)
        self.neighbors = NeighborListOptions(cutoff=float(r_max), full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbors]

    def forward(
        self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels] = None
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if "energy" not in outputs or len(systems) == 0:
            return results
        device = systems[0].positions.device
        vectors: List[torch.Tensor] = []
        edges: List[torch.Tensor] = []
        types: List[torch.Tensor] = []
        batch: List[torch.Tensor] = []
        offset = 0
        for index, system in enumerate(systems):
            numbers = system.types.to(torch.long)
            known = (numbers >= 0) & (numbers < self.type_of_number.shape[0])
            if not bool(known.all()):
                raise ValueError("qallegro metatomic model: an atomic number outside the model's types")
            atom_type = self.type_of_number[numbers]
            if bool((atom_type < 0).any()):
                raise ValueError("qallegro metatomic model: an atomic number outside the model's types")
            pairs = system.get_neighbor_list(self.neighbors)
            # samples: first_atom, second_atom, cell_shift_a/b/c; values: r_ij = r_j - r_i + shift
            vectors.append(pairs.values.reshape(-1, 3))
            edges.append(pairs.samples.values[:, :2].to(torch.long).transpose(0, 1) + offset)
            types.append(atom_type)
            batch.append(torch.full((atom_type.shape[0],), index, dtype=torch.long, device=device))
            offset += atom_type.shape[0]
        atom_batch = torch.cat(batch)
        atomic, _ = self.energy.from_edge_vectors(
            torch.cat(vectors), torch.cat(edges, dim=1), torch.cat(types), atom_batch, len(systems)
        )
        atom_index = torch.cat([torch.arange(b.shape[0], device=device) for b in batch])
        if selected_atoms is not None:
            # domain decomposition: only the engine's own atoms count (the others are neighbours)
            chosen = selected_atoms.values.to(device=device, dtype=torch.long)
            starts = torch.cumsum(torch.tensor([0] + [b.shape[0] for b in batch[:-1]], device=device), 0)
            rows = starts[chosen[:, 0]] + chosen[:, 1]
            atomic = atomic[rows]
            atom_batch = atom_batch[rows]
            atom_index = chosen[:, 1]
        properties = Labels(["energy"], torch.tensor([[0]], device=device))
        if outputs["energy"].sample_kind == "atom":
            samples = Labels(["system", "atom"], torch.stack([atom_batch, atom_index], dim=1).to(torch.int32))
            values = atomic
        else:
            # accumulate in the model's dtype (the engine's dtype); one row per system
            values = torch.zeros((len(systems), 1), dtype=atomic.dtype, device=device).index_add(
                0, atom_batch, atomic
            )
            samples = Labels(["system"], torch.arange(len(systems), device=device, dtype=torch.int32).reshape(-1, 1))
        block = TensorBlock(values=values, samples=samples, components=[], properties=properties)
        results["energy"] = TensorMap(Labels(["_"], torch.tensor([[0]], device=device)), [block])
        return results


def _atomic_numbers(type_names: List[str]) -> List[int]:
    from ase.data import atomic_numbers

    unknown = [name for name in type_names if name not in atomic_numbers or name == "X"]
    if unknown:
        raise ValueError(
            f"metatomic identifies atoms by atomic number, and type name(s) {unknown} are not chemical symbols; "
            "rename the types with --type-names (e.g. --type-names Cu Li)"
        )
    return [atomic_numbers[name] for name in type_names]


def _devices() -> List[str]:
    """cpu, and cuda first when the op library has CUDA kernels (engines take the first they can use)."""
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("qallegro::allegro_tp", "CUDA")
    return ["cuda", "cpu"] if has_cuda else ["cpu"]


def atomistic_model(model: torch.nn.Module, type_names: Optional[List[str]] = None, dtype: Optional[torch.dtype] = None):
    """A ``metatomic.torch.AtomisticModel`` around an Allegro model (any kind), in ``dtype``."""
    energy = getattr(model, "energy", None)
    if energy is None or not hasattr(energy, "from_edge_vectors"):
        raise TypeError(f"metatomic export needs a qallegro Allegro model (with .energy), got {type(model).__name__}")
    from qallegro.deploy.export import _check_qdi_layers, model_dtype

    _check_qdi_layers(model)
    if dtype is not None:
        # Module.to casts in place: cast a copy, the caller keeps its model
        model = copy.deepcopy(model).to(dtype)
    dtype = model_dtype(model)
    names = [str(t) for t in (type_names if type_names is not None else model.type_names)]
    if len(names) != len(model.type_names):
        raise ValueError(f"{len(names)} type names given for a model with {len(model.type_names)} types")
    numbers = _atomic_numbers(names)
    module = MetatomicAllegro(energy, numbers, float(model.r_max)).eval()
    kind = str(getattr(model, "kind", "allegro"))
    capabilities = mta.ModelCapabilities(
        outputs={"energy": mta.ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=numbers,
        interaction_range=float(model.r_max),
        length_unit="angstrom",
        supported_devices=_devices(),
        dtype=str(dtype).replace("torch.", ""),
    )
    import qallegro

    metadata = mta.ModelMetadata(
        name=f"qallegro {kind}",
        description=f"{kind} potential for {' '.join(names)}, r_max {model.r_max} Å, exported by qallegro "
        f"{qallegro.__version__}",
        references={
            "architecture": [
                "Musaelian et al., Learning local equivariant representations for large-scale atomistic "
                "dynamics, Nat. Commun. 14, 579 (2023)",
                "Laskaris et al., arXiv:2602.16908 (2026)",
            ]
        },
    )
    return mta.AtomisticModel(module, metadata, capabilities)


def export_metatomic(
    model: torch.nn.Module,
    path: Union[str, os.PathLike],
    type_names: Optional[List[str]] = None,
    dtype: Optional[torch.dtype] = None,
    extensions_directory: Optional[Union[str, os.PathLike]] = None,
) -> Dict[str, str]:
    """Write ``model`` as a metatomic model file to ``path`` (atomically); returns a summary.

    extensions_directory: where metatomic copies the op library (default: ``extensions/`` beside
    ``path``; metatomic empties it first). Engines are given this folder (metatomic-ase's
    ``extensions_directory=``, i-PI's ``extensions:``, LAMMPS's ``extensions``) so that they load the
    library without qallegro being importable.
    """
    import qallegro.ops  # noqa: F401  (loads the op library, which metatomic then records as an extension)

    atomistic = atomistic_model(model, type_names, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if extensions_directory is None:
        extensions_directory = path.parent / "extensions"
    # metatomic writes to a path: write into a private folder beside the target (the archive keeps
    # the file's own name inside), then rename, so a crash never leaves half a model behind
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        atomistic.save(str(tmp_dir / path.name), collect_extensions=str(extensions_directory))
        os.replace(tmp_dir / path.name, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    caps = atomistic.capabilities()
    return {"model_kind": str(getattr(model, "kind", "allegro")), "model_dtype": caps.dtype,
            "r_max": repr(float(model.r_max)), "type_names": " ".join(type_names or model.type_names),
            "extensions_directory": str(extensions_directory)}
