"""SAMO-COBRA's infill problem: where to spend the next expensive evaluation.

de Winter, van Stein, Bäck (EMO 2021), Sec. 3.3-3.5. With the self-adaptively chosen surrogates
``f_hat`` (objectives) and ``g_hat`` (constraints), solve in the scaled box [-1, 1]^d

    minimise   HV(P) - HV(P u {f_hat(x)})            if f_hat(x) is not dominated by P,
               -1 + prod_k (1 + f_hat_k(x) - p_k)    (largest over dominating p in P) otherwise
    subject to g_hat_j(x) + EPS_j^2 <= 0,  ||x - a|| > d * 1e-4 for every evaluated a,

where ``P`` is the current feasible Pareto front ("PHV"); the "SMS" variant first lowers every
prediction by its RBF uncertainty. The problem is solved by COBYLA (NLopt's, else SciPy's) from several random starts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import moocore
import numpy as np
from scipy.optimize import minimize as scipy_minimize

try:  # compiled COBYLA; SciPy's is a pure-Python port since 1.16
    import nlopt
except ImportError:  # pragma: no cover - exercised only without nlopt
    nlopt = None

try:  # moocore's C hypervolume without its Python argument checks (~2 us instead of ~20 us a call)
    from moocore._libmoocore import ffi as _hv_ffi
    from moocore._libmoocore import lib as _hv_lib
except ImportError:  # pragma: no cover - other moocore layouts fall back to moocore.hypervolume
    _hv_ffi = _hv_lib = None

from qallegro.hpo import cpu_guard
from qallegro.hpo.cpu_guard import heartbeat
from qallegro.hpo.rbf import PHI, OutputScaling, RBFModel, log_inverse, plog_inverse

_BIG = float(np.finfo(np.float64).max) / 1e10  # large but safe to add/compare in COBYLA


@dataclass
class Choice:
    """The surrogate used for one output: its kernel and the output transform it was fitted on
    (an index into :data:`qallegro.hpo.rbf.TRANSFORMS`: 0 plain, 1 plog, 2 log)."""

    kernel: str
    transform: int


class Predictor:
    """Fast single-point predictions of the chosen surrogates.

    ``bank`` maps kernel -> model fitted on the target columns laid out by
    :meth:`SamoCobra._targets`: [obj plain | obj plog | obj log | con plain | con plog].
    """

    def __init__(
        self,
        bank: Dict[str, RBFModel],
        obj_scaling: OutputScaling,
        con_scaling: Optional[OutputScaling],
        obj_choice: Sequence[Choice],
        con_choice: Sequence[Choice],
    ) -> None:
        self.n_obj, self.n_con = len(obj_choice), len(con_choice)
        self.obj_scaling, self.con_scaling = obj_scaling, con_scaling
        self.obj_choice, self.con_choice = list(obj_choice), list(con_choice)
        any_model = next(iter(bank.values()))
        self.centres = any_model.centres
        # group the chosen columns per kernel so one kernel evaluation serves all its outputs
        self._groups: List[Tuple[str, np.ndarray, np.ndarray, RBFModel]] = []
        outputs = [(c, i) for i, c in enumerate(self.obj_choice)]
        outputs += [(c, self.n_obj + i) for i, c in enumerate(self.con_choice)]
        for kernel in sorted({c.kernel for c, _ in outputs}):
            idx = np.array([o for c, o in outputs if c.kernel == kernel])
            cols = np.array([self._column(c, o) for c, o in outputs if c.kernel == kernel])
            model = bank[kernel]
            n = len(model.centres)
            coef = model.coef[:, cols]
            self._groups.append((PHI[kernel], idx, coef[:n], coef[n:], model))  # views: the same BLAS path as before

        # raw = inverse_t(z * scale + loc), per output, as vectors (no per-output Python work per call)
        scalings = [(obj_scaling, i) for i in range(self.n_obj)] + [(con_scaling, j) for j in range(self.n_con)]
        t = [c.transform for c in self.obj_choice + self.con_choice]
        self._scale = np.array([sc.scale[ti, col] for (sc, col), ti in zip(scalings, t)])
        self._loc = np.array([sc.loc[ti, col] for (sc, col), ti in zip(scalings, t)])
        self._plog = np.flatnonzero(np.equal(t, 1))  # outputs whose surrogate was fitted on plog targets
        self._log = np.flatnonzero(np.equal(t, 2))  # ... on log targets (objectives only)
        self._log_lo = np.array([obj_scaling.log_lo[i] for i in self._log])
        self._log_unit = np.array([obj_scaling.log_unit[i] for i in self._log])
        self._sms_scale = obj_scaling.scale[0]
        self._zero_u = np.zeros(self.n_obj)

    def _column(self, c: Choice, output: int) -> int:
        if output < self.n_obj:
            return output + self.n_obj * c.transform
        return self.obj_scaling.n_transforms * self.n_obj + (output - self.n_obj) + self.n_con * c.transform

    def __call__(
        self, x: np.ndarray, with_variance: bool = False
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """At x [d]: objectives [n_obj] (raw units), constraints [n_con] (in the units they were fitted
        in: scaled by SamoCobra.constraint_scale), objective uncertainty
        [n_obj] (zeros unless ``with_variance``) and the distance to the nearest centre."""
        # called ~10^5 times per infill search from COBYLA: as few NumPy calls as possible
        diff = self.centres - x
        r = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        r2 = r * r
        z = np.empty(self.n_obj + self.n_con)
        tail = np.concatenate(([1.0], x, x * x))
        # one product per kernel group: a single product over all outputs' tails would change
        # the BLAS blocking of the dot products and with it the last bits of the predictions
        for phi, idx, coef_phi, coef_tail, _ in self._groups:
            z[idx] = phi(r, r2) @ coef_phi + tail @ coef_tail
        v = z * self._scale + self._loc
        if len(self._plog):
            v[self._plog] = plog_inverse(v[self._plog])
        if len(self._log):
            v[self._log] = log_inverse(v[self._log], self._log_lo, self._log_unit)
        if with_variance:
            var = np.zeros(self.n_obj + self.n_con)
            for _, idx, _, _, model in self._groups:
                var[idx] = model.variance(x[None, :])[0]
            # SMS: the reference scales the RBF uncertainty by the plain standardisation scale
            u = var[: self.n_obj] * self._sms_scale
        else:
            u = self._zero_u
        return v[: self.n_obj], v[self.n_obj :], u, float(r.min())


@dataclass
class InfillProblem:
    """Everything the infill objective needs; see the module docstring for the formulas."""

    predictor: Predictor
    front: np.ndarray  # [p, n_obj] current feasible Pareto front (raw units), may be empty
    ref_point: np.ndarray  # [n_obj]
    eps: np.ndarray  # [n_con] safety margins
    extra_avoid: np.ndarray  # [q, d] pending points to keep away from besides the evaluated ones
    criterion: str = "PHV"
    _hv: float = field(init=False, default=0.0)
    _cache: Tuple[Optional[bytes], float, np.ndarray] = field(init=False, default=(None, 0.0, None))

    def __post_init__(self) -> None:
        if self.criterion not in ("PHV", "SMS"):
            raise ValueError(f"infill criterion must be 'PHV' or 'SMS', got {self.criterion!r}")
        self.ref_point = np.ascontiguousarray(self.ref_point, dtype=float)
        self._hv = hypervolume(self.front, self.ref_point)
        self.min_distance = self.predictor.centres.shape[1] * 1e-4
        # the front plus one slot for the candidate; its hypervolume is recomputed in place
        self._stack = np.vstack([self.front.reshape(-1, len(self.ref_point)), self.ref_point[None, :]])
        self._stack_hv = _InPlaceHypervolume(self._stack, self.ref_point)
        self._span = np.maximum(np.abs(self.ref_point), 1e-12)
        self._sms = self.criterion == "SMS"
        self._n_cons = 1 + self.predictor.n_con
        self._eps2 = np.asarray(self.eps, float) ** 2

    def _evaluate(self, x: np.ndarray) -> Tuple[float, np.ndarray]:
        """(objective, constraints) at x, computed once per x: COBYLA asks for both at each point."""
        key = x.tobytes()
        if self._cache[0] != key:
            heartbeat()  # progress: keeps cpu_guard from taking this COBYLA start for a stall
            if not np.isfinite(x).all():
                self._cache = (key, _BIG, np.full(self._n_cons, -_BIG))
            else:
                f, g, u, r_min = self.predictor(x, with_variance=self._sms)
                if self._sms:
                    f = f - np.abs(u)
                if len(self.extra_avoid):
                    extra = self.extra_avoid - x
                    r_min = min(r_min, float(np.sqrt(np.einsum("ij,ij->i", extra, extra)).min()))
                self._cache = (key, self._objective(f), self._constraints(g, r_min))
        return self._cache[1], self._cache[2]

    def _objective(self, f: np.ndarray) -> float:
        if not np.isfinite(f).all():
            return _BIG
        if len(self.front):
            dominated = (self.front <= f).all(axis=1)
            if dominated.any():
                # how deep inside the dominated region f lies: pushes COBYLA back to the front
                return float(np.max(np.prod(1.0 + (f - self.front[dominated]), axis=1) - 1.0))
        self._stack[-1] = f
        gain = self._stack_hv() - self._hv
        if gain > 0:
            return -gain
        # not dominated but outside the reference box: the paper's objective is flat (0) here; a
        # small distance-to-box term gives COBYLA a direction (matters when the box is tight)
        return float(np.sum(np.maximum(f - self.ref_point, 0.0) / self._span)) * 1e-6

    def _constraints(self, g: np.ndarray, r_min: float) -> np.ndarray:
        h = (r_min**-2 if r_min > 0 else _BIG) if r_min <= self.min_distance else 0.0
        if self.predictor.n_con == 0:
            return np.array([-h])
        if not np.isfinite(g).all():
            return np.full(1 + len(g), -_BIG)
        return np.concatenate(([-h], -(g + self._eps2)))

    def objective(self, x: np.ndarray) -> float:
        """The infill objective at x [d] (to minimise)."""
        return self._evaluate(x)[0]

    def constraints(self, x: np.ndarray) -> np.ndarray:
        """COBYLA convention: every entry >= 0 when feasible."""
        return self._evaluate(x)[1]


class _InPlaceHypervolume:
    """Hypervolume of the current contents of ``points: [p, m]`` (C-contiguous float64, modified
    in place between calls) w.r.t. ``ref: [m]``: moocore's C routine on buffers wrapped once, the
    same arithmetic as :func:`hypervolume` without its per-call argument checks."""

    def __init__(self, points: np.ndarray, ref: np.ndarray) -> None:
        if not (points.flags.c_contiguous and points.dtype == np.float64):
            raise ValueError("_InPlaceHypervolume needs a C-contiguous float64 array of points")
        self.points, self.ref = points, np.ascontiguousarray(ref, dtype=float)
        m = points.shape[1]
        self._direct = _hv_lib is not None and 1 <= m <= _hv_lib.MOOCORE_HV_DIMENSION_MAX
        if self._direct:
            self._args = (
                _hv_ffi.from_buffer("double []", points),
                _hv_ffi.cast("size_t", points.shape[0]),
                _hv_ffi.cast("uint_fast8_t", m),
                _hv_ffi.from_buffer("double []", self.ref),
            )

    def __call__(self) -> float:
        if not self._direct:
            return hypervolume(self.points, self.ref)
        hv = _hv_lib.fpli_hv(*self._args)
        if hv < 0:
            raise MemoryError("moocore hypervolume: memory allocation failed")
        return float(hv)


def hypervolume(front: np.ndarray, ref_point: np.ndarray) -> float:
    """Hypervolume (minimisation) of ``front: [p, m]`` w.r.t. ``ref_point: [m]`` via moocore."""
    if len(front) == 0:
        return 0.0
    return float(moocore.hypervolume(np.asarray(front, dtype=float), ref=np.asarray(ref_point, dtype=float)))


@dataclass
class StartBudget:
    """Self-adapting COBYLA budget: numbers of starts and of iterations per start (paper Sec. 3.5).

    If every start converges, iterations shrink by 10% (floor 20 (d + m + k)) and starts grow by 10%
    (cap 10 (d + m + k)); otherwise iterations grow by 10% (cap 1000 (d + m + k)) and starts shrink
    (floor 2 (d + m + k)), where d, m, k are the numbers of variables, objectives and constraints.
    """

    size: int  # d + m + k
    n_starts: int = 0
    max_iter: int = 0

    def __post_init__(self) -> None:
        self.n_starts = self.n_starts or 2 * self.size
        self.max_iter = self.max_iter or 50 * self.size

    def update(self, all_converged: bool) -> None:
        if all_converged:
            self.max_iter = max(int(self.max_iter * 0.9), 20 * self.size)
            self.n_starts = min(int(self.n_starts * 1.1), 10 * self.size)
        else:
            self.max_iter = min(int(self.max_iter * 1.1), 1000 * self.size)
            self.n_starts = max(int(self.n_starts * 0.9), 2 * self.size)


def _cobyla_nlopt(problem: InfillProblem, x0: np.ndarray, max_iter: int, tol: float) -> Tuple[np.ndarray, bool]:
    """One COBYLA run with NLopt's compiled implementation; returns (x, converged)."""
    d = len(x0)
    opt = nlopt.opt(nlopt.LN_COBYLA, d)
    opt.set_lower_bounds(-np.ones(d))
    opt.set_upper_bounds(np.ones(d))
    evaluate = problem._evaluate
    opt.set_min_objective(lambda x, grad: evaluate(x)[0])
    n_con = len(problem.constraints(x0))

    def fc(result: np.ndarray, x: np.ndarray, grad: np.ndarray) -> None:
        np.negative(evaluate(x)[1], out=result)  # NLopt wants c(x) <= 0

    opt.add_inequality_mconstraint(fc, np.zeros(n_con))
    opt.set_maxeval(max_iter)
    opt.set_xtol_abs(tol)
    opt.set_initial_step(1.0)  # rhobeg = 1 as SciPy's COBYLA (the reference): explores the box
    try:
        x = opt.optimize(x0)
        converged = opt.last_optimize_result() not in (nlopt.MAXEVAL_REACHED, nlopt.MAXTIME_REACHED)
    except (nlopt.RoundoffLimited, ValueError, RuntimeError):
        x, converged = x0, False
    return np.clip(x, -1.0, 1.0), converged


def _cobyla_scipy(problem: InfillProblem, x0: np.ndarray, max_iter: int, tol: float) -> Tuple[np.ndarray, bool]:
    """Fallback: SciPy's COBYLA (pure Python since SciPy 1.16, roughly 20x slower than NLopt)."""
    res = scipy_minimize(
        problem.objective,
        x0,
        method="COBYLA",
        constraints=[{"type": "ineq", "fun": problem.constraints}],
        bounds=[(-1.0, 1.0)] * len(x0),
        options={"maxiter": max_iter, "tol": tol},
    )
    return np.clip(res.x, -1.0, 1.0), bool(res.success)


def _start(problem: InfillProblem, x0: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """One COBYLA start -> record [x (d), success, violation, objective] (float64)."""
    run = _cobyla_nlopt if nlopt is not None else _cobyla_scipy
    x, converged = run(problem, x0, max_iter, tol)
    violation = float(np.max(np.maximum(-problem.constraints(x), 0.0)))
    # feasibility to SciPy COBYLA's default tolerance (catol = 2e-4), as the reference's `success`
    success = converged and violation <= 2e-4
    return np.concatenate([x, [float(success), violation, problem.objective(x)]])


def _run_starts(
    problem: InfillProblem,
    starts: np.ndarray,
    max_iter: int,
    tol: float,
    stall_cpu_seconds: Optional[float],
    workers: int = 1,
) -> List[np.ndarray]:
    """Records of all starts; with ``stall_cpu_seconds``, NLopt runs in forked children (``workers`` at
    once, each on a contiguous share of the starts: the records are the same) and a start
    that goes that much CPU time without evaluating the problem (stalled inside NLopt, issue #370,
    see :mod:`qallegro.hpo.cpu_guard`) counts as a failed start at its initial point, as NLopt's
    own failures (round-off limited) do."""
    if stall_cpu_seconds is None or nlopt is None or not cpu_guard.available():
        return [_start(problem, x0, max_iter, tol) for x0 in starts]
    d = starts.shape[1]
    records: List[np.ndarray] = []
    while len(records) < len(starts):
        if not cpu_guard.available():  # switched off after a blocked child
            records += [_start(problem, x0, max_iter, tol) for x0 in starts[len(records) :]]
            break
        done, reason = cpu_guard.map_with_cpu_limit(
            lambda x0: _start(problem, x0, max_iter, tol), starts[len(records) :], d + 3, stall_cpu_seconds, workers
        )
        records += done
        if reason is None:
            break
        x0 = starts[len(records)]
        if reason in ("error", "blocked"):  # rerun in-process: the exception surfaces here / no fork
            records.append(_start(problem, x0, max_iter, tol))
            continue
        warnings.warn(
            f"solve_infill: NLopt COBYLA ran ~{stall_cpu_seconds:g} s of CPU without evaluating the problem "
            f"(stalled inside its subproblem solver); that start counts as failed at x0={x0.round(4).tolist()}",
            RuntimeWarning,
            stacklevel=3,
        )
        violation = float(np.max(np.maximum(-problem.constraints(x0), 0.0)))
        records.append(np.concatenate([x0, [0.0, violation, problem.objective(x0)]]))
    return records


def solve_infill(
    problem: InfillProblem,
    budget: StartBudget,
    rng: np.random.Generator,
    tol: float = 1e-6,
    stall_cpu_seconds: Optional[float] = 2.0,
    workers: int = 1,
) -> np.ndarray:
    """Multi-start COBYLA on ``problem``; returns the best point [d] in [-1, 1]^d and adapts ``budget``.

    A start "succeeds" when COBYLA converges (not stopped by the iteration cap) at a point that
    satisfies the infill constraints; the best successful start wins, else the least violating one.
    ``stall_cpu_seconds``: CPU time NLopt may spend between two evaluations of the problem before
    its start counts as stalled (None: no guard, run in-process); normally that is microseconds.
    """
    d = problem.predictor.centres.shape[1]
    starts = rng.uniform(-1.0, 1.0, size=(budget.n_starts, d))
    records = _run_starts(problem, starts, budget.max_iter, tol, stall_cpu_seconds, workers)
    results = [(r[:d], bool(r[d]), float(r[d + 1]), float(r[d + 2])) for r in records]
    ok = [r[1] for r in results]
    budget.update(all(ok))
    if any(ok):
        best = min((r for r in results if r[1]), key=lambda r: r[3])
    else:
        best = min(results, key=lambda r: (r[2], r[3]))
    return best[0].copy()
