"""How many torch threads a long-running command uses.

torch's OpenMP regions end in barriers: when another process holds one of the cores, a 2-thread
forward pass waits at every barrier for the thread that was descheduled, and can run far slower than a
1-thread one (measured on a 2-core machine with one other job: 1520 ms against 50 ms for the same
256-atom model). So every long-running command (``study``, ``optimize``, ``reproduce``, ``demo``,
``train``) takes the CPUs this process may run on (``os.sched_getaffinity``, which honours
``taskset``, cgroups' cpusets and Slurm's binding) divided by the worker processes it starts itself,
unless the user says ``--threads N``; it prints the choice, and latency is measured with it.
"""

from __future__ import annotations

import os
from typing import Optional


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # platforms without affinity masks
        return max(1, os.cpu_count() or 1)


def choose_threads(requested: Optional[int] = None, workers: int = 1) -> int:
    """``requested`` if given, else the available CPUs shared evenly by ``workers`` processes (>= 1)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"--threads must be a whole number >= 1, got {requested!r}")
        return requested
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return max(1, available_cpus() // workers)


def apply_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in this process (and in the OpenMP/MKL pools its children
    inherit through the environment)."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


def setup_threads(command: str, requested: Optional[int] = None, workers: int = 1, quiet: bool = False) -> int:
    """Choose, apply and print the thread count of ``command``; returns it."""
    threads = choose_threads(requested, workers)
    apply_threads(threads)
    if not quiet:
        how = "as asked (--threads)" if requested is not None else (
            f"{available_cpus()} CPUs available" + (f" / {workers} workers" if workers > 1 else ""))
        print(f"qallegro {command}: {threads} torch thread{'s' if threads != 1 else ''} per process ({how})",
              flush=True)
    return threads


def add_threads_argument(parser) -> None:
    """The ``--threads N`` option every long-running command shares."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process (default: CPUs in this process's affinity mask / "
                             "worker processes; 1 is fastest on a machine where other work runs)")
