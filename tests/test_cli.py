"""The command line: version, every command's --help (with an example), and `qallegro neighbors`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import qallegro
from qallegro.cli import COMMANDS, _available, main
from tests.conftest import shared_file


def test_version_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "qallegro", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"qallegro {qallegro.__version__}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_available_command_has_help_with_example(command, capsys):
    if command not in _available():
        pytest.skip(f"{command} not built yet")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and "qallegro" in text.split("example:")[1]


def test_neighbors_command(tmp_path, capsys):
    path = shared_file("culi_vasp_rss.extxyz")
    out_json = tmp_path / "stats.json"
    assert main(["neighbors", str(path), "--r-max", "5.0", "--json", str(out_json)]) == 0
    stats = json.loads(out_json.read_text())
    assert stats["frames"] == 201 and stats["atoms"] == 1479
    assert 20 < stats["avg_num_neighbors"] < 35  # dense Cu-Li cells at 5 Å (dimers and atoms pull it down)
    assert "avg_num_neighbors" in capsys.readouterr().out
