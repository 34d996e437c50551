"""The compiled op library: it loads with every op when required, and a missing library fails a
required test session instead of letting the kernel tests skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qallegro.ops import _library

REPO = Path(__file__).resolve().parents[2]


def test_op_library_loaded_with_every_op():
    if not _library.kernels_required() and not _library.HAS_KERNELS:
        pytest.skip(f"compiled ops not built ({_library.LOAD_ERROR}); QALLEGRO_REQUIRE_KERNELS=1 makes this fail")
    assert _library.missing_kernels() is None
    assert _library.library_path().is_file()
    for name in _library.REQUIRED_OPS:
        assert hasattr(torch.ops.qallegro, name), name


def test_missing_kernels_fail_a_required_session(tmp_path):
    """The gate of tests/conftest.py: kernels turned off + QALLEGRO_REQUIRE_KERNELS=1 -> the session
    errors out (exit code 4, usage error) and no test runs; without the requirement the same session
    passes on the reference ops."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_probe():\n    assert True\n")
    env = {**os.environ, "QALLEGRO_DISABLE_KERNELS": "1", "QALLEGRO_REQUIRE_KERNELS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
           "-c", str(REPO / "pyproject.toml"), "--confcutdir", str(REPO / "tests"), "-p", "tests.conftest", str(probe)]
    required = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert required.returncode == 4, required.stdout + required.stderr
    assert "QALLEGRO_REQUIRE_KERNELS=1 but QALLEGRO_DISABLE_KERNELS=1" in required.stderr + required.stdout
    assert "1 passed" not in required.stdout
    env["QALLEGRO_REQUIRE_KERNELS"] = "0"
    allowed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0 and "1 passed" in allowed.stdout, allowed.stdout + allowed.stderr
