"""Atomic writes (file mode, stale temporary files) and torch files that carry their sha256."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from qallegro.errors import CorruptFileError
from qallegro.utils import (atomic_torch_save, atomic_write_text, read_verified, remove_stale_temp_files,
                            torch_load_bytes, verify_checksum)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_write_respects_the_umask(tmp_path, umask_022):
    # mkstemp alone gives 0o600: other users of a cluster could not read exported models
    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o077)
    path = atomic_write_text(tmp_path / "b.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_remove_stale_temp_files_only_touches_atomic_write_leftovers(tmp_path):
    stale = [tmp_path / ".last.pt.abcd_123.tmp", tmp_path / ".metrics.csv.zz99zz99.tmp"]
    kept = [tmp_path / "last.pt", tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / ".x.toolong123.tmp"]
    for p in stale + kept:
        p.write_text("x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    (tmp_path / ".best.pt.abcdefgh.tmp").write_text("x")
    assert remove_stale_temp_files(tmp_path, names=["last.pt"]) == []


def _saved(tmp_path):
    path = tmp_path / "m.pt"
    atomic_torch_save({"w": torch.linspace(0, 1, 64, dtype=torch.float64)}, path)
    return path


def test_checksum_round_trip_and_plain_torch_load(tmp_path):
    path = _saved(tmp_path)
    data = read_verified(path)
    assert verify_checksum(data, str(path)) is True
    assert torch.equal(torch_load_bytes(data, str(path), "test file")["w"], torch.linspace(0, 1, 64, dtype=torch.float64))
    # still an ordinary torch file for other tools
    assert torch.load(path, weights_only=True)["w"].shape == (64,)


def test_every_flipped_byte_is_caught(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    # a byte inside the tensor (torch itself loads this silently), the zip directory, and the checksum record
    w = torch.linspace(0, 1, 64, dtype=torch.float64).numpy().tobytes()
    inside_tensor = data.index(w) + 100
    for offset in (inside_tensor, len(data) - 90, len(data) - 85, len(data) - 70, len(data) - 1, 10):
        bad = bytearray(data)
        bad[offset] ^= 0x01
        (tmp_path / "bad.pt").write_bytes(bytes(bad))
        with pytest.raises(CorruptFileError, match="bad.pt"):
            torch_load_bytes(read_verified(tmp_path / "bad.pt"), str(tmp_path / "bad.pt"), "test file")


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, os.urandom(3000), "truncated"])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(_saved(tmp_path).read_bytes()[:700] if content == "truncated" else content)
    with pytest.raises(CorruptFileError, match="broken.pt") as info:
        torch_load_bytes(read_verified(path, "model file"), str(path), "model file")
    assert "weights_only=False" not in str(info.value)


def test_a_process_killed_inside_a_write_leaves_a_temp_file_that_cleanup_removes(tmp_path):
    import subprocess
    import sys

    # os._exit inside the write callback: no except/finally runs, as with SIGKILL
    code = ("import os, sys; from qallegro.utils import atomic_write; "
            "atomic_write(sys.argv[1], lambda h: (h.write(b'half'), h.flush(), os._exit(9)))")
    target = tmp_path / "last.pt"
    assert subprocess.run([sys.executable, "-c", code, str(target)]).returncode == 9
    leftovers = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1 and not target.exists()
    assert remove_stale_temp_files(tmp_path) == leftovers and not any(tmp_path.iterdir())
