"""``qallegro bench``: runs the benchmark suites of a source checkout (``bench/``) with
pytest-benchmark and prints the table of ratios against each suite's named reference (measured in
the same run); ``--table`` only prints the table from ``bench/results/*.json``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = "qallegro bench                       # all suites (run from the source checkout)\n" \
          "  qallegro bench -k neighbor_list      # one suite\n" \
          "  qallegro bench --table               # print the last results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench-dir", default="bench", help="folder of the bench_*.py suites (default ./bench)")
    parser.add_argument("-k", dest="select", help="pytest -k expression selecting suites/benchmarks")
    parser.add_argument("--table", action="store_true", help="only print the table of the last results")


def results_table(results: Path) -> str:
    """Markdown table of every ``bench/results/*.json`` written by bench/conftest.py."""
    lines = ["| suite | case | reference | qallegro (ms) | reference (ms) | ratio |", "|---|---|---|---|---|---|"]
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        for row in data.get("rows", []):
            if "ratio" not in row:
                continue
            lines.append(f"| {path.stem} | {row['group']} | {row['reference']} | {row['qallegro_s'] * 1e3:.2f} | "
                         f"{row['reference_s'] * 1e3:.2f} | {row['ratio']:.3f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    bench = Path(args.bench_dir)
    if not bench.is_dir():
        print(f"qallegro bench: {bench} not found; run from a qallegro source checkout (the suites are not "
              "part of the installed package)", file=sys.stderr)
        return 2
    if not args.table:
        cmd = [sys.executable, "-m", "pytest", str(bench), "--benchmark-only", "-p", "no:cacheprovider", "-q"]
        if args.select:
            cmd += ["-k", args.select]
        code = subprocess.call(cmd)
        if code != 0:
            return code
    print(results_table(bench / "results"))
    return 0
