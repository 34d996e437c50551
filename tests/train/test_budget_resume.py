"""time_budget stops at a step boundary; --resume then ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from qallegro.train import fit
from qallegro.train.checkpoint import load_checkpoint
from tests.train.train_fixtures import standin_config, teacher_structures

# a budget every step overruns: each call to fit takes exactly one optimiser step and stops
ONE_STEP = 1e-9


def _rows(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def test_one_step_per_call_resumes_to_the_uninterrupted_run(tmp_path):
    structures = teacher_structures(10, seed=6)
    # 8 training structures in batches of 3: 3 steps per epoch, the last one partial
    overrides = dict(training__max_epochs=3, training__batch_size=3)
    straight = fit(standin_config(tmp_path / "a", **overrides), structures)

    cfg = standin_config(tmp_path / "b", **overrides)
    first = fit(cfg, structures, time_budget=ONE_STEP)
    assert "after 1 of 3 steps of epoch 1" in first.stop_reason
    assert first.history == []  # the cut-off epoch is not counted
    ckpt = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert ckpt["training_state"]["epoch"] == 0 and ckpt["training_state"]["partial"]["steps_done"] == 1
    calls = 1
    while True:
        result = fit(cfg, structures, resume=True, time_budget=ONE_STEP)
        calls += 1
        if result.stop_reason.startswith("max_epochs") or calls > 20:
            break
    assert calls == 9  # 3 epochs x 3 steps, one step per call

    a = load_checkpoint(straight.last_checkpoint_path)
    b = load_checkpoint(result.last_checkpoint_path)
    assert a["training_state"]["step"] == b["training_state"]["step"] == 9
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
        assert torch.equal(a["eval_state"][key], b["eval_state"][key]), key
    assert _rows(straight.history) == _rows(result.history)  # train metrics of cut epochs included
    assert b["training_state"]["partial"] is None


def test_budget_shorter_than_an_epoch_still_returns_a_model(tmp_path):
    structures = teacher_structures(10, seed=6)
    result = fit(standin_config(tmp_path, training__batch_size=3), structures, time_budget=ONE_STEP, write_files=False)
    assert result.stop_reason.startswith("time_budget") and result.best_epoch == 0
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())


def test_resume_inside_an_epoch_needs_the_same_steps(tmp_path):
    structures = teacher_structures(10, seed=6)
    fit(standin_config(tmp_path, training__batch_size=3), structures, time_budget=ONE_STEP)
    with pytest.raises(ValueError, match=r"stopped after step 1 of 3 in epoch 1, but this run has 2 steps"):
        fit(standin_config(tmp_path, training__batch_size=4), structures, resume=True)
