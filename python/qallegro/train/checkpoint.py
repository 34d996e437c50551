"""Checkpoints: written atomically, enough to rebuild the model and to resume training exactly.

A checkpoint is a ``torch.save``'d dict::

    format: "qallegro-checkpoint", version: 1
    model_spec: {builder: "module:function", kind, type_names, r_max, hparams}   # rebuilds the model
    model_state: trained weights;  eval_state: weights for inference (the EMA when enabled)
    config: the TrainConfig as a dict
    training_state: optimizer, scheduler, EMA, RNG states, epoch, step, best metric, history, ...

``last.pt`` is written after every epoch and ``best.pt`` whenever the monitored validation metric
improves. Files go to a temporary name in the same folder and are moved over the old file with
``os.replace``, so a crash never leaves a half-written checkpoint. Each file carries the sha256 of
its content (in the zip comment, see ``qallegro.utils``), checked on every load, and is loaded with
``weights_only=True`` plus the numpy types of the RNG state: a checkpoint never runs code.
"""

from __future__ import annotations

import importlib
import io
import random
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from qallegro.errors import CorruptFileError
from qallegro.utils import atomic_torch_save, numpy_safe_globals, read_verified, torch_load_bytes
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


def _load_file(path: Path, map_location: Union[str, torch.device], what: str) -> Any:
    """Verified bytes of ``path`` -> its unpickled content (errors name the file)."""
    data = read_verified(path, what)
    return torch_load_bytes(data, str(path), what, map_location=map_location, safe_globals=numpy_safe_globals())


def _check_checkpoint(ckpt: Any, path: Path) -> Dict[str, Any]:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is not a qallegro training checkpoint (no format={FORMAT!r} entry)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CorruptFileError(f"{path}: checkpoint version {ckpt['version']} is newer than this qallegro ({VERSION})")
    missing = [k for k in ("model_spec", "model_state", "eval_state", "training_state") if k not in ckpt]
    if missing:
        raise CorruptFileError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read, verify (sha256) and check a checkpoint written by the trainer; errors name the file."""
    path = Path(path)
    return _check_checkpoint(_load_file(path, map_location, "training checkpoint"), path)


def is_checkpoint(path: Union[str, Path]) -> bool:
    try:
        load_checkpoint(path)
        return True
    except (OSError, ValueError):  # not ours or unreadable: the caller tries other loaders
        return False


def model_from_checkpoint(
    path: Union[str, Path], map_location: Union[str, torch.device] = "cpu", weights: str = "eval"
) -> torch.nn.Module:
    """Rebuild the model of a checkpoint with its inference (``eval``, the EMA) or ``trained`` weights."""
    return _model_from_ckpt(load_checkpoint(path, map_location), path, map_location, weights)


def _model_from_ckpt(ckpt: Dict[str, Any], path: Union[str, Path], map_location: Union[str, torch.device],
                     weights: str = "eval") -> torch.nn.Module:
    model = build_from_spec(ckpt["model_spec"])
    state = ckpt["eval_state"] if weights == "eval" else ckpt["model_state"]
    dtype = _state_dtype(state)
    if dtype is not None:  # before loading: load_state_dict copies into the parameters' own dtype
        model = model.to(dtype=dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # torch's message lists keys and shapes but not the file
        raise CorruptFileError(f"{path}: its weights do not fit the model it describes ({str(exc).splitlines()[0]})") from exc
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model


def _state_dtype(state: Dict[str, torch.Tensor]) -> Optional[torch.dtype]:
    for v in state.values():
        if torch.is_tensor(v) and v.is_floating_point():
            return v.dtype
    return None


def _is_torchscript(data: bytes) -> bool:
    """TorchScript archives hold ``<archive>/code/...`` and ``<archive>/constants.pkl``; torch.save's
    hold neither (their ``<archive>`` prefix is the file's stem, so it may itself be "code")."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return False
    parts = [name.split("/") for name in names]
    return any(p[1:2] == ["code"] for p in parts) and any(p[1:] == ["constants.pkl"] for p in parts)


def load_any_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """A model from a training checkpoint or from ``qallegro.model.io.save_model``'s file.

    The file is read and verified once; errors name it (a TorchScript export is told apart)."""
    path = Path(path)
    data = read_verified(path, "model file")
    if _is_torchscript(data):
        raise CorruptFileError(
            f"{path} is a TorchScript export (for ASE/LAMMPS); give the training checkpoint "
            f"(best.pt) or best_model.pt instead"
        )
    content = torch_load_bytes(data, str(path), "model file", map_location=map_location, safe_globals=numpy_safe_globals())
    if isinstance(content, dict) and content.get("format") == FORMAT:
        return _model_from_ckpt(_check_checkpoint(content, path), path, map_location)
    from qallegro.model.io import FORMAT as MODEL_FORMAT, model_from_record

    if isinstance(content, dict) and content.get("format") == MODEL_FORMAT:
        return model_from_record(content, source=str(path)).to(map_location).eval()
    raise CorruptFileError(
        f"{path} is neither a qallegro training checkpoint nor a saved qallegro model "
        f"(format {content.get('format') if isinstance(content, dict) else type(content).__name__!r})"
    )


def atomic_write_text(text: str, path: Union[str, Path]) -> None:
    """Write a text file atomically (temporary file in the same folder, then rename)."""
    _atomic_write_text(path, text)
