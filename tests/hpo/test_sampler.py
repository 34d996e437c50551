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
