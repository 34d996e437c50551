"""`qallegro pareto` reads studies and never creates a database."""

from __future__ import annotations

import optuna

from qallegro.cli import main


def test_missing_sqlite_database_is_an_error_and_not_created(tmp_path, capsys):
    db = tmp_path / "absent.db"
    assert main(["pareto", "study", "--storage", f"sqlite:///{db}"]) == 2
    assert not db.exists()
    err = capsys.readouterr().err
    assert err.startswith(f"qallegro pareto: error: --storage sqlite:///{db}: database file {db} does not exist")


def test_wrong_study_is_one_line(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="single", storage=storage, direction="minimize")
    assert main(["pareto", "single", "--storage", storage]) == 2
    assert "study 'single' has 1 objectives, expected 2" in capsys.readouterr().err
    assert main(["pareto", "other", "--storage", storage]) == 2
    assert "no study 'other'" in capsys.readouterr().err
