"""Fixtures of the deployment tests: models (a Morse stand-in and the real Allegro kinds), their
exports, and structures (a periodic Cu-Li cell, a real Cu-Li DFT frame shipped with qallegro, a
molecule)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.deploy.pair_model import MorsePairModel

#: (dtype) -> (rtol, atol) for comparisons between two evaluations of one model.
TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-4, 1e-5)}
TYPE_NAMES = ["Cu", "Li", "C", "H", "O"]
R_MAX = 4.0
ALL_KINDS = ("allegro", "allegro_mlp", "allegro_qdi")
#: kinds that export to TorchScript (all of them; Allegro+QDI with its default qdi_placement "edge",
#: the fixture ``qdi_export`` covers both placements)
EXPORT_KINDS = ("allegro", "allegro_mlp", "allegro_qdi")
QDI_PLACEMENTS = ("edge", "atom")

# small networks: the tests check deployment, not accuracy
SMALL = dict(num_layers=1, num_scalar_features=8, num_tensor_features=4, num_bessels=4,
             scalar_embed_mlp_hidden_layers_width=8, allegro_mlp_hidden_layers_width=8)


def assert_close(actual, expected, dtype=torch.float64, what=""):
    rtol, atol = TOL[dtype]
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale + atol, f"{what}: max |difference| {err:.3g} > {rtol:g} x {scale:.3g} + {atol:g}"


def build_real(kind: str, dtype: str = "float64", **hparams):
    """A small real model of ``kind`` (every kind is built: a broken import fails the test)."""
    from qallegro import models

    return models.build(kind, TYPE_NAMES, R_MAX, model_dtype=dtype, seed=7, **SMALL, **hparams).eval()


@pytest.fixture(scope="session")
def morse_model():
    return MorsePairModel(TYPE_NAMES, R_MAX, seed=3).double().eval()


@pytest.fixture(scope="session")
def morse_export(morse_model, tmp_path_factory):
    from qallegro.deploy.export import export

    path = tmp_path_factory.mktemp("export") / "morse.pt"
    export(morse_model, path)
    return path


@pytest.fixture(scope="session", params=["morse", *EXPORT_KINDS])
def any_export(request, morse_export, tmp_path_factory):
    """(kind, path of a float64 export) for the stand-in and every real kind."""
    if request.param == "morse":
        return "morse", morse_export
    from qallegro.deploy.export import export

    model = build_real(request.param)
    path = tmp_path_factory.mktemp("export") / f"{request.param}.pt"
    export(model, path)
    return request.param, path


@pytest.fixture(scope="session", params=QDI_PLACEMENTS)
def qdi_export(request, tmp_path_factory):
    """(placement, the float64 Allegro+QDI model, path of its export) for both QDI placements."""
    from qallegro.deploy.export import export

    model = build_real("allegro_qdi", qdi_placement=request.param)
    path = tmp_path_factory.mktemp("export") / f"allegro_qdi_{request.param}.pt"
    export(model, path)
    return request.param, model, path


def culi_cell():
    """32-atom triclinic Cu-Li cell: fcc Cu with 8 Li, sheared and rattled (periodic)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(11)
    atoms.symbols[rng.choice(len(atoms), 8, replace=False)] = "Li"
    cell = atoms.cell[:].copy()
    cell[1] += [0.4, 0.0, 0.0]
    cell[2] += [0.3, -0.2, 0.0]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.08, seed=5)
    return atoms


def culi_dft_frame():
    """A periodic Cu-Li DFT frame holding both elements, from the data shipped with qallegro (GPAW, PBE)."""
    from ase.io import iread

    from qallegro.data.datasets import builtin_path

    for atoms in iread(str(builtin_path("culi-gpaw")), index=":"):
        if atoms.pbc.all() and set(atoms.get_chemical_symbols()) == {"Cu", "Li"} and len(atoms) >= 6:
            atoms.calc = None
            return atoms
    raise AssertionError("the shipped culi-gpaw set has no periodic frame with both Cu and Li")


def molecule():
    """Ethanol (no cell, no pbc)."""
    from ase.build import molecule as ase_molecule

    atoms = ase_molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=2)
    return atoms
