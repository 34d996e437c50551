"""qallegro.nn: building blocks of Allegro (radial basis, cutoff, MLPs, tensor track) and QDILayer."""

from qallegro.nn.mlp import ScalarLinear, ScalarMLP
from qallegro.nn.radial import BesselBasis, PolynomialCutoff
from qallegro.nn.scatter import scatter_sum
from qallegro.nn.spherical_harmonics import EdgeSphericalHarmonics
from qallegro.nn.tensor_product import AllegroTensorProduct, WeightedChannels, layer_irreps, sh_irreps

__all__ = [
    "ScalarLinear",
    "ScalarMLP",
    "BesselBasis",
    "PolynomialCutoff",
    "scatter_sum",
    "EdgeSphericalHarmonics",
    "AllegroTensorProduct",
    "WeightedChannels",
    "layer_irreps",
    "sh_irreps",
]


def __getattr__(name):
    # QDILayer lives in qallegro.nn.qdi (issue 5) and is imported lazily: it pulls in the QDI ops
    if name == "QDILayer":
        from qallegro.nn.qdi import QDILayer

        return QDILayer
    raise AttributeError(f"module 'qallegro.nn' has no attribute {name!r}")
