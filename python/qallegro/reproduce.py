"""``qallegro reproduce``: the paper's comparison of Allegro, Allegro+MLP and Allegro+QDI.

Every model kind is trained on the same train/validation split (its own seeds), evaluated on the same
held-out test set, and timed (median energy+forces latency through qallegro's ops). The table gives
energy and force MAE/RMSE as mean ± std over seeds, parameter counts and latency; the plot shows
force MAE (energy MAE for energy-only data such as QM9) against latency per kind.
Hyperparameters: qallegro's defaults below, or the most accurate Pareto-optimal trial of an
optimisation study (``--storage`` + the study names ``qallegro-<kind>`` that ``qallegro optimize``
writes). Each finished (kind, seed) run is stored in ``<out>/runs.jsonl``; a rerun skips it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

EXAMPLE = ("qallegro reproduce --data culi-gfn1xtb --seeds 3 --budget 300 --out results/culi\n"
           "  qallegro reproduce --data qm9 --limit 2000 --kinds allegro,allegro_mlp\n"
           "  qallegro reproduce --data my.extxyz --storage sqlite:///study.db   # tuned hyperparameters")

KINDS = ("allegro", "allegro_mlp", "allegro_qdi")
LABELS = {"allegro": "Allegro", "allegro_mlp": "Allegro+MLP", "allegro_qdi": "Allegro+QDI"}

#: Small defaults that train in minutes on a CPU (the paper's tuned models come from a study).
BASE_HPARAMS: Dict[str, Any] = {
    "l_max": 1, "num_layers": 2, "num_scalar_features": 32, "num_tensor_features": 8, "num_bessels": 8,
    "scalar_embed_mlp_hidden_layers_width": 32, "allegro_mlp_hidden_layers_width": 32,
}
DEFAULT_HPARAMS: Dict[str, Dict[str, Any]] = {
    "allegro": {**BASE_HPARAMS, "readout_mlp_hidden_layers_width": 32},
    "allegro_mlp": {**BASE_HPARAMS, "mlp_readout_depth": 2, "mlp_readout_width": 32},
    "allegro_qdi": {**BASE_HPARAMS, "n_qubits": 4, "qdi_depth": 2, "qdi_uploads": 2, "qdi_placement": "atom"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="culi-gfn1xtb",
                        help="built-in set (culi-gfn1xtb, culi-gpaw, benzene, aspirin), qm9, or a file")
    parser.add_argument("--limit", type=int, help="use only the first N structures")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated model kinds")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per kind")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    parser.add_argument("--max-epochs", type=int, default=1000, help="epoch cap per run")
    parser.add_argument("--split", default="0.7,0.1,0.2", help="train,val,test fractions or counts")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--r-max", type=float, default=5.0, help="cutoff (Å) when not tuned")
    parser.add_argument("--lr", type=float, default=5e-3, help="learning rate when not tuned")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--storage", help="Optuna storage with studies qallegro-<kind> (tuned hyperparameters)")
    parser.add_argument("--latency-structures", type=int, default=4, help="test structures timed together")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model hyperparameter of every kind (YAML value); repeatable")
    parser.add_argument("--out", default=None, help="output folder (default results/reproduce-<data>)")
    from qallegro.threads import add_threads_argument

    add_threads_argument(parser)


def tuned_hparams(storage: str, kind: str) -> Optional[Tuple[Dict[str, Any], float, float]]:
    """(hparams, r_max, lr) of the most accurate Pareto-optimal trial of study ``qallegro-<kind>``."""
    import optuna

    from qallegro.hpo.space import load_space

    try:
        study = optuna.load_study(study_name=f"qallegro-{kind}", storage=storage)
    except KeyError:
        return None
    front = [t for t in study.best_trials if t.values is not None]
    if not front:
        return None
    best = min(front, key=lambda t: t.values[0])
    params = dict(best.params)
    source = study.user_attrs.get("space", {}).get("source")
    try:
        return load_space(source).split(params) if source else _split(params)
    except (OSError, ValueError):
        return _split(params)


def _split(params: Dict[str, Any]) -> Tuple[Dict[str, Any], float, float]:
    values = dict(params)
    lr = float(values.pop("learning_rate", 5e-3))
    r_max = float(values.pop("r_max", 5.0))
    return values, r_max, lr


def _overrides(items: List[str]) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _sizes(text: str) -> List[float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"--split needs train,val,test sizes, got {text!r}")
    return [int(p) if p > 1 else p for p in parts]


def run_one(kind: str, seed: int, hparams: Dict[str, Any], r_max: float, lr: float, splits, args,
            energy_only: bool) -> Dict[str, Any]:
    """Train one (kind, seed), evaluate on the test set, time it. Returns a JSON-able record."""
    import torch

    from qallegro.hpo.latency import LatencySettings, measure_deployed
    from qallegro.hpo.objectives import TrainSettings, count_parameters, train_config
    from qallegro.train import evaluate, fit

    train, val, test = splits
    settings = TrainSettings(max_epochs=args.max_epochs, time_budget=args.budget, batch_size=args.batch_size,
                             dtype=args.dtype, device=args.device, seed=seed,
                             forces_weight=0.0 if energy_only else 1.0,
                             # without forces the force-RMS energy scale cannot be computed
                             extra={"model": {"per_type_energy_scales": None},
                                    "training": {"monitor": "energy_per_atom_mae"}} if energy_only else {})
    config = train_config(kind, r_max, hparams, lr, settings)
    start = time.perf_counter()
    result = fit(config, train, val, write_files=False, progress=False)
    seconds = time.perf_counter() - start
    metrics = evaluate(result.model, test, device=args.device, source="test set")
    # the exported model in its own process, as `qallegro study` measures it
    latency = measure_deployed(result.model, test[: args.latency_structures],
                               LatencySettings(threads=torch.get_num_threads(), device=args.device, dtype=args.dtype))
    return {
        "kind": kind, "seed": seed, "r_max": r_max, "lr": lr, "hparams": hparams,
        "epochs": len(result.history), "train_seconds": seconds,
        "num_parameters": count_parameters(result.model),
        "latency_ms": latency.median_ms, "latency_atoms": latency.num_atoms, "latency": latency.as_dict(),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }


def _mean_std(values: List[float]) -> str:
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "n/a"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def table(records: List[Dict[str, Any]], kinds: List[str], energy_only: bool) -> str:
    """Markdown table: errors as mean ± std over seeds, parameters, latency."""
    cols = ["E MAE (meV/atom)", "E RMSE (meV/atom)", "E MAE (meV)"]
    keys = ["energy_mae_meV_per_atom", "energy_rmse_meV_per_atom", "energy_mae_meV"]
    if not energy_only:
        cols += ["F MAE (meV/Å)", "F RMSE (meV/Å)"]
        keys += ["forces_mae_meV_per_A", "forces_rmse_meV_per_A"]
    lines = ["| model | seeds | " + " | ".join(cols) + " | parameters | latency (ms) |",
             "|---|---|" + "---|" * len(cols) + "---|---|"]
    for kind in kinds:
        rows = [r for r in records if r["kind"] == kind]
        if not rows:
            continue
        cells = [_mean_std([r["metrics"].get(k) for r in rows]) for k in keys]
        lines.append(f"| {LABELS.get(kind, kind)} | {len(rows)} | " + " | ".join(cells)
                     + f" | {rows[0]['num_parameters']:,} | {_mean_std([r['latency_ms'] for r in rows])} |")
    return "\n".join(lines)


def pareto_plot(records: List[Dict[str, Any]], kinds: List[str], energy_only: bool, path: Path, title: str) -> None:
    """Force MAE (energy MAE for energy-only data) against latency, one marker per run and kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qallegro.utils import atomic_write

    key = "energy_mae_meV_per_atom" if energy_only else "forces_mae_meV_per_A"
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, marker in zip(kinds, "osD^v"):
        rows = [r for r in records if r["kind"] == kind]
        if rows:
            ax.scatter([r["latency_ms"] for r in rows], [r["metrics"][key] for r in rows], marker=marker,
                       label=LABELS.get(kind, kind), alpha=0.8)
    ax.set_xlabel("inference latency, energy+forces (ms)")
    ax.set_ylabel("energy MAE (meV/atom)" if energy_only else "force MAE (meV/Å)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


def reproduce(args: argparse.Namespace) -> Tuple[str, Path]:
    import torch

    from qallegro.data import random_split
    from qallegro.data.datasets import load_dataset
    from qallegro.utils import atomic_write_text

    from qallegro.threads import setup_threads

    setup_threads("reproduce", getattr(args, "threads", None))
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"--kinds: unknown model kind(s) {unknown}; choose from {list(KINDS)}")
    structures = load_dataset(args.data, limit=args.limit)
    energy_only = any(s.forces is None for s in structures)
    splits = random_split(structures, _sizes(args.split), seed=args.split_seed)
    if any(len(part) == 0 for part in splits):
        raise ValueError(f"--split {args.split} leaves an empty part for {len(structures)} structures")
    out = Path(args.out or f"results/reproduce-{Path(str(args.data)).stem}")
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.jsonl"
    records = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()] \
        if runs_path.exists() else []
    done = {(r["kind"], r["seed"]) for r in records}
    print(f"{args.data}: {len(structures)} structures ({len(splits[0])} train / {len(splits[1])} val / "
          f"{len(splits[2])} test){', energies only' if energy_only else ''}; results in {out}", flush=True)
    for kind in kinds:
        tuned = tuned_hparams(args.storage, kind) if args.storage else None
        hparams, r_max, lr = tuned if tuned else (DEFAULT_HPARAMS[kind], args.r_max, args.lr)
        hparams = {**hparams, **_overrides(args.overrides)}
        for seed in range(args.seeds):
            if (kind, seed) in done:
                continue
            record = run_one(kind, seed, dict(hparams), r_max, lr, splits, args, energy_only)
            record["tuned"] = tuned is not None
            records.append(record)
            with open(runs_path, "a") as handle:  # one complete line per finished run
                handle.write(json.dumps(record) + "\n")
            m = record["metrics"]
            print(f"  {LABELS[kind]:12s} seed {seed}: E MAE {m['energy_mae_meV_per_atom']:.2f} meV/atom"
                  + ("" if energy_only else f", F MAE {m['forces_mae_meV_per_A']:.1f} meV/Å")
                  + f", {record['latency_ms']:.1f} ms, {record['epochs']} epochs in {record['train_seconds']:.0f} s",
                  flush=True)
    text = (f"{args.data}: {len(splits[0])} train / {len(splits[1])} val / {len(splits[2])} test structures, "
            f"{args.budget:.0f} s training budget per run, {args.dtype}, {args.device}; latency = median "
            f"energy+forces time of the exported model on {args.latency_structures} test structures, in its own "
            f"process with {torch.get_num_threads()} thread(s).\n\n"
            + table(records, kinds, energy_only) + "\n")
    atomic_write_text(out / "table.md", text)
    pareto_plot(records, kinds, energy_only, out / "pareto.png", f"{args.data}")
    return text, out


def run(args: argparse.Namespace) -> int:
    text, out = reproduce(args)
    print()
    print(text)
    print(f"table: {out / 'table.md'}   plot: {out / 'pareto.png'}")
    return 0
