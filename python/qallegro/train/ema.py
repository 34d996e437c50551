"""Exponential moving average of model weights (as nequip's EMA: validate and save with the average).

``shadow = decay * shadow + (1 - decay) * param`` after every optimiser step, with nequip's warm-up
``decay_t = min(decay, (1 + t) / (10 + t))`` so early averages are not dominated by the random start.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List

import torch


class ExponentialMovingAverage:
    """EMA of the floating-point parameters of ``model`` (buffers are copied as they are)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self._names: List[str] = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow: Dict[str, torch.Tensor] = {n: params[n].detach().clone() for n in self._names}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        params = dict(model.named_parameters())
        for n in self._names:
            self.shadow[n].lerp_(params[n].detach(), 1.0 - decay)

    @contextlib.contextmanager
    def average_parameters(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block, ``model`` holds the averaged weights; the trained ones come back after."""
        params = dict(model.named_parameters())
        backup = {n: params[n].detach().clone() for n in self._names}
        with torch.no_grad():
            for n in self._names:
                params[n].copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n in self._names:
                    params[n].copy_(backup[n])

    def state_dict(self) -> Dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        missing = set(self._names) - set(state["shadow"])  # type: ignore[arg-type]
        if missing:
            raise ValueError(f"EMA state lacks parameters {sorted(missing)[:5]}")
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.num_updates = int(state["num_updates"])  # type: ignore[arg-type]
        for n in self._names:
            self.shadow[n].copy_(state["shadow"][n])  # type: ignore[index]
