"""`qallegro reproduce` and `qallegro demo`: a real (tiny) comparison run, its table, plot and resume."""

from __future__ import annotations

import json

import pytest

from qallegro.cli import main
from qallegro.data.datasets import available, load_dataset
from tests.conftest import shared_file


def test_reproduce_table_plot_and_resume(tmp_path, capsys):
    data = shared_file("culi_vasp_rss.extxyz")
    out = tmp_path / "rep"
    args = ["reproduce", "--data", str(data), "--limit", "40", "--kinds", "allegro,allegro_mlp", "--seeds", "2",
            "--budget", "30", "--max-epochs", "2", "--split", "20,5,15", "--r-max", "4.0", "--out", str(out)]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| Allegro | 2 |" in table and "| Allegro+MLP | 2 |" in table
    assert "±" in table and "F MAE (meV/Å)" in table
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["kind"], r["seed"]) for r in runs) == [("allegro", 0), ("allegro", 1), ("allegro_mlp", 0),
                                                            ("allegro_mlp", 1)]
    assert all(r["metrics"]["forces_mae_meV_per_A"] > 0 and r["latency_ms"] > 0 for r in runs)
    capsys.readouterr()
    assert main(args) == 0  # resume: every run is done, nothing is retrained
    assert "seed 0:" not in capsys.readouterr().out
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4


def test_reproduce_energy_only_qm9(tmp_path):
    out = tmp_path / "qm9"
    frames = load_dataset("qm9", limit=30)
    assert len(frames) == 30 and frames[0].forces is None
    assert main(["reproduce", "--data", "qm9", "--limit", "30", "--kinds", "allegro", "--seeds", "1", "--budget", "20",
                 "--max-epochs", "2", "--split", "20,4,6", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "E MAE (meV/atom)" in table and "F MAE" not in table


def test_reproduce_bad_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown model kind"):
        main(["reproduce", "--data", "qm9", "--limit", "10", "--kinds", "allegro_xyz", "--out", str(tmp_path)])


def test_demo_on_shipped_data(tmp_path):
    if "culi-gfn1xtb" not in available():
        pytest.skip("shipped Cu-Li data not generated")
    out = tmp_path / "demo"
    assert main(["demo", "--budget", "5", "--limit", "24", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    for label in ("| Allegro |", "| Allegro+MLP |", "| Allegro+QDI |"):
        assert label in table


@pytest.mark.parametrize("name", ["benzene", "aspirin", "culi-gpaw"])
def test_reproduce_on_shipped_sets_by_name(tmp_path, name):
    """The shipped PBE sets by name: molecules without a cell, GPAW cells with 6-8 atoms."""
    if name not in available():
        pytest.skip(f"shipped data set {name} not generated")
    frames = load_dataset(name, limit=12)
    if len(frames) < 12:
        pytest.skip(f"only {len(frames)} frames of {name} generated so far")
    out = tmp_path / name
    assert main(["reproduce", "--data", name, "--limit", "12", "--kinds", "allegro_qdi", "--seeds", "1",
                 "--budget", "10", "--max-epochs", "1", "--split", "6,2,4", "--r-max", "4.0", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| Allegro+QDI | 1 |" in table and "F MAE (meV/Å)" in table
    (run,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert run["metrics"]["forces_mae_meV_per_A"] > 0 and run["latency_ms"] > 0
