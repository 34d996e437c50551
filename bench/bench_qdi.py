"""QDI layer speed: qallegro's state-vector op against the batched simulators a user would pick instead.

Workload: forward + backward (gradients of inputs and weights) of the QDI circuit of
bench/qdi_references.py (RX embedding + StronglyEntanglingLayers, depth 4, 2 uploads, <Y> on every
qubit), float64, for n = 4, 6, 8, 10 qubits and batch 4096 and 65,536, with 1 and 2 threads. Every
implementation is checked equal to qallegro (1e-10) on the first samples before it is timed.
References: PennyLane default.qubit (broadcast, backprop), fastqml, tensorcircuit-ng, torchquantum-ng
(the `bench` extra). Plus one force-training step (energy + forces, Adam) of Allegro+QDI
(qdi_placement: edge) against Allegro+MLP on a 64-atom periodic Cu-Li cell of the shipped data.

Times: with 1 thread the process CPU time (min of the repeats), which other jobs on a shared machine
do not inflate; with more threads the wall time (median). The load average is recorded with them.

    python bench/bench_qdi.py --threads 1 --json bench/results/bench_qdi.json    # sweep, merged into the file
    python bench/bench_qdi.py --e2e --threads 1 --json bench/results/bench_qdi.json
    python bench/bench_qdi.py --table bench/results/bench_qdi.json               # README's QDI table
    pytest bench/bench_qdi.py --benchmark-only                                    # quick pytest-benchmark look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import qdi_references  # noqa: E402

DEPTH, UPLOADS = 4, 2
QUBITS = (4, 6, 8, 10)
BATCHES = (4096, 65536)
CHECK_SAMPLES = 8
STEP_LIMIT_S = 60.0  # a reference whose step would take longer is not timed (the JSON says so)
MEMORY_LIMIT = 6 * 2**30  # bytes of state vectors an implementation may keep
CHUNK = 4096  # pieces a reference runs in when its tape for the whole batch would not fit
RESULTS = Path(__file__).parent / "results" / "bench_qdi.json"


def inputs(n: int, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    x = torch.rand(batch, UPLOADS * n, generator=gen, dtype=torch.float64) * 3.0
    w = torch.rand(UPLOADS, DEPTH, n, 3, generator=gen, dtype=torch.float64) * 6.0
    return x, w


def state_copies(impl: str, n: int) -> int:
    """States of [B, 2^n] an implementation keeps for its backward (autograd tapes keep one per op)."""
    if impl.startswith("qallegro"):
        return 6
    if impl == "fastqml":  # per-sample embedding chain (re, im per qubit) and one dense product per upload
        return UPLOADS * (4 * n + 4)
    return UPLOADS * (n + DEPTH * (4 * n + 2)) + 2 * n  # one tape entry per gate (and measurement)


def values(run, x, w):
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = run(xr, wr)
    gx, gw = torch.autograd.grad(y.sum(), (xr, wr))
    return y.detach(), gx, gw


def check_equal(impl: str, n: int) -> float:
    """Largest difference of (y, dy/dx, dy/dw) against qallegro's gate-by-gate simulator."""
    x, w = inputs(n, CHECK_SAMPLES)
    got = values(qdi_references.IMPLEMENTATIONS[impl](n, UPLOADS), x, w)
    ref = values(qdi_references.qallegro("gates"), x, w)
    return max(float((a - b).abs().max()) for a, b in zip(got, ref))


def time_step(step: Callable[[], None], repeats: int, threads: int) -> Tuple[float, float]:
    """(time used for the ratio, wall median) in seconds after one warm-up run: CPU time (min) with one
    thread, wall time (median) otherwise."""
    step()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return (min(cpu) if threads == 1 else statistics.median(wall)), statistics.median(wall)


def make_step(impl: str, n: int, batch: int, chunk: Optional[int] = None) -> Callable[[], None]:
    """Forward + backward of the whole batch; with ``chunk``, in pieces of that many samples (what a
    user does when the autograd tape of the whole batch does not fit in memory)."""
    run = qdi_references.IMPLEMENTATIONS[impl](n, UPLOADS)
    x0, w0 = inputs(n, batch)
    pieces = x0.split(chunk or batch)

    def step() -> None:
        w = w0.clone().requires_grad_()
        for piece in pieces:
            run(piece.clone().requires_grad_(), w).sum().backward()

    return step


def sweep(threads: int, qubits, batches, impls, step_limit: float = STEP_LIMIT_S) -> List[dict]:
    """Times every implementation; rows in the suites' format (group, reference, qallegro_s,
    reference_s, ratio) with the sizes, threads and load."""
    torch.set_num_threads(threads)
    rows, measured, skipped, chunked = [], {}, {}, {}
    last: Dict[str, Tuple[int, int, float]] = {}
    for batch in batches:
        for n in qubits:
            for impl in impls:
                key = (impl, n, batch)
                need = batch * 2**n * 16 * state_copies(impl, n)
                chunk = None
                if need > MEMORY_LIMIT and not impl.startswith("qallegro") and batch > CHUNK:
                    chunk = CHUNK  # a reference whose tape does not fit runs in pieces
                    need = chunk * 2**n * 16 * state_copies(impl, n)
                if need > MEMORY_LIMIT:
                    skipped[key] = f"needs ~{need / 2**30:.0f} GiB of states (limit {MEMORY_LIMIT / 2**30:.0f})"
                    continue
                if impl in last:  # extrapolate from the last size: work ~ batch * 4^n
                    b0, n0, t0 = last[impl]
                    est = t0 * batch / b0 * 4.0 ** (n - n0)
                    if est > step_limit:
                        skipped[key] = f"a step would take ~{est:.0f} s (limit {step_limit:.0f} s)"
                        continue
                diff = check_equal(impl, n)
                if diff > 1e-10:
                    skipped[key] = f"differs from qallegro by {diff:.1e}"
                    continue
                t0 = time.perf_counter()
                step = make_step(impl, n, batch, chunk)
                step()
                first = time.perf_counter() - t0
                repeats = 5 if first < 1 else (3 if first < 10 else 1)
                t, wall = time_step(step, repeats, threads)
                measured[key] = (t, wall)
                if chunk:
                    chunked[key] = chunk
                last[impl] = (batch, n, t)
                print(f"  {threads} thr  n={n:2d} B={batch:6d}  {impl:15s} {1e3 * t:11.2f} ms", flush=True)
    load = os.getloadavg()[0]
    for (impl, n, batch), (t, wall) in measured.items():
        if not impl.startswith("qallegro"):
            continue
        group = f"qdi fwd+bwd n={n} batch={batch} threads={threads}"
        refs = [r for r in qdi_references.REFERENCES if (r, n, batch) in measured or (r, n, batch) in skipped]
        for ref in refs or [None]:
            row = {"group": group, "implementation": impl, "n_qubits": n, "batch": batch, "threads": threads,
                   "qallegro_s": t, "qallegro_wall_s": wall, "load_average": load,
                   "time": "cpu" if threads == 1 else "wall"}
            if ref is not None and (ref, n, batch) in measured:
                row.update(reference=ref, reference_s=measured[(ref, n, batch)][0],
                           reference_wall_s=measured[(ref, n, batch)][1], ratio=t / measured[(ref, n, batch)][0])
                if (ref, n, batch) in chunked:
                    row["reference_chunk"] = chunked[(ref, n, batch)]
            elif ref is not None:
                row.update(reference=ref, reference_s=None, ratio=None, skipped=skipped[(ref, n, batch)])
            rows.append(row)
    return rows


# ---- end to end: one force-training step of Allegro+QDI (edge) vs Allegro+MLP on a Cu-Li cell ----


def culi_cell(n_atoms: int = 64):
    from qallegro.data.datasets import load_dataset

    for s in load_dataset("culi-gfn1xtb"):
        if len(s.numbers) == n_atoms and len(set(s.numbers.tolist())) == 2:
            return s
    raise ValueError(f"culi-gfn1xtb has no {n_atoms}-atom Cu-Li cell")


def make_training_step(kind: str, dtype: str = "float64", r_max: float = 4.5) -> Tuple[Callable[[], None], int]:
    """One Adam step on energy + force loss (forces by autograd, so the readout's second derivatives
    run) for ``kind`` in ("allegro_mlp", "allegro_qdi"); returns (step, number of edges)."""
    from qallegro.data import collate
    from qallegro.models import build

    species = ["Cu", "Li"]
    batch = collate([culi_cell()], r_max, species, dtype=getattr(torch, dtype))
    extra = {"qdi_placement": "edge"} if kind == "allegro_qdi" else {}
    model = build(kind, species, r_max, seed=0, model_dtype=dtype, **extra)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        out = model(dict(batch))
        loss = ((out["total_energy"] - batch["total_energy"]) ** 2).mean() + (
            (out["forces"] - batch["forces"]) ** 2
        ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, int(batch["edge_index"].shape[1])


def e2e(threads: int) -> List[dict]:
    torch.set_num_threads(threads)
    rows = []
    for dtype in ("float64", "float32"):
        times = {}
        for kind in ("allegro_mlp", "allegro_qdi"):
            step, edges = make_training_step(kind, dtype)
            times[kind] = time_step(step, 5, threads)
        rows.append({"group": f"Allegro training step, 64-atom Cu-Li ({edges} edges), {dtype}, threads={threads}",
                     "implementation": "allegro_qdi (edge)", "reference": "allegro_mlp", "threads": threads,
                     "qallegro_s": times["allegro_qdi"][0], "reference_s": times["allegro_mlp"][0],
                     "ratio": times["allegro_qdi"][0] / times["allegro_mlp"][0], "load_average": os.getloadavg()[0],
                     "time": "cpu" if threads == 1 else "wall", "e2e": True})
        print(f"  {rows[-1]['group']}: QDI / MLP = {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def merge(path: Path, rows: List[dict]) -> None:
    """Replaces the rows of the same groups and implementations in ``path`` (atomic write)."""
    data = json.loads(path.read_text()) if path.exists() else {"rows": []}
    keys = {(r["group"], r.get("implementation"), r.get("reference")) for r in rows}
    kept = [r for r in data["rows"] if (r["group"], r.get("implementation"), r.get("reference")) not in keys]
    data["rows"] = kept + rows
    data["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def table(path: Path) -> str:
    """README's QDI table (markdown) from the results file: per size and thread count, qallegro against
    the fastest reference measured, and the end-to-end rows."""
    data = json.loads(path.read_text())
    lines = [
        f"Machine: {data.get('machine', '?')}. Forward + backward, float64, depth {DEPTH}, {UPLOADS} uploads; "
        "1 thread: CPU time, 2 threads: wall time.",
        "",
        "| qubits | batch | threads | qallegro | default.qubit | fastqml | tensorcircuit-ng | torchquantum-ng "
        "| ratio to fastest | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: Dict[str, List[dict]] = {}
    for r in data["rows"]:
        if not r.get("e2e") and r.get("implementation") == "qallegro":
            groups.setdefault(r["group"], []).append(r)
    fmt = lambda s: "–" if s is None else (f"{1e3 * s:.1f} ms" if s < 1 else f"{s:,.2f} s")  # noqa: E731
    for group in sorted(groups, key=lambda g: (groups[g][0]["threads"], groups[g][0]["batch"], groups[g][0]["n_qubits"])):
        rs = groups[group]
        by_ref = {r.get("reference"): r for r in rs}
        cells = [fmt(by_ref[ref]["reference_s"]) + ("*" if by_ref[ref].get("reference_chunk") else "")
                 if ref in by_ref else "–" for ref in qdi_references.REFERENCES]
        timed = [r for r in rs if r.get("reference_s")]
        best = min(timed, key=lambda r: r["reference_s"]) if timed else None
        ratio = f"{best['qallegro_s'] / best['reference_s']:.3f} ({best['reference']})" if best else "–"
        r0 = best or rs[0]  # qallegro's time from the same run as the ratio's reference
        lines.append(f"| {r0['n_qubits']} | {r0['batch']:,} | {r0['threads']} | {fmt(r0['qallegro_s'])} | "
                     + " | ".join(cells) + f" | {ratio} | {r0['load_average']:.1f} |")
    skipped = sorted({f"{r['reference']} at n={r['n_qubits']}, batch {r['batch']:,}: {r['skipped']}"
                      for rs in groups.values() for r in rs if r.get("skipped")})
    if any(r.get("reference_chunk") for rs in groups.values() for r in rs):
        lines += ["", f"\\* run in pieces of {CHUNK:,} samples: its autograd tape for the whole batch needs more than "
                  f"{MEMORY_LIMIT / 2**30:.0f} GiB."]
    if skipped:
        lines += ["", "Not timed: " + "; ".join(skipped) + "."]
    e2e_rows = [r for r in data["rows"] if r.get("e2e")]
    if e2e_rows:
        lines += ["", "| training step (energy + forces, Adam) | Allegro+QDI (edge) | Allegro+MLP | QDI / MLP |",
                  "|---|---|---|---|"]
        for r in e2e_rows:
            lines.append(f"| {r['group']} | {fmt(r['qallegro_s'])} | {fmt(r['reference_s'])} | {r['ratio']:.2f} |")
    return "\n".join(lines)


README_BEGIN = "<!-- bench_qdi table: generated by python bench/bench_qdi.py --table bench/results/bench_qdi.json --readme README.md -->"
README_END = "<!-- end of bench_qdi table -->"


def write_readme(readme: Path, text: str) -> None:
    """Replaces the text between README_BEGIN and README_END (both kept) by ``text``."""
    content = readme.read_text()
    if README_BEGIN not in content or README_END not in content:
        raise ValueError(f"{readme}: the QDI table markers are missing ({README_BEGIN!r} ... {README_END!r})")
    head, rest = content.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(head + README_BEGIN + "\n" + text + "\n" + README_END + tail)
    tmp.replace(readme)


# ---- pytest-benchmark: a quick look at the paper's size (make bench) ------------------------------


# (not `record`ed: conftest would overwrite the sweep's bench/results/bench_qdi.json with these rows)
@pytest.mark.parametrize("impl", ["qallegro", "fastqml", "default_qubit"])
def test_qdi_forward_backward_4_qubits(benchmark, impl):
    if impl == "fastqml":
        pytest.importorskip("fastqml")
    if impl == "default_qubit":
        pytest.importorskip("pennylane")
    assert check_equal(impl, 4) < 1e-10
    step = make_step(impl, 4, 4096)
    step()
    benchmark.group = "qdi fwd+bwd n=4 batch=4096"
    benchmark.pedantic(step, rounds=5, iterations=1)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qubits", default=",".join(map(str, QUBITS)))
    parser.add_argument("--batch", default=",".join(map(str, BATCHES)))
    parser.add_argument("--impls", default="qallegro,qallegro_fused,qallegro_gates," + ",".join(qdi_references.REFERENCES))
    parser.add_argument("--step-limit", type=float, default=STEP_LIMIT_S,
                        help=f"seconds (default {STEP_LIMIT_S:.0f}): a reference whose step extrapolates longer is not timed")
    parser.add_argument("--e2e", action="store_true", help="time the Allegro training steps instead of the sweep")
    parser.add_argument("--json", type=Path, help="merge the rows into this results file")
    parser.add_argument("--table", type=Path, help="print README's QDI table from this results file and exit")
    parser.add_argument("--readme", type=Path, help="with --table: write it into this README between the markers")
    args = parser.parse_args(argv)
    if args.table:
        text = table(args.table)
        if args.readme:
            write_readme(args.readme, text)
        else:
            print(text)
        return 0
    if args.e2e:
        rows = e2e(args.threads)
    else:
        rows = sweep(args.threads, [int(q) for q in args.qubits.split(",")], [int(b) for b in args.batch.split(",")],
                     args.impls.split(","), args.step_limit)
    if args.json:
        merge(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
