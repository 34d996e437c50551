"""Run a list of computations in a forked child that is stopped when it stalls.

Why: NLopt's COBYLA can spend minutes inside its subproblem solver (``trstlp``) without calling the
objective (NLopt issue #370: no stopping criterion is checked there), holding the GIL, so nothing
in the process can interrupt it. SAMO-COBRA on OSY met such starts from its ~60th evaluation on,
one of them still running after 26 minutes, where a normal start takes ~0.02 s. Forked, the same
computation gives bit-identical results, and the kernel stops the child once it has used
``cpu_seconds`` of CPU time since the last :func:`heartbeat` (``RLIMIT_CPU``, re-armed by the
heartbeats: CPU time, not wall time, so a loaded machine does not trigger it). The infill problem
beats once per objective evaluation, microseconds apart, so only a stall reaches the limit.

Linux only (``fork`` without ``exec`` is unsafe with macOS system libraries, absent on Windows);
elsewhere :func:`available` is False and callers compute in-process.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = ["available", "heartbeat", "map_with_cpu_limit"]

# a child that sends no result for this long (wall time) is taken as blocked, e.g. by a lock that
# another thread held at fork time; forking is then switched off for the rest of the process
_BLOCKED_SECONDS = 600.0
_disabled = False
# in a guarded child: the limit, and the CPU time after which a heartbeat re-arms it (None: not guarded)
_limit: float = 0.0
_rearm_at: Optional[float] = None


def heartbeat() -> None:
    """Tell the guard that the computation makes progress (cheap; a no-op outside a guarded child)."""
    if _rearm_at is not None and time.process_time() > _rearm_at:
        _arm()


def _arm() -> None:
    # stop after between limit/2 and limit + 1 s of CPU time without a heartbeat: RLIMIT_CPU counts
    # whole seconds, and a heartbeat only re-arms once half the limit has passed (one clock read a beat)
    global _rearm_at
    used = time.process_time()
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + _limit) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    _rearm_at = used + 0.5 * _limit


def available() -> bool:
    """True where :func:`map_with_cpu_limit` can fork (Linux, not switched off after a blocked child)."""
    return sys.platform.startswith("linux") and resource is not None and hasattr(os, "fork") and not _disabled


def _spawn(fn: Callable[[np.ndarray], np.ndarray], items: Sequence[np.ndarray], record_len: int, cpu_seconds: float):
    """Forks a child computing ``fn`` over ``items`` (results written to a pipe); returns (pid, read fd)."""
    global _limit
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns when threads exist
        pid = os.fork()
    if pid == 0:  # child: never returns
        status = 0
        try:
            os.close(read_fd)
            _, core_hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, core_hard))  # no core file when stopped
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
            _limit = float(cpu_seconds)
            for item in items:
                _arm()
                out = np.ascontiguousarray(fn(item), dtype=np.float64).reshape(record_len)
                os.write(write_fd, out.tobytes())  # < PIPE_BUF bytes for small records: one piece
        except BaseException:  # noqa: BLE001 - report whatever stopped the child, then exit
            traceback.print_exc()
            sys.stderr.flush()
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def map_with_cpu_limit(
    fn: Callable[[np.ndarray], np.ndarray],
    items: Sequence[np.ndarray],
    record_len: int,
    cpu_seconds: float,
    workers: int = 1,
) -> Tuple[List[np.ndarray], Optional[str]]:
    """``[fn(item) for item in items]`` computed in forked children, each ``fn`` result a float64
    vector of ``record_len`` entries.

    ``workers`` children run at once, each on a contiguous part of ``items`` (results are the same as
    with one child: every item is computed by the same function on a copy of the same process).
    Returns (results of the first k items, reason) where reason is None when k == len(items), else
    why item k has no result: "cpu" (it ran ``cpu_seconds`` of CPU time, give or take a second,
    without a :func:`heartbeat` and was stopped), "error" (``fn`` raised in the child; its
    traceback went to stderr: rerun item k in-process to see it) or "blocked" (no result for 600 s
    of wall time; rerun item k in-process, forking is off from now on). Any other death of a
    child raises RuntimeError. Items after k that a later child computed are dropped (the caller
    goes on from item k).
    """
    global _disabled
    if not available():
        raise RuntimeError("map_with_cpu_limit needs Linux with os.fork and the resource module")
    if len(items) == 0:
        return [], None
    sys.stdout.flush()
    sys.stderr.flush()
    workers = max(1, min(int(workers), len(items)))
    bounds = [len(items) * w // workers for w in range(workers + 1)]
    children = [_spawn(fn, items[bounds[w] : bounds[w + 1]], record_len, cpu_seconds) for w in range(workers)]
    bufs = {fd: bytearray() for _, fd in children}
    statuses = {}
    blocked = False
    try:
        open_fds = [fd for _, fd in children]
        while open_fds:
            ready, _, _ = select.select(open_fds, [], [], _BLOCKED_SECONDS)
            if not ready:
                blocked = True
                for pid, fd in children:
                    if fd in open_fds:
                        os.kill(pid, signal.SIGKILL)
                break
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    bufs[fd] += chunk
                else:
                    open_fds.remove(fd)
    finally:
        for pid, fd in children:
            os.close(fd)
            statuses[pid] = os.waitpid(pid, 0)[1]
    size = 8 * record_len
    results: List[np.ndarray] = []
    for w, (pid, fd) in enumerate(children):
        buf, n_items = bufs[fd], bounds[w + 1] - bounds[w]
        done = len(buf) // size
        results += [np.frombuffer(bytes(buf[i * size : (i + 1) * size]), dtype=np.float64) for i in range(done)]
        if done == n_items:
            continue
        status = statuses[pid]
        if blocked:
            _disabled = True
            warnings.warn(
                f"map_with_cpu_limit: the forked child made no progress for {_BLOCKED_SECONDS:.0f} s; "
                "computing in-process from now on",
                RuntimeWarning,
                stacklevel=2,
            )
            return results, "blocked"
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            return results, "cpu"
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1:
            return results, "error"
        raise RuntimeError(
            f"map_with_cpu_limit: child process ended with status {status} after {len(results)} of {len(items)} items"
        )
    return results, None
