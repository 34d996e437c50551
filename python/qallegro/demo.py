"""``qallegro demo``: a few-minute tour on the shipped Cu-Li data (GFN1-xTB): Allegro, Allegro+MLP
and Allegro+QDI trained on the same split, the comparison table printed and the Pareto plot written.
It is ``qallegro reproduce`` with a small budget (one seed, ~1 minute of training per model)."""

from __future__ import annotations

import argparse

from qallegro import reproduce

EXAMPLE = "qallegro demo                 # writes results/demo/table.md and results/demo/pareto.png\n" \
          "  qallegro demo --budget 120    # longer training per model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per model (default 60)")
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--limit", type=int, default=120, help="structures used (default 120)")
    from qallegro.threads import add_threads_argument

    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    full = argparse.ArgumentParser()
    reproduce.add_arguments(full)
    settings = full.parse_args([
        "--data", "culi-gfn1xtb", "--seeds", "1", "--budget", str(args.budget), "--out", args.out,
        "--limit", str(args.limit), "--split", "0.5,0.15,0.35", "--r-max", "4.5",
        # a small network, so that a minute of CPU training shows something
        "--set", "num_layers=1", "--set", "num_scalar_features=16", "--set", "num_tensor_features=4",
        "--set", "scalar_embed_mlp_hidden_layers_width=16", "--set", "allegro_mlp_hidden_layers_width=16",
        "--batch-size", "2", "--lr", "0.01",
    ] + (["--threads", str(args.threads)] if args.threads is not None else []))
    print("qallegro demo: Allegro, Allegro+MLP and Allegro+QDI on shipped Cu-Li GFN1-xTB data "
          f"({args.budget:.0f} s of training each)", flush=True)
    return reproduce.run(settings)
