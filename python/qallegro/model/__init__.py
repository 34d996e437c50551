"""qallegro.model: Allegro with linear/MLP/QDI readouts, builder, converter and model files."""

from qallegro.model.allegro import AllegroEnergy, AllegroModel
from qallegro.model.builder import build
from qallegro.model.io import load_model, save_model
from qallegro.model.readouts import AtomEnergyReadout, EdgeEnergyReadout, register_readout

__all__ = [
    "AllegroEnergy",
    "AllegroModel",
    "build",
    "save_model",
    "load_model",
    "register_readout",
    "EdgeEnergyReadout",
    "AtomEnergyReadout",
]
