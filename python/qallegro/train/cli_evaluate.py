"""``qallegro evaluate MODEL DATA [--json out.json]``: energy/force errors of a model on a data set."""

from __future__ import annotations

import argparse
import json

EXAMPLE = """qallegro evaluate runs/ethanol/best.pt ethanol_test.extxyz --json errors.json
  qallegro evaluate model.pt data.extxyz --index 80: --device cpu
  qallegro evaluate runs/qdi/best.pt data.extxyz --shots 1000        # QDI readout with shot noise"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="training checkpoint (best.pt/last.pt) or a model saved by qallegro")
    parser.add_argument("data", help="labelled structures (any format qallegro.data.read reads)")
    parser.add_argument("--index", default=":", help="frames to use, ASE slice syntax (default ':')")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write the metrics as JSON")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="evaluate in this precision (default: the model's)")
    parser.add_argument("--shots", type=int, default=None, metavar="N",
                        help="Allegro+QDI: estimate the quantum readout from N measurement shots (default: exact)")
    parser.add_argument("--shots-seed", type=int, default=0, help="seed of the shot sampling")


def run(args: argparse.Namespace) -> int:
    import torch

    from qallegro.data import read
    from qallegro.train.checkpoint import load_any_model
    from qallegro.train.evaluate import evaluate, format_report

    model = load_any_model(args.model, map_location=args.device)
    model = model.to(args.device)
    if args.dtype is not None:
        model = model.to(getattr(torch, args.dtype))
    if args.shots is not None:
        from qallegro.nn.qdi import set_shots

        if set_shots(model, args.shots, seed=args.shots_seed) == 0:
            raise ValueError(f"--shots {args.shots}: {args.model} has no QDI layer (only Allegro+QDI models sample shots)")
    structures = list(read(args.data, index=args.index))
    metrics = evaluate(model, structures, batch_size=args.batch_size, device=args.device, source=args.data)
    metrics["model"] = str(args.model)
    metrics["data"] = str(args.data)
    metrics["shots"] = args.shots
    print(format_report(metrics, title=f"{args.model} on {args.data}"))
    if args.json:
        from pathlib import Path

        from qallegro.train.checkpoint import atomic_write_text

        atomic_write_text(json.dumps(metrics, indent=2) + "\n", Path(args.json))
        print(f"wrote {args.json}")
    return 0
