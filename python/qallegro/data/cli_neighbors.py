"""``qallegro neighbors FILE --r-max R``: neighbour counts of a data set (Allegro's
``avg_num_neighbors``), from qallegro's neighbour-list kernel."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

EXAMPLE = "qallegro neighbors data/culi.extxyz --r-max 5.0 --json stats.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="structure file (extxyz, any ASE format, rMD17/MD17 npz, QM9)")
    parser.add_argument("--r-max", type=float, required=True, help="cutoff radius in Å")
    parser.add_argument("--index", default=":", help="frames to read (ASE slice syntax), default all")
    parser.add_argument("--json", help="also write the statistics to this JSON file")


def neighbor_statistics(structures, r_max: float) -> dict:
    """Mean/min/max neighbours per atom over all frames, and the time the neighbour lists took."""
    from qallegro.ops import neighbor_list

    counts = []
    start = time.perf_counter()
    for s in structures:
        cell = torch.from_numpy(s.cell) if s.pbc.any() else None
        edge_index, _ = neighbor_list(torch.from_numpy(s.positions), r_max, cell, torch.from_numpy(s.pbc))
        counts.append(torch.bincount(edge_index[0], minlength=s.num_atoms).numpy())
    seconds = time.perf_counter() - start
    all_counts = np.concatenate(counts) if counts else np.zeros(0)
    return {
        "frames": len(structures),
        "atoms": int(all_counts.size),
        "r_max": r_max,
        "avg_num_neighbors": float(all_counts.mean()) if all_counts.size else 0.0,
        "min_neighbors": int(all_counts.min()) if all_counts.size else 0,
        "max_neighbors": int(all_counts.max()) if all_counts.size else 0,
        "seconds": seconds,
    }


def run(args: argparse.Namespace) -> int:
    from qallegro.data import read

    stats = neighbor_statistics(read(args.file, index=args.index), args.r_max)
    for key, value in stats.items():
        print(f"{key:18s} {value:.4g}" if isinstance(value, float) else f"{key:18s} {value}")
    if args.json:
        from qallegro.utils import atomic_write_text

        atomic_write_text(args.json, json.dumps(stats, indent=1))
    return 0
