"""``QDILayer``: Terra Quantum's quantum depth-infused layer as a simulated, differentiable torch module.

The circuit (csrc/include/qallegro/qdi_program.h has the gate-level description): ``in_features``
inputs are uploaded ``n_qubits`` at a time (``in_features / n_qubits`` uploads, "a lattice of features
on few qubits"); each upload is an angle embedding (``rotation`` X, Y, or Z after a Hadamard layer)
followed by ``depth`` variational layers ("strong": Rot on every qubit + CNOT ring of growing range,
as PennyLane's StronglyEntanglingLayers; "basic": RX + CNOT ring, as BasicEntanglerLayers). The output
is the expectation of Pauli ``measure`` on every qubit ("none"), on even qubits ("even"), or on the last
qubit after a CNOT cascade ("single"). Trainable classical maps around the layer belong to the readout.

Backends: "cpu" and "cuda" run the compiled state-vector op (exact first and second derivatives, see
:mod:`qallegro.ops.qdi`); "reference" the pure-torch simulator (autograd, any order, slow).

Shot noise: with ``shots=N`` the module, in eval mode, returns estimates from N measurements per
output instead of exact expectations, and its input gradients (hence forces) by the parameter-shift
rule, each shifted expectation also estimated from N shots — what a QPU would return. Each output is
sampled from its exact marginal distribution (outcome +1 with probability (1 + <P>)/2); correlations
between the outputs of one circuit are not modelled. Seeded by ``shot_seed`` for reproducibility.

TorchScript: ``torch.jit.script`` compiles ``forward`` to a direct call of the compiled op
``torch.ops.qallegro.qdi`` (exact expectations, on the inputs' device whatever ``backend`` says; the
op's derivatives are registered in C++, so scripted models give forces in C++ hosts such as LAMMPS).
The shot-noise path, the pure-torch reference and the memory check are Python only.
"""

# no `from __future__ import annotations`: TorchScript reads the class attribute annotations below
import math
from typing import List, Optional

import torch
from torch import nn

from qallegro.ops import reference
from qallegro.ops.qdi import check_config, qdi

BACKENDS = ("cpu", "cuda", "reference")


def sample_expectations(expectations: torch.Tensor, shots: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Estimates of Pauli expectations from ``shots`` single-shot measurements each.

    expectations: [...] exact values in [-1, 1]. Returns the same shape: 2 k / shots - 1 with
    k ~ Binomial(shots, (1 + <P>) / 2). Variance (1 - <P>^2) / shots.
    """
    p = ((1 + expectations.detach()) / 2).clamp(0.0, 1.0)
    device_gen = generator if generator is None or generator.device == p.device else None
    counts = torch.binomial(torch.full_like(p, float(shots)), p, generator=device_gen)
    return 2 * counts / shots - 1


class _ShotEstimate(torch.autograd.Function):
    """Shot-noise expectations; backward = parameter-shift rule on shot-noise expectations (inputs only)."""

    @staticmethod
    def forward(ctx, inputs, weights, layer, generator):  # type: ignore[override]
        ctx.layer, ctx.generator = layer, generator
        ctx.save_for_backward(inputs, weights)
        with torch.no_grad():
            exact = layer._exact(inputs, weights)
        return sample_expectations(exact, layer.shots, generator)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):  # type: ignore[override]
        inputs, weights = ctx.saved_tensors
        layer, gen = ctx.layer, ctx.generator
        grad_inputs = None
        if ctx.needs_input_grad[0]:
            # every input enters exactly one Pauli rotation, so d<P>/dx = (<P>(x + pi/2) - <P>(x - pi/2)) / 2
            grad_inputs = torch.zeros_like(inputs)
            with torch.no_grad():
                for f in range(inputs.shape[1]):
                    shift = torch.zeros_like(inputs)
                    shift[:, f] = math.pi / 2
                    plus = sample_expectations(layer._exact(inputs + shift, weights), layer.shots, gen)
                    minus = sample_expectations(layer._exact(inputs - shift, weights), layer.shots, gen)
                    grad_inputs[:, f] = ((plus - minus) / 2 * grad_output).sum(-1)
        return grad_inputs, None, None, None


class QDILayer(nn.Module):
    """Quantum depth-infused layer: [batch, in_features] angles (rad) -> [batch, out_features] in [-1, 1].

    Args:
        in_features: number of inputs; a multiple of ``n_qubits``.
        n_qubits: register size, 1..25 (default 4).
        depth: variational layers per upload, >= 1 (default 4).
        rotation: embedding rotation "X", "Y" or "Z" (Z preceded by a Hadamard layer; default "Z", as
            TQ42's published QDI layer).
        entangling: "strong" (Rot + CNOT ring of growing range) or "basic" (RX + CNOT ring).
        measure: Pauli observable "X", "Y" or "Z" (default "Y").
        measurement_mode: "none" (all qubits), "even" (even qubits), "single" (CNOT cascade, last qubit).
        backend: "cpu" | "cuda" (compiled op on that device) | "reference" (pure torch).
        shots: None for exact expectations; N for N-shot estimates in eval mode.
        shot_seed: seed of the shot-noise generator (None: torch's global generator).
    Weights: ``weights`` [uploads, depth, n_qubits, 3 | 1] angles, initialised uniformly in [0, 2 pi)
    as PennyLane's TorchLayer does.
    """

    # a torch.Generator has no TorchScript type; only the Python (shot-noise) path reads it
    __jit_ignored_attributes__ = ["_generator"]

    in_features: int
    out_features: int
    n_qubits: int
    rotation: str
    entangling: str
    measure: str
    measurement_mode: str
    backend: str
    shots: Optional[int]

    def __init__(
        self,
        in_features: int,
        n_qubits: int = 4,
        depth: int = 4,
        rotation: str = "Z",
        entangling: str = "strong",
        measure: str = "Y",
        measurement_mode: str = "none",
        backend: str = "cpu",
        shots: Optional[int] = None,
        shot_seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_config(in_features, n_qubits, depth, rotation, entangling, measure, measurement_mode)
        if backend not in BACKENDS:
            raise ValueError(f"QDILayer backend must be one of {BACKENDS}, got {backend!r}")
        if shots is not None and (not isinstance(shots, int) or shots < 1):
            raise ValueError(f"QDILayer shots must be None or a positive integer, got {shots!r}")
        self.in_features, self.n_qubits, self.depth = in_features, n_qubits, depth
        self.rotation, self.entangling, self.measure = rotation, entangling, measure
        self.measurement_mode, self.backend, self.shots = measurement_mode, backend, shots
        self.uploads = in_features // n_qubits
        self.out_features = len(reference.qdi_measured_qubits(n_qubits, measurement_mode))
        per_gate = 3 if entangling == "strong" else 1
        self.weights = nn.Parameter(torch.rand(self.uploads, depth, n_qubits, per_gate) * (2 * math.pi))
        # Optional[torch.Generator]; not annotated here, as TorchScript would try to type it
        self._generator = None if shot_seed is None else torch.Generator().manual_seed(int(shot_seed))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, n_qubits={self.n_qubits}, "
            f"depth={self.depth}, uploads={self.uploads}, rotation={self.rotation!r}, "
            f"entangling={self.entangling!r}, measure={self.measure!r}, "
            f"measurement_mode={self.measurement_mode!r}, backend={self.backend!r}, shots={self.shots}"
        )

    def _exact(self, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        use_kernel = self.backend != "reference"
        if use_kernel and inputs.device.type != self.backend:
            raise ValueError(
                f"QDILayer(backend={self.backend!r}) got inputs on {inputs.device}: move the module and "
                "its inputs to that device or choose the matching backend"
            )
        return qdi(
            inputs, weights, self.rotation, self.entangling, self.measure, self.measurement_mode, use_kernel
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: [..., in_features] angles (rad) -> [..., out_features] expectations."""
        if torch.jit.is_scripting():
            return self._forward_scripted(inputs)
        return self._forward_python(inputs)

    def _flatten(self, inputs: torch.Tensor) -> torch.Tensor:
        """[..., in_features] -> [batch, in_features] in the weights' dtype (both paths; scriptable)."""
        if inputs.dim() < 1 or inputs.shape[-1] != self.in_features:
            raise ValueError(
                "QDILayer expects [..., " + str(self.in_features) + "] inputs, got " + _shape_str(inputs.shape)
            )
        return inputs.reshape(-1, self.in_features).to(self.weights.dtype)

    def _forward_scripted(self, inputs: torch.Tensor) -> torch.Tensor:
        """The TorchScript path: exact expectations from the compiled op on the inputs' device."""
        flat = self._flatten(inputs)
        if self.shots is not None and not self.training:
            raise RuntimeError(
                "QDILayer: shot-noise estimates (shots=" + str(self.shots) + ") have no TorchScript path; "
                "call qallegro.nn.qdi.set_shots(model, None) before scripting"
            )
        out = torch.ops.qallegro.qdi(
            flat, self.weights, self.rotation, self.entangling, self.measure, self.measurement_mode
        )[0]
        return out.reshape(list(inputs.shape[:-1]) + [self.out_features])

    @torch.jit.unused
    def _forward_python(self, inputs: torch.Tensor) -> torch.Tensor:
        """The eager path: backend choice, memory check, shot noise in eval mode."""
        flat = self._flatten(inputs)
        if self.shots is not None and not self.training:
            out = _ShotEstimate.apply(flat, self.weights, self, self._generator)
        else:
            out = self._exact(flat, self.weights)
        return out.reshape(*inputs.shape[:-1], self.out_features)


def _shape_str(shape: List[int]) -> str:
    """"(2, 5, 8)" without f-strings over tuples (TorchScript has neither)."""
    parts: List[str] = []
    for d in shape:
        parts.append(str(d))
    return "(" + ", ".join(parts) + ")"


def set_shots(model: nn.Module, shots: Optional[int], seed: Optional[int] = None) -> int:
    """Switches every QDILayer in ``model`` to ``shots``-shot estimates (None: exact), e.g. for
    ``qallegro evaluate --shots N``; seeds each layer's generator from ``seed`` (layer i: seed + i).
    Returns the number of QDI layers changed. Shots apply in eval mode only."""
    if shots is not None and (not isinstance(shots, int) or shots < 1):
        raise ValueError(f"shots must be None or a positive integer, got {shots!r}")
    count = 0
    for module in model.modules():
        if isinstance(module, QDILayer):
            module.shots = shots
            module._generator = None if seed is None else torch.Generator().manual_seed(int(seed) + count)
            count += 1
    return count
