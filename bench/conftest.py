"""Shared benchmark plumbing: every timing is recorded with its group and implementation name, and
the session ends with a table of ratios against the reference named in each group (measured in the
same run), also written to ``bench/results/<module>.json``.

Use ``record(benchmark, group, impl, reference=False)`` after ``benchmark(...)`` or
``benchmark.pedantic(...)``; ratio = qallegro time / reference time (< 1: qallegro is faster).
"""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from pathlib import Path

import pytest
import torch

_TIMES = defaultdict(dict)  # group -> impl -> (median seconds, module)
RESULTS = Path(__file__).parent / "results"


@pytest.fixture
def record():
    def _record(benchmark, group: str, impl: str) -> None:
        _TIMES[group][impl] = (float(benchmark.stats.stats.median), benchmark.fullname.split("::")[0])

    return _record


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _TIMES:
        return
    tr = terminalreporter
    tr.section("qallegro ratios (qallegro time / reference time, same run)")
    by_module = defaultdict(list)
    for group, impls in _TIMES.items():
        if "qallegro" not in impls:
            continue
        ours, module = impls["qallegro"]
        for impl, (t, _) in sorted(impls.items()):
            if impl == "qallegro":
                continue
            ratio = ours / t
            tr.write_line(f"{group:40s} qallegro {ours * 1e3:10.3f} ms  {impl:>14s} {t * 1e3:10.3f} ms  ratio {ratio:6.3f}")
            by_module[module].append({"group": group, "reference": impl, "qallegro_s": ours, "reference_s": t,
                                      "ratio": ratio})
    RESULTS.mkdir(exist_ok=True)
    for module, rows in by_module.items():
        name = Path(module).stem
        (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
