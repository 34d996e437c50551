"""The exported file itself: readable by other users (umask, not mkstemp's 0600) and sha256-checked."""

from __future__ import annotations

import os
import stat

import pytest

from qallegro.deploy.export import export, load
from qallegro.errors import CorruptFileError


def test_export_mode_follows_the_umask(morse_model, tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "shared.pt"
        export(morse_model, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def test_changed_export_is_refused(morse_export, tmp_path):
    data = bytearray(morse_export.read_bytes())
    data[len(data) // 2] ^= 0x04
    bad = tmp_path / "changed.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=rf"{bad}: sha256 mismatch"):
        load(bad)
    load(morse_export)  # the original still loads
