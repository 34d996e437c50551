"""RBF surrogates: interpolation, polynomial reproduction, transforms, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from qallegro.hpo.rbf import KERNELS, OutputScaling, fit_rbf, plog, plog_inverse

TOL = {"float64": (1e-8, 1e-8)}  # (rtol, atol) of interpolation identities in float64


def sample_inputs(n: int = 25, d: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, d))
    y = np.column_stack([np.sin(3 * x[:, 0]) + x[:, 1] ** 2, np.exp(x.sum(axis=1))])
    return x, y


@pytest.mark.parametrize("kernel", KERNELS)
def test_interpolates_the_data(kernel):
    x, y = sample_inputs()
    model = fit_rbf(kernel, x, y)
    rtol, atol = TOL["float64"]
    np.testing.assert_allclose(model.predict(x), y, rtol=rtol * 1e3, atol=atol * 1e3)


@pytest.mark.parametrize("kernel", ["cubic", "thin_plate_spline"])
def test_reproduces_the_quadratic_tail(kernel):
    # 1 + x + x*x (no cross terms) lies in the tail space: conditionally positive definite kernels
    # then give lambda = 0 and reproduce it exactly away from the data too
    x, _ = sample_inputs(30, 2, seed=1)
    f = lambda p: 1.0 + 2 * p[:, 0] - p[:, 1] + 0.5 * p[:, 0] ** 2 + 3 * p[:, 1] ** 2  # noqa: E731
    model = fit_rbf(kernel, x, f(x)[:, None])
    new = np.random.default_rng(2).uniform(-1, 1, (50, 2))
    rtol, atol = TOL["float64"]
    np.testing.assert_allclose(model.predict(new)[:, 0], f(new), rtol=rtol, atol=atol * 1e2)


def test_variance_is_zero_at_centres_and_positive_away():
    x, y = sample_inputs(15, 2)
    model = fit_rbf("gaussian", x, y)
    assert np.all(model.variance(x) < 1e-6)
    far = np.array([[0.99, -0.99], [-0.95, 0.97]])
    assert np.all(model.variance(far) > 1e-4)


def test_plog_round_trip_and_shape():
    y = np.array([-1e6, -3.0, -1e-9, 0.0, 2.5, 1e8])
    np.testing.assert_allclose(plog_inverse(plog(y)), y, rtol=1e-12)
    assert np.all(np.diff(plog(y)) > 0)  # monotone
    assert abs(plog(np.array([1e8]))[0] - np.log1p(1e8)) < 1e-12


def test_output_scaling_keeps_constraint_signs():
    g = np.array([[-2.0, 5.0], [1.0, 7.0], [0.5, 6.0]])
    s = OutputScaling.fit(g, "constraint")
    z = s.forward(g)
    assert np.array_equal(np.sign(z[:, :2]), np.sign(g))
    for col in range(2):
        for use_plog in (False, True):
            zz = z[:, col + 2 * use_plog]
            np.testing.assert_allclose(s.inverse(zz, col, use_plog), g[:, col], rtol=1e-12)
    with pytest.raises(ValueError, match="kind"):
        OutputScaling.fit(g, "objectives")


def test_unknown_kernel_is_named():
    with pytest.raises(ValueError, match="unknown RBF kernel 'wendland'"):
        fit_rbf("wendland", *sample_inputs())


def test_objective_log_transform_round_trips_and_resolves_small_values():
    rng = np.random.default_rng(3)
    # a deflection-like objective: good values ~1e-4, bad ones ~10 (welded beam spans 4e-4 to 7)
    y = np.exp(rng.uniform(np.log(1e-4), np.log(10.0), size=(40, 2))) * np.array([1.0, 1e3])
    s = OutputScaling.fit(y, "objective")
    assert s.n_transforms == 3
    z = s.forward(y)
    assert z.shape == (40, 6)
    for col in range(2):
        for t in range(3):
            np.testing.assert_allclose(s.inverse(z[:, col + 2 * t], col, t), y[:, col], rtol=1e-9)
        lo, q1 = y[:, col].min(), np.percentile(y[:, col], 25)
        np.testing.assert_allclose([s.log_lo[col], s.log_unit[col]], [lo, q1 - lo])
        # the log targets spread the best quarter of the values over > 5% of their range; plain ones
        # squash it (< 0.1%), and so does plog when the values are << 1 (column 0)
        good = y[:, col] <= q1
        spread = [np.ptp(z[good, col + 2 * t]) / np.ptp(z[:, col + 2 * t]) for t in range(3)]
        assert spread[2] > 0.05 and spread[2] > 50 * spread[0]
        if col == 0:
            assert spread[2] > 50 * spread[1]
    # invariant to the objective's units and offset: 1e6 * y + 3 gives the same log targets
    np.testing.assert_allclose(OutputScaling.fit(1e6 * y + 3.0, "objective").forward(1e6 * y + 3.0)[:, 4:], z[:, 4:], atol=1e-9)
    # predictions far above every value seen stay finite
    assert np.isfinite(s.inverse(np.array([1e6]), 0, 2)).all()
