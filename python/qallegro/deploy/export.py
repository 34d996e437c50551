"""TorchScript export of a qallegro model with pair_allegro's input/output contract.

The exported file is a TorchScript archive whose ``forward`` takes one ``Dict[str, Tensor]``:

==================== ============ ==========================================================
key                  shape        meaning
==================== ============ ==========================================================
``pos``              [N, 3]       positions, Å, in the model's dtype (local atoms first, then
                                  ghost/image atoms if the host uses them)
``edge_index``       [2, E] int64 row 0 = centre i, row 1 = neighbour j; both directions; only
                                  pairs with ``|r_ij| < r_max``
``atom_types``       [N] int64    index into the model's ``type_names`` (``atom_type`` is
                                  accepted too)
``edge_cell_shift``  [E, 3]       optional, integer-valued: ``r_ij = pos[j] - pos[i] +
                                  edge_cell_shift @ cell``; absent means zero (ghost atoms)
``cell``             [1, 3, 3]    optional, rows are lattice vectors, Å; absent means zero
``num_local``        [1] int64    optional: only the first ``num_local`` atoms' energies are
                                  summed into ``total_energy`` (the rest are ghosts)
==================== ============ ==========================================================

and returns ``atomic_energy`` [N, 1] eV, ``total_energy`` [1, 1] eV, ``forces`` [N, 3] eV/Å
(``-dE/dpos`` for every given atom, ghosts included, so a host can reverse-communicate them) and
``virial`` [1, 3, 3] eV (``-dE/dε`` for a symmetric strain ε; nequip's and LAMMPS's sign, so
ASE's stress is ``-virial / volume``). These are the keys pair_allegro passes and reads. Exports of
Allegro models (metadata ``edge_forces`` = "1") also return ``edge_forces`` [E, 3] eV/Å (-dE/dr_ij,
one row per edge, in ``edge_index`` order) and, if the input has a ``want_atomic_virial`` key,
``atomic_virial`` [N, 3, 3] eV (per-atom virials that sum to ``virial``); see :class:`DeployedEdgeModel`.

Metadata are stored as TorchScript extra files (read them with :func:`read_metadata` or, in C++,
``torch::jit::load(path, device, extra_files)``); see :data:`METADATA_KEYS`. ``type_names`` is a
space-separated list in type-index order, which is the order LAMMPS's ``pair_coeff * * file.pt
Cu Li`` names refer to. Models that call ``torch.ops.qallegro.*`` need ``libqallegro_ops.so``
loaded in the host process first: ``qallegro.ops.library_path()`` names the file; in C++ ``dlopen``
it with ``RTLD_GLOBAL`` (the LAMMPS plugin does), or ``LD_PRELOAD`` it for other hosts.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

#: Format version of the export; bumped when the forward contract changes.
FORMAT_VERSION = "1"

#: Extra files written into every export. ``num_types``, ``per_edge_type_cutoff`` and
#: ``allow_tf32`` are the names pair_allegro reads, so its users can load the file as well.
METADATA_KEYS: Tuple[str, ...] = (
    "qallegro_format",
    "qallegro_version",
    "model_kind",
    "model_dtype",
    "r_max",
    "type_names",
    "num_types",
    "per_edge_type_cutoff",
    "allow_tf32",
    "edge_forces",
    "portable",
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class DeployedModel(torch.nn.Module):
    """Wraps a model on the qallegro data contract into the pair_allegro-style forward above.

    The inner model receives one structure as the batch dict of ``qallegro.data`` (``pos``,
    ``atom_type``, ``edge_index``, ``edge_cell_shift``, ``cell`` [1,3,3], ``pbc`` [1,3],
    ``batch``, ``num_atoms``) and must return ``atomic_energy`` [N, 1]. When it also returns
    ``forces`` and ``virial`` (``model_computes_forces``) those are used; otherwise forces and
    virial are taken here by autograd through a symmetric strain of positions and cell.
    Allegro models are exported as :class:`DeployedEdgeModel` instead, which adds pair forces.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        type_names: Sequence[str],
        r_max: float,
        kind: str,
        model_computes_forces: bool,
    ) -> None:
        super().__init__()
        self.model = model
        self.type_names: List[str] = [str(t) for t in type_names]
        self.num_types: int = len(self.type_names)
        self.r_max: float = float(r_max)
        self.kind: str = str(kind)
        self.model_computes_forces: bool = bool(model_computes_forces)

    def parse(self, data: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
        """Checked inputs: pos [N, 3], atom_type [N] int64, edge_index [2, E] int64, edge_cell_shift
        [E, 3], cell [1, 3, 3] (zeros when absent), num_local."""
        pos = data["pos"]
        edge_index = data["edge_index"]
        if "atom_types" in data:
            atom_type = data["atom_types"]
        else:
            atom_type = data["atom_type"]
        num_atoms = pos.shape[0]
        if pos.dim() != 2 or pos.shape[1] != 3:
            raise ValueError("qallegro export: 'pos' must be [N, 3]")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("qallegro export: 'edge_index' must be [2, E]")
        if atom_type.shape[0] != num_atoms:
            raise ValueError("qallegro export: 'atom_types' must have one entry per row of 'pos'")
        if num_atoms > 0 and (bool((atom_type < 0).any()) or bool((atom_type >= self.num_types).any())):
            raise ValueError("qallegro export: 'atom_types' holds an index outside [0, num_types)")
        if "cell" in data:
            cell = data["cell"].reshape(1, 3, 3).to(pos.dtype)
        else:
            cell = torch.zeros((1, 3, 3), dtype=pos.dtype, device=pos.device)
        if "edge_cell_shift" in data:
            edge_cell_shift = data["edge_cell_shift"].to(pos.dtype)
        else:
            edge_cell_shift = torch.zeros((edge_index.shape[1], 3), dtype=pos.dtype, device=pos.device)
        num_local = num_atoms
        if "num_local" in data:
            num_local = int(data["num_local"].reshape(-1)[0])
        return pos, atom_type.to(torch.long), edge_index.to(torch.long), edge_cell_shift, cell, num_local

    def forward(self, data: Dict[str, Tensor]) -> Dict[str, Tensor]:
        pos, atom_type, edge_index, edge_cell_shift, cell, num_local = self.parse(data)
        num_atoms = pos.shape[0]
        # a cell with volume marks a periodic frame; ghost-atom hosts pass none
        periodic = bool(torch.linalg.det(cell[0]).abs() > 0.0)
        pbc = torch.full((1, 3), periodic, dtype=torch.bool, device=pos.device)

        displacement = torch.zeros((3, 3), dtype=pos.dtype, device=pos.device)
        model_pos = pos
        model_cell = cell
        if not self.model_computes_forces:
            # strain trick (Knuth et al., CPC 190, 33 (2015)): E(ε) with r -> r(1+ε), cell -> cell(1+ε);
            # symmetric so that the virial is too
            displacement.requires_grad_(True)
            pos = pos.detach().requires_grad_(True)
            strain = 0.5 * (displacement + displacement.transpose(0, 1))
            model_pos = pos + pos @ strain
            model_cell = cell + cell @ strain
        model_input: Dict[str, Tensor] = {
            "pos": model_pos,
            "atom_type": atom_type,
            "edge_index": edge_index,
            "edge_cell_shift": edge_cell_shift,
            "cell": model_cell,
            "pbc": pbc,
            "batch": torch.zeros((num_atoms,), dtype=torch.long, device=pos.device),
            "num_atoms": torch.full((1,), num_atoms, dtype=torch.long, device=pos.device),
        }
        out = self.model(model_input)
        atomic_energy = out["atomic_energy"].reshape(num_atoms, 1)
        if self.model_computes_forces:
            forces = out["forces"].reshape(num_atoms, 3)
            virial = out["virial"].reshape(1, 3, 3)
        else:
            grads = torch.autograd.grad([atomic_energy.sum()], [pos, displacement], allow_unused=True)
            grad_pos = grads[0]
            grad_strain = grads[1]
            forces = -grad_pos if grad_pos is not None else torch.zeros_like(pos)
            virial = (-grad_strain if grad_strain is not None else torch.zeros_like(displacement)).reshape(1, 3, 3)
        total_energy = atomic_energy[:num_local].sum().reshape(1, 1)
        return {
            "atomic_energy": atomic_energy.detach(),
            "total_energy": total_energy.detach(),
            "forces": forces.detach(),
            "virial": virial.detach(),
        }


class DeployedEdgeModel(DeployedModel):
    """The export of an Allegro model: its energy is a function of the edge vectors r_ij alone
    (``AllegroEnergy.from_edge_vectors``), so one backward pass gives the pair forces
    g_ij = dE/dr_ij, from which every other derivative follows exactly:

    - forces: F_i = Σ_j g_ij - Σ_j g_ji (centre gains g, neighbour loses it);
    - virial: W = -Σ_ij r_ij ⊗ g_ij (equal to the strain derivative, images included);
    - per-atom virial: half of each edge's -r_ij ⊗ g_ij to each of its two atoms, the pair split
      LAMMPS's ``compute stress/atom`` uses, so the per-atom virials sum to W.

    Extra outputs: ``edge_forces`` [E, 3] eV/Å (= -g_ij, the force the edge puts on its neighbour
    j) and, when the input holds a ``want_atomic_virial`` key (any tensor), ``atomic_virial``
    [N, 3, 3] eV (full, not symmetric: LAMMPS's centroid form reads all nine components).
    """

    def forward(self, data: Dict[str, Tensor]) -> Dict[str, Tensor]:
        pos, atom_type, edge_index, edge_cell_shift, cell, num_local = self.parse(data)
        num_atoms = pos.shape[0]
        center = edge_index[0]
        neighbor = edge_index[1]
        pos = pos.to(self.model.energy.norm_const.dtype)
        cell = cell.to(pos.dtype)
        edge_vectors = pos[neighbor] - pos[center] + edge_cell_shift.to(pos.dtype) @ cell[0]
        edge_vectors = edge_vectors.detach().requires_grad_(True)
        batch = torch.zeros((num_atoms,), dtype=torch.long, device=pos.device)
        atomic_energy, _ = self.model.energy.from_edge_vectors(edge_vectors, edge_index, atom_type, batch, 1)
        atomic_energy = atomic_energy.reshape(num_atoms, 1)
        grad = torch.autograd.grad([atomic_energy.sum()], [edge_vectors], allow_unused=True)[0]
        if grad is None:  # no edges
            grad = torch.zeros_like(edge_vectors)
        forces = torch.zeros_like(pos).index_add(0, center, grad).index_add(0, neighbor, -grad)
        vectors = edge_vectors.detach()
        virial = -(vectors.transpose(0, 1) @ grad)
        # E is invariant under rotations, so W is symmetric up to round-off; symmetrise as the strain form is
        virial = (0.5 * (virial + virial.transpose(0, 1))).reshape(1, 3, 3)
        total_energy = atomic_energy[:num_local].sum().reshape(1, 1)
        out = {
            "atomic_energy": atomic_energy.detach(),
            "total_energy": total_energy.detach(),
            "forces": forces.detach(),
            "virial": virial.detach(),
            "edge_forces": -grad.detach(),
        }
        if "want_atomic_virial" in data:
            # on request only: hosts that tally per-atom virials themselves (LAMMPS) skip this work
            edge_virial = -0.5 * vectors.unsqueeze(2) * grad.unsqueeze(1)
            atomic_virial = torch.zeros((num_atoms, 3, 3), dtype=pos.dtype, device=pos.device)
            out["atomic_virial"] = atomic_virial.index_add(0, center, edge_virial).index_add(0, neighbor, edge_virial)
        return out


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a model's parameters (or buffers); float32 when it has none."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _probe_computes_forces(model: torch.nn.Module, num_types: int, r_max: float, dtype: torch.dtype) -> bool:
    """Whether ``model`` returns forces and virial itself: one call on a two-atom dimer."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.5 * r_max, 0.0, 0.0]], dtype=dtype)
    data = {
        "pos": pos,
        "atom_type": torch.tensor([0, min(1, num_types - 1)], dtype=torch.long),
        "edge_index": torch.tensor([[0, 1], [1, 0]], dtype=torch.long),
        "edge_cell_shift": torch.zeros((2, 3), dtype=dtype),
        "cell": torch.zeros((1, 3, 3), dtype=dtype),
        "pbc": torch.zeros((1, 3), dtype=torch.bool),
        "batch": torch.zeros((2,), dtype=torch.long),
        "num_atoms": torch.tensor([2], dtype=torch.long),
    }
    out = model(data)
    if "atomic_energy" not in out:
        raise ValueError(f"model output has no 'atomic_energy' (keys: {sorted(out.keys())})")
    return "forces" in out and "virial" in out


def wrap(
    model: torch.nn.Module,
    type_names: Optional[Sequence[str]] = None,
    r_max: Optional[float] = None,
    kind: Optional[str] = None,
) -> DeployedModel:
    """A :class:`DeployedModel` around ``model``; missing arguments come from its attributes."""
    type_names = list(type_names if type_names is not None else getattr(model, "type_names", []))
    if not type_names:
        raise ValueError("model has no 'type_names' attribute and none were given")
    if len(set(type_names)) != len(type_names):
        raise ValueError(f"type_names must be unique, got {type_names}")
    if any((not t) or any(c.isspace() for c in t) for t in type_names):
        raise ValueError(f"type names must be non-empty and contain no spaces, got {type_names}")
    r_max = float(r_max if r_max is not None else getattr(model, "r_max", float("nan")))
    if not r_max > 0.0:
        raise ValueError(f"model has no positive 'r_max' attribute (got {r_max}) and none was given")
    kind = str(kind if kind is not None else getattr(model, "kind", "unknown"))
    model = model.eval()
    computes_forces = _probe_computes_forces(model, len(type_names), r_max, model_dtype(model))
    if hasattr(getattr(model, "energy", None), "from_edge_vectors"):
        return DeployedEdgeModel(model, type_names, r_max, kind, computes_forces)
    return DeployedModel(model, type_names, r_max, kind, computes_forces)


def metadata_of(deployed: DeployedModel, dtype: torch.dtype) -> Dict[str, str]:
    """The extra-file dict written with an export (all values are strings)."""
    import qallegro

    return {
        "qallegro_format": FORMAT_VERSION,
        "qallegro_version": qallegro.__version__,
        "model_kind": deployed.kind,
        "model_dtype": str(dtype).replace("torch.", ""),
        "r_max": repr(deployed.r_max),
        "type_names": " ".join(deployed.type_names),
        "num_types": str(deployed.num_types),
        "per_edge_type_cutoff": "",
        "allow_tf32": "0",
        # "1": the file also returns edge_forces and atomic_virial (per-atom virials in LAMMPS)
        "edge_forces": "1" if isinstance(deployed, DeployedEdgeModel) else "0",
    }


def _check_qdi_layers(model: torch.nn.Module) -> None:
    """Allegro+QDI exports run the compiled ``qallegro::qdi`` op with exact expectations: refuse, naming
    the layer, what the TorchScript path cannot do (shot-noise estimates) or lacks (the compiled op)."""
    from qallegro.nn.qdi import QDILayer
    from qallegro.ops import HAS_KERNELS

    for name, module in model.named_modules():
        if not isinstance(module, QDILayer):
            continue
        if module.shots is not None:
            raise ValueError(
                f"QDI layer {name!r} is set to {module.shots}-shot estimates, which have no TorchScript path; "
                "export exact expectations: qallegro.nn.qdi.set_shots(model, None) first"
            )
        if not HAS_KERNELS or not hasattr(torch.ops.qallegro, "qdi"):
            raise RuntimeError(
                f"QDI layer {name!r} needs the compiled qallegro::qdi op to be exported, and the qallegro "
                "op library is not built: reinstall qallegro with its C++ extension"
            )


def _check_portable(model: torch.nn.Module) -> None:
    from qallegro.nn.qdi import QDILayer

    for name, module in model.named_modules():
        if isinstance(module, QDILayer):
            raise ValueError(
                f"--portable: QDI layer {name!r} runs its circuits in the compiled qallegro::qdi op, which has no "
                "pure-torch TorchScript form; export Allegro+QDI without --portable and load it with "
                "qallegro.deploy.load (or the LAMMPS plugin), which load the op library"
            )


def _check_no_custom_ops(scripted: torch.jit.ScriptModule, kind: str) -> None:
    """A portable export must call no qallegro op anywhere in its TorchScript code."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    with zipfile.ZipFile(buffer) as archive:
        code = [n for n in archive.namelist() if "/code/" in n and n.endswith(".py")]
        users = [n.split("/code/", 1)[1] for n in code if b"ops.qallegro." in archive.read(n)]
    if users:
        raise ValueError(f"--portable: the {kind!r} model still calls qallegro ops in {users}")


def export(
    model: torch.nn.Module,
    path: Union[str, os.PathLike],
    type_names: Optional[Sequence[str]] = None,
    r_max: Optional[float] = None,
    kind: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    portable: bool = False,
) -> Dict[str, str]:
    """Script ``model`` with :class:`DeployedModel` and write it atomically to ``path``.

    dtype: cast the model first (e.g. ``torch.float64`` for MD that must conserve energy tightly).
    portable: use the pure-torch tensor product instead of the compiled ``qallegro::allegro_tp`` op,
    so the file loads with plain ``torch.jit.load`` in any process (no op library; slower). Allegro+QDI
    has no portable form (its circuits run in the compiled ``qallegro::qdi`` op) and is refused.
    QDI layers (Allegro+QDI) are exported as calls of the compiled ``qallegro::qdi`` op with exact
    expectations; a layer set to shot-noise estimates is refused. Returns the metadata written.
    """
    if portable:
        _check_portable(model)
        model = copy.deepcopy(model)
        if hasattr(model, "set_tp_kernel"):
            model.set_tp_kernel(False)
    else:
        _check_qdi_layers(model)
    if dtype is not None:
        # Module.to casts in place: cast a copy, the caller keeps its model
        model = copy.deepcopy(model).to(dtype) if not portable else model.to(dtype)
    dtype = model_dtype(model)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"model dtype must be float32 or float64, got {dtype}")
    deployed = wrap(model, type_names, r_max, kind)
    try:
        scripted = torch.jit.script(deployed)
    except Exception as exc:  # name the failing model; TorchScript's own message follows
        raise RuntimeError(f"model of kind {deployed.kind!r} is not TorchScript-scriptable: {exc}") from exc
    metadata = metadata_of(deployed, dtype)
    metadata["portable"] = "1" if portable else "0"
    if portable:
        _check_no_custom_ops(scripted, deployed.kind)
    # atomically (a crash never leaves half a model), readable as the umask allows, with its sha256
    from qallegro.utils import atomic_write_archive

    atomic_write_archive(path, lambda handle: torch.jit.save(scripted, handle, _extra_files=metadata))
    return metadata


def read_metadata(path: Union[str, os.PathLike]) -> Dict[str, str]:
    """Metadata of an exported file without running it; ValueError if it is not a qallegro export."""
    return load(path)[1]


def load(
    path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu"
) -> Tuple[torch.jit.ScriptModule, Dict[str, str]]:
    """Load an exported model and its metadata; ValueError names the file when it is not an export."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    from qallegro.utils import read_verified

    read_verified(path, "qallegro export")  # empty, or changed since export (sha256): CorruptFileError
    # the op library must be loaded before TorchScript resolves torch.ops.qallegro.* calls
    import qallegro.ops  # noqa: F401

    extra = {k: "" for k in METADATA_KEYS}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "qallegro::" in str(exc):
            from qallegro.ops import LOAD_ERROR, library_path

            try:
                where = str(library_path())
            except RuntimeError as missing:
                where = str(missing)
            raise ValueError(
                f"{path} calls qallegro's compiled ops, and the op library is not loaded in this process "
                f"({first.strip()}; library: {where}; load error: {LOAD_ERROR}). Reinstall qallegro with its C++ "
                "extension (pip install --no-build-isolation .), or re-export with `qallegro export --portable` "
                "for a file that needs no library"
            ) from exc
        raise ValueError(f"{path} is not a qallegro export (not a loadable TorchScript archive: {first})") from exc
    # torch.jit.load returns extra files as bytes
    extra = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in extra.items()}
    if not extra["qallegro_format"]:
        raise ValueError(
            f"{path} is a TorchScript archive but not a qallegro export (no 'qallegro_format' extra file); "
            "write it with `qallegro export`"
        )
    if extra["qallegro_format"] != FORMAT_VERSION:
        raise ValueError(
            f"{path}: qallegro export format {extra['qallegro_format']} is not supported by this "
            f"qallegro (format {FORMAT_VERSION}); re-export the model"
        )
    if extra["model_dtype"] not in _DTYPES:
        raise ValueError(f"{path}: model_dtype {extra['model_dtype']!r} is not float32 or float64")
    return module.eval(), extra


def dtype_of(metadata: Dict[str, str]) -> torch.dtype:
    """The torch dtype named by ``metadata['model_dtype']``."""
    return _DTYPES[metadata["model_dtype"]]
