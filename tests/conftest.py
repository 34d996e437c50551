"""Shared test fixtures: the shared DFT data folder, the gpu marker, the compiled-ops gate.

With ``QALLEGRO_REQUIRE_KERNELS=1`` (set by ``make test`` and so by CI) the session stops before any
test runs when the op library is missing or incomplete: otherwise every kernel test would skip and
the suite would pass on the pure-torch fallback alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("QALLEGRO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_file(name: str) -> Path:
    """A file from ../shared/data; the test is skipped when the folder is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data {path} not present")
    return path


def pytest_sessionstart(session):
    from qallegro.ops._library import kernels_required, missing_kernels

    problem = missing_kernels() if kernels_required() else None
    if problem is not None:
        raise pytest.UsageError(f"QALLEGRO_REQUIRE_KERNELS=1 but {problem}; rebuild qallegro "
                                "(pip install --no-build-isolation -e .) or unset QALLEGRO_REQUIRE_KERNELS")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _default_dtype_is_restored():
    """Every test starts with float32 as torch's default dtype and leaves it so: nequip-allegro's model
    builder (parity tests) sets float64 globally, and a later test that creates tensors without a dtype
    would then silently run in float64 (or fail on a dtype mismatch)."""
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(torch.float32)
