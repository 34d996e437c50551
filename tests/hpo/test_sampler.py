"""SamoCobraSampler: parameter encoding, constrained studies, running trials, directions."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from qallegro.hpo import SamoCobraSampler, problems
from qallegro.hpo.sampler import SpaceCodec, feasible_pareto_trials, trial_constraints

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "layers": IntDistribution(1, 4),
    "width": IntDistribution(8, 64, step=8),
    "act": CategoricalDistribution(["silu", "tanh", "relu"]),
    "drop": FloatDistribution(0.0, 0.5, step=0.1),
}


def test_codec_round_trip_and_rounding():
    codec = SpaceCodec(SPACE)
    assert codec.dim == 1 + 1 + 1 + 3 + 1
    params = {"lr": 3e-3, "layers": 3, "width": 40, "act": "tanh", "drop": 0.2}
    x = codec.encode(params)
    assert np.all(np.abs(x) <= 1)
    back = codec.decode(x)
    assert back["layers"] == 3 and back["width"] == 40 and back["act"] == "tanh"
    assert back["lr"] == pytest.approx(3e-3) and back["drop"] == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    for _ in range(50):  # any point of the box decodes to a valid parameter set
        p = codec.decode(rng.uniform(-1.2, 1.2, codec.dim))
        assert all(SPACE[k]._contains(SPACE[k].to_internal_repr(v)) for k, v in p.items())


def _bnh_objective(trial):
    x = np.array([trial.suggest_float("x0", 0, 5), trial.suggest_float("x1", 0, 3)])
    f, g = problems.get("BNH")(x)
    for i, v in enumerate(g):
        trial.set_constraint(f"g{i}", v)
    return tuple(float(v) for v in f)


def test_constrained_bnh_study_finds_most_of_the_front():
    p = problems.get("BNH")
    space = {"x0": FloatDistribution(0, 5), "x1": FloatDistribution(0, 3)}
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=SamoCobraSampler(search_space=space, ref_point=p.ref_point, seed=0)
    )
    study.optimize(_bnh_objective, n_trials=24)
    front = np.array([t.values for t in feasible_pareto_trials(study)])
    import moocore

    ratio = moocore.hypervolume(front, ref=np.array(p.ref_point)) / p.true_hypervolume()
    assert ratio > 0.95, ratio
    assert all(len(trial_constraints(t)) == 2 for t in study.trials)
    # the first d + 1 trials are the Halton design: distinct points
    first = np.array([[t.params["x0"], t.params["x1"]] for t in study.trials[:3]])
    assert len(np.unique(first.round(9), axis=0)) == 3


def test_running_trials_are_kept_apart_and_maximisation_is_handled():
    space = {"a": FloatDistribution(-2, 2), "n": IntDistribution(1, 5), "c": CategoricalDistribution(["u", "v"])}
    sampler = SamoCobraSampler(search_space=space, seed=1)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)

    def values(p):
        shift = 0.5 if p["c"] == "v" else 0.0
        return (p["a"] - shift) ** 2 + p["n"], -((p["a"] + 1) ** 2) + p["n"]

    for _ in range(8):
        t = study.ask()
        p = {"a": t.suggest_float("a", -2, 2), "n": t.suggest_int("n", 1, 5), "c": t.suggest_categorical("c", ["u", "v"])}
        study.tell(t, values(p))
    running = study.ask()
    pa = running.suggest_float("a", -2, 2), running.suggest_int("n", 1, 5), running.suggest_categorical("c", ["u", "v"])
    other = study.ask()
    pb = other.suggest_float("a", -2, 2), other.suggest_int("n", 1, 5), other.suggest_categorical("c", ["u", "v"])
    assert pa != pb  # the second worker does not duplicate the running trial
    assert study.get_trials(states=(TrialState.RUNNING,))[0].number == running.number
    # values of the maximised objective are used with their sign: the sampler's state holds -f2
    core, told = next(iter(sampler._cores.values()))
    assert sorted(told) == list(range(8))  # completed trials are told in number order
    assert core.f[0, 0] == pytest.approx(study.trials[0].values[0])
    assert core.f[0, 1] == pytest.approx(-study.trials[0].values[1])


def test_single_objective_study_is_refused():
    study = optuna.create_study(sampler=SamoCobraSampler(search_space={"x": FloatDistribution(0, 1)}))
    with pytest.raises(ValueError, match="multi-objective"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1, catch=())


def _bnh_study_with_history(n: int = 8):
    p = problems.get("BNH")
    space = {"x0": FloatDistribution(0, 5), "x1": FloatDistribution(0, 3)}
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=SamoCobraSampler(search_space=space, ref_point=p.ref_point, seed=0)
    )
    study.optimize(_bnh_objective, n_trials=n)
    return study, space, p.ref_point


def _new_running_trial(study):
    tid = study._storage.create_new_trial(study._study_id)
    return tid, study._storage.get_trial(tid)


def test_a_reserved_proposal_of_a_concurrent_trial_is_pending():
    """A worker still inside its sampler has no params yet, only a reserved proposal: others keep away."""
    from qallegro.hpo.sampler import _PROPOSAL_KEY

    study, space, ref = _bnh_study_with_history()
    tid_a, trial_a = _new_running_trial(study)
    p_a = SamoCobraSampler(search_space=space, ref_point=ref, seed=3).sample_relative(study, trial_a, space)
    assert p_a and study._storage.get_trial(tid_a).system_attrs[_PROPOSAL_KEY] == p_a
    tid_b, trial_b = _new_running_trial(study)
    p_b = SamoCobraSampler(search_space=space, ref_point=ref, seed=3).sample_relative(study, trial_b, space)
    assert p_b and np.hypot(p_b["x0"] - p_a["x0"], p_b["x1"] - p_a["x1"]) > 1e-3
    # control: without A's reservation the same sampler state proposes A's point again
    study._storage.set_trial_system_attr(tid_a, _PROPOSAL_KEY, None)
    p_c = SamoCobraSampler(search_space=space, ref_point=ref, seed=3).sample_relative(study, trial_b, space)
    assert p_c == pytest.approx(p_a)


def _ask_during_a_race(study, space, ref, tid_b, trial_b, other_worker):
    """B's sampler asks; just before B's first reservation is written, ``other_worker(proposal)``
    plays what a concurrent worker did with the very same point. Returns B's params and the writes."""
    from qallegro.hpo.sampler import _PROPOSAL_KEY

    storage = study._storage
    write = storage.set_trial_system_attr
    writes = []

    def racing_write(trial_id, key, value):
        if trial_id == tid_b and key == _PROPOSAL_KEY and not writes:
            other_worker(value)
        writes.append((trial_id, value))
        write(trial_id, key, value)

    storage.set_trial_system_attr = racing_write
    try:
        p_b = SamoCobraSampler(search_space=space, ref_point=ref, seed=3).sample_relative(study, trial_b, space)
    finally:
        storage.set_trial_system_attr = write
    return p_b, writes


def test_two_workers_asking_at_the_same_moment_do_not_collide():
    """The race: B computes the same point as A; A's reservation lands just before B's. B must notice
    (it reads the other trials after writing its own) and ask again."""
    from qallegro.hpo.sampler import _PROPOSAL_KEY

    study, space, ref = _bnh_study_with_history()
    tid_a, _ = _new_running_trial(study)
    tid_b, trial_b = _new_running_trial(study)
    storage = study._storage

    def a_reserves(value):  # worker A reserved the very same point a moment earlier
        storage.set_trial_system_attr(tid_a, _PROPOSAL_KEY, value)

    p_b, writes = _ask_during_a_race(study, space, ref, tid_b, trial_b, a_reserves)
    p_a = storage.get_trial(tid_a).system_attrs[_PROPOSAL_KEY]
    assert len(writes) >= 2  # B reserved, saw the clash, reserved again
    assert p_b and np.hypot(p_b["x0"] - p_a["x0"], p_b["x1"] - p_a["x1"]) > 1e-3
    assert storage.get_trial(tid_b).system_attrs[_PROPOSAL_KEY] == p_b


def test_a_point_finished_by_another_worker_while_asking_is_not_proposed_again():
    """The other race: A proposes, runs and completes the very point B is computing (a fast objective)
    before B reserves it; B's read after its reservation sees A's finished trial and asks again."""
    study, space, ref = _bnh_study_with_history()
    tid_a, _ = _new_running_trial(study)
    tid_b, trial_b = _new_running_trial(study)
    storage = study._storage

    def a_evaluates_and_finishes(value):
        for name, v in value.items():
            storage.set_trial_param(tid_a, name, space[name].to_internal_repr(v), space[name])
        storage.set_trial_state_values(tid_a, TrialState.COMPLETE, [1.0, 1.0])

    p_b, writes = _ask_during_a_race(study, space, ref, tid_b, trial_b, a_evaluates_and_finishes)
    p_a = storage.get_trial(tid_a).params
    assert storage.get_trial(tid_a).state == TrialState.COMPLETE and len(writes) >= 2
    assert p_b and np.hypot(p_b["x0"] - p_a["x0"], p_b["x1"] - p_a["x1"]) > 1e-3


def test_constraint_units_reach_the_core():
    # a study's constraints in their own units (here BNH's, x1000) with their limits as units: the
    # sampler hands them to SAMO-COBRA, which models the constraints divided by them
    space = {"x0": FloatDistribution(0, 5), "x1": FloatDistribution(0, 3)}

    def objective(trial):
        x = np.array([trial.suggest_float("x0", 0, 5), trial.suggest_float("x1", 0, 3)])
        f, g = problems.get("BNH")(x)
        for i, v in enumerate(g):
            trial.set_constraint(f"g{i}", 1000 * v)
        return tuple(float(v) for v in f)

    sampler = SamoCobraSampler(search_space=space, ref_point=[140, 50], seed=0, con_scale=[25e3, 7.7e3])
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=5)
    (core, told), = sampler._cores.values()
    np.testing.assert_array_equal(core.constraint_scale, [25e3, 7.7e3])
    np.testing.assert_allclose(core.scaled_constraints() * [25e3, 7.7e3], core.g)
    assert len(told) == 4 and core.g.shape == (4, 2)
