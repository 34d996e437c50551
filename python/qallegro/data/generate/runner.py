"""The labelling loop: candidates -> reference calculator -> extxyz, resumable and seeded."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator

from .calculators import CalculatorSpec
from .sampling import SAMPLERS, Candidate, DriverFailed, SamplingOptions, md_segment, static_candidate
from .store import ExtxyzStore, check_settings
from .systems import System


class TooClose(ValueError):
    """Two atoms of a candidate are closer than the allowed minimum distance."""


@dataclass
class GenerateReport:
    """What one run did: frames written and failed now, frames found done before, seconds spent."""

    written: int = 0
    failed: int = 0
    already_done: int = 0
    already_failed: int = 0
    truncated_bytes: int = 0
    wall_time: float = 0.0
    label_times: List[float] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.written} frames written, {self.failed} failed, {self.already_done} were done before "
                f"({self.already_failed} failed before); {self.wall_time:.1f} s")
        if self.label_times:
            text += f", {float(np.mean(self.label_times)):.2f} s/frame mean label time"
        return text


def min_distance(atoms: Atoms) -> float:
    """Smallest interatomic distance (Å, minimum image when periodic); inf for one atom."""
    if len(atoms) < 2:
        return math.inf
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    np.fill_diagonal(d, math.inf)
    return float(d.min())


def label(atoms: Atoms, calc: Calculator, stress: bool = True) -> Tuple[Dict[str, Any], float]:
    """Energy (eV), forces (eV/Å) and, for periodic cells when ``stress`` and the calculator has it,
    stress (eV/Å³, ASE's Voigt order and sign) of ``atoms``; and the seconds it took. Raises on
    non-finite results."""
    atoms.calc = calc
    t0 = time.perf_counter()
    results: Dict[str, Any] = {"energy": float(atoms.get_potential_energy()),
                               "forces": np.array(atoms.get_forces())}
    if stress and atoms.pbc.all():
        try:
            results["stress"] = np.array(atoms.get_stress(voigt=True))
        except (PropertyNotImplementedError, NotImplementedError):
            pass  # e.g. GPAW LCAO: frames without stress are still valid energy/force data
    elapsed = time.perf_counter() - t0
    for key, value in results.items():
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(f"calculator returned a non-finite {key}")
    return results, elapsed


def _schedule(counts: Mapping[str, int], segment: int) -> List[Tuple[str, int]]:
    """Work units (sampler, unit index) interleaved so that a partial run covers every sampler.

    A unit is one frame for static samplers and one MD segment for ``md``. Units are ordered by their
    fractional position within their sampler, so the file grows with all samplers in proportion.
    """
    units = []
    for order, sampler in enumerate(SAMPLERS):
        n = counts.get(sampler, 0)
        n_units = math.ceil(n / segment) if sampler == "md" else n
        units += [((u + 0.5) / n_units, order, sampler, u) for u in range(n_units)]
    return [(s, u) for _, _, s, u in sorted(units)]


def generate(output: Path | str, system: System, labeller: CalculatorSpec, counts: Mapping[str, int],
             seed: int = 0, options: SamplingOptions = SamplingOptions(), driver: Optional[CalculatorSpec] = None,
             min_dist: float = 0.5, progress: bool = True, force: bool = False,
             settings_extra: Optional[Dict[str, Any]] = None) -> GenerateReport:
    """Label ``counts[sampler]`` frames per sampler of ``system`` with ``labeller`` into ``output``.

    output: extxyz file, appended frame by frame; frames already in it (by config_type and frame_index)
        and frames already logged as failed in ``<output>.failed.jsonl`` are skipped.
    driver: calculator of the MD dynamics; None means the labeller itself (its results at the sampled
        steps are the labels, no second calculation).
    min_dist: candidates with two atoms closer than this (Å) are logged as failed, not calculated.
    force: resume even if ``<output>.generate.json`` records other settings.
    Every frame's info carries config_type, frame_index, method, wall_time and cpu_time (seconds in the
    reference calculator; on a shared machine cpu_time is the cost), structure, and for MD
    temperature_K, md_step, timestep_fs, driver.
    """
    unknown = set(counts) - set(SAMPLERS)
    if unknown:
        raise ValueError(f"unknown sampler(s) {sorted(unknown)}; known: {', '.join(SAMPLERS)}")
    for sampler, n in counts.items():
        if n < 0:
            raise ValueError(f"sampler {sampler!r}: negative frame count {n}")
        if n and sampler in {"strain", "vacancy", "surface"} and not system.periodic:
            raise ValueError(f"sampler {sampler!r} needs a periodic system; {system.name!r} is not periodic")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = {"system": system.name, "method": labeller.method, "calculator": labeller.name, "seed": int(seed),
                "driver": driver.method if driver is not None else "labeller", "options": asdict(options),
                "min_dist": min_dist, "counts": dict(counts), **(settings_extra or {})}
    settings["options"]["temperatures"] = list(options.temperatures)
    check_settings(output, settings, force=force)
    store = ExtxyzStore(output)
    wanted_keys = {(s, i) for s, n in counts.items() for i in range(n)}
    report = GenerateReport(already_done=len(store.done & wanted_keys),
                            already_failed=len(store.failed & wanted_keys),
                            truncated_bytes=store.truncated_bytes)
    total = sum(counts.values())
    start = time.perf_counter()
    calc = labeller.build()
    driver_calc = driver.build() if driver is not None else None

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=report.already_done + report.already_failed, desc=output.name,
               unit="frame", disable=not progress, dynamic_ncols=True)

    def finish(candidate: Candidate) -> None:
        key = (candidate.config_type, candidate.frame_index)
        atoms = candidate.atoms
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            if atoms.calc is None and min_distance(atoms) < min_dist:
                raise TooClose(f"two atoms are closer than {min_dist} Å ({min_distance(atoms):.3f} Å)")
            results, t_label = label(atoms, atoms.calc if atoms.calc is not None else calc, labeller.stress)
            cpu_time = time.process_time() - c0 + candidate.driver_cpu_time
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # any failed calculation is logged, never written as data
            store.record_failure(key, err, atoms, time.perf_counter() - t0)
            report.failed += 1
            bar.update(1)
            return
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, **results)
        wall_time = t_label + candidate.driver_time
        frame.info = {"config_type": candidate.config_type, "frame_index": candidate.frame_index,
                      "method": labeller.method, "wall_time": round(wall_time, 4),
                      "cpu_time": round(cpu_time, 4), **atoms.info}
        if candidate.config_type == "md":
            frame.info["driver"] = driver.method if driver is not None else labeller.method
        store.append(frame)
        report.written += 1
        report.label_times.append(wall_time)
        bar.set_postfix(failed=report.failed + report.already_failed, last_s=f"{wall_time:.2f}")
        bar.update(1)

    try:
        for sampler, unit in _schedule(counts, options.segment):
            if sampler != "md":
                if (sampler, unit) in store.done or (sampler, unit) in store.failed:
                    continue
                finish(static_candidate(system, sampler, unit, seed, options))
                continue
            first = unit * options.segment
            todo = [i for i in range(first, min(first + options.segment, counts["md"]))
                    if ("md", i) not in store.done and ("md", i) not in store.failed]
            if not todo:
                continue
            stream = md_segment(system, unit, seed, options, driver_calc if driver_calc is not None else calc,
                                todo, driver_is_labeller=driver_calc is None)
            try:
                for candidate in stream:
                    finish(candidate)
            except DriverFailed as err:
                # The trajectory cannot continue: log its remaining frames so a resume does not loop on it.
                for i in todo:
                    if ("md", i) not in store.done and ("md", i) not in store.failed and i >= err.frame_index:
                        store.record_failure(("md", i), err, None, 0.0)
                        report.failed += 1
                        bar.update(1)
    finally:
        bar.close()
        report.wall_time = time.perf_counter() - start
    return report
