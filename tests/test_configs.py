"""The configs in configs/ load, point at data a clone has (the shipped sets), and train."""

from __future__ import annotations

from pathlib import Path

import pytest

from qallegro.train import fit
from qallegro.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_trains_on_data_a_clone_has(path, tmp_path):
    cfg = load_config(path)
    assert Path(cfg.data.train).is_file(), f"{path.name}: data.train {cfg.data.train} is not in the clone"
    # the documented model and training set-up, cut to one epoch on a few frames
    cfg.run_dir = str(tmp_path / "run")
    cfg.data.index = ":10"
    cfg.data.train_size, cfg.data.val_size = 8, 2
    cfg.training.max_epochs, cfg.training.progress, cfg.training.tensorboard = 1, False, False
    result = fit(cfg)
    assert len(result.history) == 1 and (tmp_path / "run" / "best.pt").is_file()
