"""Samplers: candidate structures as pure functions of (seed, sampler, frame index).

Static samplers (``rattle``, ``strain``, ``vacancy``, ``surface``) draw every frame from its own
random stream, so any frame can be made alone. ``md`` runs Langevin segments: segment s makes frames
s*S .. s*S+S-1 from its own seeded start, so a resumed run redoes at most one segment of dynamics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from .systems import System

SAMPLERS = ("md", "rattle", "strain", "vacancy", "surface")
PERIODIC_ONLY = {"strain", "vacancy", "surface"}


@dataclass(frozen=True)
class SamplingOptions:
    """Knobs of the samplers (lengths in Å, temperatures in K, times in fs).

    rattle: largest standard deviation of the Gaussian displacements of ``rattle`` frames (each frame
        draws its own in [0.25, 1] x rattle; strained, vacancy and surface frames use fractions of it).
    strain: largest diagonal strain (off-diagonal: half of it).
    max_vacancies: ``vacancy`` frames remove 1..max_vacancies atoms.
    temperatures: Langevin temperatures; each MD segment draws one.
    timestep: MD time step; None takes 0.5 fs when hydrogen is present and 2 fs otherwise.
    friction: Langevin friction (1/fs).
    equilibration: MD steps before a segment's first frame; every: MD steps between labelled frames;
    segment: labelled frames per MD segment.
    """

    rattle: float = 0.1
    strain: float = 0.05
    max_vacancies: int = 2
    temperatures: Tuple[float, ...] = (300.0, 600.0, 900.0)
    timestep: Optional[float] = None
    friction: float = 0.01
    equilibration: int = 20
    every: int = 5
    segment: int = 10


@dataclass
class Candidate:
    """A structure to label. ``atoms`` carries ``info`` for the output frame; for ``md`` frames whose
    driver is the labeller itself, ``atoms.calc`` already holds the labels and ``driver_time`` /
    ``driver_cpu_time`` their cost (wall and CPU seconds)."""

    config_type: str
    frame_index: int
    atoms: Atoms
    driver_time: float = 0.0
    driver_cpu_time: float = 0.0


def frame_rng(seed: int, sampler: str, index: int) -> np.random.Generator:
    """The random stream of one frame (static samplers) or one MD segment."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SAMPLERS.index(sampler), int(index)]))


def _rattle(atoms: Atoms, sigma: float, rng: np.random.Generator) -> None:
    atoms.positions = atoms.positions + rng.normal(0.0, sigma, size=atoms.positions.shape)


def static_candidate(system: System, sampler: str, index: int, seed: int, opts: SamplingOptions) -> Candidate:
    """Frame ``index`` of a static sampler."""
    rng = frame_rng(seed, sampler, index)
    if sampler in PERIODIC_ONLY and not system.periodic:
        raise ValueError(f"sampler {sampler!r} needs a periodic system; {system.name!r} is not periodic")
    if sampler == "rattle":
        atoms, desc = system.bulk(rng)
        _rattle(atoms, opts.rattle * rng.uniform(0.25, 1.0), rng)
    elif sampler == "strain":
        atoms, desc = system.bulk(rng)
        eps = np.diag(rng.uniform(-opts.strain, opts.strain, 3))
        off = rng.uniform(-opts.strain / 2, opts.strain / 2, 3)
        eps[0, 1] = eps[1, 0] = off[0]
        eps[0, 2] = eps[2, 0] = off[1]
        eps[1, 2] = eps[2, 1] = off[2]
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        _rattle(atoms, 0.3 * opts.rattle, rng)
        desc += f" strain {np.round(np.diag(eps), 4).tolist()}"
    elif sampler == "vacancy":
        atoms, desc = system.bulk(rng)
        n_remove = int(rng.integers(1, opts.max_vacancies + 1))
        if n_remove >= len(atoms):
            raise ValueError(f"vacancy: cannot remove {n_remove} of {len(atoms)} atoms")
        removed = sorted(rng.choice(len(atoms), n_remove, replace=False).tolist(), reverse=True)
        for i in removed:
            del atoms[i]
        _rattle(atoms, 0.5 * opts.rattle, rng)
        desc += f" minus {n_remove}"
    elif sampler == "surface":
        atoms, desc = system.surface(rng)
        _rattle(atoms, 0.5 * opts.rattle, rng)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    atoms.info = {"structure": desc}
    return Candidate(sampler, index, atoms)


class DriverFailed(RuntimeError):
    """The MD driver's calculation failed; the rest of the segment cannot be made."""

    def __init__(self, frame_index: int, step: int, error: BaseException) -> None:
        super().__init__(f"MD driver failed at step {step} before frame {frame_index}: "
                         f"{type(error).__name__}: {error}")
        self.frame_index = frame_index
        self.cause = error


def md_segment(system: System, segment: int, seed: int, opts: SamplingOptions, driver: Calculator,
               wanted: Sequence[int], driver_is_labeller: bool = False) -> Iterator[Candidate]:
    """Langevin frames of MD segment ``segment`` whose indices are in ``wanted``.

    The dynamics always runs from the segment's seeded start (so frames are reproducible); frames not
    in ``wanted`` (already done) are stepped over without labelling. Raises DriverFailed when a force
    call of the driver fails.
    """
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ase >= 3.29
    except ImportError:  # older ase: the same draw under its former name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        def thermalize_momenta(atoms, temperature_K, rng=None):
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)

    rng = frame_rng(seed, "md", segment)
    atoms, desc = system.bulk(rng)
    temperature = float(rng.choice(np.asarray(opts.temperatures, dtype=float)))
    timestep = opts.timestep
    if timestep is None:
        timestep = 0.5 if "H" in atoms.get_chemical_symbols() else 2.0
    _rattle(atoms, 0.02, rng)  # break the lattice symmetry so forces are non-zero from step one
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    atoms.calc = driver
    # The centre of mass stays put through a constraint (Langevin's own fixcm is deprecated as biased).
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=opts.friction / units.fs,
                   rng=np.random.default_rng(rng.integers(2**63)), fixcm=False)
    wanted = set(wanted)
    first = segment * opts.segment
    step = 0

    def advance(n: int, frame_index: int) -> Tuple[float, float]:
        nonlocal step
        import time

        elapsed = cpu = 0.0
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                dyn.run(1)
            except Exception as err:  # any driver error ends the segment; the caller logs it
                raise DriverFailed(frame_index, step, err) from err
            # cost of the last step = one force call at the frame
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            step += 1
        return elapsed, cpu

    advance(opts.equilibration, first)
    for index in range(first, first + opts.segment):
        if not any(w >= index for w in wanted):
            return  # nothing left to label in this segment
        last_step_time, last_step_cpu = advance(opts.every, index)
        if index not in wanted:
            continue
        frame = atoms.copy()
        frame.set_constraint()  # the frame is data; the MD constraint stays with the trajectory
        frame.info = {"structure": desc, "temperature_K": temperature, "md_step": step,
                      "timestep_fs": timestep}
        if driver_is_labeller:
            frame.calc = driver  # results for these positions are cached in the driver
            yield Candidate("md", index, frame, driver_time=last_step_time, driver_cpu_time=last_step_cpu)
        else:
            yield Candidate("md", index, frame)
