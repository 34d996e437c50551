"""Reference calculators: named presets and any ASE calculator by import path.

Presets (their packages are optional and imported only when used):

=============  ===========================================================================
gfn1-xtb       tblite GFN1-xTB (fast; GFN2 does not converge for Cu-Li metals)
pbe-def2svp    PySCF PBE/def2-SVP with density fitting (the level of theory of rMD17), molecules
gpaw-pbe       GPAW PBE, LCAO dzp basis, Fermi-Dirac 0.1 eV, k-point density 1.5 /Å⁻¹ (e.g. 3x3x2 for
               an 8-atom fcc cell); periodic metals; no stress is stored (LCAO lacks its Pulay terms)
emt            ASE's effective-medium theory (Cu, Ag, Au, Ni, Pd, Pt, Al and H, C, N, O; a cheap driver)
=============  ===========================================================================

Anything else is ``package.module:ClassName``, constructed with the given keyword options.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping

from ase.calculators.calculator import Calculator


@dataclass
class CalculatorSpec:
    """A calculator factory and the method label written into every frame's ``info["method"]``.

    stress: whether the calculator's stress is trustworthy and wanted for periodic cells.
    """

    name: str
    method: str
    factory: Callable[[], Calculator]
    stress: bool = True

    def build(self) -> Calculator:
        return self.factory()


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # a package without metadata still works; its label just lacks a version
        return "unknown version"


def _gfn1_xtb(options: Dict[str, Any]) -> CalculatorSpec:
    from tblite.ase import TBLite

    kwargs = {"method": "GFN1-xTB", "verbosity": 0, **options}
    label = f"{kwargs['method']} (tblite {_version('tblite')}"
    if "electronic_temperature" in kwargs:
        label += f", Te={kwargs['electronic_temperature']} K"
    return CalculatorSpec("gfn1-xtb", label + ")", lambda: TBLite(**kwargs))


def _pbe_def2svp(options: Dict[str, Any]) -> CalculatorSpec:
    from .pyscf_calculator import PySCFCalculator

    kwargs = {**PySCFCalculator.default_parameters, **options}
    unknown = set(options) - set(PySCFCalculator.default_parameters)
    if unknown:
        raise ValueError(f"pbe-def2svp: unknown option(s) {sorted(unknown)}; "
                         f"known: {sorted(PySCFCalculator.default_parameters)}")
    fit = " RI" if kwargs["density_fit"] else ""
    label = f"{kwargs['xc']}/{kwargs['basis']}{fit} (PySCF {_version('pyscf')}, grid level {kwargs['grids_level']})"
    return CalculatorSpec("pbe-def2svp", label, lambda: PySCFCalculator(**kwargs))


def _gpaw_pbe(options: Dict[str, Any]) -> CalculatorSpec:
    from gpaw import GPAW

    kwargs: Dict[str, Any] = {
        "mode": "lcao", "basis": "dzp", "xc": "PBE", "kpts": {"density": 1.5, "gamma": True},
        "occupations": {"name": "fermi-dirac", "width": 0.1}, "txt": None,
    }
    kwargs.update(options)
    label = (f"{kwargs['xc']} {kwargs['mode']} {kwargs.get('basis', '')} (GPAW {_version('gpaw')}, "
             f"kpts {kwargs['kpts']}, {kwargs['occupations']})")
    # GPAW's LCAO mode lacks the basis-set (Pulay) terms of the stress: do not store one.
    stress = str(kwargs["mode"]).lower() != "lcao"
    return CalculatorSpec("gpaw-pbe", label, lambda: GPAW(**kwargs), stress=stress)


def _emt(options: Dict[str, Any]) -> CalculatorSpec:
    from ase.calculators.emt import EMT

    return CalculatorSpec("emt", f"EMT (ase {_version('ase')})", lambda: EMT(**options))


PRESETS: Dict[str, Callable[[Dict[str, Any]], CalculatorSpec]] = {
    "gfn1-xtb": _gfn1_xtb,
    "pbe-def2svp": _pbe_def2svp,
    "gpaw-pbe": _gpaw_pbe,
    "emt": _emt,
}


def make_calculator(spec: str, options: Mapping[str, Any] | None = None) -> CalculatorSpec:
    """A preset by name or ``package.module:ClassName`` with keyword ``options``.

    Raises ValueError naming the spec when it is neither, and ImportError naming the package a preset
    needs when that package is missing.
    """
    options = dict(options or {})
    if spec in PRESETS:
        try:
            return PRESETS[spec](options)
        except ImportError as err:
            need = {"gfn1-xtb": "tblite", "pbe-def2svp": "pyscf", "gpaw-pbe": "gpaw (and gpaw-data)"}
            raise ImportError(f"calculator preset {spec!r} needs the package {need.get(spec, '?')}: "
                              f"pip install it ({err})") from err
    if ":" not in spec:
        raise ValueError(f"unknown calculator {spec!r}: use one of {sorted(PRESETS)} or package.module:ClassName")
    module_name, _, class_name = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        cls = getattr(module, class_name)
    except AttributeError as err:
        raise ValueError(f"calculator {spec!r}: module {module_name} has no {class_name}") from err
    label = f"{class_name} ({module_name.split('.')[0]} {_version(module_name.split('.')[0])})"
    return CalculatorSpec(spec, label, lambda: cls(**options))
