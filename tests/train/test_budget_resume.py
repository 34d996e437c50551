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


def _budget_worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """One DDP rank that trains one step per fit call (budget stops), resuming until max_epochs."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        structures = teacher_structures(11, seed=7, periodic=True)
        result = fit(cfg, structures, time_budget=ONE_STEP)
        for _ in range(20):
            if result.stop_reason.startswith("max_epochs"):
                break
            dist.barrier()  # rank 0 has written last.pt before any rank reads it
            result = fit(cfg, structures, resume=True, time_budget=ONE_STEP)
        if rank == 0:
            torch.save({"history": result.history, "state": result.model.state_dict()}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns three interpreters (~40 s)
def test_two_processes_resumed_step_by_step_match_one_uninterrupted(tmp_path):
    import torch.multiprocessing as mp

    from tests.train.test_distributed import _free_port, _single
    from tests.train.train_fixtures import TOL

    # the DDP test's setting: steps of 4, 4 and 1 structures, rank 1 empty in the last step
    common = dict(data__train_size=9, data__val_size=2, training__max_epochs=2, training__batch_size=4,
                  loss__stress_weight=0.5)
    mp.spawn(_single, args=(standin_config(tmp_path / "one", **common), str(tmp_path / "one.pt")), nprocs=1, join=True)
    single = torch.load(tmp_path / "one.pt", weights_only=False)
    out = str(tmp_path / "two.pt")
    mp.spawn(_budget_worker, args=(2, _free_port(), standin_config(tmp_path / "two", **common), out), nprocs=2, join=True)
    multi = torch.load(out, weights_only=False)
    rtol, atol = TOL[torch.float64]
    for key, value in single["state"].items():
        torch.testing.assert_close(multi["state"][key], value, rtol=rtol, atol=atol, msg=key)
    assert len(multi["history"]) == len(single["history"]) == 2
    for a, b in zip(single["history"], multi["history"]):  # train errors summed over cut epochs and ranks
        for key, value in a.items():
            if key != "time":
                assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
