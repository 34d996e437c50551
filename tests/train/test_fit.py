"""The training loop on the stand-in pair model: overfitting, exact resume, checkpoints, metrics files."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.train.train_fixtures import standin_config, teacher_structures
from qallegro.train import evaluate, fit
from qallegro.train.checkpoint import load_checkpoint, model_from_checkpoint


def test_overfit_five_structures_loss_drops_100x(tmp_path):
    structures = teacher_structures(5, seed=1)
    cfg = standin_config(tmp_path, data__train_size=5, data__val_size=0,
                         training__max_epochs=80, training__batch_size=5, training__ema_decay=None,
                         training__early_stopping_patience=None, optimizer__lr=0.1, scheduler__name="none",
                         model__per_type_energy_shifts="least_squares")
    result = fit(cfg, structures, write_files=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] / 100, f"loss went {losses[0]:.3g} -> {losses[-1]:.3g}"
    assert result.stop_reason == "max_epochs"


def test_resume_continues_exactly(tmp_path):
    structures = teacher_structures(10, seed=2)
    straight = fit(standin_config(tmp_path / "a", training__max_epochs=4), structures)
    fit(standin_config(tmp_path / "b", training__max_epochs=2), structures)
    resumed = fit(standin_config(tmp_path / "b", training__max_epochs=4), structures, resume=True)
    a = load_checkpoint(straight.last_checkpoint_path)
    b = load_checkpoint(resumed.last_checkpoint_path)
    assert a["training_state"]["epoch"] == b["training_state"]["epoch"] == 4
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
        assert torch.equal(a["eval_state"][key], b["eval_state"][key]), key
    assert a["training_state"]["optimizer"]["state"][0]["step"] == b["training_state"]["optimizer"]["state"][0]["step"]
    drop = ("time",)
    ha = [{k: v for k, v in r.items() if k not in drop} for r in straight.history]
    hb = [{k: v for k, v in r.items() if k not in drop} for r in resumed.history]
    assert ha == hb
    with open(tmp_path / "b" / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_checkpoints_best_and_last_rebuild_the_model(tmp_path):
    structures = teacher_structures(10, seed=3, periodic=True)
    cfg = standin_config(tmp_path, training__max_epochs=3, loss__stress_weight=1.0, training__tensorboard=True)
    result = fit(cfg, structures)
    run = tmp_path / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    assert list((run / "tensorboard").iterdir()), "no TensorBoard event file"
    assert not list(run.glob(".*.tmp")), "temporary checkpoint left behind"
    best = load_checkpoint(run / "best.pt")
    assert best["training_state"]["epoch"] == result.best_epoch
    model = model_from_checkpoint(run / "best.pt")
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    # evaluate() on the validation split gives the best epoch's validation metrics (meV units)
    from qallegro.data import random_split

    _, val = random_split(structures, [0.8, 0.2], seed=0)
    metrics = evaluate(model, val)
    assert metrics["forces_mae_meV_per_A"] == pytest.approx(1000 * result.best_metrics["val_forces_mae"], rel=1e-9)
    assert metrics["energy_mae_meV_per_atom"] == pytest.approx(1000 * result.best_metrics["val_energy_per_atom_mae"], rel=1e-9)
    assert "stress_mae_meV_per_A3" in metrics
    assert set(metrics["per_element"]) == {"H", "O"}


def test_time_budget_and_callback_stop_training(tmp_path):
    structures = teacher_structures(10, seed=4)
    seen = []

    def stop_at_two(epoch, row):
        seen.append(row["val_forces_mae"])
        return epoch >= 2

    result = fit(standin_config(tmp_path, training__max_epochs=50), structures, callback=stop_at_two, write_files=False)
    assert result.stop_reason == "callback" and len(result.history) == 2 and len(seen) == 2
    result = fit(standin_config(tmp_path, training__max_epochs=10_000), structures, time_budget=1.0, write_files=False)
    assert result.stop_reason.startswith("time_budget") and len(result.history) < 10_000


def test_early_stopping(tmp_path):
    structures = teacher_structures(10, seed=5)
    # lr so small that the monitored metric cannot improve by min_delta: stops after `patience` epochs
    cfg = standin_config(tmp_path, training__max_epochs=100, training__early_stopping_patience=3,
                         training__early_stopping_min_delta=1e6, optimizer__lr=1e-9)
    result = fit(cfg, structures, write_files=False)
    assert result.stop_reason.startswith("early_stopping")
    assert len(result.history) == 1 + 3  # the first epoch sets the best, then `patience` bad ones
