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

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import moocore
import numpy as np
from scipy.optimize import minimize as scipy_minimize

try:  # compiled COBYLA; SciPy's is a pure-Python port since 1.16
    import nlopt
except ImportError:  # pragma: no cover - exercised only without nlopt
    nlopt = None

from qallegro.hpo.rbf import OutputScaling, RBFModel, kernel_values, plog_inverse

_BIG = float(np.finfo(np.float64).max) / 1e10  # large but safe to add/compare in COBYLA


@dataclass
class Choice:
    """The surrogate used for one output: its kernel and whether it was fitted on plog targets."""

    kernel: str
    use_plog: bool


class Predictor:
    """Fast single-point predictions of the chosen surrogates.

    ``bank`` maps kernel -> model fitted on the target columns laid out by
    :meth:`SamoCobra._targets`: [obj plain | obj plog | con plain | con plog].
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
            self._groups.append((kernel, idx, model.coef[:, cols], model))

        # raw = plog^-1?(z * scale + loc), per output, as vectors (no per-output Python work per call)
        t = np.array([int(c.use_plog) for c in self.obj_choice + self.con_choice], dtype=int)
        scales = [obj_scaling.scale] + ([con_scaling.scale] if self.n_con else [])
        locs = [obj_scaling.loc] + ([con_scaling.loc] if self.n_con else [])
        scale, loc = np.concatenate(scales, axis=1), np.concatenate(locs, axis=1)
        cols = np.arange(self.n_obj + self.n_con)
        self._scale, self._loc, self._plog = scale[t, cols], loc[t, cols], t.astype(bool)
        self._sms_scale = obj_scaling.scale[0]

    def _column(self, c: Choice, output: int) -> int:
        if output < self.n_obj:
            return output + (self.n_obj if c.use_plog else 0)
        j = output - self.n_obj
        return 2 * self.n_obj + j + (self.n_con if c.use_plog else 0)

    def __call__(
        self, x: np.ndarray, with_variance: bool = False
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """At x [d]: objectives [n_obj], constraints [n_con] (raw units), objective uncertainty
        [n_obj] (zeros unless ``with_variance``) and the distance to the nearest centre."""
        diff = self.centres - x
        r = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        n = len(r)
        z = np.empty(self.n_obj + self.n_con)
        var = np.zeros(self.n_obj + self.n_con)
        tail = np.concatenate(([1.0], x, x * x))
        for kernel, idx, coef, model in self._groups:
            z[idx] = kernel_values(kernel, r) @ coef[:n] + tail @ coef[n:]
            if with_variance:
                var[idx] = model.variance(x[None, :])[0]
        v = z * self._scale + self._loc
        v[self._plog] = plog_inverse(v[self._plog])
        # SMS: the reference scales the RBF uncertainty by the plain standardisation scale
        u = var[: self.n_obj] * self._sms_scale
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
    _cache: Tuple[Optional[bytes], Tuple[np.ndarray, np.ndarray, float]] = field(init=False, default=(None, None))

    def __post_init__(self) -> None:
        if self.criterion not in ("PHV", "SMS"):
            raise ValueError(f"infill criterion must be 'PHV' or 'SMS', got {self.criterion!r}")
        self._hv = hypervolume(self.front, self.ref_point)
        self.min_distance = self.predictor.centres.shape[1] * 1e-4
        self._stack = np.vstack([self.front.reshape(-1, len(self.ref_point)), self.ref_point[None, :]])

    def _predict(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float]:
        key = x.tobytes()  # COBYLA asks for objective and constraints at the same x: predict once
        if self._cache[0] != key:
            f, g, u, r_min = self.predictor(x, with_variance=self.criterion == "SMS")
            if len(self.extra_avoid):
                extra = self.extra_avoid - x
                r_min = min(r_min, float(np.sqrt(np.einsum("ij,ij->i", extra, extra)).min()))
            self._cache = (key, (f - np.abs(u), g, r_min))
        return self._cache[1]  # type: ignore[return-value]

    def objective(self, x: np.ndarray) -> float:
        if not np.isfinite(x).all():
            return _BIG
        f, _, _ = self._predict(x)
        if not np.isfinite(f).all():
            return _BIG
        if len(self.front):
            dominated = (self.front <= f).all(axis=1)
            if dominated.any():
                # how deep inside the dominated region f lies: pushes COBYLA back to the front
                return float(np.max(np.prod(1.0 + (f - self.front[dominated]), axis=1) - 1.0))
        self._stack[-1] = f
        gain = hypervolume(self._stack, self.ref_point) - self._hv
        if gain > 0:
            return -gain
        # not dominated but outside the reference box: the paper's objective is flat (0) here; a
        # small distance-to-box term gives COBYLA a direction (matters when the box is tight)
        span = np.maximum(np.abs(self.ref_point), 1e-12)
        return float(np.sum(np.maximum(f - self.ref_point, 0.0) / span)) * 1e-6

    def constraints(self, x: np.ndarray) -> np.ndarray:
        """COBYLA convention: every entry >= 0 when feasible."""
        if not np.isfinite(x).all():
            return np.full(1 + self.predictor.n_con, -_BIG)
        _, g, r_min = self._predict(x)
        h = (r_min**-2 if r_min > 0 else _BIG) if r_min <= self.min_distance else 0.0
        if self.predictor.n_con == 0:
            return np.array([-h])
        if not np.isfinite(g).all():
            return np.full(1 + len(g), -_BIG)
        return np.concatenate(([-h], -(g + self.eps**2)))


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
    opt.set_min_objective(lambda x, grad: float(problem.objective(x)))
    n_con = len(problem.constraints(x0))

    def fc(result: np.ndarray, x: np.ndarray, grad: np.ndarray) -> None:
        result[:] = -problem.constraints(x)  # NLopt wants c(x) <= 0

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


def solve_infill(
    problem: InfillProblem, budget: StartBudget, rng: np.random.Generator, tol: float = 1e-6
) -> np.ndarray:
    """Multi-start COBYLA on ``problem``; returns the best point [d] in [-1, 1]^d and adapts ``budget``.

    A start "succeeds" when COBYLA converges (not stopped by the iteration cap) at a point that
    satisfies the infill constraints; the best successful start wins, else the least violating one.
    """
    d = problem.predictor.centres.shape[1]
    run = _cobyla_nlopt if nlopt is not None else _cobyla_scipy
    results = []
    for x0 in rng.uniform(-1.0, 1.0, size=(budget.n_starts, d)):
        x, converged = run(problem, x0, budget.max_iter, tol)
        violation = float(np.max(np.maximum(-problem.constraints(x), 0.0)))
        # feasibility to SciPy COBYLA's default tolerance (catol = 2e-4), as the reference's `success`
        results.append((x, converged and violation <= 2e-4, violation, problem.objective(x)))
    ok = [r[1] for r in results]
    budget.update(all(ok))
    if any(ok):
        best = min((r for r in results if r[1]), key=lambda r: r[3])
    else:
        best = min(results, key=lambda r: (r[2], r[3]))
    return best[0]
