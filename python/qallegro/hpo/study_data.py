"""The structures of a study's data sets: loaded, subset once to a file, split, never re-drawn."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import List

from qallegro.hpo.study_config import DatasetSpec, StudyConfig


def error_key(energy_only: bool) -> str:
    """The evaluation metric a study tunes and reports: energy MAE per atom for energy-only data
    (QM9), else force MAE."""
    return "energy_mae_meV_per_atom" if energy_only else "forces_mae_meV_per_A"


@dataclass
class StudySplits:
    """A data set's train / validation / test structures and the element list of the whole set."""

    name: str
    train: List
    val: List
    test: List
    type_names: List[str]
    energy_only: bool
    source: str

    def latency_structures(self, count: int) -> List:
        """The benchmark structures every model of this data set is timed on: the first ``count``
        validation structures (the same in every trial, final run and report)."""
        return self.val[:count]


def _subset_path(cfg: StudyConfig, ds: DatasetSpec) -> Path:
    return cfg.out / "data" / f"{ds.name}.extxyz"


def _materialise(cfg: StudyConfig, ds: DatasetSpec) -> Path:
    """Draw ``size`` structures once (seeded) and write them to ``<out>/data/<name>.extxyz``."""
    import io

    import ase.io

    from qallegro.data.datasets import load_dataset
    from qallegro.utils import atomic_write_text

    path = _subset_path(cfg, ds)
    if path.exists():
        return path
    structures = load_dataset(ds.source, limit=ds.limit, qm9_target=ds.qm9_target)
    if ds.size > len(structures):
        raise ValueError(f"{cfg.source}: datasets.{ds.name}.size: {ds.size} structures asked for, "
                         f"{ds.source} has {len(structures)}")
    chosen = sorted(random.Random(ds.subset_seed).sample(range(len(structures)), ds.size))
    text = io.StringIO()
    ase.io.write(text, [structures[i].to_ase() for i in chosen], format="extxyz")
    atomic_write_text(path, text.getvalue())
    return path


def load_splits(cfg: StudyConfig, name: str) -> StudySplits:
    """The split of data set ``name``: the seeded split of the config, identical in every process."""
    from qallegro.data import random_split, read
    from qallegro.data.datasets import load_dataset
    from ase.data import chemical_symbols

    ds = cfg.datasets[name]
    if ds.size is not None:
        path = _materialise(cfg, ds)
        structures, source = read(path), f"{ds.source} ({ds.size} drawn with seed {ds.subset_seed}: {path.name})"
    else:
        structures = load_dataset(ds.source, limit=ds.limit, qm9_target=ds.qm9_target)
        source = ds.source + (f" (first {ds.limit})" if ds.limit else "")
    sizes = [ds.split[p] for p in ("train", "val", "test")]
    train, val, test = random_split(structures, sizes, seed=ds.split["seed"])
    if not train or not val or not test:
        raise ValueError(f"{cfg.source}: datasets.{name}.split {sizes} leaves an empty part of "
                         f"{len(structures)} structures")
    energy_only = ds.target == "energy"
    if not energy_only:
        missing = next((s for s in structures if s.forces is None), None)
        if missing is not None:
            raise ValueError(f"{cfg.source}: datasets.{name}: target forces, but {missing.source} has no forces "
                             f"(use target: energy)")
    numbers = sorted({int(z) for s in structures for z in s.numbers})
    return StudySplits(name=name, train=list(train), val=list(val), test=list(test),
                       type_names=[chemical_symbols[z] for z in numbers], energy_only=energy_only, source=source)
