"""cpu_guard: forked computations with a per-item CPU-time limit (the NLopt COBYLA stall guard)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qallegro.hpo import cpu_guard

pytestmark = pytest.mark.skipif(not cpu_guard.available(), reason="cpu_guard needs Linux fork")


def _features(x: np.ndarray) -> np.ndarray:
    return np.array([np.sin(x).sum(), np.exp(x[0]) / 3.0, x @ x])


def test_results_are_bit_identical_to_in_process():
    items = list(np.random.default_rng(0).uniform(-1, 1, (7, 4)))
    got, reason = cpu_guard.map_with_cpu_limit(_features, items, 3, cpu_seconds=10.0)
    assert reason is None and len(got) == 7
    for item, record in zip(items, got):
        assert np.array_equal(record, _features(item))  # exact: float64 bytes through the pipe
    assert cpu_guard.map_with_cpu_limit(_features, [], 3, cpu_seconds=10.0) == ([], None)


def test_an_item_that_burns_cpu_is_stopped():
    def fn(x: np.ndarray) -> np.ndarray:
        if x[0] > 0.5:
            while True:  # a stall: computes forever without returning
                pass
        return _features(x)

    items = [np.array([0.1, 0.2]), np.array([0.2, 0.1]), np.array([0.9, 0.0]), np.array([0.3, 0.3])]
    t0 = time.perf_counter()
    got, reason = cpu_guard.map_with_cpu_limit(fn, items, 3, cpu_seconds=1.0)
    assert reason == "cpu"
    assert len(got) == 2 and np.array_equal(got[1], _features(items[1]))
    # limit 1 s of CPU without a heartbeat: stopped after 0.5 to 2 s
    assert time.perf_counter() - t0 < 30.0


def test_an_exception_in_the_child_is_reported_as_error(capfd):
    def fn(x: np.ndarray) -> np.ndarray:
        if x[0] < 0:
            raise ValueError("negative item")
        return _features(x)

    got, reason = cpu_guard.map_with_cpu_limit(fn, [np.ones(2), -np.ones(2), np.ones(2)], 3, cpu_seconds=10.0)
    assert reason == "error" and len(got) == 1
    assert "ValueError: negative item" in capfd.readouterr().err


def test_heartbeats_keep_a_long_item_alive():
    def fn(x: np.ndarray) -> np.ndarray:
        t0 = time.process_time()
        while time.process_time() - t0 < 3.0:  # 3 s of CPU, beating all along: not a stall
            cpu_guard.heartbeat()
        return _features(x)

    got, reason = cpu_guard.map_with_cpu_limit(fn, [np.zeros(2)], 3, cpu_seconds=1.0)
    assert reason is None and np.array_equal(got[0], _features(np.zeros(2)))
    cpu_guard.heartbeat()  # outside a guarded child: a no-op
    assert cpu_guard._rearm_at is None


def test_a_blocked_child_switches_forking_off(monkeypatch):
    monkeypatch.setattr(cpu_guard, "_BLOCKED_SECONDS", 1.0)
    monkeypatch.setattr(cpu_guard, "_disabled", False)

    def fn(x: np.ndarray) -> np.ndarray:
        if x[0] > 0:
            time.sleep(30)  # waits without using CPU, as on a lock that no thread will release
        return _features(x)

    with pytest.warns(RuntimeWarning, match="no progress"):
        got, reason = cpu_guard.map_with_cpu_limit(fn, [-np.ones(2), np.ones(2)], 3, cpu_seconds=10.0)
    assert reason == "blocked" and len(got) == 1
    assert not cpu_guard.available()


@pytest.mark.parametrize("workers", [2, 3, 9])
def test_several_children_give_the_same_records_in_item_order(workers):
    items = list(np.random.default_rng(1).uniform(-1, 1, (7, 4)))
    one, _ = cpu_guard.map_with_cpu_limit(_features, items, 3, cpu_seconds=10.0)
    got, reason = cpu_guard.map_with_cpu_limit(_features, items, 3, cpu_seconds=10.0, workers=workers)
    assert reason is None and len(got) == 7
    assert all(np.array_equal(a, b) for a, b in zip(got, one))


def test_several_children_report_the_first_failed_item_and_drop_later_ones():
    def fn(x: np.ndarray) -> np.ndarray:
        if x[0] > 0.5:
            while True:  # a stall in the second child's share
                pass
        return _features(x)

    # two children: items 0-2 and 3-5; item 4 stalls, so items 0-3 have records, 5 is dropped
    items = [np.array([0.1 * k, 0.0]) for k in range(4)] + [np.array([0.9, 0.0]), np.array([0.2, 0.0])]
    got, reason = cpu_guard.map_with_cpu_limit(fn, items, 3, cpu_seconds=1.0, workers=2)
    assert reason == "cpu" and len(got) == 4
    assert all(np.array_equal(g, _features(x)) for g, x in zip(got, items))

    def err(x: np.ndarray) -> np.ndarray:
        if x[0] < 0:
            raise ValueError("negative item")
        return _features(x)

    # the first child's share fails at item 1: the second child's records (items 2, 3) are dropped
    got, reason = cpu_guard.map_with_cpu_limit(err, [np.ones(2), -np.ones(2), np.ones(2), np.ones(2)], 3,
                                               cpu_seconds=10.0, workers=2)
    assert reason == "error" and len(got) == 1
