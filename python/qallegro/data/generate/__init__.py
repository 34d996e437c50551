"""Reference-data generation: sample structures, label them with an electronic-structure code.

``generate(output, system, labeller, counts, ...)`` appends labelled frames to an extxyz file and can
be resumed; ``make_calculator`` gives the presets (gfn1-xtb, pbe-def2svp, gpaw-pbe, emt) or any ASE
calculator by import path; ``parse_system`` the starting structures (Cu-Li alloys, molecules, files).
The command line is ``qallegro data generate``.
"""

from .calculators import PRESETS, CalculatorSpec, make_calculator
from .runner import GenerateReport, generate, label, min_distance
from .sampling import SAMPLERS, SamplingOptions
from .store import ExtxyzStore, read_failed, scan_frames
from .systems import CuLiAlloy, FixedStructures, System, parse_system

__all__ = [
    "PRESETS", "CalculatorSpec", "make_calculator", "GenerateReport", "generate", "label", "min_distance",
    "SAMPLERS", "SamplingOptions", "ExtxyzStore", "read_failed", "scan_frames", "CuLiAlloy", "FixedStructures", "System",
    "parse_system",
]
