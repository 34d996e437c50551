"""The command line: version, every command's --help (with an example), and `qallegro neighbors`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import qallegro
from qallegro.cli import COMMANDS, _available, main


def test_version_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "qallegro", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"qallegro {qallegro.__version__}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_available_command_has_help_with_example(command, capsys):
    assert command in _available(), f"{command}: its module is not importable"
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and "qallegro" in text.split("example:")[1]


def test_neighbors_command(tmp_path, capsys):
    import ase.io
    from ase.neighborlist import primitive_neighbor_list

    from qallegro.data.datasets import builtin_path

    path = builtin_path("culi-gpaw")  # shipped 8-atom Cu-Li cells (some with vacancies)
    out_json = tmp_path / "stats.json"
    assert main(["neighbors", str(path), "--r-max", "5.0", "--json", str(out_json)]) == 0
    stats = json.loads(out_json.read_text())
    frames = ase.io.read(path, ":")
    pairs = sum(len(primitive_neighbor_list("i", a.pbc, a.cell.array, a.positions, 5.0)) for a in frames)
    assert stats["frames"] == len(frames) == 100 and stats["atoms"] == sum(len(a) for a in frames)
    assert stats["avg_num_neighbors"] == pytest.approx(pairs / stats["atoms"], rel=1e-12)  # ~33 at 5 Å
    assert "avg_num_neighbors" in capsys.readouterr().out
