"""Studies survive dead workers and are shared by concurrent workers (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage

try:  # Optuna >= 4.9 (older: the same class under its former name)
    from optuna.storages import RetryHeartbeatStaleTrialCallback
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from qallegro.hpo.cli_optimize import make_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A worker process: SAMO-COBRA on a cheap constrained bi-objective problem. With a marker path it
# hangs inside trial number 3 (to be SIGKILLed there); with a target it stops once the study holds
# that many completed trials (shared across workers).
WORKER = r"""
import sys, time, pathlib, optuna
from optuna.distributions import FloatDistribution
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from qallegro.hpo import SamoCobraSampler
from qallegro.hpo.cli_optimize import make_storage

url, name, seed, marker, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = make_storage(url, heartbeat=1, retries=1)  # stale after 4 s, retried once
space = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
study = optuna.load_study(study_name=name, storage=storage,
                          sampler=SamoCobraSampler(search_space=space, ref_point=[1.1, 2.1], seed=seed))

def objective(trial):
    x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
    if marker != "-" and trial.number == 3:
        pathlib.Path(marker).write_text(str(trial.number))
        time.sleep(600)  # stands for a long training run; the test kills the process here
    trial.set_constraint("g", 0.2 - x - y)
    trial.set_user_attr("worker", seed)
    return x, (1 - x) ** 2 + y

study.optimize(objective, n_trials=40,
               callbacks=[MaxTrialsCallback(target, states=(TrialState.COMPLETE,))])
"""


def _worker(url: str, name: str, seed: int, marker: str = "-", target: int = 8) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, name, str(seed), marker, str(target)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _check_consistent(study) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))), f"duplicate or missing trial numbers: {numbers}"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]


def test_killed_worker_trial_is_failed_and_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = make_storage(url, heartbeat=1, retries=1)
    study = optuna.create_study(study_name="killed", storage=storage, directions=["minimize", "minimize"])
    marker = tmp_path / "in_trial"
    proc = _worker(url, "killed", 0, str(marker), target=100)
    try:
        _wait_for(lambda: marker.exists() or proc.poll() is not None, 180, "the worker to reach trial 3")
        assert proc.poll() is None, proc.stdout.read()
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: only the heartbeat tells
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert study.trials[3].state == TrialState.RUNNING
    # once the heartbeat is older than the grace period, any worker marks the trial failed
    # (Optuna does this at the start of each trial; here we call it directly) and re-queues it
    _wait_for(
        lambda: optuna.storages.fail_stale_trials(study) or study.trials[3].state == TrialState.FAIL,
        60,
        "the stale trial to be failed",
    )
    dead = study.trials[3]
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 3]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    # a new worker picks the re-queued trial up first, with the dead trial's parameters
    proc = _worker(url, "killed", 1, "-", target=len(study.trials) + 1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    retried = study.trials[retries[0].number]
    assert retried.state == TrialState.COMPLETE and retried.params == dead.params
    assert dead.state == TrialState.FAIL
    _check_consistent(study)


def _find(binary: str):
    return shutil.which(binary) or next(iter(sorted(glob(f"/usr/lib/postgresql/*/bin/{binary}"))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on loopback (Debian's postgresql package), as a non-root user."""
    initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    psycopg2 = pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="qallegro-pg-"))
    prefix: list = []
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        root.chmod(0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run(prefix + [initdb, "-D", str(data), "-A", "trust", "-U", "qallegro", "-N"], check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="qallegro", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE optuna")
        conn.close()
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; name the driver we have
        yield f"postgresql+psycopg2://qallegro@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url):
    target = 12
    storage = RDBStorage(postgres_url)
    study = optuna.create_study(study_name="shared", storage=storage, directions=["minimize", "minimize"])
    workers = [_worker(postgres_url, "shared", seed, target=target) for seed in (0, 1)]
    for w in workers:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert target <= len(complete) <= target + 1  # both may finish one last trial together
    _check_consistent(study)
    # both workers contributed, and no point was proposed twice
    params = [(t.params["x"], t.params["y"]) for t in complete]
    twins = [
        (t.number, t.user_attrs.get("worker"), params[k])
        for k, t in enumerate(complete)
        if params.count(params[k]) > 1
    ]
    assert not twins, f"proposed twice (trial, worker, params): {twins}"
    assert {t.user_attrs["worker"] for t in complete} == {0, 1}
