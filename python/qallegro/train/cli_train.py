"""``qallegro train CONFIG.yaml [--resume]``: train a model from a YAML config.

Data-parallel: ``torchrun --nproc_per_node=2 -m qallegro train CONFIG.yaml`` (gloo on CPU, NCCL on
GPUs; add ``--nnodes``/``--rdzv-endpoint`` for several machines). Only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import json

EXAMPLE = """qallegro train configs/ethanol_allegro.yaml
  qallegro train configs/ethanol_allegro.yaml --resume              # continue from <run_dir>/last.pt
  qallegro train cfg.yaml --set training.max_epochs=50 --set model.r_max=4.5
  torchrun --nproc_per_node=2 -m qallegro train cfg.yaml             # data-parallel (DDP)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/ethanol_allegro.yaml for every key)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue exactly from <run_dir>/last.pt (or the given checkpoint)")
    parser.add_argument("--run-dir", default=None, help="override run_dir")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="stop after this many seconds (this invocation)")
    parser.add_argument("--max-epochs", type=int, default=None, help="override training.max_epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. optimizer.lr=0.002 (value parsed as YAML); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from qallegro.threads import add_threads_argument

    add_threads_argument(parser)


def apply_overrides(values: dict, overrides) -> dict:
    """``["a.b=1", ...]`` -> values with ``values['a']['b'] = 1`` (YAML-parsed)."""
    from qallegro.train.config import yaml_load

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=0.002")
        node = values
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = yaml_load(raw)
    return values


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qallegro.train.config import config_from_dict, load_config
    from qallegro.train.trainer import fit

    import os

    from qallegro.threads import setup_threads

    # under torchrun every local rank is a worker process sharing this machine's CPUs
    setup_threads("train", args.threads, workers=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cfg = load_config(args.config)
    if args.set:
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), args.set), source=f"{args.config} with --set")
    result = fit(cfg, resume=args.resume if args.resume is True else (Path(args.resume) if args.resume else False),
                 run_dir=args.run_dir, max_epochs=args.max_epochs, time_budget=args.time_budget,
                 progress=False if args.no_progress else None)
    import os

    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one summary, from rank 0
        print(f"stopped: {result.stop_reason} after {len(result.history)} epochs, {result.elapsed:.1f} s")
        print(f"best epoch {result.best_epoch}: " + json.dumps({k: round(v, 6) for k, v in result.best_metrics.items()
                                                                 if k.startswith("val_") or k == "train_loss"}))
        if result.stop_reason.startswith("time_budget") and result.last_checkpoint_path is not None:
            print("continue with:   the same command plus --resume (it finishes the cut epoch exactly)")
        if result.checkpoint_path is not None:
            print(f"best checkpoint: {result.checkpoint_path}")
            print(f"evaluate with:   qallegro evaluate {result.checkpoint_path} DATA")
    return 0
