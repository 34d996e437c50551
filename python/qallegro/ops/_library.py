"""Loads the compiled op library (``qallegro._C`` → ``libqallegro_ops``).

``HAS_KERNELS`` is False when the package was installed without its compiled part; every op then has
a pure-torch fallback in :mod:`qallegro.ops.reference`. ``library_path()`` tells C++ hosts (LAMMPS,
a libtorch program) which file to ``dlopen`` so that ``torch.ops.qallegro.*`` exist there too.

Because that fallback is silent, a build whose library fails to load would still pass every test
that merely skips without kernels. ``QALLEGRO_REQUIRE_KERNELS=1`` (set by ``make test`` and CI)
makes :func:`missing_kernels` the test suite's gate: the session stops if any op of
:data:`REQUIRED_OPS` is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

HAS_KERNELS = False
LOAD_ERROR: Optional[str] = None
try:
    # `_C` is installed next to lib/libqallegro_ops.so; loading that library runs its static
    # TORCH_LIBRARY registrations, which creates torch.ops.qallegro.*
    from qallegro import _C

    torch.ops.load_library(str(Path(_C.__file__).parent / "lib" / "libqallegro_ops.so"))
    HAS_KERNELS = hasattr(torch.ops.qallegro, "neighbor_list")
except (ImportError, OSError) as exc:  # the compiled part is optional; say why it is missing
    LOAD_ERROR = str(exc)

if os.environ.get("QALLEGRO_DISABLE_KERNELS", "0") == "1":
    HAS_KERNELS = False

#: every op schema of csrc/ops.cpp; a library without one of them is an incomplete build
REQUIRED_OPS = ("neighbor_list", "allegro_tp", "allegro_tp_backward", "qdi", "qdi_backward", "qdi_double_backward")


def kernels_required() -> bool:
    """Whether ``QALLEGRO_REQUIRE_KERNELS=1`` asks that a missing op library be an error."""
    return os.environ.get("QALLEGRO_REQUIRE_KERNELS", "0") == "1"


def missing_kernels() -> Optional[str]:
    """None when every op of :data:`REQUIRED_OPS` is usable, else why not (load error, ops absent)."""
    if not HAS_KERNELS:
        if os.environ.get("QALLEGRO_DISABLE_KERNELS", "0") == "1":
            return "QALLEGRO_DISABLE_KERNELS=1 turned the compiled ops off"
        return f"the op library did not load: {LOAD_ERROR or 'torch.ops.qallegro.neighbor_list is not registered'}"
    absent = [name for name in REQUIRED_OPS if not hasattr(torch.ops.qallegro, name)]
    if absent:
        return f"the op library lacks torch.ops.qallegro.{{{', '.join(absent)}}}"
    return None


def library_path() -> Path:
    """Path of ``libqallegro_ops.so``, the file a C++ host loads to get ``torch.ops.qallegro``."""
    if LOAD_ERROR is not None:
        raise RuntimeError(f"qallegro's compiled ops are not installed: {LOAD_ERROR}")
    from qallegro import _C

    path = Path(_C.__file__).parent / "lib" / "libqallegro_ops.so"
    if not path.exists():
        raise RuntimeError(f"libqallegro_ops.so not found next to {_C.__file__}")
    return path
