"""Python face of the QDI state-vector ops: ``qallegro::qdi`` and its derivatives.

Derivatives (DESIGN: every backward is itself an op):

* first order: ``qdi_backward`` — the adjoint method, starting from the final states that ``qdi``
  returns (memory: the cached states [B, 2^n] plus a few state vectors per thread);
* second order: ``qdi_backward``'s own backward is ``qdi_double_backward``, which propagates the
  tangent direction (the incoming grad-of-grad) through the forward simulation (forward mode) and
  then through the adjoint sweep, giving the exact Jacobian-vector product (for ``grad_output``) and
  Hessian-vector products (for inputs and weights) in one pass. This is what force training needs
  (forces are dE/dr; the loss on forces is differentiated again).
* third order is not implemented and raises.

The final state returned by ``qdi`` is a cache for the backward, not a differentiable output.
This chain is registered in C++ for the Autograd dispatch key (csrc/cpu/qdi_autograd.cpp), so it
works for CPU and CUDA tensors, from Python, from TorchScript and from C++ hosts (the LAMMPS plugin)
alike; this module registers the fake (meta) kernels only.
"""

from __future__ import annotations

import os
from typing import Tuple

import torch

from qallegro.ops import reference
from qallegro.ops._library import HAS_KERNELS

ROTATIONS = ("X", "Y", "Z")
ENTANGLERS = ("strong", "basic")
MEASUREMENT_MODES = ("none", "even", "single")
MAX_QUBITS = 25


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


if HAS_KERNELS:

    @torch.library.register_fake("qallegro::qdi")
    def _qdi_fake(inputs, weights, rotation, entangling, measure, measurement_mode):
        n = weights.shape[2]
        m = len(reference.qdi_measured_qubits(int(n), measurement_mode))
        return inputs.new_empty((inputs.shape[0], m)), inputs.new_empty(
            (inputs.shape[0], 2**n), dtype=_complex_of(inputs.dtype)
        )

    @torch.library.register_fake("qallegro::qdi_backward")
    def _qdi_backward_fake(grad_output, state, inputs, weights, rotation, entangling, measure, mode):
        return torch.empty_like(inputs), torch.empty_like(weights)

    @torch.library.register_fake("qallegro::qdi_double_backward")
    def _qdi_double_backward_fake(ggx, ggw, grad_output, inputs, weights, rotation, entangling, measure, mode):
        return torch.empty_like(grad_output), torch.empty_like(inputs), torch.empty_like(weights)

    # autograd (qdi -> qdi_backward -> qdi_double_backward -> error) is registered in C++
    # (csrc/cpu/qdi_autograd.cpp), so TorchScript and C++ hosts such as LAMMPS differentiate too


def check_config(
    in_features: int, n_qubits: int, depth: int, rotation: str, entangling: str, measure: str, measurement_mode: str
) -> None:
    """Raises ValueError naming the first bad QDI hyperparameter."""
    if not isinstance(n_qubits, int) or not 1 <= n_qubits <= MAX_QUBITS:
        raise ValueError(f"QDI n_qubits must be an integer in 1..{MAX_QUBITS}, got {n_qubits!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"QDI depth must be an integer >= 1, got {depth!r}")
    if not isinstance(in_features, int) or in_features < 1 or in_features % n_qubits:
        raise ValueError(
            f"QDI in_features ({in_features!r}) must be a positive multiple of n_qubits ({n_qubits}): "
            "features are uploaded n_qubits at a time"
        )
    if rotation not in ROTATIONS:
        raise ValueError(f"QDI rotation must be one of {ROTATIONS}, got {rotation!r}")
    if entangling not in ENTANGLERS:
        raise ValueError(f"QDI entangling must be one of {ENTANGLERS}, got {entangling!r}")
    if measure not in ROTATIONS:
        raise ValueError(f"QDI measure must be one of {ROTATIONS} (Pauli observable), got {measure!r}")
    if measurement_mode not in MEASUREMENT_MODES:
        raise ValueError(f"QDI measurement_mode must be one of {MEASUREMENT_MODES}, got {measurement_mode!r}")


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def state_bytes(batch: int, n_qubits: int, dtype: torch.dtype, use_kernel: bool, n_gates: int = 0) -> int:
    """Bytes of state vectors a call keeps: the kernel caches one final state per sample (the adjoint
    backward needs nothing else); the reference keeps one state per gate for autograd."""
    itemsize = 16 if dtype == torch.float64 else 8
    copies = 1 if use_kernel else max(1, n_gates)
    return batch * (2**n_qubits) * itemsize * copies


def qdi(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    rotation: str = "X",
    entangling: str = "strong",
    measure: str = "Y",
    measurement_mode: str = "none",
    use_kernel: bool = True,
) -> torch.Tensor:
    """Expectations of a batch of QDI circuits (see csrc/include/qallegro/qdi_program.h).

    inputs: [B, F] embedding angles (rad), F = uploads * n_qubits; weights: [uploads, depth,
    n_qubits, K] variational angles (rad), K = 3 ("strong") or 1 ("basic").
    Returns [B, M] expectations in [-1, 1]: M = n_qubits ("none"), ceil(n/2) ("even"), 1 ("single").
    ``use_kernel`` selects the C++/CUDA op (by the tensors' device) or the pure-torch reference.
    """
    if inputs.dim() != 2 or weights.dim() != 4:
        raise ValueError(
            f"qdi: inputs must be [batch, features] and weights [uploads, depth, n_qubits, K], "
            f"got {tuple(inputs.shape)} and {tuple(weights.shape)}"
        )
    uploads, depth, n, _ = weights.shape
    check_config(int(inputs.shape[1]), int(n), int(depth), rotation, entangling, measure, measurement_mode)
    if inputs.shape[1] != uploads * n:
        raise ValueError(f"qdi: inputs has {inputs.shape[1]} features, weights expect {uploads} x {n}")
    n_gates = uploads * (n + depth * n * 3 + depth * n) if not use_kernel else 0
    need = state_bytes(int(inputs.shape[0]), int(n), inputs.dtype, use_kernel, n_gates)
    have = _available_bytes(inputs.device)
    if need > have and os.environ.get("QALLEGRO_QDI_NO_MEMORY_CHECK", "0") != "1":
        raise MemoryError(
            f"qdi: a batch of {inputs.shape[0]} circuits on {n} qubits ({inputs.dtype}) needs "
            f"{need / 2**30:.2f} GiB of state vectors on {inputs.device}, only {have / 2**30:.2f} GiB "
            "available: split the batch"
        )
    if not use_kernel:
        return reference.qdi_reference(inputs, weights, rotation, entangling, measure, measurement_mode)[0]
    if not HAS_KERNELS:
        raise RuntimeError("qdi: the compiled qallegro ops are not available; use backend='reference'")
    return torch.ops.qallegro.qdi(inputs, weights, rotation, entangling, measure, measurement_mode)[0]


def qdi_with_state(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    rotation: str = "X",
    entangling: str = "strong",
    measure: str = "Y",
    measurement_mode: str = "none",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`qdi` with the kernel, also returning the final states [B, 2^n] (complex, no grad)."""
    return torch.ops.qallegro.qdi(inputs, weights, rotation, entangling, measure, measurement_mode)
