"""``build(kind, type_names, r_max, **hparams)``: one entry point for every Allegro variant.

Hyperparameter names follow nequip-allegro's ``AllegroModel`` so that configs and HPO spaces
translate directly; readout-specific names come from the readout registry
(:mod:`qallegro.model.readouts`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch

from qallegro.model.allegro import AllegroEnergy, AllegroModel
from qallegro.model.readouts import readout_entry
from qallegro.utils import default_dtype

#: Hyperparameters of the shared part of the model and their defaults (nequip-allegro's names).
ENERGY_DEFAULTS: Dict[str, Any] = {
    "l_max": 1,
    "parity": True,
    "num_layers": 2,
    "num_scalar_features": 64,
    "num_tensor_features": 16,
    "num_bessels": 8,
    "bessel_trainable": False,
    "polynomial_cutoff_p": 6,
    "radial_chemical_embed_dim": None,
    "scalar_embed_mlp_hidden_layers_depth": 1,
    "scalar_embed_mlp_hidden_layers_width": 64,
    "scalar_embed_mlp_nonlinearity": "silu",
    "allegro_mlp_hidden_layers_depth": 1,
    "allegro_mlp_hidden_layers_width": 64,
    "allegro_mlp_nonlinearity": "silu",
    "tp_path_channel_coupling": True,
    "avg_num_neighbors": None,
    "per_type_energy_scales": None,
    "per_type_energy_shifts": None,
    "per_type_energy_scales_trainable": False,
    "per_type_energy_shifts_trainable": False,
}
#: Build options that are not architecture: precision, initialisation seed, derivatives.
BUILD_DEFAULTS: Dict[str, Any] = {"model_dtype": "float32", "seed": None, "do_derivatives": True}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}




def resolve_hparams(kind: str, hparams: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults filled in; ValueError on unknown names (listing the valid ones)."""
    _, readout_defaults = readout_entry(kind)
    allowed = {**ENERGY_DEFAULTS, **readout_defaults, **BUILD_DEFAULTS}
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for model kind {kind!r}; valid: {sorted(allowed)}")
    out = {**allowed, **hparams}
    if out["model_dtype"] not in _DTYPES:
        raise ValueError(f"model_dtype must be 'float32' or 'float64', got {out['model_dtype']!r}")
    return out


def build(kind: str, type_names: Sequence[str], r_max: float, **hparams: Any) -> AllegroModel:
    """Build an Allegro model of ``kind`` ("allegro", "allegro_mlp", "allegro_qdi", ...).

    type_names: species names, ``atom_type`` indexes them; r_max: cutoff radius in Å; hparams: see
    :data:`ENERGY_DEFAULTS`, the readout's defaults and :data:`BUILD_DEFAULTS`. Returns an
    :class:`AllegroModel` with ``kind``, ``type_names``, ``r_max`` and ``hparams`` recorded.
    """
    type_names = [str(t) for t in type_names]
    if not type_names or len(set(type_names)) != len(type_names):
        raise ValueError(f"type_names must be non-empty and unique, got {type_names}")
    hp = resolve_hparams(kind, dict(hparams))
    factory, readout_defaults = readout_entry(kind)
    energy_kwargs = {k: hp[k] for k in ENERGY_DEFAULTS}
    readout_kwargs = {k: hp[k] for k in readout_defaults}
    seed: Optional[int] = hp["seed"]
    with default_dtype(_DTYPES[hp["model_dtype"]]), torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        in_features = hp["num_scalar_features"] * (hp["num_layers"] + 1)
        readout = factory(in_features, readout_kwargs)
        energy = AllegroEnergy(type_names, float(r_max), readout, **energy_kwargs)
    model = AllegroModel(energy, kind, type_names, hp, do_derivatives=bool(hp["do_derivatives"]))
    return model.to(_DTYPES[hp["model_dtype"]])
