"""Public model API: ``qallegro.models.build(kind, type_names, r_max, **hparams)``.

Kinds: "allegro" (published edge readout MLP), "allegro_mlp" (extra readout MLP layers,
``mlp_readout_depth``/``mlp_readout_width``), "allegro_qdi" (quantum depth-infused readout,
``qdi_placement: edge|atom``). Save and load with :func:`save_model` / :func:`load_model`; convert
a nequip-allegro model with :func:`from_nequip_allegro`.
"""

from qallegro.model.builder import BUILD_DEFAULTS, ENERGY_DEFAULTS, build, resolve_hparams
from qallegro.model.io import load_model, save_model
from qallegro.model.readouts import readout_kinds, register_readout


def from_nequip_allegro(nequip_model, **kwargs):
    """See :func:`qallegro.model.convert.from_nequip_allegro` (imports nequip lazily)."""
    from qallegro.model.convert import from_nequip_allegro as _convert

    return _convert(nequip_model, **kwargs)


__all__ = [
    "build",
    "resolve_hparams",
    "ENERGY_DEFAULTS",
    "BUILD_DEFAULTS",
    "readout_kinds",
    "register_readout",
    "save_model",
    "load_model",
    "from_nequip_allegro",
]
