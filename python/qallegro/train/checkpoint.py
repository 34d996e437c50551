"""Checkpoints: written atomically, enough to rebuild the model and to resume training exactly.

A checkpoint is a ``torch.save``'d dict::

    format: "qallegro-checkpoint", version: 1
    model_spec: {builder: "module:function", kind, type_names, r_max, hparams}   # rebuilds the model
    model_state: trained weights;  eval_state: weights for inference (the EMA when enabled)
    config: the TrainConfig as a dict
    training_state: optimizer, scheduler, EMA, RNG states, epoch, step, best metric, history, ...

``last.pt`` is written after every epoch and ``best.pt`` whenever the monitored validation metric
improves. Files go to a temporary name in the same folder and are moved over the old file with
``os.replace``, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from qallegro.utils import atomic_torch_save
from qallegro.utils import atomic_write_text as _atomic_write_text

FORMAT = "qallegro-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename over ``path``."""
    atomic_torch_save(obj, path)


def import_builder(spec: str) -> Callable[..., torch.nn.Module]:
    """``"package.module:function"`` -> the function (the model builder)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"model builder {spec!r}: cannot import module {module_name!r} ({e})") from e
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise ImportError(f"model builder {spec!r}: module {module_name!r} has no {attr!r}") from e
    return obj  # type: ignore[return-value]


def build_from_spec(spec: Dict[str, Any]) -> torch.nn.Module:
    """Rebuild a model from a checkpoint's ``model_spec`` (random weights)."""
    builder = import_builder(spec["builder"])
    return builder(spec["kind"], list(spec["type_names"]), float(spec["r_max"]), **spec["hparams"])


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read and check a checkpoint written by the trainer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # weights_only=False: the checkpoint holds numpy/python RNG states and plain config dicts
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a qallegro training checkpoint (no format={FORMAT!r} entry)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt['version']} is newer than this qallegro ({VERSION})")
    return ckpt


def is_checkpoint(path: Union[str, Path]) -> bool:
    try:
        load_checkpoint(path)
        return True
    except Exception:  # not ours or unreadable: the caller tries other loaders
        return False


def model_from_checkpoint(
    path: Union[str, Path], map_location: Union[str, torch.device] = "cpu", weights: str = "eval"
) -> torch.nn.Module:
    """Rebuild the model of a checkpoint with its inference (``eval``, the EMA) or ``trained`` weights."""
    ckpt = load_checkpoint(path, map_location)
    model = build_from_spec(ckpt["model_spec"])
    state = ckpt["eval_state"] if weights == "eval" else ckpt["model_state"]
    dtype = _state_dtype(state)
    if dtype is not None:  # before loading: load_state_dict copies into the parameters' own dtype
        model = model.to(dtype=dtype)
    model.load_state_dict(state)
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model


def _state_dtype(state: Dict[str, torch.Tensor]) -> Optional[torch.dtype]:
    for v in state.values():
        if torch.is_tensor(v) and v.is_floating_point():
            return v.dtype
    return None


def load_any_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """A model from a training checkpoint or from ``qallegro.model.io.save_model``'s file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # e.g. a TorchScript archive: let the model io try it
        ckpt = e
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        return model_from_checkpoint(path, map_location)
    try:
        from qallegro.model.io import load_model  # the model room's own format
    except ImportError as e:
        raise ValueError(f"{path} is not a qallegro training checkpoint and qallegro.model.io is unavailable") from e
    return load_model(path)


def atomic_write_text(text: str, path: Union[str, Path]) -> None:
    """Write a text file atomically (temporary file in the same folder, then rename)."""
    _atomic_write_text(path, text)
