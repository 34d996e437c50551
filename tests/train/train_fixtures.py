"""Helpers for the trainer tests: teacher-labelled structures and the stand-in pair model.

A plain module (not conftest.py), imported as ``tests.train.train_fixtures``.

Labels come from a randomly initialised :class:`train_standin.PairPotential` ("teacher"), so a
student of the same form can fit them exactly and the tests measure the trainer, not the model.
"""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import SHARED_DATA as DATA  # noqa: F401 (re-exported for the tests)
from tests.train import train_standin

STANDIN_BUILDER = "tests.train.train_standin:build"

# one (dtype) -> (rtol, atol) table for the room
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}


def teacher_structures(n: int, seed: int = 0, periodic: bool = False, with_forces: bool = True):
    """``n`` random H/O clusters (or periodic cells) labelled by a fixed random pair potential."""
    from qallegro.data import Structure, collate

    rng = np.random.default_rng(seed)
    torch.manual_seed(1234)
    teacher = train_standin.PairPotential(["H", "O"], 3.0).double().eval()
    frames = []
    for k in range(n):
        natoms = int(rng.integers(4, 8))
        numbers = rng.choice([1, 8], size=natoms)
        numbers[:2] = [1, 8]
        if periodic:
            cell = np.eye(3) * 4.0 + rng.normal(0, 0.1, (3, 3))
            s = Structure(rng.uniform(0, 1, (natoms, 3)) @ cell, numbers, cell=cell, pbc=[True] * 3)
        else:
            s = Structure(rng.uniform(0, 2.5, (natoms, 3)), numbers)
        pred = teacher(collate([s], 3.0, ["H", "O"]))
        s.energy = float(pred["total_energy"].detach()[0, 0]) - 3.0 * natoms  # a per-atom offset to fit
        if with_forces:
            s.forces = pred["forces"].detach().numpy()
        if periodic:
            s.stress = pred["stress"].detach().numpy()[0]
        s.source = f"teacher frame {k}"
        frames.append(s)
    return frames


def standin_config(tmp_path, **overrides):
    cfg = {
        "seed": 0,
        "run_dir": str(tmp_path / "run"),
        "dtype": "float64",
        "device": "cpu",
        "data": {"train_size": 0.8, "val_size": 0.2, "split_seed": 0},
        "model": {"kind": "pair", "r_max": 3.0, "builder": STANDIN_BUILDER, "num_basis": 8},
        "optimizer": {"name": "adam", "lr": 0.02},
        "scheduler": {"name": "plateau", "patience": 5, "factor": 0.5},
        "training": {"max_epochs": 5, "batch_size": 2, "val_batch_size": 4, "progress": False,
                     "tensorboard": False, "ema_decay": 0.9},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            cfg.setdefault(section, {})[name] = value
        else:
            cfg[section] = value
    return cfg
