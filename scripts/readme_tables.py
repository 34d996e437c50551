#!/usr/bin/env python
"""README's result tables, generated from the committed artefacts in bench/results/ (never typed).

Each table of README.md sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; this script
rewrites what is between them from the file the command in README made:

    python scripts/readme_tables.py            # rewrite README.md's tables
    python scripts/readme_tables.py --check    # exit 1 if README.md differs (tests/test_readme_tables.py)
    python scripts/readme_tables.py --print allegro_tp

| table | artefact | made by |
|---|---|---|
| allegro_tp, allegro_e2e | bench/results/bench_allegro_tp{,_memory}.json | pytest bench/bench_allegro_tp.py |
| neighbor_list | bench/results/bench_neighbor_list.json | pytest bench/bench_neighbor_list.py |
| demo, reproduce | bench/results/{demo,reproduce-culi}/ (table.md, runs.jsonl, command.json) | scripts/record_run.py |
| train_compare | bench/results/train_compare_benzene.json | scripts/train_compare.py --summary |
| pareto_study | bench/results/ethanol_allegro_pareto.txt | qallegro pareto (its printed table) |
| laskaris2026_cpu | results/laskaris2026_cpu/report/report.md | qallegro study report studies/laskaris2026_cpu.yaml |

Ratios are qallegro time / reference time in the same run (< 1: qallegro is faster); the "best
reference" of a row is the fastest reference of that very row (mode, shape, dtype).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"


def _load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the command of its README table first")
    return json.loads(path.read_text())


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 1000:
        return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"
    return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _group(groups: dict, name: str) -> Dict[str, float]:
    if name not in groups:
        raise KeyError(f"benchmark group {name!r} is not in the results (rerun the whole suite)")
    return {impl: t["median_s"] for impl, t in groups[name].items()}


def _measured(data: dict) -> str:
    load = data.get("load_average_1min", {})
    return (f"Measured on {data['machine']}; 1-minute load average {load.get('start')} at the start and "
            f"{load.get('end')} at the end of the run.")


TP_SHAPES = [("rmd17-l2-mul8", "rMD17 l_max 2, mul 8 (8000)"), ("rmd17-l2-mul32", "rMD17 l_max 2, mul 32 (2000)"),
             ("culi-l3-mul16", "Cu-Li l_max 3, mul 16 (1000)"), ("culi-l3-mul64", "Cu-Li l_max 3, mul 64 (250)")]
TP_REFERENCES = {"einsum": "einsum", "e3nn": "e3nn", "nequip_contracter": "nequip"}


def table_allegro_tp() -> str:
    data = _load("bench_allegro_tp.json")
    lines = ["| shape (edges) | dtype | fwd+bwd qallegro | fastest reference fwd+bwd | ratio fwd+bwd | fwd qallegro | "
             "fastest reference fwd | ratio fwd |", "|---|---|---|---|---|---|---|---|"]
    for shape, label in TP_SHAPES:
        for dtype in ("f32", "f64"):
            cells = []
            for mode in ("fwd+bwd", "fwd"):
                times = _group(data["groups"], f"allegro_tp {shape} {dtype} {mode}")
                ours = times.pop("qallegro")
                best = min((t, impl) for impl, t in times.items() if impl in TP_REFERENCES)
                cells += [_ms(ours), f"{TP_REFERENCES[best[1]]} {_ms(best[0])}", f"{ours / best[0]:.3f}"]
            lines.append(f"| {label} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _measured(data)


def table_allegro_e2e() -> str:
    data = _load("bench_allegro_tp.json")
    memory = _load("bench_allegro_tp_memory.json")
    lines = ["| cell | dtype | | qallegro | nequip-allegro | ratio | qallegro with the einsum path |",
             "|---|---|---|---|---|---|---|"]
    sizes = sorted({int(m.group(1)) for g in data["groups"] if (m := re.match(r"Allegro (\d+)-atom", g))})
    for n in sizes:
        for dtype in ("f32", "f64"):
            for mode, label in (("energy+forces", "energy + forces"), ("train step", "one training step")):
                t = _group(data["groups"], f"Allegro {n}-atom Cu-Li {mode} {dtype}")
                lines.append(f"| {n} atoms | {dtype} | {label} | {_ms(t['qallegro'])} | {_ms(t['nequip_allegro'])} | "
                             f"{t['qallegro'] / t['nequip_allegro']:.3f} | {_ms(t['qallegro_einsum'])} |")
    lines.append(f"| 64 atoms | f64 | peak memory of a training step | {memory['qallegro']:.1f} MiB | "
                 f"{memory['nequip_allegro']:.1f} MiB | {memory['qallegro'] / memory['nequip_allegro']:.3f} | "
                 f"{memory['qallegro_einsum']:.1f} MiB |")
    return "\n".join(lines) + "\n\n" + _measured(data)


def table_neighbor_list() -> str:
    data = _load("bench_neighbor_list.json")
    lines = ["| atoms | qallegro, 1 thread | vesin (1 thread) | ratio 1 vs 1 thread | ratio of the fastest rounds | "
             "qallegro, 2 threads | ratio 2 threads vs vesin | ASE |", "|---|---|---|---|---|---|---|---|"]
    for k in sorted((int(m.group(1)) for g in data["groups"] if (m := re.match(r"neighbor_list (\d+)k", g)))):
        group = data["groups"][f"neighbor_list {k}k atoms"]
        t = _group(data["groups"], f"neighbor_list {k}k atoms")
        minima = [group[impl].get("min_s") for impl in ("qallegro", "vesin")]
        fastest = f"{minima[0] / minima[1]:.2f}" if all(minima) else "–"
        two = t.get("qallegro_2threads")
        lines.append(f"| {k * 1000:,} | {_ms(t['qallegro'])} | {_ms(t['vesin'])} | {t['qallegro'] / t['vesin']:.2f} | "
                     f"{fastest} | " + (f"{_ms(two)} | {two / t['vesin']:.2f}" if two else "– | –")
                     + f" | {_ms(t['ase'])} |")
    return "\n".join(lines) + "\n\n" + _measured(data) + " Times are medians of the rounds."


def _run_table(folder: str) -> str:
    """table.md of a `qallegro demo|reproduce` run, with the command and conditions record_run.py kept."""
    base = RESULTS / folder
    table = (base / "table.md").read_text().strip()
    record = json.loads((base / "command.json").read_text())
    runs = [json.loads(line) for line in (base / "runs.jsonl").read_text().splitlines() if line.strip()]
    epochs = sorted(r["epochs"] for r in runs)
    executable, _, rest = record["command"].partition(" ")
    threads = record["env"].get("OMP_NUM_THREADS")
    command = (f"{'OMP_NUM_THREADS=' + threads + ' ' if threads else ''}python scripts/record_run.py "
               f"bench/results/{folder} -- {Path(executable).name} {rest}")
    load = record["load_average_1min"]
    return (f"```bash\n{command}\n```\n\n{table}\n\n"
            f"{len(runs)} run(s), {epochs[0]}–{epochs[-1]} epochs each; the whole command took "
            f"{record['wall_s'] / 60:.1f} minutes on {record['machine']}, 1-minute load average {load['start']} "
            f"at the start and {load['end']} at the end ({record['date']}). Per run: "
            f"`bench/results/{folder}/runs.jsonl`.")


def table_demo() -> str:
    return _run_table("demo")


def table_reproduce() -> str:
    return _run_table("reproduce-culi")


def table_train_compare() -> str:
    data = _load("train_compare_benzene.json")
    std = data["force_std_meV_per_A"]
    lines = ["| code | validation force MAE | % of force std | energy MAE | epochs | wall time |",
             "|---|---|---|---|---|---|"]
    for name, r in data["results"].items():
        mae = r["forces_mae_meV_per_A"]
        lines.append(f"| {name} | {mae:.1f} meV/Å | {100 * mae / std:.2f}% | "
                     f"{r['energy_mae_meV_per_atom']:.2f} meV/atom | {r['epochs']} | {r['wall_s']:.0f} s |")
    load = data["load_average_1min"]
    return (f"```bash\n{data['command']}\n```\n\n" + "\n".join(lines) + "\n\n"
            f"{data['data']}: {data['train_frames']} train / {data['val_frames']} validation frames, "
            f"{data['budget_s']:.0f} s each, {data['threads_per_code']} thread per code, {data['schedule']}; "
            f"validation force standard deviation {std:.0f} meV/Å. {data['machine']}, 1-minute load average "
            f"{load['before']} before and {load['after']} after.")


def table_pareto_study() -> str:
    text = (RESULTS / "ethanol_allegro_pareto.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.startswith("qallegro-")]
    front = sorted((float(r[4]), float(r[3])) for r in rows if r[6] == "*")  # (latency ms, force MAE)
    (summary,) = [line for line in text.splitlines() if "Pareto-optimal of" in line]
    n_front, n_all = re.match(r"(\d+) Pareto-optimal of (\d+)", summary).groups()
    return (f"{n_front} of {n_all} trials on the front, from {front[0][1]:.0f} meV/Å at {front[0][0]:.1f} ms to "
            f"{front[-1][1]:.0f} meV/Å at {front[-1][0]:.0f} ms (`bench/results/ethanol_allegro_pareto.{{txt,png}}`).")


def table_laskaris2026_cpu() -> str:
    """The status line, the claims table and its verdicts of the CPU study's committed report."""
    report = REPO / "results" / "laskaris2026_cpu" / "report" / "report.md"
    if not report.is_file():
        raise FileNotFoundError(f"{report} is missing: run qallegro study report studies/laskaris2026_cpu.yaml "
                                "-o results/laskaris2026_cpu/report")
    text = report.read_text()
    status = next(line for line in text.splitlines() if line.startswith("**Status:"))
    claims = text.split("## The paper's claims on our data", 1)[1].split("## Can this scale", 1)[0].strip()
    figures = " ".join(f"![{p.stem}](results/laskaris2026_cpu/report/{p.name})"
                       for p in sorted(report.parent.glob("*.png")) if p.stem == "culi")
    return "\n\n".join(x for x in (status, claims, figures) if x)


TABLES: Dict[str, Callable[[], str]] = {
    "allegro_tp": table_allegro_tp, "allegro_e2e": table_allegro_e2e, "neighbor_list": table_neighbor_list,
    "demo": table_demo, "reproduce": table_reproduce, "train_compare": table_train_compare,
    "pareto_study": table_pareto_study, "laskaris2026_cpu": table_laskaris2026_cpu,
}


def render(readme: str) -> str:
    """README text with every marked table regenerated; an unknown or unclosed marker is an error."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise ValueError(f"README.md: unknown table marker {name!r}; known: {sorted(TABLES)}")
        return f"<!-- table:{name} -->\n{TABLES[name]()}\n<!-- /table:{name} -->"

    out, count = re.subn(r"<!-- table:(\w+) -->\n.*?<!-- /table:\1 -->", replace, readme, flags=re.S)
    opened = len(re.findall(r"<!-- table:\w+ -->", readme))
    if count != opened:
        raise ValueError(f"README.md: {opened} table markers opened, {count} closed")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if README.md is not what the results give")
    p.add_argument("--print", dest="show", choices=sorted(TABLES), help="print one table")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    if args.show:
        print(TABLES[args.show]())
        return 0
    current = args.readme.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{args.readme}: tables differ from bench/results (run python scripts/readme_tables.py)",
                  file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.readme.write_text(wanted)
        print(f"{args.readme}: tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
