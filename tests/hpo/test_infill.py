"""Infill problem: the fast objective/constraints equal the formulas computed from scratch; stalls."""

from __future__ import annotations

import copy
import warnings

import moocore
import numpy as np
import pytest

from qallegro.hpo import cpu_guard, infill, problems
from qallegro.hpo.infill import InfillProblem, Predictor, StartBudget, solve_infill
from qallegro.hpo.samo_cobra import SamoCobra


def sample_problem(seed: int = 0, n: int = 9, criterion: str = "PHV", pending: int = 0) -> InfillProblem:
    p = problems.get("CTP1")
    opt = SamoCobra(2, 2, 2, ref_point=p.ref_point, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.uniform(-1, 1, 2)
        opt.tell(x, *p(0.5 * (x + 1)))
    bank, obj, con = opt._fit()
    predictor = Predictor(bank, obj, con, *opt.choose_models())
    return InfillProblem(predictor, opt.front(), opt.ref_point, opt.eps, rng.uniform(-1, 1, (pending, 2)), criterion)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_in_place_hypervolume_equals_moocore(m):
    rng = np.random.default_rng(m)
    points = rng.uniform(0, 1, (12, m))
    ref = np.full(m, 1.1)
    hv = infill._InPlaceHypervolume(points, ref)
    for _ in range(20):
        points[-1] = rng.uniform(-0.2, 1.3, m)  # inside, dominating, outside the reference box
        assert hv() == moocore.hypervolume(points, ref=ref)
    with pytest.raises(ValueError, match="C-contiguous"):
        infill._InPlaceHypervolume(points[:, ::-1], ref)


@pytest.mark.parametrize("criterion,pending", [("PHV", 0), ("SMS", 0), ("PHV", 3)])
def test_objective_and_constraints_equal_the_formulas(criterion, pending):
    prob = sample_problem(criterion=criterion, pending=pending)
    front, ref = prob.front, prob.ref_point
    hv_front = moocore.hypervolume(front, ref=ref)
    assert len(front) >= 2
    hits = {"dominated": 0, "gain": 0, "outside": 0}
    for x in np.random.default_rng(1).uniform(-1, 1, (300, 2)):
        f, g, u, r_min = prob.predictor(x, with_variance=criterion == "SMS")
        f = f - np.abs(u)
        if pending:
            r_min = min(r_min, float(np.linalg.norm(prob.extra_avoid - x, axis=1).min()))
        dominated = np.all(front <= f, axis=1)
        if dominated.any():
            want = float(np.max(np.prod(1.0 + (f - front[dominated]), axis=1) - 1.0))
            hits["dominated"] += 1
        else:
            gain = moocore.hypervolume(np.vstack([front, f]), ref=ref) - hv_front
            if gain > 0:
                want, key = -gain, "gain"
            else:
                want, key = float(np.sum(np.maximum(f - ref, 0) / np.maximum(np.abs(ref), 1e-12))) * 1e-6, "outside"
            hits[key] += 1
        assert prob.objective(x) == pytest.approx(want, rel=1e-12, abs=1e-12 * hv_front)
        h = (r_min**-2 if r_min > 0 else infill._BIG) if r_min <= prob.min_distance else 0.0
        np.testing.assert_array_equal(prob.constraints(x), np.concatenate(([-h], -(g + prob.eps**2))))
    assert hits["dominated"] and hits["gain"]  # both branches of the criterion were exercised
    # at an evaluated point the distance constraint is violated
    assert prob.constraints(prob.predictor.centres[0])[0] < 0


def _stalling(run):
    def wrapped(problem, x0, max_iter, tol):
        if x0[0] > 0.6:
            while True:  # what NLopt's trstlp does on rare inputs (NLopt issue #370)
                pass
        return run(problem, x0, max_iter, tol)

    return wrapped


@pytest.mark.skipif(infill.nlopt is None or not cpu_guard.available(), reason="needs NLopt and Linux fork")
def test_a_stalled_start_counts_as_failed(monkeypatch):
    prob = sample_problem(seed=2)
    rng = np.random.default_rng(5)
    budget = StartBudget(6)
    starts = copy.deepcopy(rng).uniform(-1, 1, (budget.n_starts, 2))
    stalled = starts[:, 0] > 0.6
    assert 0 < stalled.sum() < len(starts)
    # the expected records: every other start as NLopt runs it in-process, the stalled ones failed at x0
    want = []
    for x0, bad in zip(starts, stalled):
        if bad:
            v = float(np.max(np.maximum(-prob.constraints(x0), 0.0)))
            want.append(np.concatenate([x0, [0.0, v, prob.objective(x0)]]))
        else:
            want.append(infill._start(prob, x0, budget.max_iter, 1e-6))
    monkeypatch.setattr(infill, "_cobyla_nlopt", _stalling(infill._cobyla_nlopt))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = infill._run_starts(prob, starts, budget.max_iter, 1e-6, stall_cpu_seconds=1.0)
    assert len(got) == len(starts)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    messages = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(messages) == stalled.sum() and "stalled" in messages[0]
    # through solve_infill: a failed start means not all converged, so the iterations grow
    with pytest.warns(RuntimeWarning, match="stalled"):
        x = solve_infill(prob, budget, rng, stall_cpu_seconds=1.0)
    assert x.shape == (2,) and budget.max_iter == int(50 * 6 * 1.1)


def test_solve_infill_guarded_equals_in_process():
    prob = sample_problem(seed=4)
    b1, b2 = StartBudget(6), StartBudget(6)
    x1 = solve_infill(prob, b1, np.random.default_rng(3), stall_cpu_seconds=None)
    x2 = solve_infill(prob, b2, np.random.default_rng(3), stall_cpu_seconds=20.0)
    assert np.array_equal(x1, x2) and b1 == b2
