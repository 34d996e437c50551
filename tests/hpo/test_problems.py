"""Test problems: definitions at known points, and true fronts no sample can beat."""

from __future__ import annotations

import moocore
import numpy as np
import pytest

from qallegro.hpo import problems


def test_known_values():
    f, g = problems.get("BNH")(np.array([0.0, 0.0]))
    np.testing.assert_allclose(f, [0.0, 50.0])
    assert np.all(g <= 0)
    f, g = problems.get("OSY")(np.array([5.0, 1.0, 5.0, 0.0, 5.0, 0.0]))
    np.testing.assert_allclose(f, [-(25 * 9 + 1 + 16 + 16 + 16), 25 + 1 + 25 + 25])
    assert np.all(g <= 1e-12)
    f, g = problems.get("TNK")(np.array([0.8, 0.8]))  # atan(1) = pi/4: cos(4 pi) = 1
    np.testing.assert_allclose(g, [-1.28 + 1.1, 0.18 - 0.5], atol=1e-12)
    _, g = problems.get("TNK")(np.array([1.0, 1e-5]))  # inside the wavy circle: infeasible
    assert g[0] > 0
    f, _ = problems.get("CTP1")(np.array([0.3, 0.0]))
    np.testing.assert_allclose(f, [0.3, np.exp(-0.3)])
    with pytest.raises(ValueError, match="unknown test problem 'ZDT9'"):
        problems.get("ZDT9")


def test_engineering_problems_at_known_points():
    # ZDT1: x2..x6 = 0 is on the front f2 = 1 - sqrt(f1)
    f, g = problems.get("ZDT1")(np.array([0.25, 0, 0, 0, 0, 0.0]))
    np.testing.assert_allclose(f, [0.25, 0.5])
    assert g.shape == (0,)
    # TBTD: with y = 2 and both bars at stress S the volume is 400 / S (Deb 2001)
    s = 20000.0
    f, g = problems.get("TBTD")(np.array([20 * np.sqrt(20) / (2 * s), 80 * np.sqrt(5) / (2 * s), 2.0]))
    np.testing.assert_allclose(f, [400 / s, s])
    assert np.all(g <= 0)
    # WB: deflection 2.1952 / (t^3 b); the stiffest bar (t = 10, b = 5) is feasible with a long weld
    f, g = problems.get("WB")(np.array([1.0, 5.0, 10.0, 5.0]))
    np.testing.assert_allclose(f, [1.10471 * 5 + 0.04811 * 50 * 19, 2.1952 / 5000])
    assert np.all(g <= 0)
    f, g = problems.get("WB")(np.array([0.2, 1.0, 10.0, 5.0]))  # a short thin weld: shear stress too high
    assert g[0] > 0 and np.all(g[1:] <= 0)
    # DBD: the lightest brake has x2 - x1 = 20 at x1 = 55 and two surfaces: 4.9e-5 * 2600 * 1
    f, g = problems.get("DBD")(np.array([55.0, 75.0, 1500.0, 2.0]))
    np.testing.assert_allclose(f[0], 0.1274)
    np.testing.assert_allclose(f[1], 9.82e6 * 2600 / (1500 * 2 * (75**3 - 55**3)))
    # SRD: the published shaft-stress constraints (sqrt((745 x4 / (x2 x3))^2 + 1.69e7) / (0.1 x6^3));
    # the reference code's sqrt(a^2) + 1.691^7 would call this point feasible
    x = np.array([3.5, 0.7, 17.0, 7.3, 7.8, 2.95, 5.3])
    f, g = problems.get("SRD")(x)
    stress = np.sqrt((745 * 7.3 / (0.7 * 17)) ** 2 + 1.69e7) / (0.1 * 2.95**3)
    np.testing.assert_allclose(f[1], stress)
    np.testing.assert_allclose(g[9], stress - 1300)
    assert g[9] > 0 and (745 * 7.3 / (0.7 * 17) + 1.691**7) / (0.1 * 2.95**3) - 1300 < 0


@pytest.mark.parametrize(
    "name, f1_min, f2_min",
    [
        ("WB", 2.3811, 2.1952 / (10**3 * 5)),  # Deb & Sundar (2006): least cost 2.381
        ("DBD", 0.1274, None),
        # least stress: x6 = 3.9, x4 = 1.9 + 1.5 x6, x2 x3 as large as x1 / x2 >= 5 allows (0.72 * 28)
        ("SRD", None, np.sqrt((745 * 7.75 / (0.72 * 28)) ** 2 + 1.69e7) / (0.1 * 3.9**3)),
        ("TBTD", None, 4000.0),  # volume limit 0.1 = 400 / S at S = 4000
        ("ZDT1", 0.0, 0.0),
    ],
)
def test_true_front_extremes(name, f1_min, f2_min):
    front = problems.get(name).true_front()
    if f1_min is not None:
        np.testing.assert_allclose(front[:, 0].min(), f1_min, rtol=2e-4, atol=1e-12)
    if f2_min is not None:
        np.testing.assert_allclose(front[:, 1].min(), f2_min, rtol=1e-6, atol=1e-12)
    if name == "TBTD":  # until bar AC reaches its least area (S = 89443) the front is volume = 400 / S
        part = front[front[:, 1] < 85000]  # (above 85000: a grid over the height)
        assert len(part) > 1000
        np.testing.assert_allclose(part[:, 0], 400 / part[:, 1], rtol=1e-9)


@pytest.mark.parametrize("name", ["TBTD", "WB", "DBD", "SRD", "ZDT1"])
def test_tight_reference_point_is_just_outside_the_nadir(name):
    p = problems.get(name)
    nadir = p.true_front().max(axis=0)
    np.testing.assert_allclose(p.tight_ref_point(), 1.1 * nadir)
    assert p.true_hypervolume(ref_point=p.tight_ref_point()) < p.true_hypervolume() or name == "TBTD"


@pytest.mark.parametrize("name", sorted(problems.PROBLEMS))
def test_true_front_is_feasible_and_unbeaten(name):
    p = problems.get(name)
    front = p.true_front()
    assert len(front) > 1000 and moocore.is_nondominated(front).all()
    rng = np.random.default_rng(0)
    lb, ub = np.array(p.lower), np.array(p.upper)
    f, g = p(lb + rng.random((200_000, p.dim)) * (ub - lb))
    f = f[np.all(g <= 0, axis=1)]
    ref = np.asarray(p.ref_point, float)
    true_hv = p.true_hypervolume()
    # random feasible points add (almost) nothing to the true front's hypervolume
    union = moocore.hypervolume(np.vstack([front, f]), ref=ref)
    assert union / true_hv < 1 + 2e-4
    # and random search alone stays below it
    assert moocore.hypervolume(f, ref=ref) <= union
