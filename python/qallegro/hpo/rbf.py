"""Radial-basis-function surrogates with a polynomial tail, as SAMO-COBRA uses them.

de Winter, van Stein, Bäck (EMO 2021), Sec. 3.2: every objective and constraint is modelled by an
interpolating RBF ``s(x) = sum_i lambda_i phi(||x - x_i||) + c_0 + c^T x + d^T (x * x)`` (the
"polynomial tail" with pure squares, as in the SACOBRA lineage), for each of six kernels, each fitted
to two output transforms (plain standardised and plog-standardised; objectives also to a log transform
anchored at their best value, see :class:`OutputScaling`); the kernel/transform pair used
at each iteration is the one with the lowest RMSE of its one-step-ahead predictions.

The interpolation system matrix depends only on the evaluated points and the kernel, so one
pseudo-inverse per kernel serves every output column (objectives, constraints, both transforms).
Inputs are assumed scaled to [-1, 1]^d, where the kernel width is 1 (as in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

KERNELS: Tuple[str, ...] = (
    "cubic",
    "gaussian",
    "multiquadric",
    "inverse_quadratic",
    "inverse_multiquadric",
    "thin_plate_spline",
)

# phi(0) of each kernel: the constant in the "uncertainty" s^2(x) = phi(0) - l(x)^T M^+ l(x) used by
# the SMS infill criterion (Sec. 3.4 of the paper; kriging-like variance of an RBF interpolant).
_PHI_AT_ZERO = {
    "cubic": 0.0,
    "thin_plate_spline": 0.0,
    "gaussian": 1.0,
    "multiquadric": 1.0,
    "inverse_quadratic": 1.0,
    "inverse_multiquadric": 1.0,
}


def _tps(r: np.ndarray, r2: np.ndarray) -> np.ndarray:
    # r^2 log r -> 0 as r -> 0: log of 1 there (log of a whole contiguous array, one NumPy call)
    return r2 * np.log(np.where(r > 0, r, 1.0))


# phi as a function of r and r2 = r * r (callers that evaluate several kernels at the same distances
# compute r2 once); each is the same arithmetic as written in terms of r alone
PHI: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cubic": lambda r, r2: r2 * r,
    "thin_plate_spline": _tps,
    "gaussian": lambda r, r2: np.exp(-r2),
    "multiquadric": lambda r, r2: np.sqrt(1.0 + r2),
    "inverse_quadratic": lambda r, r2: 1.0 / (1.0 + r2),
    "inverse_multiquadric": lambda r, r2: 1.0 / np.sqrt(1.0 + r2),
}


def kernel_values(kernel: str, r: np.ndarray) -> np.ndarray:
    """phi(r) for distances ``r`` (any shape, dimensionless, width 1)."""
    try:
        phi = PHI[kernel]
    except KeyError:
        raise ValueError(f"unknown RBF kernel {kernel!r}; choose from {KERNELS}") from None
    return phi(r, r * r)


def plog(y: np.ndarray) -> np.ndarray:
    """Sign-preserving logarithm ``sign(y) log(1 + |y|)`` (compresses steep outputs)."""
    return np.sign(y) * np.log1p(np.abs(y))


def plog_inverse(z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`plog`."""
    return np.sign(z) * np.expm1(np.abs(z))


def _tail(x: np.ndarray) -> np.ndarray:
    """Polynomial tail rows ``[1, x, x*x]`` for points ``x: [m, d]`` -> ``[m, 2d+1]``."""
    return np.concatenate([np.ones((x.shape[0], 1)), x, x * x], axis=1)


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[len(a), len(b)]``."""
    diff = a[:, None, :] - b[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))


@dataclass
class RBFModel:
    """One kernel's interpolant of several output columns on the same points.

    centres: [n, d] evaluated points (scaled); coef: [n + 2d + 1, k] for k output columns;
    pinv: [n + 2d + 1, n + 2d + 1] pseudo-inverse of the system matrix (for the SMS variance).
    """

    kernel: str
    centres: np.ndarray
    coef: np.ndarray
    pinv: np.ndarray

    def features(self, x: np.ndarray) -> np.ndarray:
        """Design rows ``[phi(||x - c_i||), 1, x, x*x]`` for points ``x: [m, d]`` -> ``[m, n+2d+1]``."""
        r = pairwise_distances(x, self.centres)
        return np.concatenate([kernel_values(self.kernel, r), _tail(x)], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted (transformed) outputs ``[m, k]`` at ``x: [m, d]``."""
        return self.features(x) @ self.coef

    def variance(self, x: np.ndarray) -> np.ndarray:
        """|phi(0) - l(x)^T M^+ l(x)| ``[m]``: zero at the centres, growing away from them."""
        f = self.features(x)
        return np.abs(_PHI_AT_ZERO[self.kernel] - np.einsum("ij,jk,ik->i", f, self.pinv, f))


def fit_rbf(kernel: str, x: np.ndarray, y: np.ndarray, rcond: float = 1e-14) -> RBFModel:
    """Interpolate ``y: [n, k]`` at ``x: [n, d]`` with ``kernel`` and a quadratic (pure squares) tail.

    Solves ``[[Phi, P], [P^T, 0]] [lambda; c] = [y; 0]`` by an SVD pseudo-inverse that drops
    singular values below ``rcond`` times the largest (stable for rank-deficient systems, e.g. fewer
    points than tail terms during the initial design, as the reference does).
    """
    n, d = x.shape
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"fit_rbf: y must be [n={n}, k], got {y.shape}")
    phi = kernel_values(kernel, pairwise_distances(x, x))
    p = _tail(x)
    m = np.zeros((n + p.shape[1], n + p.shape[1]))
    m[:n, :n] = phi
    m[:n, n:] = p
    m[n:, :n] = p.T
    pinv = np.linalg.pinv(np.nan_to_num(m), rcond=rcond)
    rhs = np.zeros((m.shape[0], y.shape[1]))
    rhs[:n] = y
    return RBFModel(kernel=kernel, centres=x.copy(), coef=pinv @ rhs, pinv=pinv)


TRANSFORMS: Tuple[str, ...] = ("plain", "plog", "log")  # objectives use all three, constraints the first two
_LOG_CAP = 600.0  # "log" predictions are capped here before exp


def log_transform(y: np.ndarray, lo: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The objectives' "log" transform log(1 + (y - lo) / u) (see :class:`OutputScaling`)."""
    return np.log1p((y - lo) / unit)


def log_inverse(v: np.ndarray, lo: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Inverse of :func:`log_transform`, ``v`` capped at _LOG_CAP first (finite, no overflow warning)."""
    return lo + unit * np.expm1(np.minimum(v, _LOG_CAP))


def _transformed(y: np.ndarray, lo: Optional[np.ndarray], unit: Optional[np.ndarray]) -> List[np.ndarray]:
    """``y`` under each transform, in TRANSFORMS order: plain, plog, and "log" when an anchor is given."""
    return [y, plog(y)] + ([] if lo is None else [log_transform(y, lo, unit)])


def _log_anchor(y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per column of ``y: [n, k]``: the best value ``lo`` and the unit ``u`` of the "log" transform
    log(1 + (y - lo) / u): u = the lower quartile minus the best value (the spread of the good quarter of
    the evaluations), the range if that is 0, 1 for a constant column."""
    lo = y.min(axis=0)
    span = y.max(axis=0) - lo
    unit = np.percentile(y, 25, axis=0) - lo
    return lo, np.where(unit > 1e-9 * span, unit, np.where(span > 0, span, 1.0))


@dataclass
class OutputScaling:
    """Per-column transforms of raw outputs ``y: [n, k]`` to the training targets.

    Constraints: plain and plog(g), divided by their range, which keeps the sign (feasibility) intact,
    as in the reference. Objectives: plain, plog and "log" = log(1 + (y - lo) / u) (anchored at the best
    value ``lo``, unit ``u`` from :func:`_log_anchor`), each standardised (z-scores). The "log" transform
    is not in the paper: plog(y) = log(1 + |y|) is linear for |y| << 1, so it does nothing for an objective
    whose good values are small (a deflection of 4e-4 in; an error of 0.03 eV/A), while this one resolves
    the region near the best values for any units and offset.
    """

    kind: str  # "objective" | "constraint"
    loc: np.ndarray  # [T, k]: per transform (TRANSFORMS order; T = 3 for objectives, 2 for constraints)
    scale: np.ndarray  # [T, k]
    log_lo: np.ndarray = None  # [k] "log" transform anchor (objectives)
    log_unit: np.ndarray = None  # [k]

    @property
    def n_transforms(self) -> int:
        return self.loc.shape[0]

    @staticmethod
    def fit(y: np.ndarray, kind: str) -> "OutputScaling":
        if kind == "objective":
            lo, unit = _log_anchor(y)
            cols = _transformed(y, lo, unit)
            loc = np.stack([c.mean(axis=0) for c in cols])
            scale = np.stack([c.std(axis=0) for c in cols])
        elif kind == "constraint":
            lo = unit = None
            cols = _transformed(y, None, None)
            loc = np.zeros((2, y.shape[1]))
            scale = np.stack([c.max(axis=0) - c.min(axis=0) for c in cols])
        else:
            raise ValueError(f"OutputScaling kind must be 'objective' or 'constraint', got {kind!r}")
        scale = np.where(scale > 0, scale, 1.0)  # constant outputs: leave unscaled
        return OutputScaling(kind, loc, scale, lo, unit)

    def forward(self, y: np.ndarray) -> np.ndarray:
        """Targets ``[n, T k]``: the plain columns, then the plog columns (then the log columns)."""
        return np.concatenate(
            [(c - self.loc[t]) / self.scale[t] for t, c in enumerate(_transformed(y, self.log_lo, self.log_unit))], axis=1
        )

    def inverse(self, z: np.ndarray, column: int, transform: int) -> np.ndarray:
        """Raw-unit values of predicted targets ``z`` of output ``column`` fitted on transform
        ``transform`` (an index into TRANSFORMS; False/True = plain/plog)."""
        t = int(transform)
        v = z * self.scale[t, column] + self.loc[t, column]
        if t == 1:
            return plog_inverse(v)
        if t == 2:
            return log_inverse(v, self.log_lo[column], self.log_unit[column])
        return v


def fit_bank(x: np.ndarray, y: np.ndarray, scaling: OutputScaling) -> Dict[str, RBFModel]:
    """All kernels fitted to all targets of ``y: [n, k]`` -> {kernel: model with T k columns}."""
    targets = scaling.forward(y)
    return {k: fit_rbf(k, x, targets) for k in KERNELS}
