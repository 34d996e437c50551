"""Constrained bi-objective test problems with known Pareto fronts (all minimised, ``g <= 0`` feasible).

Definitions as in Deb, "Multi-Objective Optimization Using Evolutionary Algorithms" (2001) and
Deb, Pratap, Meyarivan (EMO 2001, CTP problems); bounds and reference points as in de Winter et al.
(EMO 2021, the SAMO-COBRA paper). Each :class:`Problem` carries a dense sample of its analytic Pareto
front (``true_front()``), whose hypervolume is the 100% mark of the validation table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import moocore
import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Problem:
    """name; lower/upper bounds [d]; n_con; ref_point [2]; evaluate(x [d]) -> (f [2], g [n_con])."""

    name: str
    lower: Tuple[float, ...]
    upper: Tuple[float, ...]
    n_con: int
    ref_point: Tuple[float, float]
    evaluate: Callable[[Array], Tuple[Array, Array]]  # x [..., d] -> f [..., 2], g [..., n_con]
    pareto_set: Callable[[int], Array]  # n -> points [~n, d] covering the Pareto set

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

    def true_hypervolume(self, n: int = 20000) -> float:
        return float(moocore.hypervolume(self.true_front(n), ref=np.asarray(self.ref_point, float)))


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


def get(name: str) -> Problem:
    """The problem called ``name`` (case-insensitive)."""
    try:
        return PROBLEMS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown test problem {name!r}; choose from {sorted(PROBLEMS)}") from None
