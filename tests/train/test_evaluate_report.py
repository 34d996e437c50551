"""`qallegro evaluate` reports and writes its metrics for any labelled data, zero forces included."""

from __future__ import annotations

import json

import ase.io
import numpy as np

from qallegro.cli import main
from qallegro.train import fit
from tests.train.train_fixtures import standin_config, teacher_structures


def test_all_zero_reference_forces(tmp_path, capsys):
    structures = teacher_structures(6, seed=10)
    fit(standin_config(tmp_path, training__max_epochs=1), structures)
    for s in structures:  # e.g. relaxed geometries: every force label is zero
        s.forces = np.zeros_like(s.forces)
    data = tmp_path / "relaxed.extxyz"
    ase.io.write(data, [s.to_ase() for s in structures])
    out = tmp_path / "m.json"
    assert main(["evaluate", str(tmp_path / "run" / "best.pt"), str(data), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the reference forces do not vary" in text
    metrics = json.loads(out.read_text())
    assert metrics["forces_std_meV_per_A"] == 0.0 and metrics["forces_mae_meV_per_A"] > 0
