"""`qallegro.cli.main`: user errors are one line and exit 2; --debug shows them; bugs keep their traceback."""

from __future__ import annotations

import pytest

import qallegro.train.cli_evaluate as cli_evaluate
from qallegro.cli import main


def test_user_error_is_one_line_with_exit_2(tmp_path, capsys):
    missing = tmp_path / "absent.pt"
    assert main(["evaluate", str(missing), str(tmp_path / "data.extxyz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"qallegro evaluate: error: model file {missing} does not exist")


def test_bad_yaml_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training: {max_epochs: [\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qallegro train: error: {cfg}: not valid YAML") and err.count("\n") == 1


@pytest.mark.parametrize("how", ["flag-after", "flag-before", "env"])
def test_debug_reraises_with_traceback(tmp_path, monkeypatch, how):
    argv = ["evaluate", str(tmp_path / "absent.pt"), "x.extxyz"]
    if how == "flag-after":
        argv.append("--debug")
    elif how == "flag-before":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("QALLEGRO_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        main(argv)


def test_unexpected_exceptions_keep_their_traceback(monkeypatch):
    def boom(args):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(cli_evaluate, "run", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["evaluate", "m.pt", "d.extxyz"])
