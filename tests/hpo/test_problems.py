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
    with pytest.raises(ValueError, match="unknown test problem 'ZDT1'"):
        problems.get("ZDT1")


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
