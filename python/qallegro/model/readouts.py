"""Readouts: from each edge's final scalar latent to per-atom energies, chosen by the model ``kind``.

A readout is an ``nn.Module`` with
``forward(edge_features [E, F], edge_cutoff [E, 1], edge_center [E] int64, node_norm [N, 1]) -> [N, 1]``
(per-atom energy before the per-species scale and shift). Kinds register a factory
``factory(in_features: int, hparams: dict) -> nn.Module`` and their hyperparameter defaults with
:func:`register_readout`; :func:`qallegro.models.build` looks them up, so a new readout (e.g. the QDI
layer of issue 5) plugs in without touching the rest of the model.
"""

import math
from typing import Any, Callable, Dict, Final, Tuple

import torch

from qallegro.nn.mlp import ScalarLinear, ScalarMLP
from qallegro.nn.scatter import scatter_sum

ReadoutFactory = Callable[[int, Dict[str, Any]], torch.nn.Module]
_READOUTS: Dict[str, Tuple[ReadoutFactory, Dict[str, Any]]] = {}


def register_readout(kind: str, factory: ReadoutFactory, defaults: Dict[str, Any]) -> None:
    """Make ``kind`` buildable: ``factory(in_features, hparams)`` with these hyperparameter defaults."""
    _READOUTS[kind] = (factory, dict(defaults))


def readout_kinds() -> Tuple[str, ...]:
    """Names of the registered readouts (model kinds)."""
    return tuple(_READOUTS)


def readout_entry(kind: str) -> Tuple[ReadoutFactory, Dict[str, Any]]:
    """(factory, defaults) of a kind; ValueError lists the known kinds."""
    if kind not in _READOUTS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {sorted(_READOUTS)}")
    return _READOUTS[kind]


class EdgeEnergyReadout(torch.nn.Module):
    """Per-edge network -> edge energies, summed onto centre atoms (nequip-allegro's EdgewiseReduce).

    atom_energy[n] = node_norm[n] / sqrt(2) * sum_{e: centre n} net(edge_features[e]) (x edge_cutoff[e]
    when ``multiply_cutoff``: needed for networks with net(0) != 0, so that an edge entering r_max
    starts at zero energy). The 1/sqrt(2) is nequip's: each pair appears as two directed edges.
    """

    multiply_cutoff: Final[bool]

    def __init__(self, net: torch.nn.Module, multiply_cutoff: bool = False):
        super().__init__()
        self.net = net
        self.multiply_cutoff = multiply_cutoff

    def forward(
        self, edge_features: torch.Tensor, edge_cutoff: torch.Tensor, edge_center: torch.Tensor, node_norm: torch.Tensor
    ) -> torch.Tensor:
        edge_energy = self.net(edge_features)
        if self.multiply_cutoff:
            edge_energy = edge_energy * edge_cutoff
        atom = scatter_sum(edge_energy, edge_center, node_norm.shape[0])
        return atom * node_norm / math.sqrt(2.0)


class AtomEnergyReadout(torch.nn.Module):
    """Edge latents summed per centre atom (x node_norm), then a per-atom network.

    atom_energy[n] = net(h_n) - net(0) with h_n = node_norm[n] sum_{e: centre n} edge_features[e];
    subtracting net(0) keeps an isolated atom at zero (its energy is the per-species shift) and makes
    far-apart fragments additive.
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(
        self, edge_features: torch.Tensor, edge_cutoff: torch.Tensor, edge_center: torch.Tensor, node_norm: torch.Tensor
    ) -> torch.Tensor:
        h = scatter_sum(edge_features, edge_center, node_norm.shape[0]) * node_norm
        zero = torch.zeros((1, h.shape[1]), dtype=h.dtype, device=h.device)
        return self.net(h) - self.net(zero)


def _allegro_factory(in_features: int, hp: Dict[str, Any]) -> torch.nn.Module:
    return EdgeEnergyReadout(
        ScalarMLP(
            in_features,
            1,
            hidden_layers_depth=hp["readout_mlp_hidden_layers_depth"],
            hidden_layers_width=hp["readout_mlp_hidden_layers_width"],
            nonlinearity=hp["readout_mlp_nonlinearity"],
        )
    )


def _allegro_mlp_factory(in_features: int, hp: Dict[str, Any]) -> torch.nn.Module:
    # the published readout's hidden layers followed by `mlp_readout_depth` extra hidden layers of
    # width `mlp_readout_width` (Laskaris et al. 2026's "Allegro+MLP"), one bias-free MLP
    hidden = [hp["readout_mlp_hidden_layers_width"]] * hp["readout_mlp_hidden_layers_depth"]
    hidden += [hp["mlp_readout_width"]] * hp["mlp_readout_depth"]
    return EdgeEnergyReadout(ScalarMLP(in_features, 1, nonlinearity=hp["readout_mlp_nonlinearity"], hidden_dims=hidden))


def _allegro_qdi_factory(in_features: int, hp: Dict[str, Any]) -> torch.nn.Module:
    from qallegro.nn import QDILayer  # lazy: issue 5's layer and its ops

    placement = hp["qdi_placement"]
    if placement not in ("edge", "atom"):
        raise ValueError(f"qdi_placement must be 'edge' or 'atom', got {placement!r}")
    n_qubits = int(hp["n_qubits"])
    qdi_in = n_qubits * int(hp["qdi_uploads"])
    layer = QDILayer(
        qdi_in,
        n_qubits=n_qubits,
        depth=hp["qdi_depth"],
        rotation=hp["rotation"],
        entangling=hp["entangling"],
        measure=hp["measure"],
        measurement_mode=hp["measurement_mode"],
    )
    net = torch.nn.Sequential(
        ScalarLinear(in_features, qdi_in, alpha=1.0 / math.sqrt(in_features)),
        layer,
        ScalarLinear(layer.out_features, 1, alpha=1.0 / math.sqrt(layer.out_features)),
    )
    if placement == "edge":
        return EdgeEnergyReadout(net, multiply_cutoff=True)
    return AtomEnergyReadout(net)


_ALLEGRO_DEFAULTS = {
    "readout_mlp_hidden_layers_depth": 1,
    "readout_mlp_hidden_layers_width": 32,
    "readout_mlp_nonlinearity": "silu",
}
register_readout("allegro", _allegro_factory, _ALLEGRO_DEFAULTS)
register_readout(
    "allegro_mlp",
    _allegro_mlp_factory,
    {**_ALLEGRO_DEFAULTS, "mlp_readout_depth": 2, "mlp_readout_width": 64},
)
register_readout(
    "allegro_qdi",
    _allegro_qdi_factory,
    # TQ42's published QDI layer defaults (rotation Z, strong entangling, measure Y, measurement_mode
    # none, 4 qubits, depth 4); two uploads put 8 features through the 4 qubits
    {
        "n_qubits": 4,
        "qdi_uploads": 2,
        "qdi_depth": 4,
        "rotation": "Z",
        "entangling": "strong",
        "measure": "Y",
        "measurement_mode": "none",
        "qdi_placement": "edge",
    },
)
