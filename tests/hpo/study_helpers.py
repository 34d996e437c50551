"""A tiny STUDY.yaml on shipped data (seconds per trial) for the `qallegro study` tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

BODY: Dict[str, Any] = {
    "num_layers": 1, "l_max": 1, "num_tensor_features": 4, "num_bessels": 4,
    "allegro_mlp_hidden_layers_depth": 1, "allegro_mlp_hidden_layers_width": 8,
    "num_scalar_features": {"type": "int", "low": 8, "high": 16, "step": 8},
    "r_max": {"type": "float", "low": 3.5, "high": 4.5},
    "learning_rate": 5.0e-3,
}


def tiny_study(tmp_path: Path, trials: int = 3, two_sets: bool = True, **top: Any) -> Path:
    """Write a study: Cu-Li (tuned) and benzene (Allegro tuned, Allegro+QDI transferred from Cu-Li)."""
    datasets = {"culi": {"source": "culi-gfn1xtb", "limit": 30, "split": {"train": 12, "val": 6, "test": 8, "seed": 0}}}
    if two_sets:
        datasets["benzene"] = {"source": "benzene", "size": 24, "subset_seed": 1,
                               "split": {"train": 10, "val": 6, "test": 8, "seed": 0}}
    values: Dict[str, Any] = {
        "name": "tiny", "out": "out", "datasets": datasets,
        "kinds": {
            "allegro": {"params": {**BODY, "readout_mlp_hidden_layers_width": 8}},
            "allegro_qdi": {"transfer_from": "culi", "params": {
                **BODY, "n_qubits": 2, "qdi_depth": 1, "qdi_uploads": 1, "qdi_placement": "atom",
                "rotation": {"type": "categorical", "choices": ["X", "Z"]}}},
        },
        "samo_cobra": {"trials": trials, "n_init": 2},
        "trial": {"max_epochs": 1, "time_budget": 30},
        "final": {"points": ["most_accurate", "knee"], "seeds": 2, "max_epochs": 1, "time_budget": 30},
        "latency": {"structures": 1, "threads": 1, "warmup": 1, "calls": 2, "repeats": 2, "clock": "cpu"},
    }
    values.update(top)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path
