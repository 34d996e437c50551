"""The Allegro model (Musaelian et al., Nat. Commun. 14:579, 2023) as nequip-allegro 0.8.3 computes it.

:class:`AllegroEnergy` maps positions and a neighbour list to per-atom and total energies (strictly
local: an edge's energy depends only on atoms within r_max of its centre). :class:`AllegroModel` wraps
it with forces and stress by autograd and reads/writes the batch dictionary of the data contract.
Both are TorchScript-scriptable.
"""

import json
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from qallegro.nn.mlp import ScalarMLP
from qallegro.nn.radial import BesselBasis, PolynomialCutoff
from qallegro.nn.scatter import scatter_sum
from qallegro.nn.spherical_harmonics import EdgeSphericalHarmonics
from qallegro.nn.tensor_product import AllegroTensorProduct, WeightedChannels, layer_irreps, sh_irreps


def _per_type(value, type_names: Sequence[str], default: float, name: str) -> List[float]:
    """A float or {species: float} -> one value per type (ValueError names missing species)."""
    if value is None:
        return [default] * len(type_names)
    if isinstance(value, dict):
        missing = [t for t in type_names if t not in value]
        extra = [k for k in value if k not in type_names]
        if missing or extra:
            raise ValueError(f"{name}: species missing {missing} / not in type_names {extra}")
        return [float(value[t]) for t in type_names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(type_names):
            raise ValueError(f"{name}: {len(value)} values for {len(type_names)} type_names")
        return [float(v) for v in value]
    return [float(value)] * len(type_names)


class AllegroEnergy(torch.nn.Module):
    """Allegro energy model: (positions, edges) -> per-atom energies [N, 1] and totals [B, 1] (eV).

    The readout (see :mod:`qallegro.model.readouts`) turns each edge's final scalar latent
    ``[E, num_scalar_features * (num_layers + 1)]`` into per-atom energies; per-species scale and
    shift follow: E_i = scale[Z_i] * readout_i + shift[Z_i].
    """

    num_layers: int
    num_scalar_features: int
    num_tensor_features: int
    r_max: float

    def __init__(
        self,
        type_names: Sequence[str],
        r_max: float,
        readout: torch.nn.Module,
        l_max: int = 1,
        parity: bool = True,
        num_layers: int = 2,
        num_scalar_features: int = 64,
        num_tensor_features: int = 16,
        num_bessels: int = 8,
        bessel_trainable: bool = False,
        polynomial_cutoff_p: float = 6.0,
        radial_chemical_embed_dim: Optional[int] = None,
        scalar_embed_mlp_hidden_layers_depth: int = 1,
        scalar_embed_mlp_hidden_layers_width: int = 64,
        scalar_embed_mlp_nonlinearity: Optional[str] = "silu",
        allegro_mlp_hidden_layers_depth: int = 1,
        allegro_mlp_hidden_layers_width: int = 64,
        allegro_mlp_nonlinearity: Optional[str] = "silu",
        tp_path_channel_coupling: bool = True,
        avg_num_neighbors=None,
        per_type_energy_scales=None,
        per_type_energy_shifts=None,
        per_type_energy_scales_trainable: bool = False,
        per_type_energy_shifts_trainable: bool = False,
    ):
        super().__init__()
        if r_max <= 0:
            raise ValueError(f"r_max must be > 0 Å, got {r_max}")
        self.r_max = float(r_max)
        self.num_layers = num_layers
        self.num_scalar_features = num_scalar_features
        self.num_tensor_features = num_tensor_features
        num_types = len(type_names)
        embed_dim = num_scalar_features if radial_chemical_embed_dim is None else radial_chemical_embed_dim
        if embed_dim % 2:
            raise ValueError(f"radial_chemical_embed_dim must be even, got {embed_dim}")

        # --- two-body scalar embedding: Bessel x envelope, x (centre, neighbour) type embedding ---
        self.bessel = BesselBasis(num_bessels, trainable=bessel_trainable)
        self.cutoff = PolynomialCutoff(polynomial_cutoff_p)
        self.center_embed = torch.nn.Embedding(num_types, embed_dim // 2)
        self.neighbor_embed = torch.nn.Embedding(num_types, embed_dim // 2)
        self.basis_linear = ScalarMLP(num_bessels, embed_dim)
        self.scalar_embed_mlp = ScalarMLP(
            embed_dim,
            num_scalar_features,
            scalar_embed_mlp_hidden_layers_depth,
            scalar_embed_mlp_hidden_layers_width,
            scalar_embed_mlp_nonlinearity,
        )

        # --- two-body tensor embedding: weighted spherical harmonics ---
        env_irreps = sh_irreps(l_max)
        self.sh = EdgeSphericalHarmonics(l_max)
        self.weighter = WeightedChannels(env_irreps, num_tensor_features)
        self.tensor_embed_linear = ScalarMLP(num_scalar_features, self.weighter.weight_numel)

        # --- Allegro layers ---
        self.first_layer_projection = ScalarMLP(num_scalar_features, num_scalar_features + self.weighter.weight_numel)
        self.tps = torch.nn.ModuleList()
        self.latents = torch.nn.ModuleList()
        for layer, (irreps_in, irreps_out) in enumerate(layer_irreps(l_max, parity, num_layers)):
            self.tps.append(
                AllegroTensorProduct(irreps_in, env_irreps, irreps_out, num_tensor_features, tp_path_channel_coupling)
            )
            last = layer == num_layers - 1
            self.latents.append(
                ScalarMLP(
                    num_scalar_features * (layer + 1) + num_tensor_features,
                    num_scalar_features + (0 if last else self.weighter.weight_numel),
                    allegro_mlp_hidden_layers_depth,
                    allegro_mlp_hidden_layers_width,
                    allegro_mlp_nonlinearity,
                )
            )
        self.readout = readout

        # --- normalisation and per-species scale/shift ---
        avg = _per_type(avg_num_neighbors, type_names, 1.0, "avg_num_neighbors")
        self.register_buffer("norm_const", torch.tensor([1.0 / math.sqrt(a) for a in avg]).reshape(-1, 1))
        scales = torch.tensor(_per_type(per_type_energy_scales, type_names, 1.0, "per_type_energy_scales")).reshape(-1, 1)
        shifts = torch.tensor(_per_type(per_type_energy_shifts, type_names, 0.0, "per_type_energy_shifts")).reshape(-1, 1)
        if per_type_energy_scales_trainable:
            self.scales = torch.nn.Parameter(scales)
        else:
            self.register_buffer("scales", scales)
        if per_type_energy_shifts_trainable:
            self.shifts = torch.nn.Parameter(shifts)
        else:
            self.register_buffer("shifts", shifts)

    def edge_features(
        self, edge_vectors: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final scalar latent per edge [E, F], edge cutoff envelope [E, 1], node_norm [N, 1]."""
        center, neighbor = edge_index[0], edge_index[1]
        num_atoms = atom_type.shape[0]
        # radial-chemical two-body embedding (eq. 3)
        x = torch.linalg.norm(edge_vectors, dim=1, keepdim=True) / self.r_max
        edge_cutoff = self.cutoff(x)
        radial = self.bessel(x) * edge_cutoff
        type_embed = torch.cat((self.center_embed(atom_type[center]), self.neighbor_embed(atom_type[neighbor])), dim=-1)
        scalar = self.scalar_embed_mlp(self.basis_linear(radial) * type_embed)
        # tensor track: weighted spherical harmonics (eq. 4)
        sh = self.sh(edge_vectors)
        tensor_features = self.weighter(sh, self.tensor_embed_linear(scalar))
        node_norm = self.norm_const[atom_type] if self.norm_const.shape[0] > 1 else self.norm_const.expand(num_atoms, 1)
        projection = self.first_layer_projection(scalar)
        accumulated: List[torch.Tensor] = [projection[:, : self.num_scalar_features]]
        env_w = projection[:, self.num_scalar_features :]
        layer = 0
        for tp, latent in zip(self.tps, self.latents):
            # environment embedding, tensor product (eqs. 5-7) and latent MLP with the dense update (eq. 8)
            env_edge = self.weighter(sh, env_w)
            tensor_features = tp(tensor_features, env_edge, center, node_norm.view(-1))
            scalars = tensor_features[:, :, 0]
            latents = latent(torch.cat(accumulated + [scalars], dim=-1))
            accumulated.append(latents[:, : self.num_scalar_features])
            if layer < self.num_layers - 1:
                env_w = latents[:, self.num_scalar_features :]
            layer += 1
        return torch.cat(accumulated, dim=-1), edge_cutoff, node_norm

    def forward(
        self,
        pos: torch.Tensor,
        cell: torch.Tensor,
        edge_index: torch.Tensor,
        edge_cell_shift: torch.Tensor,
        atom_type: torch.Tensor,
        batch: torch.Tensor,
        num_structures: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """pos [N, 3] Å, cell [B, 3, 3] Å, edge_index [2, E], edge_cell_shift [E, 3], atom_type [N],
        batch [N] -> (atomic_energy [N, 1] eV, total_energy [B, 1] eV)."""
        center, neighbor = edge_index[0], edge_index[1]
        # r_ij = pos[j] - pos[i] + shift @ cell[batch[i]]
        edge_vectors = torch.index_select(pos, 0, neighbor) - torch.index_select(pos, 0, center)
        edge_cell = torch.index_select(cell, 0, torch.index_select(batch, 0, center))
        edge_vectors = edge_vectors + torch.bmm(edge_cell_shift.unsqueeze(1), edge_cell).squeeze(1)
        return self.from_edge_vectors(edge_vectors, edge_index, atom_type, batch, num_structures)

    def from_edge_vectors(
        self,
        edge_vectors: torch.Tensor,
        edge_index: torch.Tensor,
        atom_type: torch.Tensor,
        batch: torch.Tensor,
        num_structures: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """edge_vectors [E, 3] Å (r_ij = r_j - r_i, images included), edge_index [2, E], atom_type [N],
        batch [N] -> (atomic_energy [N, 1] eV, total_energy [B, 1] eV).

        The energy depends on positions only through the edge vectors, so hosts that build edges
        themselves (metatomic engines) or need pair forces -dE/dr_ij (per-atom virials) call this."""
        center = edge_index[0]
        features, edge_cutoff, node_norm = self.edge_features(edge_vectors, edge_index, atom_type)
        raw = self.readout(features, edge_cutoff, center, node_norm)
        atomic_energy = torch.addcmul(self.shifts[atom_type], self.scales[atom_type], raw)
        total_energy = scatter_sum(atomic_energy, batch, num_structures)
        return atomic_energy, total_energy


class AllegroModel(torch.nn.Module):
    """Allegro with forces and stress: forward(batch dict) -> dict of outputs (nequip's conventions).

    Inputs (the data contract): "pos", "atom_type", "edge_index", "edge_cell_shift", "cell", "batch",
    "num_atoms" (and "pbc", unused here: the neighbour list already carries periodicity). Outputs:
    "atomic_energy" [N, 1], "total_energy" [B, 1] (eV) and, with ``do_derivatives``, "forces" [N, 3]
    (eV/Å, -dE/dpos), "virial" [B, 3, 3] (eV, -dE/d(strain)) and "stress" [B, 3, 3] (eV/Å³,
    dE/d(strain)/V; NaN for structures without a cell, as nequip). The strain is symmetric and
    applied to positions and cell. Derivatives keep their graph (``create_graph``) when the module is
    in training mode or ``create_graph`` is set, so force losses can be optimised. Do not call under
    ``torch.no_grad()`` (autograd computes the forces); use :meth:`predict` from Python for that.
    """

    __jit_unused_properties__ = ["hparams"]

    do_derivatives: bool
    create_graph: bool
    r_max: float
    kind: str
    type_names: List[str]
    hparams_json: str

    def __init__(self, energy: AllegroEnergy, kind: str, type_names: Sequence[str], hparams: Dict, do_derivatives: bool = True):
        super().__init__()
        self.energy = energy
        self.kind = kind
        self.type_names = list(type_names)
        self.r_max = energy.r_max
        self.hparams_json = json.dumps(hparams, sort_keys=True)
        self.do_derivatives = do_derivatives
        self.create_graph = False

    @property
    def hparams(self) -> Dict:
        """Build hyperparameters (what :func:`qallegro.models.build` was given, with defaults filled)."""
        return json.loads(self.hparams_json)

    @torch.jit.unused
    def set_tp_kernel(self, enabled: bool) -> "AllegroModel":
        """Run the layer tensor products through the compiled op (True) or the pure-torch reference.

        Decided per module before ``torch.jit.script`` (the choice is baked in). The op's autograd is
        registered in C++, so exported models differentiate through it in any host (LAMMPS included).
        ValueError when the compiled op is not available.
        """
        from qallegro.ops.allegro_tp import kernel_available

        if enabled and not kernel_available():
            raise ValueError("the compiled qallegro::allegro_tp op is not available (or FORCE_REFERENCE is set)")
        for tp in self.energy.tps:
            tp.use_kernel = bool(enabled)
        return self

    @torch.jit.unused
    def predict(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """forward() with autograd enabled even inside ``torch.no_grad()``; outputs detached."""
        with torch.enable_grad():
            out = self.forward(data)
        return {k: v.detach() for k, v in out.items()}

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        dtype = self.energy.norm_const.dtype
        pos = data["pos"].to(dtype)
        # the contract's "atom_type"; nequip itself calls it "atom_types": accept both
        if "atom_type" in data:
            atom_type = data["atom_type"]
        else:
            atom_type = data["atom_types"]
        edge_index = data["edge_index"]
        num_atoms = atom_type.shape[0]
        if "batch" in data:
            batch = data["batch"]
        else:
            batch = torch.zeros(num_atoms, dtype=torch.long, device=pos.device)
        if "num_atoms" in data:
            num_structures = data["num_atoms"].shape[0]
        else:
            num_structures = int(batch.max()) + 1 if num_atoms > 0 else 1
        if "cell" in data:
            cell = data["cell"].to(dtype).view(-1, 3, 3).expand(num_structures, 3, 3)
        else:
            cell = torch.zeros((num_structures, 3, 3), dtype=dtype, device=pos.device)
        if "edge_cell_shift" in data:
            shifts = data["edge_cell_shift"].to(dtype)
        else:
            shifts = torch.zeros((edge_index.shape[1], 3), dtype=dtype, device=pos.device)

        out: Dict[str, torch.Tensor] = {}
        if not self.do_derivatives:
            atomic, total = self.energy(pos, cell, edge_index, shifts, atom_type, batch, num_structures)
            out["atomic_energy"] = atomic
            out["total_energy"] = total
            return out

        if not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        strain = torch.zeros((num_structures, 3, 3), dtype=dtype, device=pos.device).requires_grad_(True)
        # symmetric strain (Knuth et al. 2015): its antisymmetric part would be a rotation
        sym = 0.5 * (strain + strain.transpose(-1, -2))
        strained_pos = pos + torch.bmm(pos.unsqueeze(1), torch.index_select(sym, 0, batch)).squeeze(1)
        strained_cell = cell + torch.bmm(cell, sym)
        atomic, total = self.energy(strained_pos, strained_cell, edge_index, shifts, atom_type, batch, num_structures)
        grads = torch.autograd.grad(
            [total.sum()], [pos, strain], create_graph=self.training or self.create_graph, allow_unused=True
        )
        dpos, dstrain = grads[0], grads[1]
        if dpos is None:  # no edges at all: no force
            dpos = torch.zeros_like(pos)
        if dstrain is None:
            dstrain = torch.zeros_like(strain)
        volume = torch.linalg.det(cell).abs().view(-1, 1, 1)
        has_volume = volume > 0
        safe_volume = torch.where(has_volume, volume, torch.ones_like(volume))
        out["atomic_energy"] = atomic
        out["total_energy"] = total
        out["forces"] = -dpos
        out["virial"] = -dstrain
        out["stress"] = torch.where(has_volume, dstrain / safe_volume, torch.full_like(dstrain, float("nan")))
        return out
