"""Save and load models: build arguments + state dict in one file, written atomically, with its
sha256 inside (checked on load, see ``qallegro.utils``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

from qallegro.errors import CorruptFileError
from qallegro.utils import atomic_torch_save, numpy_safe_globals, read_verified, torch_load_bytes

FORMAT = "qallegro-model-v1"


def model_record(model) -> Dict[str, Any]:
    """What is needed to rebuild ``model``: kind, type_names, r_max, hparams and its state dict."""
    return {
        "format": FORMAT,
        "kind": model.kind,
        "type_names": list(model.type_names),
        "r_max": float(model.r_max),
        "hparams": model.hparams,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_record(record: Dict[str, Any], source: str = "<record>"):
    """Rebuild a model from :func:`model_record`'s dictionary (ValueError names the missing key)."""
    from qallegro.model.builder import build

    if not isinstance(record, dict):
        raise CorruptFileError(f"{source}: not a qallegro model file (holds a {type(record).__name__})")
    for key in ("format", "kind", "type_names", "r_max", "hparams", "state_dict"):
        if key not in record:
            raise CorruptFileError(f"{source}: not a qallegro model file (missing key {key!r})")
    if record["format"] != FORMAT:
        raise CorruptFileError(f"{source}: unsupported model format {record['format']!r} (expected {FORMAT!r})")
    # the recorded seed only re-creates the initial weights, which the state dict then replaces
    model = build(record["kind"], record["type_names"], record["r_max"], **dict(record["hparams"]))
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as exc:  # torch's message lists keys and shapes but not the file
        raise CorruptFileError(f"{source}: its weights do not fit the model it describes ({str(exc).splitlines()[0]})") from exc
    return model


def save_model(model, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` to ``path`` (torch.save of :func:`model_record`), atomically (tmp + os.replace)."""
    return atomic_torch_save(model_record(model), path)


def load_model(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu"):
    """Rebuild the model saved by :func:`save_model` (in eval mode); errors name the file."""
    path = Path(path)
    record = torch_load_bytes(read_verified(path, "model file"), str(path), "qallegro model file",
                              map_location=map_location, safe_globals=numpy_safe_globals())
    model = model_from_record(record, source=str(path))
    return model.eval()
