"""The `qallegro` command line.

Each sub-command lives in the room of the package it belongs to, as a module that defines
``add_arguments(parser)`` and ``run(args) -> int``, plus a module-level ``EXAMPLE`` string
(shown at the end of ``--help``). Modules are imported only when their command runs, so
``qallegro --help`` stays fast and a missing optional dependency only affects its own command.

Errors a user can cause (bad data or config, a missing or corrupt file, a wrong value) are raised
as ``ValueError``/``TypeError``/``OSError``-family exceptions; :func:`main` prints them as one line
``qallegro <cmd>: error: <message>`` and returns 2. ``--debug`` (anywhere on the command line) or
``QALLEGRO_DEBUG=1`` re-raises them with their traceback; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Dict, List, Optional, Tuple

import qallegro

# command name -> (module implementing it, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "train": ("qallegro.train.cli_train", "train a model from a YAML config"),
    "evaluate": ("qallegro.train.cli_evaluate", "energy/force errors of a model on a data set"),
    "optimize": ("qallegro.hpo.cli_optimize", "multi-objective hyperparameter study (SAMO-COBRA)"),
    "pareto": ("qallegro.hpo.cli_pareto", "Pareto front of a study: table and plot"),
    "export": ("qallegro.deploy.cli_export", "export a model (TorchScript for ASE, LAMMPS, i-PI; or metatomic)"),
    "data": ("qallegro.data.cli_data", "generate, convert and inspect data sets"),
    "study": ("qallegro.hpo.cli_study", "the paper's study from one YAML: tune, retrain, report"),
    "reproduce": ("qallegro.reproduce", "train and compare Allegro, Allegro+MLP and Allegro+QDI"),
    "demo": ("qallegro.demo", "a few-minute tour on shipped Cu-Li data"),
    "bench": ("qallegro.bench_cli", "run the benchmarks and print the table"),
    "neighbors": ("qallegro.data.cli_neighbors", "neighbour-list statistics of a structure file"),
}


def _available() -> Dict[str, Tuple[str, str]]:
    return {n: v for n, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only the module of ``command`` (if any) is imported."""
    parser = argparse.ArgumentParser(
        prog="qallegro",
        description="Train, tune and deploy Allegro / Allegro+MLP / Allegro+QDI interatomic potentials.",
    )
    parser.add_argument("--version", action="version", version=f"qallegro {qallegro.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of errors (also QALLEGRO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_line) in _available().items():
        if name != command:
            sub.add_parser(name, help=help_line)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_line,
            description=help_line,
            epilog="example:\n  " + getattr(module, "EXAMPLE", f"qallegro {name} --help"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def user_error_types() -> Tuple[type, ...]:
    """Exception types shown as a one-line error: the ones bad input raises (qallegro's own
    :class:`~qallegro.errors.QAllegroError` is a ``ValueError``), YAML syntax errors, and Optuna's
    errors when Optuna was imported by the command."""
    types: List[type] = [ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
                         IsADirectoryError, NotADirectoryError]
    for module_name, attr in (("yaml", "YAMLError"), ("optuna.exceptions", "OptunaError")):
        module = sys.modules.get(module_name)  # only if already imported: no import cost here
        if module is not None and hasattr(module, attr):
            types.append(getattr(module, attr))
    return tuple(types)


def one_line(error: BaseException) -> str:
    """The error's message on one line (YAML and some library messages span several)."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``qallegro ARGV``; returns the exit status (2 for a user error, printed as one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is global but accepted anywhere, so `qallegro train cfg.yaml --debug` works too
    debug = "--debug" in argv or os.environ.get("QALLEGRO_DEBUG", "").strip() not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.run(args) or 0)
    except Exception as error:
        if debug or not isinstance(error, user_error_types()):
            raise
        print(f"qallegro {args.command}: error: {one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
