"""`qallegro reproduce` and `qallegro demo` on the shipped data: a real (tiny) comparison run, its
table (consistent with the stored runs), plot and resume, and models that learned something."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from qallegro.cli import main
from qallegro.data import random_split
from qallegro.data.datasets import load_dataset


def _table_cell(table: str, label: str, column: str) -> str:
    """The cell of row ``| label |`` under the header ``column`` of a markdown table."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    (row,) = [line for line in lines if line.startswith(f"| {label} |")]
    return [c.strip() for c in row.strip("|").split("|")][header.index(column)]


def _mean_std(values) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 \
        else f"{values[0]:.1f}"


def _zero_model_force_mae(name: str, limit: int, split) -> float:
    """meV/Å MAE of a model predicting zero forces on the test part of reproduce's split."""
    test = random_split(load_dataset(name, limit=limit), split, seed=0)[2]
    return 1e3 * float(np.abs(np.concatenate([np.asarray(s.forces) for s in test])).mean())


def test_reproduce_table_plot_and_resume(tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["reproduce", "--data", "culi-gpaw", "--limit", "40", "--kinds", "allegro,allegro_mlp", "--seeds", "2",
            "--budget", "60", "--max-epochs", "6", "--split", "20,5,15", "--r-max", "4.0", "--out", str(out)]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| Allegro | 2 |" in table and "| Allegro+MLP | 2 |" in table
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["kind"], r["seed"]) for r in runs) == [("allegro", 0), ("allegro", 1), ("allegro_mlp", 0),
                                                            ("allegro_mlp", 1)]
    # the table is the mean ± std of the stored runs
    for kind, label in (("allegro", "Allegro"), ("allegro_mlp", "Allegro+MLP")):
        mine = [r for r in runs if r["kind"] == kind]
        for column, key in (("F MAE (meV/Å)", "forces_mae_meV_per_A"),
                            ("E MAE (meV/atom)", "energy_mae_meV_per_atom")):
            assert _table_cell(table, label, column) == _mean_std([r["metrics"][key] for r in mine]), (label, column)
    # six epochs on 20 cells already beat a zero-force model by far (measured 0.3-0.55 of its MAE)
    zero = _zero_model_force_mae("culi-gpaw", 40, [20, 5, 15])
    for r in runs:
        assert r["epochs"] == 6 and r["metrics"]["forces_rmse_meV_per_A"] >= r["metrics"]["forces_mae_meV_per_A"]
        assert r["metrics"]["forces_mae_meV_per_A"] < 0.75 * zero, (r["kind"], r["seed"], r["metrics"], zero)
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
    (run,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert _table_cell(table, "Allegro", "E MAE (meV/atom)") == f"{run['metrics']['energy_mae_meV_per_atom']:.1f}"


def test_reproduce_bad_kind(tmp_path, capsys):
    assert main(["reproduce", "--data", "qm9", "--limit", "10", "--kinds", "allegro_xyz", "--out", str(tmp_path)]) == 2
    assert "unknown model kind(s) ['allegro_xyz']" in capsys.readouterr().err


def test_demo_on_shipped_data(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--budget", "5", "--limit", "24", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    runs = {r["kind"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    assert sorted(runs) == ["allegro", "allegro_mlp", "allegro_qdi"]
    for kind, label in (("allegro", "Allegro"), ("allegro_mlp", "Allegro+MLP"), ("allegro_qdi", "Allegro+QDI")):
        assert _table_cell(table, label, "F MAE (meV/Å)") == f"{runs[kind]['metrics']['forces_mae_meV_per_A']:.1f}"
        assert runs[kind]["hparams"]["num_layers"] == 1 and runs[kind]["r_max"] == 4.5  # the demo's small network


@pytest.mark.parametrize("name", ["benzene", "aspirin", "culi-gpaw"])
def test_reproduce_on_shipped_sets_by_name(tmp_path, name):
    """The shipped PBE sets by name: molecules without a cell, GPAW cells with 6-8 atoms."""
    out = tmp_path / name
    assert main(["reproduce", "--data", name, "--limit", "12", "--kinds", "allegro_qdi", "--seeds", "1",
                 "--budget", "10", "--max-epochs", "1", "--split", "6,2,4", "--r-max", "4.0", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    (run,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert _table_cell(table, "Allegro+QDI", "F MAE (meV/Å)") == f"{run['metrics']['forces_mae_meV_per_A']:.1f}"
    assert run["epochs"] == 1 and run["kind"] == "allegro_qdi"
    # latency is timed on the first --latency-structures (4) test structures: all of this split's test part
    test = random_split(load_dataset(name, limit=12), [6, 2, 4], seed=0)[2]
    assert run["latency_atoms"] == sum(s.num_atoms for s in test)
    assert run["metrics"]["num_structures"] == 4
