#!/usr/bin/env python
"""Run a command and keep, beside its results, how it was run: ``<folder>/command.json`` with the
command line, wall time, machine, thread setting, 1-minute load average before and after, date and
git commit. README's demo and reproduce tables quote these (scripts/readme_tables.py).

    OMP_NUM_THREADS=1 python scripts/record_run.py bench/results/demo -- qallegro demo --out bench/results/demo

Exits with the command's exit code; command.json is written only when the command succeeded.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    folder, command = Path(argv[0]), argv[2:]
    load_start = os.getloadavg()[0]
    start = time.monotonic()
    code = subprocess.call(command)
    wall = time.monotonic() - start
    if code != 0:
        return code
    import torch

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    record = {
        "command": shlex.join(command),
        "wall_s": round(wall, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "command.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(folder / "command.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
