"""``qallegro export MODEL -o model.pt``: write a TorchScript file for ASE, LAMMPS and pair_allegro hosts."""

from __future__ import annotations

import argparse
import sys

EXAMPLE = """qallegro export runs/culi/best.pt -o culi.pt --dtype float64
  qallegro export model.pt -o deployed.pt --type-names Cu Li   # rename the types (model's order kept)
  # LAMMPS:  plugin load qallegroplugin.so / pair_style qallegro / pair_coeff * * culi.pt Cu Li
  # ASE:     from qallegro.calculator import QAllegroCalculator; atoms.calc = QAllegroCalculator("culi.pt")"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="training checkpoint (best.pt/last.pt) or a model saved by qallegro")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="TorchScript file to write")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="export in this precision (default: the model's; float64 for tight NVE)")
    parser.add_argument("--type-names", nargs="+", default=None, metavar="NAME",
                        help="names of the model's types in type-index order (default: the model's own)")


def run(args: argparse.Namespace) -> int:
    import torch

    from qallegro.deploy.export import export
    from qallegro.train.checkpoint import load_any_model

    try:
        model = load_any_model(args.model, map_location="cpu")
    except (FileNotFoundError, ValueError) as exc:
        print(f"qallegro export: {exc}", file=sys.stderr)
        return 2
    if args.type_names is not None:
        known = list(getattr(model, "type_names", []))
        if known and len(args.type_names) != len(known):
            print(f"qallegro export: --type-names gives {len(args.type_names)} names but {args.model} has "
                  f"{len(known)} types ({' '.join(known)})", file=sys.stderr)
            return 2
    dtype = getattr(torch, args.dtype) if args.dtype else None
    metadata = export(model, args.output, type_names=args.type_names, dtype=dtype)
    print(f"wrote {args.output}: kind {metadata['model_kind']}, {metadata['model_dtype']}, "
          f"r_max {metadata['r_max']} Å, types {metadata['type_names']} (qallegro {metadata['qallegro_version']})")
    print(f"LAMMPS: pair_style qallegro\n        pair_coeff * * {args.output} {metadata['type_names']}")
    return 0
