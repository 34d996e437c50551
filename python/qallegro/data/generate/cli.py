"""``qallegro data generate``: label sampled structures with a reference calculator into an extxyz."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Tuple

EXAMPLE = ("OMP_NUM_THREADS=1 qallegro data generate --system culi --calculator gfn1-xtb "
           "--md 200 --rattle 300 --strain 200 --vacancy 150 --surface 150 --seed 0 -o culi.extxyz")


def _key_values(items: Optional[List[str]], flag: str) -> Dict[str, Any]:
    """``KEY=VALUE`` options with YAML-typed values (``3``, ``1e-8``, ``true``, ``[1, 2, 2]``)."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _floats(text: Optional[str], flag: str) -> Optional[Tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as err:
        raise ValueError(f"{flag} {text!r}: expected comma-separated numbers") from err


def _range(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError as err:
        raise ValueError(f"--atoms {text!r}: expected MIN-MAX, e.g. 32-64") from err
    if lo_i > hi_i or lo_i < 1:
        raise ValueError(f"--atoms {text!r}: expected 1 <= MIN <= MAX")
    return lo_i, hi_i


def _volumes(text: Optional[str]) -> Optional[Dict[str, float]]:
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError as err:
            raise ValueError(f"--volumes {text!r}: expected Cu=V,Li=V in Å³ per atom") from err
        if not sep:
            raise ValueError(f"--volumes {text!r}: expected Cu=V,Li=V in Å³ per atom")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("what to make")
    g.add_argument("-o", "--output", required=True, help="extxyz file to append to (resumed if it exists)")
    g.add_argument("--system", required=True,
                   help="culi (Cu_xLi_(1-x) fcc/bcc), a g2 molecule (C6H6, benzene, H2O), smiles:SMILES "
                        "(needs rdkit) or file:PATH")
    g.add_argument("--calculator", default="gfn1-xtb",
                   help="gfn1-xtb | pbe-def2svp | gpaw-pbe | emt | package.module:ClassName (default gfn1-xtb)")
    g.add_argument("--calc-option", action="append", metavar="KEY=VALUE",
                   help="calculator keyword (repeatable; YAML value), e.g. basis=sto-3g")
    g.add_argument("--driver", default="same",
                   help="MD driver: 'same' (the labeller, default) or a calculator spelled as --calculator")
    g.add_argument("--driver-option", action="append", metavar="KEY=VALUE", help="driver keyword (repeatable)")
    g.add_argument("--seed", type=int, default=0, help="random seed of all samplers (default 0)")
    c = parser.add_argument_group("frames per sampler")
    for name, what in (("md", "Langevin MD frames"), ("rattle", "rattled structures"),
                       ("strain", "strained + rattled cells"), ("vacancy", "cells with 1..n vacancies"),
                       ("surface", "rattled slabs (fcc 100/111, bcc 100/110)")):
        c.add_argument(f"--{name}", type=int, default=0, metavar="N", help=what)
    s = parser.add_argument_group("Cu-Li alloys")
    s.add_argument("--compositions", help="Cu fractions, e.g. 0,0.25,0.5,0.75,1 (the default)")
    s.add_argument("--lattices", help="fcc,bcc (the default) or one of them")
    s.add_argument("--atoms", help="atoms per cell, MIN-MAX (default 32-64)")
    s.add_argument("--volumes", help="volume per atom of pure Cu and Li in Å³ for Vegard's law, e.g. "
                                     "Cu=14.5,Li=36 (default: experimental, Cu=11.81,Li=21.62)")
    m = parser.add_argument_group("sampling")
    m.add_argument("--temperatures", help="MD temperatures in K (default 300,600,900)")
    m.add_argument("--timestep", type=float, help="MD step in fs (default 0.5 with H, else 2)")
    m.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    m.add_argument("--md-every", type=int, default=5, help="MD steps between labelled frames (default 5)")
    m.add_argument("--md-equilibration", type=int, default=20, help="MD steps before a segment's first frame")
    m.add_argument("--md-segment", type=int, default=10, help="labelled frames per MD segment (default 10)")
    m.add_argument("--rattle-amplitude", type=float, default=0.1, help="largest rattle sigma, Å (default 0.1)")
    m.add_argument("--strain-amplitude", type=float, default=0.05, help="largest strain (default 0.05)")
    m.add_argument("--max-vacancies", type=int, default=2, help="vacancies per frame, 1..n (default 2)")
    m.add_argument("--min-distance", type=float, default=0.5, help="skip candidates with atoms closer (Å)")
    r = parser.add_argument_group("run")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--force", action="store_true", help="resume even if the recorded settings differ")


def system_from_settings(settings: Dict[str, Any]):
    """The System a ``<output>.generate.json`` records (as the command line that made it built it)."""
    from .systems import parse_system

    extra = settings.get("system_options") or {}
    lattices = extra.get("lattices")
    return parse_system(settings["system"], _floats(extra.get("compositions"), "--compositions"),
                        tuple(lattices.split(",")) if lattices else None, _range(extra.get("atoms")),
                        _volumes(extra.get("volumes")))


def labeller_from_settings(settings: Dict[str, Any]):
    """The labelling CalculatorSpec a ``<output>.generate.json`` records (preset and its options)."""
    from .calculators import make_calculator

    return make_calculator(settings["calculator"], settings.get("calculator_options") or {})


def driver_from_settings(settings: Dict[str, Any]):
    """The MD driver's CalculatorSpec a ``<output>.generate.json`` records, or None if the labeller drove."""
    from .calculators import make_calculator

    if settings.get("driver_calculator") is None:
        return None
    return make_calculator(settings["driver_calculator"], settings.get("driver_options") or {})


def options_from_settings(settings: Dict[str, Any]):
    """The SamplingOptions a ``<output>.generate.json`` records."""
    from .sampling import SamplingOptions

    options = dict(settings["options"])
    options["temperatures"] = tuple(float(t) for t in options["temperatures"])
    return SamplingOptions(**options)


def run(args: argparse.Namespace) -> int:
    from .runner import generate
    from .sampling import SamplingOptions

    try:
        system_options = {"compositions": args.compositions, "lattices": args.lattices, "atoms": args.atoms,
                          "volumes": args.volumes}
        # built from what generate.json records, so the recorded settings rebuild this very system
        system = system_from_settings({"system": args.system, "system_options": system_options})
        # the calculators too are built from what generate.json records (the labeller's name is recorded
        # by generate as "calculator")
        calculators = {"calculator_options": _key_values(args.calc_option, "--calc-option"),
                       "driver_calculator": None if args.driver == "same" else args.driver,
                       "driver_options": _key_values(args.driver_option, "--driver-option")}
        labeller = labeller_from_settings({"calculator": args.calculator, **calculators})
        driver = driver_from_settings(calculators)
        defaults = SamplingOptions()
        options = SamplingOptions(
            rattle=args.rattle_amplitude, strain=args.strain_amplitude, max_vacancies=args.max_vacancies,
            temperatures=_floats(args.temperatures, "--temperatures") or defaults.temperatures,
            timestep=args.timestep, friction=args.friction, equilibration=args.md_equilibration,
            every=args.md_every, segment=args.md_segment)
        counts = {k: getattr(args, k) for k in ("md", "rattle", "strain", "vacancy", "surface") if getattr(args, k)}
        if not counts:
            raise ValueError("no frames asked for: give at least one of --md/--rattle/--strain/--vacancy/--surface N")
        report = generate(args.output, system, labeller, counts, seed=args.seed, options=options, driver=driver,
                          min_dist=args.min_distance, progress=not args.no_progress, force=args.force,
                          settings_extra={"system_options": system_options, **calculators})
    except (ValueError, ImportError) as err:
        print(f"qallegro data generate: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.output}: {report.summary()}")
    if report.truncated_bytes:
        print(f"  (cut {report.truncated_bytes} bytes of a torn last frame before resuming)")
    return 0
