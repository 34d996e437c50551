"""From a config to training data: read, split, check, collate, and compute statistics.

All checks that can fail on the data happen here, before a model is built: elements in the data
but not in ``data.type_names`` (or the reverse), labels the loss needs but the data lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import ase.data

from qallegro.train.config import TrainConfig
from qallegro.train.dataset import (
    Batch,
    check_labels,
    check_types_present,
    concat,
    to_graphs,
)
from qallegro.train.statistics import resolve_model_statistics


@dataclass
class TrainData:
    type_names: List[str]
    train_graphs: List[Batch]
    val_graphs: List[Batch]
    statistics: Dict[str, Any] = field(default_factory=dict)  # per_type_energy_shifts/scales, avg_num_neighbors


def structure_symbols(structure) -> List[str]:
    """Element symbols of a ``qallegro.data.Structure``."""
    return [ase.data.chemical_symbols[int(z)] for z in structure.numbers]


def infer_type_names(structures: Sequence) -> List[str]:
    """Elements present in ``structures``, sorted by atomic number."""
    found = set()
    for s in structures:
        found.update(structure_symbols(s))
    return sorted(found, key=lambda sym: ase.data.atomic_numbers[sym])


def check_elements_known(structures: Sequence, type_names: Sequence[str], source: str) -> None:
    known = set(type_names)
    for i, s in enumerate(structures):
        extra = sorted(set(structure_symbols(s)) - known)
        if extra:
            raise ValueError(
                f"{source}: structure {i} ({s.source}) contains element(s) {extra} not in the model's "
                f"type_names {list(type_names)}"
            )


def _read(path: Optional[str], index: str, what: str) -> List:
    if path is None:
        raise ValueError(f"config: data.{what} is not set and no {what} structures were passed to fit()")
    from pathlib import Path

    from qallegro.data import read

    if not Path(path).exists():  # say which key points at it (paths are relative to the config file)
        raise FileNotFoundError(f"config: data.{what}={path}: no such file")
    return list(read(path, index=index))


def prepare_data(
    cfg: TrainConfig,
    train_structures: Optional[Sequence] = None,
    val_structures: Optional[Sequence] = None,
    resume_ckpt: Optional[Dict[str, Any]] = None,
) -> TrainData:
    """Read/split the structures, validate them against the config and collate them.

    With ``resume_ckpt`` the type names come from the checkpoint (the statistics too, by the caller).
    """
    d = cfg.data
    train_src = d.train if train_structures is None else "train_structures"
    all_train = list(train_structures) if train_structures is not None else _read(d.train, d.index, "train")
    if val_structures is not None:
        train, val, val_src = all_train, list(val_structures), "val_structures"
    elif d.val is not None and train_structures is None:
        train, val, val_src = all_train, _read(d.val, d.index, "val"), d.val
    else:
        from qallegro.data import random_split

        try:
            train, val = random_split(all_train, [d.train_size, d.val_size], seed=d.split_seed)
        except ValueError as e:
            raise ValueError(f"config: data.train_size={d.train_size}, data.val_size={d.val_size}: {e}") from e
        val_src = f"{train_src} (val split)"
    if not train:
        raise ValueError(f"{train_src}: no training structures")

    if resume_ckpt is not None:
        type_names = list(resume_ckpt["model_spec"]["type_names"])
    elif d.type_names is not None:
        type_names = list(d.type_names)
    else:
        type_names = infer_type_names(train + val)
    if len(set(type_names)) != len(type_names):
        raise ValueError(f"config: data.type_names has duplicates: {type_names}")
    for sym in type_names:
        if sym not in ase.data.atomic_numbers:
            raise ValueError(f"config: data.type_names entry {sym!r} is not an element symbol")
    check_elements_known(train, type_names, train_src)
    check_elements_known(val, type_names, val_src)

    r_max = float(cfg.model.r_max)
    train_graphs = to_graphs(train, r_max, type_names, train_src)
    val_graphs = to_graphs(val, r_max, type_names, val_src)
    check_types_present(train_graphs, type_names, train_src)

    needs = [k for k, w in (("total_energy", cfg.loss.energy_weight), ("forces", cfg.loss.forces_weight),
                            ("stress", cfg.loss.stress_weight)) if w > 0]
    check_labels(train_graphs, needs, train_src)
    check_labels(val_graphs, needs, val_src)

    stats: Dict[str, Any] = {}
    if resume_ckpt is None:
        m = cfg.model
        whole = concat(train_graphs)
        for key, spec, label in (("per_type_energy_shifts", m.per_type_energy_shifts, "total_energy"),
                                 ("per_type_energy_scales", m.per_type_energy_scales, "forces")):
            if isinstance(spec, str):
                check_labels(train_graphs, [label], train_src,
                             reason=f"model.{key}={spec} is computed from it (give numbers or null instead)")
        stats = resolve_model_statistics(
            {k: v.cpu() for k, v in whole.items()}, type_names, m.per_type_energy_shifts,
            m.per_type_energy_scales, m.avg_num_neighbors,
        )
        stats = {k: v for k, v in stats.items() if v is not None}
    return TrainData(type_names, train_graphs, val_graphs, stats)
