"""Checkpoints and model files: verified on load, every failure names the file, readable by others."""

from __future__ import annotations

import os
import stat

import ase.io
import pytest
import torch

from qallegro.cli import main
from qallegro.errors import CorruptFileError
from qallegro.train import fit
from qallegro.train.checkpoint import load_any_model, load_checkpoint
from tests.train.train_fixtures import standin_config, teacher_structures


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch stand-in run (last.pt, best.pt) and its data as extxyz."""
    tmp = tmp_path_factory.mktemp("integrity")
    structures = teacher_structures(10, seed=9)
    old = os.umask(0o022)
    try:
        fit(standin_config(tmp, training__max_epochs=2), structures)
    finally:
        os.umask(old)
    data = tmp / "data.extxyz"
    ase.io.write(data, [s.to_ase() for s in structures])
    return tmp / "run", data, structures


def test_run_files_are_readable_by_group_and_others(trained):
    run, _, _ = trained
    for name in ("last.pt", "best.pt", "metrics.csv"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def _flip_inside_weights(path, tmp_path):
    """A copy of ``path`` with one bit flipped inside the bytes of a stored weight tensor."""
    ckpt = load_checkpoint(path)
    weights = next(v for v in ckpt["model_state"].values() if v.is_floating_point() and v.numel() >= 8)
    data = bytearray(path.read_bytes())
    offset = bytes(data).index(weights.numpy().tobytes()) + 8 * 3 + 2
    data[offset] ^= 0x10
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    # torch alone does not notice: it loads the changed weight
    changed = torch.load(bad, weights_only=False)["model_state"]
    assert any(not torch.equal(changed[k], v) for k, v in ckpt["model_state"].items())
    return bad


def test_flipped_bit_is_refused_on_resume_and_evaluate(trained, tmp_path, capsys):
    run, data, structures = trained
    bad = _flip_inside_weights(run / "last.pt", tmp_path)
    with pytest.raises(CorruptFileError, match=rf"{bad}: sha256 mismatch"):
        fit(standin_config(tmp_path, training__max_epochs=3), structures, resume=bad)
    assert main(["evaluate", str(bad), str(data)]) == 2
    assert f"error: {bad}: sha256 mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "pickle-of-object"])
def test_damaged_files_give_one_line_naming_the_file(trained, tmp_path, capsys, damage):
    run, data, _ = trained
    good = (run / "best.pt").read_bytes()
    bad = tmp_path / "broken.pt"
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif damage == "random":
        bad.write_bytes(os.urandom(len(good)))
    else:  # a torch file holding a Python object: torch's advice would be weights_only=False
        torch.save({"format": "qallegro-model-v1", "obj": CorruptFileError("x")}, bad)
    with pytest.raises(CorruptFileError, match="broken.pt"):
        load_any_model(bad)
    assert main(["evaluate", str(bad), str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qallegro evaluate: error: {bad}") and err.count("\n") == 1
    assert "weights_only" not in err


def test_stale_temp_files_are_removed_on_resume(trained, tmp_path):
    run, _, structures = trained
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("last.pt", "best.pt"):
        (copy / name).write_bytes((run / name).read_bytes())
    leftovers = [copy / ".last.pt.k1ll3d_x.tmp", copy / ".best_model.pt.abcdefgh.tmp"]
    for p in leftovers:
        p.write_bytes(b"half a checkpoint")
    fit(standin_config(tmp_path, training__max_epochs=3), structures, resume=True)
    assert not any(p.exists() for p in leftovers)
    assert not list(copy.glob(".*.tmp"))


def test_weights_that_do_not_fit_name_the_file(trained, tmp_path):
    from qallegro.utils import atomic_torch_save

    run, _, _ = trained
    ckpt = load_checkpoint(run / "best.pt")
    key = next(k for k, v in ckpt["eval_state"].items() if v.is_floating_point() and v.dim() > 0)
    ckpt["eval_state"][key] = torch.zeros(ckpt["eval_state"][key].numel() + 1, dtype=ckpt["eval_state"][key].dtype)
    bad = atomic_torch_save(ckpt, tmp_path / "resized.pt")  # a valid checksum: the content itself is wrong
    with pytest.raises(CorruptFileError, match=rf"{bad}: its weights do not fit the model"):
        load_any_model(bad)


def test_numpy_scalars_in_a_checkpoint_load(tmp_path):
    # e.g. hyperparameters proposed by an HPO sampler, saved before configs converted them
    import numpy as np

    from qallegro.utils import atomic_torch_save, numpy_safe_globals, read_verified, torch_load_bytes

    path = atomic_torch_save({"hparams": {"a": np.int64(3), "b": np.float64(0.5), "c": np.float32(2), "d": np.bool_(True)}},
                             tmp_path / "np.pt")
    loaded = torch_load_bytes(read_verified(path), str(path), "test file", safe_globals=numpy_safe_globals())
    assert loaded["hparams"] == {"a": 3, "b": 0.5, "c": 2.0, "d": True}
