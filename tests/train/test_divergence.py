"""A diverging run stops with TrainingDiverged; no NaN model is ever written or returned as best."""

from __future__ import annotations

import pytest
import torch

from qallegro.errors import TrainingDiverged
from qallegro.train import fit
from qallegro.train.checkpoint import load_checkpoint
from tests.train.train_fixtures import standin_config, teacher_structures


# Adam moves each weight by ~lr per step; the stand-in's loss is quadratic in its weights, so these
# learning rates overflow the dtype within the first epochs
@pytest.mark.parametrize("dtype, lr", [("float64", 1e300), ("float32", 1e30)])
def test_huge_learning_rate_stops_with_a_clear_error(tmp_path, dtype, lr):
    structures = teacher_structures(10, seed=7)
    cfg = standin_config(tmp_path, dtype=dtype, optimizer__lr=lr, training__max_epochs=20)
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d+, step \d+: .*optimizer\.lr"):
        fit(cfg, structures)
    run = tmp_path / "run"
    assert not (run / "best_model.pt").exists()
    for name in ("last.pt", "best.pt"):  # whatever was saved before the divergence is finite
        if (run / name).exists():
            ckpt = load_checkpoint(run / name)
            for state in (ckpt["model_state"], ckpt["eval_state"]):
                assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_loss_never_updates_the_weights(tmp_path, monkeypatch):
    # a NaN label in one structure: the step with that structure must not be taken
    import qallegro.train.trainer as trainer

    structures = teacher_structures(10, seed=8)
    real = trainer.compute_loss
    calls = []

    def nan_on_third(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), terms

    monkeypatch.setattr(trainer, "compute_loss", nan_on_third)
    with pytest.raises(TrainingDiverged, match="step 3: the loss is nan"):
        fit(standin_config(tmp_path, training__max_epochs=2), structures)
