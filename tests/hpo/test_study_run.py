"""`qallegro study` end to end on shipped data: tune, retrain, report; resume after kill; two workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, OperationalError

import qallegro.train as qtrain
from qallegro.cli import main
from qallegro.hpo.study_config import load_study_config
from qallegro.hpo.study_data import load_splits
from tests.hpo.study_helpers import tiny_study

ROOT = Path(__file__).resolve().parents[2]


def _trials(cfg, ds, kind):
    return optuna.load_study(study_name=cfg.study_name(ds, kind), storage=cfg.storage).get_trials()


def test_tiny_study_end_to_end(tmp_path, monkeypatch, capsys):
    path = tiny_study(tmp_path, trials=3)
    cfg = load_study_config(path)
    seen = []  # every structure the tuning stage trains or evaluates on
    real_fit, real_evaluate = qtrain.fit, qtrain.evaluate

    def fit_spy(config, train, val, **kw):
        seen.extend(id(s) for s in list(train) + list(val))
        return real_fit(config, train, val, **kw)

    def evaluate_spy(model, structures, **kw):
        seen.extend(id(s) for s in structures)
        return real_evaluate(model, structures, **kw)

    monkeypatch.setattr(qtrain, "fit", fit_spy)
    monkeypatch.setattr(qtrain, "evaluate", evaluate_spy)
    splits = {}
    import qallegro.hpo.study_run as run_module

    real_load = run_module.load_splits

    def load_spy(cfg_, name):
        splits[name] = real_load(cfg_, name)
        return splits[name]

    monkeypatch.setattr(run_module, "load_splits", load_spy)
    assert main(["study", "run", str(path), "--threads", "1", "--stage", "tune"]) == 0
    # stage 1 never touches a test structure
    tested = {id(s) for sp in splits.values() for s in sp.test}
    assert seen and tested and not tested & set(seen)
    assert main(["study", "run", str(path), "--threads", "1"]) == 0   # stage 1 is done: runs stage 2 only
    out = capsys.readouterr().out
    assert "qallegro study: 1 torch thread per process (as asked (--threads))" in out

    for ds, kind in (("culi", "allegro"), ("culi", "allegro_qdi"), ("benzene", "allegro")):
        trials = _trials(cfg, ds, kind)
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
        for t in trials:
            assert t.user_attrs["evaluated_on"] == "val" and t.values[1] == t.user_attrs["latency_ms"] > 0
            lat = t.user_attrs["latency"]
            assert lat["threads"] == 1 and lat["clock"] == "cpu" and lat["num_structures"] == 1
            assert lat["median_ms"] == lat["cpu_median_ms"] and lat["wall_median_ms"] > 0
    with pytest.raises(KeyError):  # the transferred kind has no study of its own
        _trials(cfg, "benzene", "allegro_qdi")

    final = optuna.load_study(study_name=cfg.final_study_name, storage=cfg.storage).get_trials()
    jobs = [t.user_attrs["job"] for t in final if t.state == TrialState.COMPLETE]
    assert all(t.user_attrs["evaluated_on"] == "test" for t in final if t.state == TrialState.COMPLETE)
    assert not [t for t in final if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # transfer_from: benzene's Allegro+QDI retrains the most accurate Cu-Li point's hyperparameters
    culi_qdi = min((t for t in _trials(cfg, "culi", "allegro_qdi") if t.state == TrialState.COMPLETE),
                   key=lambda t: t.values[0])
    transferred = [j for j in jobs if j["dataset"] == "benzene" and j["kind"] == "allegro_qdi"]
    assert len(transferred) == 2 and {j["seed"] for j in transferred} == {0, 1}
    assert all(j["tuned_on"] == "culi" and j["params"] == culi_qdi.params and j["points"] == ["most_accurate"]
               for j in transferred)
    tuned = [j for j in jobs if j["dataset"] == "culi" and j["kind"] == "allegro"]
    assert {p for j in tuned for p in j["points"]} == {"most_accurate", "knee"} and len(tuned) % 2 == 0

    report_dir = tmp_path / "report"
    assert main(["study", "report", str(path), "-o", str(report_dir)]) == 0
    text = (report_dir / "report.md").read_text()
    for needle in ("## culi", "## benzene", "Allegro+QDI | most_accurate", "| culi |", "The paper's claims",
                   "(3) transferred Allegro+QDI", "cpu clock", "**Status: complete.**"):
        assert needle in text, needle
    assert re.search(r"\| \d+ / \d+ \| [\d,]+ \|", text)   # atoms / edges of the benchmark, parameters
    for png in ("culi.png", "benzene.png"):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((report_dir / "final.jsonl").read_text().splitlines()) == len(final)


def _start(path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "qallegro", "study", "run", str(path), "--stage", "tune",
                             "--threads", "1", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_killed_worker_loses_nothing(tmp_path):
    path = tiny_study(tmp_path, trials=3, two_sets=False,
                      kinds={"allegro": yaml_kind()})
    cfg = load_study_config(path)
    proc = _start(path)
    deadline = time.monotonic() + 300
    victim = None
    while time.monotonic() < deadline and victim is None:  # kill the worker inside its second trial
        try:
            trials = _trials(cfg, "culi", "allegro") if (cfg.out / "studies.db").exists() else []
        except (KeyError, OperationalError, IntegrityError):  # no study yet, or the database is being set up
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
        if running and sum(t.state == TrialState.COMPLETE for t in trials) >= 1:
            victim = running[0]
        elif proc.poll() is not None:
            pytest.fail("the worker finished before it could be killed:\n" + proc.stdout.read())
        else:
            time.sleep(0.2)
    assert victim is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # restarted at once (long before the heartbeat grace period): the dead trial is failed and re-run
    again = _start(path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    trials = _trials(cfg, "culi", "allegro")
    states = {t.number: t.state for t in trials}
    assert states[victim.number] == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == victim.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(s == TrialState.COMPLETE for s in states.values()) >= 3


def yaml_kind():
    from tests.hpo.study_helpers import BODY

    return {"params": {**BODY, "readout_mlp_hidden_layers_width": 8}}


def test_two_workers_share_one_study(tmp_path):
    path = tiny_study(tmp_path, trials=4, two_sets=False, kinds={"allegro": yaml_kind()})
    cfg = load_study_config(path)
    proc = _start(path, "--workers", "2")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "1 torch thread per process" in out
    trials = _trials(cfg, "culi", "allegro")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({t.user_attrs["worker"] for t in done}) == 2   # both workers ran trials of the one study
    assert 4 <= len(done) <= 5 and not [t for t in trials if t.state != TrialState.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no point evaluated twice


def test_qm9_subset_is_drawn_once_and_reused(tmp_path, monkeypatch):
    # a random subset is written to <out>/data once; later loads read that file, not the source again
    path = tiny_study(tmp_path, two_sets=True)
    cfg = load_study_config(path)
    first = load_splits(cfg, "benzene")
    subset = cfg.out / "data" / "benzene.extxyz"
    assert subset.is_file()
    import qallegro.data.datasets as datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("source read again"))
    again = load_splits(cfg, "benzene")
    assert [s.positions.tolist() for s in again.test] == [s.positions.tolist() for s in first.test]
    assert len(first.train) == 10 and len(first.val) == 6 and len(first.test) == 8


def test_workers_racing_to_create_the_schema_both_get_the_storage(tmp_path, monkeypatch):
    # two workers started together on a new database: the loser's insert of the schema version fails
    # (seen: "UNIQUE constraint failed: alembic_version.version_num") though the schema is there; it retries
    import optuna.storages

    from qallegro.hpo.study_run import make_storage

    real = optuna.storages.RDBStorage
    calls = []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = make_storage(f"sqlite:///{tmp_path / 'new.db'}")
    assert len(calls) == 2 and storage.get_all_studies() == []

    def broken(*args, **kwargs):
        raise IntegrityError("INSERT INTO studies", {}, Exception("NOT NULL constraint failed"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(IntegrityError, match="NOT NULL"):  # other integrity errors are not retried
        make_storage(f"sqlite:///{tmp_path / 'other.db'}")
