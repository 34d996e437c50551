"""Constrained bi-objective test problems with known Pareto fronts (all minimised, ``g <= 0`` feasible).

Definitions as in Deb, "Multi-Objective Optimization Using Evolutionary Algorithms" (2001) and
Deb, Pratap, Meyarivan (EMO 2001, CTP problems); bounds and reference points as in de Winter et al.
(EMO 2021, the SAMO-COBRA paper). Each :class:`Problem` carries a dense sample of its Pareto front
(``true_front()``), whose hypervolume is the 100% mark of the validation table: analytic where the
front is known in closed form, else (the engineering design problems TBTD, WB, DBD, SRD) computed by
the epsilon-constraint method with SLSQP from many starts (:func:`epsilon_constraint_set`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import moocore
import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Problem:
    """name; lower/upper bounds [d]; n_con; ref_point [2] (the SAMO-COBRA paper's);
    evaluate(x [d]) -> (f [2], g [n_con])."""

    name: str
    lower: Tuple[float, ...]
    upper: Tuple[float, ...]
    n_con: int
    ref_point: Tuple[float, float]
    evaluate: Callable[[Array], Tuple[Array, Array]]  # x [..., d] -> f [..., 2], g [..., n_con]
    pareto_set: Callable[[int], Array]  # n -> points [~n, d] covering the Pareto set
    # the limits L of constraints written g = value - L (their natural units), where meaningful
    con_limits: Optional[Tuple[float, ...]] = None

    @property
    def dim(self) -> int:
        return len(self.lower)

    @property
    def bounds(self) -> list:
        return list(zip(self.lower, self.upper))

    def __call__(self, x: Array) -> Tuple[Array, Array]:
        return self.evaluate(np.asarray(x, dtype=float))

    def true_front(self, n: int = 20000) -> Array:
        """Feasible non-dominated objective vectors [p, 2] of a dense sample of the Pareto set."""
        f, g = self.evaluate(self.pareto_set(n))  # evaluate is vectorised over leading axes
        f = f[np.all(g <= 1e-9, axis=1)]
        return f[moocore.is_nondominated(f, keep_weakly=False)]

    def true_hypervolume(self, n: int = 20000, ref_point: Optional[Sequence[float]] = None) -> float:
        """Hypervolume of :meth:`true_front` w.r.t. ``ref_point`` (default: the paper's)."""
        ref = np.asarray(self.ref_point if ref_point is None else ref_point, float)
        return float(moocore.hypervolume(self.true_front(n), ref=ref))

    def tight_ref_point(self) -> Tuple[float, ...]:
        """A reference point just outside the true front: its nadir plus 10% of each nadir value's
        magnitude (1.1 x nadir for positive objectives), so the whole front counts and little else."""
        nadir = self.true_front().max(axis=0)
        return tuple(float(v) for v in nadir + 0.1 * np.abs(nadir))


def _bnh(x: Array) -> Tuple[Array, Array]:
    x1, x2 = x[..., 0], x[..., 1]
    f = np.stack([4 * x1**2 + 4 * x2**2, (x1 - 5) ** 2 + (x2 - 5) ** 2], axis=-1)
    g = np.stack([(x1 - 5) ** 2 + x2**2 - 25, 7.7 - (x1 - 8) ** 2 - (x2 + 3) ** 2], axis=-1)
    return f, g


def _bnh_set(n: int) -> Array:
    # x1 = x2 in [0, 3], then x2 = 3 with x1 in [3, 5]
    t = np.linspace(0, 3, n // 2)
    s = np.linspace(3, 5, n - n // 2)
    return np.vstack([np.column_stack([t, t]), np.column_stack([s, np.full_like(s, 3.0)])])


def _srn(x: Array) -> Tuple[Array, Array]:
    x1, x2 = x[..., 0], x[..., 1]
    f = np.stack([2 + (x1 - 2) ** 2 + (x2 - 1) ** 2, 9 * x1 - (x2 - 1) ** 2], axis=-1)
    g = np.stack([x1**2 + x2**2 - 225, x1 - 3 * x2 + 10], axis=-1)
    return f, g


def _srn_set(n: int) -> Array:
    # The textbook set "x1 = -2.5" is only approximate (random samples beat it by 2.6% in HV), so the
    # front is taken from a dense grid over the region holding it (x1 <= 2, x2 >= 1) of 100 n points.
    m = max(int(np.sqrt(n)) * 10, 200)
    a, b = np.meshgrid(np.linspace(-15.0, 2.0, m), np.linspace(1.0, 15.0, m))
    return np.column_stack([a.ravel(), b.ravel()])


def _tnk(x: Array) -> Tuple[Array, Array]:
    x1, x2 = x[..., 0], x[..., 1]
    angle = np.arctan2(x1, x2)  # atan(x1 / x2), safe at x2 = 0
    g1 = -(x1**2) - x2**2 + 1 + 0.1 * np.cos(16 * angle)
    g2 = (x1 - 0.5) ** 2 + (x2 - 0.5) ** 2 - 0.5
    return np.stack([x1, x2], axis=-1), np.stack([g1, g2], axis=-1)


def _tnk_set(n: int) -> Array:
    # the front lies on the wavy boundary g1 = 0: r^2 = 1 + 0.1 cos(16 phi), phi = atan(x1 / x2)
    phi = np.linspace(1e-6, np.pi / 2 - 1e-6, n)
    r = np.sqrt(1 + 0.1 * np.cos(16 * phi)) * (1 + 1e-12)
    return np.column_stack([r * np.sin(phi), r * np.cos(phi)])


def _ctp1(x: Array) -> Tuple[Array, Array]:
    f1 = x[..., 0]
    gx = 1 + x[..., 1]
    f2 = gx * np.exp(-f1 / gx)
    # Deb et al.'s CTP1 with two constraints f2 - a_j exp(-b_j f1) >= 0, normalised as in SAMO-COBRA
    g = np.stack([1 - f2 / (0.858 * np.exp(-0.541 * f1)), 1 - f2 / (0.728 * np.exp(-0.295 * f1))], axis=-1)
    return np.stack([f1, f2], axis=-1), g


def _ctp1_set(n: int) -> Array:
    # For fixed f1 = x1, f2 = (1 + x2) exp(-x1 / (1 + x2)) grows with x2, so the front is the least
    # feasible f2: max(exp(-f1), a_j exp(-b_j f1)); solve (1 + x2) exp(-x1/(1 + x2)) = that bound.
    x1 = np.linspace(0, 1, n)
    bound = np.maximum.reduce([np.exp(-x1), 0.858 * np.exp(-0.541 * x1), 0.728 * np.exp(-0.295 * x1)])
    lo, hi = np.zeros(n), np.ones(n)
    for _ in range(60):  # bisection on x2 in [0, 1]
        mid = 0.5 * (lo + hi)
        too_low = (1 + mid) * np.exp(-x1 / (1 + mid)) < bound
        lo, hi = np.where(too_low, mid, lo), np.where(too_low, hi, mid)
    return np.column_stack([x1, hi])


def _osy(x: Array) -> Tuple[Array, Array]:
    x1, x2, x3, x4, x5, x6 = np.moveaxis(x, -1, 0)
    f1 = -(25 * (x1 - 2) ** 2 + (x2 - 2) ** 2 + (x3 - 1) ** 2 + (x4 - 4) ** 2 + (x5 - 1) ** 2)
    f2 = np.sum(x * x, axis=-1)
    g = np.stack(
        [
            -(x1 + x2 - 2),
            -(6 - x1 - x2),
            -(2 - x2 + x1),
            -(2 - x1 + 3 * x2),
            -(4 - (x3 - 3) ** 2 - x4),
            -((x5 - 3) ** 2 + x6 - 4),
        ],
        axis=-1,
    )
    return np.stack([f1, f2], axis=-1), g


def _osy_set(n: int) -> Array:
    # the five regions of Deb (2001), Table 9.4 (x4 = x6 = 0 throughout)
    m = n // 5
    t = np.linspace(0, 1, m)
    rows = []
    x3 = 1 + 4 * t  # AB and BC: x1 = 5, x2 = 1, x3 in [1, 5], x5 = 5 or 1
    rows.append(np.column_stack([np.full(m, 5.0), np.ones(m), x3, np.zeros(m), np.full(m, 5.0), np.zeros(m)]))
    rows.append(np.column_stack([np.full(m, 5.0), np.ones(m), x3, np.zeros(m), np.ones(m), np.zeros(m)]))
    x1 = 4.056 + (5 - 4.056) * t  # CD: x2 = (x1 - 2) / 3, x3 = 1, x5 = 1
    rows.append(np.column_stack([x1, (x1 - 2) / 3, np.ones(m), np.zeros(m), np.ones(m), np.zeros(m)]))
    x3 = 1 + 2.732 * t  # DE: x1 = 0, x2 = 2, x3 in [1, 3.732], x5 = 1
    rows.append(np.column_stack([np.zeros(m), np.full(m, 2.0), x3, np.zeros(m), np.ones(m), np.zeros(m)]))
    x1 = t  # EF: x1 in [0, 1], x2 = 2 - x1, x3 = 1, x5 = 1
    rows.append(np.column_stack([x1, 2 - x1, np.ones(m), np.zeros(m), np.ones(m), np.zeros(m)]))
    return np.vstack(rows)


PROBLEMS: Dict[str, Problem] = {
    "BNH": Problem("BNH", (0.0, 0.0), (5.0, 3.0), 2, (140.0, 50.0), _bnh, _bnh_set),
    "SRN": Problem("SRN", (-20.0, -20.0), (20.0, 20.0), 2, (301.0, 72.0), _srn, _srn_set),
    "TNK": Problem("TNK", (1e-5, 1e-5), (np.pi, np.pi), 2, (3.0, 3.0), _tnk, _tnk_set),
    "OSY": Problem(
        "OSY", (0.0, 0.0, 1.0, 0.0, 1.0, 0.0), (10.0, 10.0, 5.0, 6.0, 5.0, 10.0), 6, (0.0, 386.0), _osy, _osy_set
    ),
    "CTP1": Problem("CTP1", (0.0, 0.0), (1.0, 1.0), 2, (1.0, 2.0), _ctp1, _ctp1_set),
}


def _zdt1(x: Array) -> Tuple[Array, Array]:
    f1 = x[..., 0]
    gx = 1 + 9 * np.sum(x[..., 1:], axis=-1) / (x.shape[-1] - 1)
    f2 = gx * (1 - np.sqrt(f1 / gx))
    return np.stack([f1, f2], axis=-1), np.zeros(x.shape[:-1] + (0,))


def _zdt1_set(n: int) -> Array:
    # Zitzler, Deb, Thiele (2000): the front is x2 = ... = xd = 0, f2 = 1 - sqrt(f1)
    out = np.zeros((n, 6))
    out[:, 0] = np.linspace(0, 1, n)
    return out


# ---- engineering design problems (fronts by the epsilon-constraint method) ----------------------


def _tbtd(x: Array) -> Tuple[Array, Array]:
    # two-bar truss (Deb 2001, Sec. 9.x; Coello): bar areas x1, x2 (m^2), height y (m); the stress
    # objective is the larger of the two bars' stresses, each bar's stress and the volume constrained
    x1, x2, y = x[..., 0], x[..., 1], x[..., 2]
    volume = x1 * np.sqrt(16 + y**2) + x2 * np.sqrt(1 + y**2)
    s_ac = 20 * np.sqrt(16 + y**2) / (y * x1)
    s_bc = 80 * np.sqrt(1 + y**2) / (y * x2)
    f = np.stack([volume, np.maximum(s_ac, s_bc)], axis=-1)
    return f, np.stack([volume - 0.1, s_ac - 1e5, s_bc - 1e5], axis=-1)


def _wb(x: Array) -> Tuple[Array, Array]:
    # welded beam (Deb & Sundar 2006; Ray & Liew 2002): weld thickness h, weld length l, bar height t,
    # bar thickness b (inches); cost and end deflection; shear and bending stress (psi), h <= b,
    # buckling load >= 6000 lb
    h, l, t, b = np.moveaxis(x, -1, 0)
    cost = 1.10471 * h**2 * l + 0.04811 * t * b * (14.0 + l)
    deflection = 2.1952 / (t**3 * b)
    r = np.sqrt(0.25 * (l**2 + (h + t) ** 2))
    tau1 = 6000.0 / (np.sqrt(2) * h * l)
    tau2 = 6000.0 * (14.0 + 0.5 * l) * r / (2 * 0.707 * h * l * (l**2 / 12.0 + 0.25 * (h + t) ** 2))
    tau = np.sqrt(tau1**2 + tau2**2 + l * tau1 * tau2 / r)
    sigma = 504000.0 / (t**2 * b)
    buckling = 64746.022 * (1 - 0.0282346 * t) * t * b**3
    g = np.stack([tau - 13600.0, sigma - 30000.0, h - b, 6000.0 - buckling], axis=-1)
    return np.stack([cost, deflection], axis=-1), g


def _dbd(x: Array) -> Tuple[Array, Array]:
    # disc brake (Ray & Liew 2002; Osyczka & Kundu 1995): inner and outer radius (mm), engaging force
    # (N), number of friction surfaces; brake mass and stopping time
    x1, x2, x3, x4 = np.moveaxis(x, -1, 0)
    d2, d3 = x2**2 - x1**2, x2**3 - x1**3
    f = np.stack([4.9e-5 * d2 * (x4 - 1), 9.82e6 * d2 / (x3 * x4 * d3)], axis=-1)
    g = np.stack(
        [
            20 - (x2 - x1),
            2.5 * (x4 + 1) - 30,
            x3 / (3.14 * d2) - 0.4,
            2.22e-3 * x3 * d3 / d2**2 - 1,
            900 - 2.66e-2 * x3 * x4 * d3 / d2,
        ],
        axis=-1,
    )
    return f, g


def _srd(x: Array) -> Tuple[Array, Array]:
    # speed reducer (Golinski; bi-objective form of Kurpati et al. 2002 / Deb 2001): gearbox weight and
    # shaft-1 stress. The last two constraints are the shafts' stresses as published,
    # sqrt((745 x/(x2 x3))^2 + c)/(0.1 d^3); the SAMO-COBRA reference code misplaces a bracket there
    # (sqrt(a^2) + 1.691^7) and so optimises a looser problem.
    x1, x2, x3, x4, x5, x6, x7 = np.moveaxis(x, -1, 0)
    weight = (
        0.7854 * x1 * x2**2 * (10 * x3**2 / 3 + 14.933 * x3 - 43.0934)
        - 1.508 * x1 * (x6**2 + x7**2)
        + 7.477 * (x6**3 + x7**3)
        + 0.7854 * (x4 * x6**2 + x5 * x7**2)
    )
    stress1 = np.sqrt((745 * x4 / (x2 * x3)) ** 2 + 1.69e7) / (0.1 * x6**3)
    stress2 = np.sqrt((745 * x5 / (x2 * x3)) ** 2 + 1.575e8) / (0.1 * x7**3)
    g = np.stack(
        [
            1 / (x1 * x2**2 * x3) - 1 / 27,
            1 / (x1 * x2**2 * x3**2) - 1 / 397.5,
            x4**3 / (x2 * x3 * x6**4) - 1 / 1.93,
            x5**3 / (x2 * x3 * x7**4) - 1 / 1.93,
            x2 * x3 - 40,
            x1 / x2 - 12,
            5 - x1 / x2,
            1.9 - x4 + 1.5 * x6,
            1.9 - x5 + 1.1 * x7,
            stress1 - 1300,
            stress2 - 1100,
        ],
        axis=-1,
    )
    return np.stack([weight, stress1], axis=-1), g


def epsilon_constraint_set(
    evaluate: Callable[[Array], Tuple[Array, Array]],
    lower: Sequence[float],
    upper: Sequence[float],
    con_unit: Sequence[float],
    n_levels: int = 120,
    n_starts: int = 4,
    seed: int = 0,
) -> Array:
    """Points [p, d] on the Pareto set of a constrained bi-objective problem: for levels e between the
    two extreme points, SLSQP minimises f1 subject to f2 <= e (and, for as many levels, f2 subject to
    f1 <= e) and g <= 0, from the previous level's solution and random feasible starts; the best
    feasible result of each level is kept. Variables are scaled to [0, 1], constraints divided by
    ``con_unit`` and objectives by their feasible range, for SLSQP's sake."""
    from scipy.optimize import minimize as scipy_minimize

    lb, ub = np.asarray(lower, float), np.asarray(upper, float)
    unit = np.asarray(con_unit, float)
    d = len(lb)
    rng = np.random.default_rng(seed)
    sample = rng.random((50_000, d))
    f_s, g_s = evaluate(lb + sample * (ub - lb))
    ok = np.all(g_s <= 0, axis=1)
    sample, f_s = sample[ok], f_s[ok]
    span = f_s.max(axis=0) - f_s.min(axis=0)

    def fg(u: Array) -> Tuple[Array, Array]:
        f, g = evaluate(lb + np.clip(u, 0, 1) * (ub - lb))
        return f / span, g / unit

    def solve(k: int, cap: Optional[float], starts: Array) -> Optional[Array]:
        cons = [{"type": "ineq", "fun": lambda u: -fg(u)[1]}]
        if cap is not None:
            cons.append({"type": "ineq", "fun": lambda u: cap - fg(u)[0][1 - k]})
        best, best_val = None, np.inf
        for u0 in starts:
            with np.errstate(all="ignore"):
                res = scipy_minimize(
                    lambda u: fg(u)[0][k], u0, method="SLSQP", bounds=[(0.0, 1.0)] * d,
                    constraints=cons, options={"maxiter": 300, "ftol": 1e-12},
                )
            u = np.clip(res.x, 0, 1)
            f, g = fg(u)
            feasible = np.all(g <= 1e-10) and (cap is None or f[1 - k] <= cap + 1e-10)
            if feasible and np.isfinite(f[k]) and f[k] < best_val:
                best, best_val = u, f[k]
        return best

    def starts_near(k: int, cap: Optional[float], warm: Optional[Array]) -> Array:
        fs = f_s / span
        pool = sample if cap is None else sample[fs[:, 1 - k] <= cap]
        pool_f = fs if cap is None else fs[fs[:, 1 - k] <= cap]
        picks = list(pool[np.argsort(pool_f[:, k])[: n_starts - 1]]) if len(pool) else []
        picks += [rng.random(d)]
        return np.array(([warm] if warm is not None else []) + picks)

    points = []
    for k in (0, 1):
        extreme = solve(k, None, starts_near(k, None, None))
        other = solve(1 - k, None, starts_near(1 - k, None, None))
        if extreme is None or other is None:
            continue
        hi, lo = fg(extreme)[0][1 - k], fg(other)[0][1 - k]
        points += [extreme, other]
        warm = other
        for cap in np.linspace(lo, hi, n_levels)[1:-1]:
            u = solve(k, cap, starts_near(k, cap, warm))
            if u is not None:
                points.append(u)
                warm = u
    return lb + np.array(points) * (ub - lb)


def _densified(points: Array, evaluate: Callable[[Array], Tuple[Array, Array]], per_segment: int = 40) -> Array:
    """``points`` [p, d] of a Pareto set, ordered by f1, plus ``per_segment`` points on each segment
    between neighbours: a smooth Pareto set is nearly straight between close neighbours, so these fill
    the front in (points off the set are dominated or infeasible and dropped by ``true_front``)."""
    f, _ = evaluate(points)
    order = points[np.argsort(f[:, 0])]
    t = np.linspace(0, 1, per_segment, endpoint=False)[1:]
    seg = order[:-1, None, :] + t[None, :, None] * (order[1:] - order[:-1])[:, None, :]
    return np.vstack([order, seg.reshape(-1, points.shape[1])])


_FRONTS = Path(__file__).with_name("fronts")


def _engineering_set(name: str) -> Callable[[int], Array]:
    """The Pareto set of problem ``name`` from ``fronts/<name>.txt`` (written by
    :func:`write_engineering_sets`: the epsilon-constraint solutions take minutes), densified."""

    @lru_cache(maxsize=None)
    def load() -> Array:
        return _densified(np.loadtxt(_FRONTS / f"{name}.txt", ndmin=2), PROBLEMS[name].evaluate)

    return lambda n: load()


def compute_engineering_set(name: str) -> Array:
    """Recompute the epsilon-constraint Pareto set [p, d] of engineering problem ``name``."""
    p = PROBLEMS[name]
    return epsilon_constraint_set(p.evaluate, p.lower, p.upper, p.con_limits)


def write_engineering_sets(names: Sequence[str] = ("WB", "DBD", "SRD")) -> None:
    """Write ``fronts/<name>.txt`` for each problem (``python -m qallegro.hpo.problems``)."""
    _FRONTS.mkdir(exist_ok=True)
    for name in names:
        np.savetxt(_FRONTS / f"{name}.txt", compute_engineering_set(name), fmt="%.17g")


def _tbtd_set(n: int) -> Array:
    # For a stress level S and height y, the lightest truss gives each bar the least area that keeps
    # its stress <= S. While both areas are inside their bounds the best height is y = 2 and the front
    # is volume = 400 / S (S from 4000, where the volume limit 0.1 binds, to 89443, where bar AC
    # reaches its least area); beyond, the non-dominated designs of a dense (S, y) grid.
    s_exact = np.geomspace(4000.0, 20 * np.sqrt(20) / (2 * 5e-4), 20 * n // 20)
    exact = np.column_stack([20 * np.sqrt(20) / (2 * s_exact), 80 * np.sqrt(5) / (2 * s_exact), np.full_like(s_exact, 2.0)])
    s_level, y = np.meshgrid(np.geomspace(85000.0, 1e5, 300), np.linspace(1.0, 3.0, 2001), indexing="ij")
    x1 = np.clip(20 * np.sqrt(16 + y**2) / (y * s_level), 5e-4, 0.05)
    x2 = np.clip(80 * np.sqrt(1 + y**2) / (y * s_level), 5e-4, 0.05)
    return np.vstack([exact, np.column_stack([x1.ravel(), x2.ravel(), y.ravel()])])


PROBLEMS.update(
    {
        "TBTD": Problem(
            "TBTD", (5e-4, 5e-4, 1.0), (0.05, 0.05, 3.0), 3, (0.1, 50000.0), _tbtd, _tbtd_set,
            con_limits=(0.1, 1e5, 1e5),
        ),
        "WB": Problem(
            "WB", (0.125, 0.1, 0.1, 0.125), (5.0, 10.0, 10.0, 5.0), 4, (350.0, 0.1), _wb, _engineering_set("WB"),
            con_limits=(13600.0, 30000.0, 1.0, 6000.0),
        ),
        "DBD": Problem(
            "DBD", (55.0, 75.0, 1000.0, 2.0), (80.0, 110.0, 3000.0, 20.0), 5, (5.0, 50.0), _dbd,
            _engineering_set("DBD"), con_limits=(20.0, 30.0, 0.4, 1.0, 900.0),
        ),
        "SRD": Problem(
            "SRD", (2.6, 0.7, 17.0, 7.3, 7.3, 2.9, 5.0), (3.6, 0.8, 28.0, 8.3, 8.3, 3.9, 5.5), 11,
            (7000.0, 1700.0), _srd, _engineering_set("SRD"),
            con_limits=(1 / 27, 1 / 397.5, 1 / 1.93, 1 / 1.93, 40.0, 12.0, 5.0, 1.9, 1.9, 1300.0, 1100.0),
        ),
    }
)


# ZDT1 is unconstrained and not in the SAMO-COBRA paper: its "paper" point is a loose (11, 11)
PROBLEMS["ZDT1"] = Problem("ZDT1", (0.0,) * 6, (1.0,) * 6, 0, (11.0, 11.0), _zdt1, _zdt1_set)


def get(name: str) -> Problem:
    """The problem called ``name`` (case-insensitive)."""
    try:
        return PROBLEMS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown test problem {name!r}; choose from {sorted(PROBLEMS)}") from None


if __name__ == "__main__":
    write_engineering_sets()
