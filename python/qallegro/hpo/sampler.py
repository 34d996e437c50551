"""SAMO-COBRA as an Optuna sampler, for multi-objective constrained studies shared by many workers.

Parameters are relaxed to a continuous box [-1, 1]^D for the surrogates and rounded back:
floats (log floats in log space) map linearly; integers are relaxed and rounded to their step;
a categorical with k choices becomes k one-hot coordinates (+1 chosen, -1 others) decoded by argmax.
Objectives to maximise are negated; constraints (``c <= 0`` feasible) are those a trial set with
``trial.set_constraint(name, value)`` (Optuna >= 5, taken in name order) or, the older way, those
returned by ``constraints_func`` and stored in the trial's system attributes.

Trials still RUNNING (in this or another process, e.g. on a shared PostgreSQL study) are "pending":
the next point keeps its distance from them and treats their predicted objectives as if observed
(kriging believer), so concurrent workers spread along the front instead of duplicating each other.
FAILed trials (e.g. an invalid architecture) are kept at a distance too, and a proposal that rounds
onto parameters already tried is replaced by a random sample.

Two workers that ask at the same moment cannot see each other's parameters yet (a trial's params are
stored only after the sampler returns), so each proposal is reserved first: written to the trial's
system attributes, then the other trials are read again (those still running with their params or
reservations, and those that finished in the meantime). Writes are serialised by the storage,
so of two colliding proposals the later writer always sees the earlier one and asks again with it as
pending; after a few collisions the trial is sampled at random.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.samplers._base import _CONSTRAINTS_KEY, _process_constraints_after_trial
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from qallegro.hpo.samo_cobra import SamoCobra, initial_design, pareto_mask

__all__ = ["SamoCobraSampler", "SpaceCodec", "feasible_pareto_trials", "trial_constraints"]


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        np.isclose(a[k], b[k], rtol=1e-12, atol=0) if isinstance(a[k], float) else a[k] == b[k] for k in a
    )


_PROPOSAL_KEY = "samo_cobra:proposal"
_MAX_RESERVE_ATTEMPTS = 4
# two scaled points closer than this (in [-1, 1]^D) are the same evaluation for reservation purposes
_COLLISION_DISTANCE = 1e-3


def trial_constraints(t: FrozenTrial) -> List[float]:
    """Constraint values of a trial (``<= 0`` feasible): list-style ``constraints_func`` results
    first, then ``set_constraint`` values in name order."""
    attrs = t.system_attrs
    out = [float(v) for v in (attrs.get(_CONSTRAINTS_KEY) or [])]
    prefix = _CONSTRAINTS_KEY + ":"
    out += [float(attrs[k]) for k in sorted(k for k in attrs if k.startswith(prefix))]
    return out


class SpaceCodec:
    """Map between Optuna parameters and points of [-1, 1]^D (see module docstring)."""

    def __init__(self, search_space: Dict[str, BaseDistribution]) -> None:
        self.space = dict(sorted(search_space.items()))
        self._slices: Dict[str, slice] = {}
        self._ranges: Dict[str, Tuple[float, float]] = {}
        d = 0
        for name, dist in self.space.items():
            if isinstance(dist, CategoricalDistribution):
                width = len(dist.choices) if len(dist.choices) > 1 else 0
            elif isinstance(dist, (FloatDistribution, IntDistribution)):
                lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
                self._ranges[name] = (float(lo), float(hi))
                width = 1 if hi > lo else 0
            else:
                raise TypeError(f"SamoCobraSampler: unsupported distribution {dist!r} of parameter {name!r}")
            self._slices[name] = slice(d, d + width)
            d += width
        self.dim = d

    def encode(self, params: Dict[str, Any]) -> np.ndarray:
        """Parameter dict -> point [D] in [-1, 1]^D."""
        x = np.zeros(self.dim)
        for name, dist in self.space.items():
            sl = self._slices[name]
            if sl.stop == sl.start:
                continue
            if isinstance(dist, CategoricalDistribution):
                x[sl] = -1.0
                x[sl.start + dist.to_internal_repr(params[name])] = 1.0
            else:
                lo, hi = self._ranges[name]
                v = math.log(params[name]) if dist.log else float(params[name])
                x[sl.start] = 2.0 * (v - lo) / (hi - lo) - 1.0
        return x

    def decode(self, x: np.ndarray) -> Dict[str, Any]:
        """Point [D] -> parameter dict (rounded to the distributions' steps, clipped to their bounds)."""
        out: Dict[str, Any] = {}
        for name, dist in self.space.items():
            sl = self._slices[name]
            if isinstance(dist, CategoricalDistribution):
                out[name] = dist.choices[int(np.argmax(x[sl]))] if sl.stop > sl.start else dist.choices[0]
                continue
            lo, hi = self._ranges[name]
            v = lo + (float(np.clip(x[sl.start], -1, 1)) + 1.0) * 0.5 * (hi - lo) if sl.stop > sl.start else lo
            v = math.exp(v) if dist.log else v
            if isinstance(dist, IntDistribution):
                v = int(round((v - dist.low) / dist.step)) * dist.step + dist.low
                v = int(min(max(v, dist.low), dist.high))
            elif dist.step is not None:
                v = round((v - dist.low) / dist.step) * dist.step + dist.low
                v = float(min(max(v, dist.low), dist.high))
            else:
                v = float(min(max(v, dist.low), dist.high))
            out[name] = v
        return out


class SamoCobraSampler(BaseSampler):
    """Optuna sampler running SAMO-COBRA (:mod:`qallegro.hpo.samo_cobra`) over a study's trials.

    Args:
        search_space: the parameters to optimise; known up front, the initial Halton design starts
            at trial 0. If None it is inferred (intersection of completed trials' spaces) and the
            first trial is sampled at random.
        ref_point: hypervolume reference point in the study's objective units and directions; if
            None, the worst observed value of each objective plus 10% of its observed range.
        constraints_func: ``trial -> [c_1, ...]`` with ``c <= 0`` feasible (as NSGAIISampler's).
        seed: seeds the initial design and the infill multi-starts.
        **options: passed to :class:`SamoCobra` (infill "PHV"|"SMS", init_design, n_init, eps_init, eps_max,
            con_scale: per constraint, in :func:`trial_constraints` order, the unit it is divided by
            before the surrogates and the EPS margin see it, e.g. the limit L of a constraint
            ``value - L`` such as a parameter budget; None entries: the median |c| of the initial design).
    """

    def __init__(
        self,
        *,
        search_space: Optional[Dict[str, BaseDistribution]] = None,
        ref_point: Optional[Sequence[float]] = None,
        constraints_func: Optional[Callable[[FrozenTrial], Sequence[float]]] = None,
        seed: Optional[int] = None,
        **options: Any,
    ) -> None:
        self._search_space = search_space
        self._ref_point = None if ref_point is None else np.asarray(ref_point, dtype=float)
        self._constraints_func = constraints_func
        self._seed = 0 if seed is None else int(seed)
        self._options = options
        self._random = RandomSampler(seed=seed)
        self._intersection = IntersectionSearchSpace()
        # per (study, space): the SAMO-COBRA state and the trial numbers already told to it
        self._cores: Dict[Tuple[int, str], Tuple[SamoCobra, set]] = {}

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> Dict[str, BaseDistribution]:
        if self._search_space is not None:
            return dict(self._search_space)
        return self._intersection.calculate(study)

    # ---- helpers --------------------------------------------------------------------------------
    def _signs(self, study: Study) -> np.ndarray:
        return np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])

    def _usable(self, t: FrozenTrial, space: Dict[str, BaseDistribution]) -> bool:
        if not all(n in t.params and space[n]._contains(space[n].to_internal_repr(t.params[n])) for n in space):
            return False
        if t.state != TrialState.COMPLETE:
            return True
        if t.values is None or not np.all(np.isfinite(t.values)):
            return False
        return self._constraints_func is None or _CONSTRAINTS_KEY in t.system_attrs

    def _ref(self, f: np.ndarray, signs: np.ndarray) -> np.ndarray:
        if self._ref_point is not None:
            return self._ref_point * signs
        span = f.max(axis=0) - f.min(axis=0)
        return f.max(axis=0) + 0.1 * np.where(span > 0, span, np.abs(f.max(axis=0)) + 1.0)

    # ---- the sampler API ------------------------------------------------------------------------
    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: Dict[str, BaseDistribution]
    ) -> Dict[str, Any]:
        if not search_space:
            return {}
        if len(study.directions) < 2:
            raise ValueError("SamoCobraSampler needs a multi-objective study (directions=[...], two or more)")
        codec = SpaceCodec(search_space)
        if codec.dim == 0:
            return {}
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        trials = [t for t in trials if t.number != trial.number and self._usable(t, search_space)]
        complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
        signs = self._signs(study)
        n_con = len(trial_constraints(complete[0])) if complete else 0
        complete = [t for t in complete if len(trial_constraints(t)) == n_con]
        n_init = self._options.get("n_init") or codec.dim + 1
        if len(complete) < n_init:
            if trial.number < n_init:
                # initial design: Halton point number `trial.number` (distinct across workers)
                design = initial_design(self._options.get("init_design", "halton"), n_init, codec.dim, self._seed)
                return codec.decode(design[trial.number])
            return {}  # too few results for the surrogates yet: independent (random) sampling
        key = (study._study_id, repr(sorted(codec.space.items())))
        if key not in self._cores:
            core = SamoCobra(codec.dim, len(signs), n_con, np.zeros(len(signs)), seed=self._seed, **self._options)
            self._cores[key] = (core, set())
        core, told = self._cores[key]
        f_all = np.array([t.values for t in complete]) * signs
        core.ref_point = self._ref(f_all, signs)
        for t in complete:
            if t.number in told:
                continue
            g = trial_constraints(t)
            core.tell(codec.encode(t.params), np.asarray(t.values) * signs, g)
            told.add(t.number)
        # the adaptive reference point may have moved: refresh the HV trace it feeds
        core.hv_progress[-1] = core.current_hv()
        failed = [
            t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if self._usable(t, search_space)
        ]
        avoid = np.array([codec.encode(t.params) for t in failed]).reshape(-1, codec.dim)
        seen = [t.params for t in complete + failed]
        known = {t.number for t in complete + failed}
        pending, pending_params = self._pending(study, trial, codec, known)
        for _ in range(_MAX_RESERVE_ATTEMPTS):
            x = core.ask(pending=pending, avoid=avoid)
            proposal = codec.decode(x)
            # integer/categorical rounding can land on a point already tried: sample that trial at
            # random instead of repeating an evaluation (or a failure)
            if any(_same(proposal, p) for p in seen + pending_params):
                return {}
            study._storage.set_trial_system_attr(trial._trial_id, _PROPOSAL_KEY, proposal)
            # everything the other workers did meanwhile: trials still running (with their params or
            # reservation) and trials that ran and finished while this worker was computing
            others, others_params = self._pending(study, trial, codec, known)
            x_rounded = codec.encode(proposal)
            if not any(
                _same(proposal, op) or np.linalg.norm(o - x_rounded) < _COLLISION_DISTANCE
                for o, op in zip(others, others_params)
            ):
                return proposal
            pending, pending_params = others, others_params  # a concurrent worker got there first
        return {}

    def _pending(
        self, study: Study, trial: FrozenTrial, codec: "SpaceCodec", known: set
    ) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
        """Points of the other trials this ask has not accounted for: RUNNING ones (their parameters,
        or the proposal reserved for them while their sampler has not returned yet) and finished ones
        not among ``known`` (trial numbers already told to the surrogates or avoided)."""
        params: List[Dict[str, Any]] = []
        points: List[np.ndarray] = []
        states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        for t in study.get_trials(deepcopy=False, states=states):
            if t.number == trial.number or t.number in known:
                continue
            p = t.params if all(n in t.params for n in codec.space) else t.system_attrs.get(_PROPOSAL_KEY)
            if isinstance(p, dict) and all(n in p for n in codec.space):
                p = {n: p[n] for n in codec.space}
                try:
                    points.append(codec.encode(p))
                except (ValueError, TypeError, KeyError):
                    continue  # a proposal from a different search space
                params.append(p)
        return np.array(points).reshape(-1, codec.dim), params

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Optional[Sequence[float]]
    ) -> None:
        if self._constraints_func is not None:
            _process_constraints_after_trial(self._constraints_func, study, trial, state)


def feasible_pareto_trials(study: Study) -> List[FrozenTrial]:
    """Completed, feasible (all stored constraints <= 0) trials on the Pareto front of ``study``."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values is not None]
    if not done:
        return []
    signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])
    f = np.array([t.values for t in done]) * signs
    g = np.array([[max(trial_constraints(t), default=0.0)] for t in done])
    return [t for t, keep in zip(done, pareto_mask(f, g)) if keep]
