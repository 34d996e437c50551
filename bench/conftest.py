"""Shared benchmark plumbing: every timing is recorded with its group and implementation name, and
the session ends with a table of ratios against the references named in each group (measured in the
same run), also written to ``bench/results/<module>.json``.

Use ``record(benchmark, group, impl)`` after ``benchmark(...)`` or ``benchmark.pedantic(...)``;
ratio = qallegro time / reference time (< 1: qallegro is faster). The JSON keeps every timing of a
group (``groups``: impl -> median and minimum seconds, torch threads, rounds) beside the ratio rows, and notes the
machine and its load average at the start and end of the session: the machines this runs on are
often shared, and a ratio measured under load is only comparable with one measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
from collections import defaultdict
from pathlib import Path

import pytest
import torch

_TIMES = defaultdict(dict)  # group -> impl -> {"median_s", "threads", "rounds", "module"}
RESULTS = Path(__file__).parent / "results"
_LOAD_AT_START = {}


def pytest_sessionstart(session):
    _LOAD_AT_START["load"] = round(os.getloadavg()[0], 2)


@pytest.fixture
def record():
    def _record(benchmark, group: str, impl: str) -> None:
        stats = benchmark.stats.stats
        # the minimum is kept too: on a shared machine it is the least disturbed of the rounds
        _TIMES[group][impl] = {"median_s": float(stats.median), "min_s": float(stats.min),
                               "threads": torch.get_num_threads(), "rounds": int(stats.rounds),
                               "module": benchmark.fullname.split("::")[0]}

    return _record


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _TIMES:
        return
    tr = terminalreporter
    tr.section("qallegro ratios (qallegro time / reference time, same run)")
    rows, groups = defaultdict(list), defaultdict(dict)
    for group, impls in _TIMES.items():
        module = next(iter(impls.values()))["module"]
        groups[module][group] = {impl: {k: v for k, v in t.items() if k != "module"} for impl, t in impls.items()}
        if "qallegro" not in impls:
            continue
        ours = impls["qallegro"]["median_s"]
        for impl, t in sorted(impls.items()):
            if impl == "qallegro":
                continue
            ratio = ours / t["median_s"]
            tr.write_line(f"{group:48s} qallegro {ours * 1e3:10.3f} ms  {impl:>18s} {t['median_s'] * 1e3:10.3f} ms"
                          f"  ratio {ratio:6.3f}")
            rows[module].append({"group": group, "reference": impl, "qallegro_s": ours,
                                 "reference_s": t["median_s"], "ratio": ratio})
    load = {"start": _LOAD_AT_START.get("load"), "end": round(os.getloadavg()[0], 2)}
    tr.write_line(f"load average (1 min) at start {load['start']}, at end {load['end']}, on {os.cpu_count()} cores")
    RESULTS.mkdir(exist_ok=True)
    for module, module_groups in groups.items():
        out = {"machine": machine(), "load_average_1min": load, "groups": module_groups, "rows": rows[module]}
        path = RESULTS / f"{Path(module).stem}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.replace(path)  # atomic: an interrupted session leaves the last complete results
