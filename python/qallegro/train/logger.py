"""Per-epoch metrics to CSV (``metrics.csv``) and TensorBoard (``tensorboard/``), rank 0 only."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Dict, List, Optional

from qallegro.utils import atomic_write_text


class MetricsLogger:
    """Writes one row per epoch. On resume, the CSV is rewritten from the checkpoint's history so
    it holds exactly the epochs the resumed state has seen (no duplicates from a crashed run)."""

    def __init__(self, run_dir: Path, history: List[Dict[str, float]], tensorboard: bool):
        self.path = Path(run_dir) / "metrics.csv"
        self.columns: List[str] = []
        self._rewrite(history)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                warnings.warn("tensorboard is not installed; metrics go to metrics.csv only (pip install tensorboard)")
            else:
                purge = int(history[-1]["epoch"]) + 1 if history else None
                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge)

    def _rewrite(self, history: List[Dict[str, float]]) -> None:
        cols: List[str] = []
        for row in history:
            cols += [k for k in row if k not in cols]
        self.columns = cols
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=cols)
        if cols:
            w.writeheader()
        for row in history:
            w.writerow(row)
        atomic_write_text(self.path, text.getvalue())

    def log(self, row: Dict[str, float], history: List[Dict[str, float]]) -> None:
        """Append ``row`` (``history`` already contains it; used when new columns appear)."""
        if any(k not in self.columns for k in row):
            self._rewrite(history)
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        if self.writer is not None:
            step = int(row["epoch"])
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k.replace("_", "/", 1), v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_row(row: Dict[str, float], keys: Optional[List[str]] = None) -> str:
    keys = keys or [k for k in row if k.startswith(("train_loss", "val_loss", "val_forces_mae", "val_energy_per_atom_mae"))]
    parts = [f"epoch {int(row['epoch'])}"]
    for k in keys:
        if k in row:
            parts.append(f"{k} {row[k]:.4g}")
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    return "  ".join(parts)
