"""Per-type energy shifts (least squares), force RMS scales, EMA, loss normalisation, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.train.train_fixtures import TOL, teacher_structures
from qallegro.data import collate
from qallegro.train.config import LossConfig
from qallegro.train.dataset import concat
from qallegro.train.ema import ExponentialMovingAverage
from qallegro.train.loss import compute_loss, loss_counts, loss_from_metrics
from qallegro.train.metrics import ErrorAccumulator
from qallegro.train.statistics import (
    forces_rms,
    least_squares_energy_shifts,
    per_type_forces_rms,
    resolve_model_statistics,
)


def test_least_squares_recovers_per_type_energies():
    structures = teacher_structures(12, seed=11)
    true = torch.tensor([-13.6, -2041.0], dtype=torch.float64)  # eV per H, per O
    for s in structures:
        s.energy = float(sum(true[0] if z == 1 else true[1] for z in s.numbers))
    batch = collate(structures, 3.0, ["H", "O"])
    torch.testing.assert_close(least_squares_energy_shifts(batch, 2), true, rtol=1e-10, atol=1e-8)


def test_collinear_compositions_give_minimum_norm_shifts():
    # every structure is H2O: only 2 s_H + s_O is determined; gelsd returns the minimum-norm solution
    structures = teacher_structures(6, seed=12)
    for s in structures:
        s.numbers = np.array([1, 8, 1])
        s.positions = s.positions[:3]
        s.forces = s.forces[:3]
        s.energy = -2068.2
    shifts = least_squares_energy_shifts(collate(structures, 3.0, ["H", "O"]), 2)
    torch.testing.assert_close(2 * shifts[0] + shifts[1], torch.tensor(-2068.2, dtype=torch.float64))
    torch.testing.assert_close(shifts, torch.tensor([2.0, 1.0], dtype=torch.float64) * -2068.2 / 5)


def test_force_rms_overall_and_per_type():
    structures = teacher_structures(5, seed=13)
    batch = collate(structures, 3.0, ["H", "O"])
    f = batch["forces"]
    assert forces_rms(batch) == pytest.approx(float(f.square().mean().sqrt()), rel=1e-12)
    per = per_type_forces_rms(batch, 2)
    for t in range(2):
        assert float(per[t]) == pytest.approx(float(f[batch["atom_type"] == t].square().mean().sqrt()), rel=1e-12)
    stats = resolve_model_statistics(batch, ["H", "O"], "least_squares", "per_type_forces_rms", "auto")
    assert stats["avg_num_neighbors"] == pytest.approx(batch["edge_index"].shape[1] / batch["pos"].shape[0])
    assert stats["per_type_energy_scales"] == pytest.approx(per.tolist())
    with pytest.raises(ValueError, match="3 values for 2 types"):
        resolve_model_statistics(batch, ["H", "O"], [1.0, 2.0, 3.0], None, None)


def test_concat_equals_collate():
    structures = teacher_structures(4, seed=14, periodic=True)
    whole = collate(structures, 3.0, ["H", "O"])
    joined = concat([collate([s], 3.0, ["H", "O"]) for s in structures])
    assert set(whole) == set(joined)
    for k in whole:
        if k == "edge_index":  # same edges, possibly in another order within a structure
            key = lambda e, sh: sorted(zip(e[0].tolist(), e[1].tolist(), map(tuple, sh.tolist())))
            assert key(whole[k], whole["edge_cell_shift"]) == key(joined[k], joined["edge_cell_shift"])
        elif k != "edge_cell_shift":
            torch.testing.assert_close(joined[k], whole[k], rtol=0, atol=0)


def test_loss_is_global_mean_and_matches_metrics():
    structures = teacher_structures(5, seed=15, periodic=True)
    batch = collate(structures, 3.0, ["H", "O"])
    pred = {"total_energy": batch["total_energy"] + 0.1 * torch.arange(5.0, dtype=torch.float64)[:, None],
            "forces": batch["forces"] * 1.1, "stress": batch["stress"] + 0.01}
    cfg = LossConfig(energy_weight=2.0, forces_weight=1.0, stress_weight=3.0)
    loss, terms = compute_loss(pred, batch, cfg, loss_counts(batch, cfg))
    expected_e = ((pred["total_energy"] - batch["total_energy"]).reshape(-1) / batch["num_atoms"]).square().mean()
    assert terms["energy"] == pytest.approx(float(expected_e), rel=1e-12)
    assert terms["forces"] == pytest.approx(float((0.1 * batch["forces"]).square().mean()), rel=1e-12)
    assert terms["stress"] == pytest.approx(1e-4, rel=1e-12)
    acc = ErrorAccumulator(["H", "O"])
    # split the batch in two pieces: the accumulated metrics give the same loss
    for idx in ([0, 1], [2, 3, 4]):
        b = collate([structures[i] for i in idx], 3.0, ["H", "O"])
        p = {"total_energy": b["total_energy"] + 0.1 * torch.tensor(idx, dtype=torch.float64)[:, None],
             "forces": b["forces"] * 1.1, "stress": b["stress"] + 0.01}
        acc.update(p, b)
    metrics = acc.compute()
    rtol, atol = TOL[torch.float64]
    assert loss_from_metrics(metrics, cfg) == pytest.approx(float(loss), rel=rtol, abs=atol)
    assert metrics["forces_H_mae"] > 0 and metrics["forces_O_mae"] > 0


def test_ema_average_and_swap():
    model = torch.nn.Linear(2, 1)
    ema = ExponentialMovingAverage(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay: min(0.5, 2/11) = 2/11
    expected = start + (1 - 2 / 11) * 1.0
    torch.testing.assert_close(ema.shadow["weight"], expected)
    trained = model.weight.detach().clone()
    with ema.average_parameters(model):
        torch.testing.assert_close(model.weight.detach(), expected)
    torch.testing.assert_close(model.weight.detach(), trained)
