"""Bias-free scalar MLPs with nequip's weight parameterisation.

Each layer is ``y = x @ (alpha * W)`` with ``W ~ U(-sqrt 3, sqrt 3)`` (unit variance) and a constant
``alpha = gain / sqrt(fan_in)`` (gain sqrt 2 after a nonlinearity), so that the stored parameters are
nequip-allegro's and its weights load unchanged. No bias by default: a bias-free MLP with a
nonlinearity that maps 0 to 0 keeps an edge whose radial embedding vanished (at r_max) at exactly zero
energy, which Allegro's smoothness relies on.
"""

import math
from typing import Dict, List, Optional, Type

import torch

NONLINEARITIES: Dict[str, Type[torch.nn.Module]] = {
    "silu": torch.nn.SiLU,
    "mish": torch.nn.Mish,
    "gelu": torch.nn.GELU,
    "tanh": torch.nn.Tanh,
}


def nonlinearity_module(name: Optional[str]) -> Optional[torch.nn.Module]:
    """Module for a nonlinearity name (None/'none'/'null' -> None); ValueError names the choices."""
    if name is None or str(name).lower() in ("none", "null"):
        return None
    if name not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {name!r}; choose one of {sorted(NONLINEARITIES)} or None")
    return NONLINEARITIES[name]()


class ScalarLinear(torch.nn.Module):
    """y = x @ (alpha W) (+ b): x [..., in_features] -> [..., out_features]."""

    in_features: int
    out_features: int
    alpha_value: float

    def __init__(self, in_features: int, out_features: int, alpha: float = 1.0, bias: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # alpha is a non-persistent buffer so it follows .to(dtype) and is not part of the state;
        # the exact value is kept so a dtype change never leaves a float32-rounded constant
        self.alpha_value = float(alpha)
        self.register_buffer("alpha", torch.tensor(self.alpha_value), persistent=False)
        self.weight = torch.nn.Parameter(torch.empty(in_features, out_features))
        torch.nn.init.uniform_(self.weight, -math.sqrt(3.0), math.sqrt(3.0))
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.alpha = torch.full((), self.alpha_value, dtype=self.alpha.dtype, device=self.alpha.device)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.alpha
        bias = self.bias
        if bias is None:
            return torch.matmul(x, weight)
        return torch.matmul(x, weight) + bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ScalarMLP(torch.nn.Module):
    """MLP on [..., input_dim] -> [..., output_dim] with ``hidden_layers_depth`` hidden layers.

    ``hidden_dims`` (a list of widths) overrides depth and width.

    Forward-variance initialisation as nequip's ``ScalarMLPFunction(forward_weight_init=True)``;
    the nonlinearity follows every layer but the last.
    """

    __jit_unused_properties__ = ["linears"]

    is_nonlinear: bool
    dims: List[int]

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_layers_depth: int = 0,
        hidden_layers_width: Optional[int] = None,
        nonlinearity: Optional[str] = "silu",
        bias: bool = False,
        hidden_dims: Optional[List[int]] = None,
    ):
        super().__init__()
        if hidden_dims is None:
            if hidden_layers_depth < 0:
                raise ValueError(f"hidden_layers_depth must be >= 0, got {hidden_layers_depth}")
            if hidden_layers_depth > 0 and not (hidden_layers_width and hidden_layers_width > 0):
                raise ValueError(f"hidden_layers_width must be > 0 when depth is {hidden_layers_depth}")
            hidden_dims = [int(hidden_layers_width or 0)] * hidden_layers_depth
        if any(h < 1 for h in hidden_dims):
            raise ValueError(f"hidden layer widths must be >= 1, got {hidden_dims}")
        self.dims = [input_dim] + [int(h) for h in hidden_dims] + [output_dim]
        has_act = nonlinearity_module(nonlinearity) is not None
        layers = []
        for k, (h_in, h_out) in enumerate(zip(self.dims, self.dims[1:])):
            gain = math.sqrt(2.0) if (has_act and k > 0) else 1.0
            layers.append(ScalarLinear(h_in, h_out, alpha=gain / math.sqrt(h_in), bias=bias))
            if k < len(self.dims) - 2:
                act = nonlinearity_module(nonlinearity)
                if act is not None:
                    layers.append(act)
        self.is_nonlinear = has_act and len(self.dims) > 2
        self.layers = torch.nn.Sequential(*layers)

    @property
    def linears(self) -> List[ScalarLinear]:
        """The linear layers in order (for weight conversion)."""
        return [m for m in self.layers if isinstance(m, ScalarLinear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
