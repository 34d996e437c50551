"""Deployment: TorchScript export with pair_allegro's contract, its loader, the ASE calculator, and
metatomic export.

``export_model(model, path)`` (= ``qallegro.deploy.export.export``) writes the file (``portable=True``:
no op library needed), ``load(path)`` loads the op library and reads it back with its metadata, and
``QAllegroCalculator`` runs either in ASE. The LAMMPS ``pair_style qallegro`` (csrc/lammps) runs
the same file. ``export_metatomic(model, path)`` (:mod:`qallegro.deploy.metatomic`, needs
metatomic-torch) writes a metatomic model for metatomic-ase, i-PI and other metatomic engines.
"""

from qallegro.deploy.export import DeployedEdgeModel, DeployedModel, load, read_metadata, wrap
from qallegro.deploy.export import export as export_model

__all__ = ["DeployedModel", "DeployedEdgeModel", "export_model", "export_metatomic", "load", "read_metadata",
           "wrap", "QAllegroCalculator"]


def __getattr__(name):
    # the calculator imports ASE and the metatomic export metatomic-torch; keep `import qallegro.deploy`
    # light for the export CLI
    if name == "QAllegroCalculator":
        from qallegro.deploy.calculator import QAllegroCalculator

        return QAllegroCalculator
    if name == "export_metatomic":
        from qallegro.deploy.metatomic import export_metatomic

        return export_metatomic
    raise AttributeError(name)
