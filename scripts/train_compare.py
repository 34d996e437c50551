#!/usr/bin/env python
"""qallegro vs nequip-allegro 0.8.3, same data, model and budget: an 80/20 split of a data set, the
small Allegro of configs/ethanol_allegro.yaml, 10 minutes of training each on CPU.

The data is a set shipped with qallegro by name (default ``benzene``: PBE/def2-SVP, rMD17's level of
theory) or any file qallegro reads (e.g. the rMD17 ethanol frames, ``--data path/to/ethanol.extxyz``).
By default both codes train at the same time, one core (one thread) each, for the same wall-time
budget, so that they see the same machine load; ``--sequential --threads 2`` gives each both cores.

Trains qallegro from the command line (``qallegro train`` on configs/ethanol_allegro.yaml with the
split files written here), evaluates the best checkpoint with ``qallegro evaluate`` and checks the
issue's target: validation force MAE < 5% of the standard deviation of the validation forces. Then
trains nequip-allegro 0.8.3 (``nequip-train``) with the same hyperparameters, the same split, the same
per-type shifts/scales/avg_num_neighbors, optimizer, scheduler, EMA, loss and time budget, and
prints both MAEs side by side.

    python scripts/train_compare.py                      # both on shipped benzene, 600 s each, 1 thread each
    python scripts/train_compare.py --budget 120 --skip-nequip
    python scripts/train_compare.py --data ethanol_rmd17_100.extxyz --limit 100
    python scripts/train_compare.py --budget 3600 --max-epochs 300   # same epochs for both (busy machine)

The budget is wall time, so on a shared machine the figures depend on the load: the script prints
the load average and the epochs each code completed, and ``--summary FILE`` writes all of it (the
command, load, machine, errors) to FILE, the artefact README's training table is generated from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TYPE_NAMES = ["H", "C", "O"]  # replaced by the elements of the data, sorted by atomic number


def write_split(data: str, out: Path, seed: int, limit=None):
    """80/20 split written as extxyz files (both codes read the very same frames)."""
    import ase.io
    from ase.data import atomic_numbers

    from qallegro.data import random_split
    from qallegro.data.datasets import load_dataset

    structures = load_dataset(data, limit=limit)
    TYPE_NAMES[:] = sorted({s for st in structures for s in st.to_ase().get_chemical_symbols()},
                           key=atomic_numbers.__getitem__)
    train, val = random_split(structures, [0.8, 0.2], seed=seed)
    for name, part in (("train", train), ("val", val)):
        ase.io.write(out / f"{name}.extxyz", [s.to_ase() for s in part], format="extxyz")
    return train, val


def statistics(train, r_max: float):
    """Least-squares per-type shifts, force-RMS scale, mean neighbour count, fed to both codes."""
    from qallegro.data import collate
    from qallegro.train.statistics import resolve_model_statistics

    batch = collate(train, r_max, TYPE_NAMES)
    return resolve_model_statistics(batch, TYPE_NAMES, "least_squares", "forces_rms", "auto")


class Job:
    """A command running in the background with its output in a log file."""

    def __init__(self, cmd, env, log: Path):
        print("$ " + " ".join(str(c) for c in cmd), flush=True)
        self.log, self.t0 = log, time.monotonic()
        self.file = open(log, "w")
        self.proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=self.file, stderr=subprocess.STDOUT)

    def wait(self) -> float:
        code = self.proc.wait()
        self.file.close()
        if code != 0:
            sys.exit(f"command failed ({code}); see {self.log}")
        return time.monotonic() - self.t0


def run(cmd, env, log: Path) -> float:
    return Job(cmd, env, log).wait()


def qallegro_config(base: dict, out: Path, stats: dict, budget: float) -> Path:
    cfg = dict(base)
    cfg["run_dir"] = str(out / "qallegro_run")
    cfg["data"] = {**base["data"], "train": str(out / "train.extxyz"), "val": str(out / "val.extxyz"),
                   "type_names": TYPE_NAMES}
    cfg["model"] = {**base["model"], **{k: stats[k] for k in ("per_type_energy_shifts", "per_type_energy_scales",
                                                             "avg_num_neighbors")}}
    cfg["training"] = {**base["training"], "time_budget": budget, "progress": False}
    path = out / "qallegro_ethanol.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def nequip_config(base: dict, out: Path, stats: dict, budget: float) -> Path:
    """The same model and training set-up in nequip 0.19's Hydra/Lightning config language."""
    m, t, o, s = base["model"], base["training"], base["optimizer"], base["scheduler"]
    hh, mm = divmod(int(budget), 3600)
    mm, ss = divmod(mm, 60)
    monitor = "val0_epoch/weighted_sum"  # = forces_mae: the only metric with a coefficient below
    cfg = {
        "run": ["train", "test"],
        "seed": base["seed"],
        "dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": t["batch_size"]},
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": base["seed"],
            "train_file_path": str(out / "train.extxyz"),
            "val_file_path": str(out / "val.extxyz"),
            "test_file_path": str(out / "val.extxyz"),
            "ase_args": {"format": "extxyz"},
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": TYPE_NAMES},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": m["r_max"]},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": t["batch_size"], "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": t["val_batch_size"]},
            "test_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": t["val_batch_size"]},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": t["max_epochs"],
            "max_time": f"00:{hh:02d}:{mm:02d}:{ss:02d}",
            "check_val_every_n_epoch": 1,
            "log_every_n_steps": 10,
            "enable_progress_bar": False,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(out / "nequip_run"), "name": "log"},
            "callbacks": [
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": monitor,
                 "dirpath": str(out / "nequip_run"), "filename": "best", "save_top_k": 1},
                {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": monitor,
                 "patience": t["early_stopping_patience"], "min_delta": 0.0},
                {"_target_": "nequip.train.callbacks.TestTimeXYZFileWriter", "out_file": str(out / "nequip_run" / "val_pred"),
                 "output_fields_from_original_dataset": ["total_energy", "forces"], "chemical_symbols": TYPE_NAMES},
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": t["ema_decay"],
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                     "coeffs": {"total_energy": base["loss"]["energy_weight"], "forces": base["loss"]["forces_weight"]}},
            "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics",
                            "coeffs": {"per_atom_energy_mae": None, "forces_mae": 1.0, "forces_rmse": None}},
            "test_metrics": {"_target_": "nequip.train.EnergyForceMetrics",
                             "coeffs": {"per_atom_energy_mae": None, "forces_mae": 1.0, "forces_rmse": None}},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": o["lr"], "betas": o["betas"], "amsgrad": o["amsgrad"]},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "factor": s["factor"],
                              "patience": s["patience"], "min_lr": s["min_lr"], "threshold": s["threshold"]},
                "monitor": monitor, "interval": "epoch", "frequency": 1,
            },
            "model": {
                "_target_": "allegro.model.AllegroModel",
                "seed": base["seed"],
                "model_dtype": base["dtype"],
                "type_names": TYPE_NAMES,
                "r_max": m["r_max"],
                "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                          "num_bessels": m["num_bessels"], "bessel_trainable": False,
                                          "polynomial_cutoff_p": m["polynomial_cutoff_p"]},
                **{k: m[k] for k in ("l_max", "parity", "num_layers", "num_scalar_features", "num_tensor_features",
                                     "scalar_embed_mlp_hidden_layers_depth", "scalar_embed_mlp_hidden_layers_width",
                                     "allegro_mlp_hidden_layers_depth", "allegro_mlp_hidden_layers_width",
                                     "readout_mlp_hidden_layers_depth", "readout_mlp_hidden_layers_width")},
                "avg_num_neighbors": stats["avg_num_neighbors"],
                # nequip 0.19 wants {type: value} maps
                "per_type_energy_shifts": dict(zip(TYPE_NAMES, stats["per_type_energy_shifts"])),
                "per_type_energy_scales": stats["per_type_energy_scales"],
            },
        },
        "global_options": {"allow_tf32": False},
    }
    path = out / "nequip_ethanol.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def nequip_val_mae(out: Path, val) -> dict:
    """Force/energy errors of nequip's best model from its test-time predictions on the val file."""
    import ase.io
    import numpy as np

    files = sorted((out / "nequip_run").glob("val_pred*.xyz"))
    if not files:
        raise RuntimeError(f"nequip wrote no test-time predictions in {out / 'nequip_run'}")
    pred = ase.io.read(str(files[0]), ":")
    if len(pred) != len(val):
        raise RuntimeError(f"nequip wrote {len(pred)} predicted frames for {len(val)} validation frames")
    for k, (p, s) in enumerate(zip(pred, val)):  # same frames in the same order?
        if not np.allclose(p.arrays["original_dataset_forces"], s.forces, atol=1e-6):
            raise RuntimeError(f"nequip's prediction frame {k} is not validation frame {k}")
    df = np.concatenate([p.get_forces() - s.forces for p, s in zip(pred, val)])
    de = np.array([(p.get_potential_energy() - s.energy) / s.num_atoms for p, s in zip(pred, val)])
    return {"forces_mae_meV_per_A": 1000 * float(np.abs(df).mean()),
            "forces_rmse_meV_per_A": 1000 * float(np.sqrt((df**2).mean())),
            "energy_mae_meV_per_atom": 1000 * float(np.abs(de).mean())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="benzene", help="shipped data set name (qallegro.data.datasets) or a file")
    p.add_argument("--limit", type=int, default=None, help="use only the first N frames")
    p.add_argument("--summary", type=Path, default=None,
                   help="also write the results with the command, machine and load to this JSON file")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "ethanol_allegro.yaml")
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per code (default 600)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per code (default 1: on 9-atom molecules a second thread does not pay, "
                        "and on a busy machine it was 8x slower)")
    p.add_argument("--sequential", action="store_true",
                   help="run the two codes one after the other (default: side by side, one core each, so both "
                        "see the same machine load)")
    p.add_argument("--out", type=Path, default=Path("runs/ethanol_compare"))
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="also cap both codes at this many epochs (compare learning per epoch on a busy machine)")
    p.add_argument("--skip-nequip", action="store_true")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    base = yaml.safe_load(args.config.read_text())
    if args.max_epochs is not None:
        base["training"]["max_epochs"] = args.max_epochs
    load_before = os.getloadavg()[0]
    train, val = write_split(args.data, out, args.seed, args.limit)
    stats = statistics(train, float(base["model"]["r_max"]))
    import numpy as np

    force_std = 1000 * float(np.concatenate([s.forces for s in val]).std())
    target = 0.05 * force_std
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{len(train)} train / {len(val)} val frames; std of val force components {force_std:.1f} meV/Å "
          f"-> target MAE < {target:.1f} meV/Å; {args.threads} thread(s) per code, {args.budget:g} s each, "
          f"{'one after the other' if args.sequential else 'side by side'}")

    rows = []
    cfg_path = qallegro_config(base, out, stats, args.budget)
    q_job = Job([sys.executable, "-m", "qallegro", "train", cfg_path], env, out / "qallegro_train.log")
    n_job = None
    if not args.skip_nequip:
        if args.sequential:
            q_wall = q_job.wait()
        ncfg = nequip_config(base, out, stats, args.budget)
        # nequip-train of this interpreter's environment (a venv need not be on PATH)
        nequip_train = Path(sys.executable).with_name("nequip-train")
        n_job = Job([nequip_train if nequip_train.exists() else "nequip-train", "-cp", ncfg.parent, "-cn", ncfg.name,
                     f"hydra.run.dir={out / 'nequip_run'}"],
                    env, out / "nequip_train.log")
    if args.skip_nequip or not args.sequential:
        q_wall = q_job.wait()
    print(f"load average after qallegro: {os.getloadavg()[0]:.1f}", flush=True)
    run([sys.executable, "-m", "qallegro", "evaluate", out / "qallegro_run" / "best.pt", out / "val.extxyz",
         "--json", out / "qallegro_val.json"], env, out / "qallegro_eval.log")
    q = json.loads((out / "qallegro_val.json").read_text())
    epochs = max(len((out / "qallegro_run" / "metrics.csv").read_text().strip().splitlines()) - 1, 0)  # minus header
    rows.append(("qallegro", q, q_wall, epochs))

    if n_job is not None:
        wall = n_job.wait()
        print(f"load average after nequip: {os.getloadavg()[0]:.1f}", flush=True)
        logs = sorted((out / "nequip_run" / "log").glob("version_*/metrics.csv"))
        n_epochs = 0
        if logs:
            import csv

            with open(logs[-1]) as f:
                n_epochs = len({r["epoch"] for r in csv.DictReader(f) if r.get("epoch")})
        rows.append(("nequip-allegro 0.8.3", nequip_val_mae(out, val), wall, n_epochs))

    print(f"\n{'code':<22}{'val force MAE':>16}{'RMSE':>10}{'E MAE':>14}{'% of std':>10}{'epochs':>8}{'wall s':>9}")
    for name, m, wall, n in rows:
        print(f"{name:<22}{m['forces_mae_meV_per_A']:>11.1f} meV/Å{m['forces_rmse_meV_per_A']:>10.1f}"
              f"{m['energy_mae_meV_per_atom']:>9.2f} meV/at{100 * m['forces_mae_meV_per_A'] / force_std:>9.2f}%"
              f"{n:>8}{wall:>9.0f}")
    ok = rows[0][1]["forces_mae_meV_per_A"] < target
    print(f"\nqallegro target (force MAE < 5% of force std = {target:.1f} meV/Å): {'MET' if ok else 'NOT MET'}")
    import platform

    import torch

    summary = {
        "command": "python scripts/train_compare.py " + " ".join(sys.argv[1:]),
        "data": args.data, "type_names": TYPE_NAMES, "train_frames": len(train), "val_frames": len(val),
        "budget_s": args.budget, "threads_per_code": args.threads,
        "schedule": "one after the other" if args.sequential else "side by side",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "force_std_meV_per_A": force_std, "target": target,
        "results": {n: {**m, "wall_s": w, "epochs": e} for n, m, w, e in rows},
    }
    text = json.dumps(summary, indent=2) + "\n"
    (out / "summary.json").write_text(text)
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
