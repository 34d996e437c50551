"""Python faces of qallegro's ops (``torch.ops.qallegro.*``).

This package is the only place that calls ``torch.ops.qallegro`` directly. Each op module registers
its fake (meta) implementation and exposes a typed wrapper (autograd is registered in C++,
csrc/cpu/*_autograd.cpp, so C++ hosts such as the LAMMPS plugin can differentiate the ops too); ``reference`` holds the
pure-torch versions used as test oracles and as the fallback when the kernels are not built.
"""

from qallegro.ops._library import HAS_KERNELS, LOAD_ERROR, library_path
from qallegro.ops.neighbor_list import batched_neighbor_list, neighbor_list
from qallegro.ops.qdi import qdi  # noqa: F401  (registers qallegro::qdi's fake kernels)

__all__ = ["HAS_KERNELS", "LOAD_ERROR", "library_path", "neighbor_list", "batched_neighbor_list"]
