"""``qallegro export MODEL -o model.pt``: write a model file for ASE, LAMMPS, pair_allegro hosts or metatomic engines."""

from __future__ import annotations

import argparse
import sys

EXAMPLE = """qallegro export runs/culi/best.pt -o culi.pt --dtype float64
  qallegro export model.pt -o deployed.pt --type-names Cu Li   # rename the types (model's order kept)
  qallegro export runs/culi/best.pt -o culi-mta.pt --format metatomic --dtype float64
  qallegro export runs/culi/best.pt -o culi-portable.pt --portable   # loads with torch.jit.load alone
  # LAMMPS:  plugin load qallegroplugin.so / pair_style qallegro / pair_coeff * * culi.pt Cu Li
  # ASE:     from qallegro.calculator import QAllegroCalculator; atoms.calc = QAllegroCalculator("culi.pt")
  # metatomic (ASE, i-PI, LAMMPS-metatomic, ...): from metatomic_ase import MetatomicCalculator;
  #          atoms.calc = MetatomicCalculator("culi-mta.pt", extensions_directory="extensions")"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="training checkpoint (best.pt/last.pt) or a model saved by qallegro")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="file to write")
    parser.add_argument("--format", choices=["torchscript", "metatomic"], default="torchscript",
                        help="torchscript: qallegro's own file (pair_style qallegro, QAllegroCalculator); "
                             "metatomic: a metatomic AtomisticModel for metatomic-ase, i-PI, LAMMPS-metatomic "
                             "and other metatomic engines (needs pip install 'qallegro[metatomic]')")
    parser.add_argument("--portable", action="store_true",
                        help="torchscript: use the pure-torch tensor product, so the file loads with plain "
                             "torch.jit.load in any process without qallegro's op library (slower: the "
                             "compiled op is the fast path; not available for allegro_qdi)")
    parser.add_argument("--extensions-dir", default=None, metavar="DIR",
                        help="metatomic: folder the op library is copied to, which engines load it from "
                             "(default: extensions/ beside OUT.pt; emptied first)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="export in this precision (default: the model's; float64 for tight NVE)")
    parser.add_argument("--type-names", nargs="+", default=None, metavar="NAME",
                        help="names of the model's types in type-index order (default: the model's own); "
                             "metatomic needs chemical symbols")


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
    if args.format == "metatomic":
        if args.portable:
            print("qallegro export: --portable applies to --format torchscript (metatomic engines load the op "
                  "library from the extensions folder)", file=sys.stderr)
            return 2
        try:
            from qallegro.deploy.metatomic import export_metatomic

            metadata = export_metatomic(model, args.output, type_names=args.type_names, dtype=dtype,
                                        extensions_directory=args.extensions_dir)
        except (ImportError, ValueError, TypeError) as exc:
            print(f"qallegro export: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}: metatomic model, kind {metadata['model_kind']}, {metadata['model_dtype']}, "
              f"r_max {metadata['r_max']} Å, types {metadata['type_names']}")
        print(f"op library copied to {metadata['extensions_directory']}/ (give engines this folder)")
        print(f"ASE: from metatomic_ase import MetatomicCalculator; atoms.calc = MetatomicCalculator("
              f"{args.output!r}, extensions_directory={metadata['extensions_directory']!r})")
        return 0
    try:
        metadata = export(model, args.output, type_names=args.type_names, dtype=dtype, portable=args.portable)
    except ValueError as exc:
        print(f"qallegro export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: kind {metadata['model_kind']}, {metadata['model_dtype']}, "
          f"r_max {metadata['r_max']} Å, types {metadata['type_names']} (qallegro {metadata['qallegro_version']})")
    print(f"LAMMPS: pair_style qallegro\n        pair_coeff * * {args.output} {metadata['type_names']}")
    return 0
