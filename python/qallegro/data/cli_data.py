"""``qallegro data``: data-set tools, one sub-command each.

Sub-commands are modules with ``add_arguments(parser)``, ``run(args) -> int`` and ``EXAMPLE``, like the
top-level commands; add one by adding a line to ``SUBCOMMANDS``. A sub-command whose module is absent
is not offered; sub-command modules import their heavy dependencies only in ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Dict, Tuple

# sub-command -> (module implementing it, one-line help)
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "generate": ("qallegro.data.generate.cli", "label sampled structures with a reference calculator (resumable)"),
}

EXAMPLE = "qallegro data generate --system C6H6 --calculator pbe-def2svp --driver gfn1-xtb --md 300 -o benzene.extxyz"


def _available() -> Dict[str, Tuple[str, str]]:
    out = {}
    for name, (module, help_line) in SUBCOMMANDS.items():
        try:
            if importlib.util.find_spec(module) is not None:
                out[name] = (module, help_line)
        except ModuleNotFoundError:  # a missing parent package: the sub-command is just not offered
            pass
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Sub-command modules keep their heavy imports inside run(), so importing them all here is cheap.
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    for name, (module_name, help_line) in _available().items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_line, description=help_line,
                           epilog="example:\n  " + getattr(module, "EXAMPLE", f"qallegro data {name} --help"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_data_module=module)
    parser.set_defaults(_data_parser=parser)


def run(args: argparse.Namespace) -> int:
    module = getattr(args, "_data_module", None)
    if module is None:
        args._data_parser.print_help()
        return 0 if getattr(args, "data_command", None) is None else 2
    return int(module.run(args) or 0)
