"""SAMO-COBRA: Self-Adaptive Multi-Objective Constrained Optimisation by RBF approximations.

de Winter, van Stein, Bäck, EMO 2021 (LNCS 12654, pp. 331-343). Minimises ``n_obj`` expensive
objectives subject to ``n_con`` expensive constraints ``g(x) <= 0`` in a box, one evaluation per
iteration:

1. scale the box to [-1, 1]^d; evaluate an initial design of d + 1 points (Halton by default);
2. fit RBF surrogates (6 kernels x {standardised, plog}) to every objective and constraint (objectives
   also on a log scale anchored at their best value; see below);
3. for each output keep the kernel/transform with the lowest RMSE of its one-step-ahead predictions
   (over iterations that improved the hypervolume plus the last four);
4. choose the next point by maximising the predicted hypervolume gain (PHV or SMS), subject to the
   predicted constraints tightened by the margin EPS^2 and a minimum distance to evaluated points,
   with multi-start COBYLA (see :mod:`qallegro.hpo.infill`);
5. evaluate, shrink EPS by 10% after a feasible point or grow it by 10% (up to EPS_max) after an
   infeasible one, and repeat until the budget is spent.

Difference from the paper and its reference code: there, the surrogates are fitted to range-scaled
constraints but their predictions go back to raw units before the margin EPS^2 (0.0016-0.0064) is
added, so the margin depends on the constraint's units: for a stress in psi or a parameter count it is
nothing. Here every constraint is first divided by a fixed positive scale (``con_scale``: the user's
limit L of a "value <= L" constraint when known, else the median |g| of the initial design), and the
surrogates, the one-step-ahead model choice, the margin and the infill feasibility tolerance all work
on the scaled values. The margin is thus a fraction of the constraint's own size for every
constraint, and multiplying a constraint by any positive factor leaves the run unchanged. The raw
values are kept and decide feasibility (the sign is the same).

Second difference: each objective's surrogates are also fitted on log(1 + (f - f_best) / u), with u the
spread of the best quarter of its evaluations (:class:`qallegro.hpo.rbf.OutputScaling`), a third
transform the one-step-ahead choice may pick. The paper's plog, log(1 + |f|), is linear where |f| << 1
and so leaves an objective whose good values are small, or span orders of magnitude (welded beam:
deflection 4e-4 to 7 in), modelled on a scale set by its worst values: there the surrogates never see the
low-deflection corner of the box, and 3 of 10 runs at a tight reference point ended 8-12% short of the
true front's hypervolume. Choosing among the three by the same rule keeps the paper's surrogates wherever
they predict better.

:class:`SamoCobra` exposes ask/tell so the same state drives :func:`minimize` and the Optuna sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import moocore
import numpy as np
from scipy.stats import qmc

from qallegro.hpo.infill import Choice, InfillProblem, Predictor, StartBudget, hypervolume, solve_infill
from qallegro.hpo.rbf import KERNELS, TRANSFORMS, OutputScaling, fit_rbf

__all__ = ["SamoCobra", "SamoCobraResult", "minimize", "pareto_mask"]


def pareto_mask(f: np.ndarray, g: Optional[np.ndarray] = None) -> np.ndarray:
    """Boolean mask [n] of feasible (all ``g <= 0``) points of ``f: [n, m]`` that no feasible point dominates."""
    feasible = np.ones(len(f), bool) if g is None or g.size == 0 else np.all(g <= 0, axis=1)
    mask = np.zeros(len(f), bool)
    idx = np.flatnonzero(feasible)
    if len(idx):
        # keep_weakly=False also drops duplicates of a front point (one copy stays)
        mask[idx] = moocore.is_nondominated(f[idx], keep_weakly=False)
    return mask


def initial_design(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    """``n`` points in [-1, 1]^d: "halton" (scrambled), "lhs" or "random"."""
    if kind == "halton":
        u = qmc.Halton(d, scramble=True, seed=seed).random(n)
    elif kind == "lhs":
        u = qmc.LatinHypercube(d, seed=seed).random(n)
    elif kind == "random":
        u = np.random.default_rng(seed).random((n, d))
    else:
        raise ValueError(f"init_design must be 'halton', 'lhs' or 'random', got {kind!r}")
    return 2.0 * u - 1.0


@dataclass
class SamoCobra:
    """Ask/tell state of one SAMO-COBRA run in the scaled space [-1, 1]^dim.

    Arguments: dim, n_obj, n_con; ref_point [n_obj] for the hypervolume (raw objective units);
    seed; infill "PHV" | "SMS"; init_design "halton" | "lhs" | "random"; n_init (default dim + 1);
    eps_init / eps_max: constraint safety margins (defaults 0.02 / 0.04 of the box width 2, as the
    reference), acting on scaled constraints; con_scale [n_con]: the positive unit each constraint
    is divided by before the surrogates see it (e.g. the limit L of ``g = value - L``), None or a
    None/NaN entry for "the median |g| of the initial design"; cobyla_stall_seconds: CPU time NLopt's COBYLA may run without evaluating the
    infill problem before that start counts as failed (it can stall for minutes; None: no guard);
    infill_workers: processes running the multi-start COBYLA of one infill step at once (forked, with the
    stall guard; the chosen point is the same for any number, the wall time of a step shrinks).
    """

    dim: int
    n_obj: int
    n_con: int
    ref_point: Sequence[float]
    seed: int = 0
    infill: str = "PHV"
    init_design: str = "halton"
    n_init: Optional[int] = None
    eps_init: float = 0.04
    eps_max: float = 0.08
    kernels: Tuple[str, ...] = KERNELS
    cobyla_stall_seconds: Optional[float] = 2.0
    con_scale: Optional[Sequence[Optional[float]]] = None
    infill_workers: int = 1
    x: np.ndarray = field(init=False)
    f: np.ndarray = field(init=False)
    g: np.ndarray = field(init=False)
    hv_progress: List[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.infill not in ("PHV", "SMS"):
            raise ValueError(f"infill must be 'PHV' or 'SMS', got {self.infill!r}")
        self.ref_point = np.asarray(self.ref_point, dtype=float)
        if self.ref_point.shape != (self.n_obj,):
            raise ValueError(f"ref_point must have {self.n_obj} entries, got {self.ref_point.shape}")
        self.n_init = self.n_init or self.dim + 1
        self._given_scale = np.full(self.n_con, np.nan)
        if self.con_scale is not None:
            given = np.array([np.nan if v is None else float(v) for v in self.con_scale])
            if given.shape != (self.n_con,) or np.any(given[np.isfinite(given)] <= 0) or np.any(np.isinf(given)):
                raise ValueError(f"con_scale must hold {self.n_con} positive numbers (or None), got {self.con_scale}")
            self._given_scale = given
        self._con_unit: Optional[np.ndarray] = None
        self.x = np.zeros((0, self.dim))
        self.f = np.zeros((0, self.n_obj))
        self.g = np.zeros((0, self.n_con))
        self.eps = np.full(self.n_con, self.eps_init)
        self.budget = StartBudget(self.dim + self.n_obj + self.n_con)
        self._design = initial_design(self.init_design, self.n_init, self.dim, self.seed)
        self._rng = np.random.default_rng(self.seed)
        # one-step-ahead squared errors: [iterations, n_obj + n_con, kernels, transforms (plain, plog,
        # log; constraints have no log surrogate: inf there)]
        self._sq_errors: List[np.ndarray] = []
        self._improved: List[bool] = []
        self._bank = None

    # ---- data -------------------------------------------------------------------------------
    @property
    def constraint_scale(self) -> np.ndarray:
        """The unit [n_con] each constraint is divided by; data-driven entries are fixed by the
        initial design (the median |g| of its n_init points; their max |g|, then 1, if that is 0)."""
        if self._con_unit is not None:
            return self._con_unit
        unit = self._given_scale.copy()
        free = ~np.isfinite(unit)
        if free.any():
            if len(self.g) < self.n_init:
                raise RuntimeError("SamoCobra.constraint_scale: the initial design is not evaluated yet")
            a = np.abs(self.g[: self.n_init, free])
            # median: one huge value (e.g. a stress near a singular corner) does not set the unit
            med, top = np.median(a, axis=0), a.max(axis=0)
            unit[free] = np.where(med > 0, med, np.where(top > 0, top, 1.0))
        self._con_unit = unit
        return unit

    def scaled_constraints(self) -> np.ndarray:
        """Evaluated constraints [n, n_con] in the units the surrogates and EPS work in."""
        return self.g / self.constraint_scale

    def _targets(self) -> Tuple[np.ndarray, OutputScaling, Optional[OutputScaling]]:
        obj = OutputScaling.fit(self.f, "objective")
        cols = [obj.forward(self.f)]
        con = None
        if self.n_con:
            gs = self.scaled_constraints()
            con = OutputScaling.fit(gs, "constraint")
            cols.append(con.forward(gs))
        return np.concatenate(cols, axis=1), obj, con

    def _fit(self):
        if self._bank is None:
            y, obj, con = self._targets()
            self._bank = ({k: fit_rbf(k, self.x, y) for k in self.kernels}, obj, con)
        return self._bank

    def _all_predictions(self, x: np.ndarray) -> np.ndarray:
        """Predictions of every candidate surrogate at x [d] -> [n_obj + n_con, kernels, 3] (objectives
        in raw units, constraints in scaled units; inf for the constraints' missing log transform)."""
        bank, obj, con = self._fit()
        out = np.full((self.n_obj + self.n_con, len(self.kernels), len(TRANSFORMS)), np.inf)
        for ki, k in enumerate(self.kernels):
            z = bank[k].predict(x[None, :])[0]
            for t in range(obj.n_transforms):
                for i in range(self.n_obj):
                    out[i, ki, t] = obj.inverse(z[t * self.n_obj + i], i, t)
            base = obj.n_transforms * self.n_obj
            for t in range(con.n_transforms if self.n_con else 0):
                for j in range(self.n_con):
                    out[self.n_obj + j, ki, t] = con.inverse(z[base + t * self.n_con + j], j, t)
        return out

    def front(self) -> np.ndarray:
        """Feasible Pareto front [p, n_obj] of the evaluations so far."""
        return self.f[pareto_mask(self.f, self.g)]

    def current_hv(self) -> float:
        return hypervolume(self.front(), self.ref_point)

    # ---- ask / tell ---------------------------------------------------------------------------
    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float] = ()) -> None:
        """Record an evaluation at scaled ``x: [d]`` with objectives ``f: [n_obj]`` and constraints ``g: [n_con]``."""
        x = np.asarray(x, dtype=float).reshape(self.dim)
        f = np.asarray(f, dtype=float).reshape(self.n_obj)
        g = np.asarray(g, dtype=float).reshape(self.n_con)
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(g))):
            raise ValueError(f"SamoCobra.tell: non-finite objectives {f} or constraints {g} at x={x}")
        post_init = len(self.x) >= self.n_init
        if post_init:
            truth = np.concatenate([f, g / self.constraint_scale])[:, None, None]
            with np.errstate(over="ignore"):  # a diverging plog/log candidate: inf, never chosen
                self._sq_errors.append((self._all_predictions(x) - truth) ** 2)
            # EPS adapts after every infill evaluation (Tfeas = Tinfeas = 1 in the reference)
            feasible = g <= 0
            self.eps = np.where(feasible, self.eps * 0.9, np.minimum(self.eps * 1.1, self.eps_max))
        hv_before = self.hv_progress[-1] if self.hv_progress else 0.0
        self.x = np.vstack([self.x, x])
        self.f = np.vstack([self.f, f])
        self.g = np.vstack([self.g, g])
        self._bank = None
        hv = self.current_hv()
        self.hv_progress.append(hv)
        if post_init:
            self._improved.append(hv > hv_before)

    def choose_models(self) -> Tuple[List[Choice], List[Choice]]:
        """Per output, the kernel/transform with the lowest one-step-ahead RMSE (cubic, plain if no history)."""
        n_out = self.n_obj + self.n_con
        if not self._sq_errors:
            default = [Choice("cubic" if "cubic" in self.kernels else self.kernels[0], 0)] * n_out
            return default[: self.n_obj], default[self.n_obj :]
        err = np.stack(self._sq_errors)  # [t, outputs, kernels, 3]
        use = np.array(self._improved, bool)
        use[-4:] = True  # the last four iterations always count
        rmse = np.sqrt(err[use].mean(axis=0))  # [outputs, kernels, 3]
        choices = []
        for o in range(n_out):
            ki, t = np.unravel_index(np.argmin(rmse[o]), rmse[o].shape)
            choices.append(Choice(self.kernels[ki], int(t)))
        return choices[: self.n_obj], choices[self.n_obj :]

    def ask(self, pending: Optional[np.ndarray] = None, avoid: Optional[np.ndarray] = None) -> np.ndarray:
        """Next scaled point [d]. ``pending: [q, d]``: points being evaluated elsewhere (kept apart,
        their predictions counted as if observed); ``avoid: [r, d]``: points only to keep apart from
        (e.g. failed evaluations)."""
        n = len(self.x)
        pending = np.zeros((0, self.dim)) if pending is None else np.asarray(pending, float).reshape(-1, self.dim)
        if n + len(pending) < self.n_init:
            return self._design[n + len(pending)].copy()
        if n < self.n_init:
            # too few evaluations for the surrogates while others run: a random point away from them
            return self._rng.uniform(-1.0, 1.0, self.dim)
        bank, obj, con = self._fit()
        obj_choice, con_choice = self.choose_models()
        predictor = Predictor(bank, obj, con, obj_choice, con_choice)
        front = self.front()
        if len(pending):
            # "kriging believer": running trials count at their predicted values, so concurrent
            # workers are steered to different parts of the front
            believed = np.array([predictor(p)[0] for p in pending])
            believed_ok = np.array([np.all(predictor(p)[1] <= 0) for p in pending])
            both = np.vstack([front, believed[believed_ok]])
            front = both[pareto_mask(both)]
        problem = InfillProblem(
            predictor=predictor,
            front=front,
            ref_point=self.ref_point,
            eps=self.eps,
            extra_avoid=pending if avoid is None else np.vstack([pending, np.reshape(avoid, (-1, self.dim))]),
            criterion=self.infill,
        )
        return solve_infill(problem, self.budget, self._rng, stall_cpu_seconds=self.cobyla_stall_seconds,
                            workers=self.infill_workers)


@dataclass
class SamoCobraResult:
    """Evaluations in original units: x [n, d], f [n, n_obj], g [n, n_con]; hv_progress [n]."""

    x: np.ndarray
    f: np.ndarray
    g: np.ndarray
    hv_progress: np.ndarray

    @property
    def pareto_mask(self) -> np.ndarray:
        return pareto_mask(self.f, self.g)

    @property
    def pareto_front(self) -> np.ndarray:
        return self.f[self.pareto_mask]

    @property
    def pareto_set(self) -> np.ndarray:
        return self.x[self.pareto_mask]


Objective = Callable[[np.ndarray], Union[Sequence[float], Tuple[Sequence[float], Sequence[float]]]]


def minimize(
    fun: Objective,
    bounds: Sequence[Tuple[float, float]],
    n_obj: int,
    n_con: int,
    ref_point: Sequence[float],
    budget: int,
    seed: int = 0,
    callback: Optional[Callable[[SamoCobra], None]] = None,
    **options,
) -> SamoCobraResult:
    """Minimise ``fun`` over the box ``bounds`` with at most ``budget`` evaluations.

    ``fun(x)`` takes x [d] in original units and returns (objectives [n_obj], constraints [n_con])
    with ``g <= 0`` feasible, or just the objectives when ``n_con == 0``. ``options`` go to
    :class:`SamoCobra` (infill, init_design, n_init, eps_init, eps_max, kernels,
    cobyla_stall_seconds, con_scale, infill_workers).
    """
    lb, ub = np.asarray(bounds, dtype=float).T
    if np.any(ub <= lb):
        raise ValueError(f"minimize: every bound needs lower < upper, got {list(zip(lb, ub))}")
    opt = SamoCobra(len(lb), n_obj, n_con, ref_point, seed=seed, **options)
    if budget <= opt.n_init:
        raise ValueError(f"minimize: budget {budget} must exceed the initial design size {opt.n_init}")
    xs = []
    for _ in range(budget):
        xs_scaled = opt.ask()
        x = lb + (xs_scaled + 1.0) * 0.5 * (ub - lb)
        out = fun(x)
        f, g = (out, ()) if n_con == 0 else out
        opt.tell(xs_scaled, f, g)
        xs.append(x)
        if callback is not None:
            callback(opt)
    return SamoCobraResult(np.array(xs), opt.f.copy(), opt.g.copy(), np.array(opt.hv_progress))
