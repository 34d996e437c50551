"""Thread choice of the long-running commands: the affinity mask shared by the workers."""

from __future__ import annotations

import os

import pytest
import torch

from qallegro import threads


def test_threads_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert threads.available_cpus() == 6
    assert threads.choose_threads(None, workers=1) == 6
    assert threads.choose_threads(None, workers=4) == 1   # 6 // 4, never more than the CPUs
    assert threads.choose_threads(None, workers=8) == 1
    assert threads.choose_threads(3, workers=8) == 3      # --threads wins
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="--threads"):
            threads.choose_threads(bad)


def test_setup_threads_applies_and_prints(monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "9")
    try:
        assert threads.setup_threads("study", None, workers=2) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert "qallegro study: 1 torch thread per process (2 CPUs available / 2 workers)" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
