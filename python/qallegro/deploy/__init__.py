"""Deployment: TorchScript export with pair_allegro's contract, its loader, and the ASE calculator.

``export_model(model, path)`` (= ``qallegro.deploy.export.export``) writes the file, ``load(path)`` reads it back with its metadata, and
``QAllegroCalculator`` runs either in ASE. The LAMMPS ``pair_style qallegro`` (csrc/lammps) runs
the same file.
"""

from qallegro.deploy.export import DeployedModel, load, read_metadata, wrap
from qallegro.deploy.export import export as export_model

__all__ = ["DeployedModel", "export_model", "load", "read_metadata", "wrap", "QAllegroCalculator"]


def __getattr__(name):
    # the calculator imports ASE; keep `import qallegro.deploy` light for the export CLI
    if name == "QAllegroCalculator":
        from qallegro.deploy.calculator import QAllegroCalculator

        return QAllegroCalculator
    raise AttributeError(name)
