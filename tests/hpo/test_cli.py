"""`qallegro optimize` and `qallegro pareto` end to end on real DFT data shipped with qallegro (tiny
models, few epochs)."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from qallegro.cli import main
from qallegro.data.datasets import builtin_path

SPACE = {
    "kind": "allegro",
    "params": {
        "num_layers": {"type": "int", "low": 1, "high": 2},
        "num_scalar_features": {"type": "int", "low": 4, "high": 16, "step": 2},  # must be even
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "num_tensor_features": 4,
        "l_max": 1,
        "r_max": 4.0,
    },
    "training": {"max_epochs": 1, "batch_size": 5},
    "data": {"train_size": 16, "val_size": 8, "latency_structures": 2},
    "latency": {"device": "cpu", "warmup": 2, "calls": 2, "repeats": 3, "threads": 1},
    "constraints": {"max_parameters": 100000},
}


def test_optimize_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["optimize", "--help"])
    out = capsys.readouterr().out
    assert "--storage" in out and "qallegro optimize allegro --data" in out


def test_bad_space_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPACE, "kind": "painn"}))
    code = main(["optimize", str(bad), "--data", "x.extxyz", "--trials", "1", "--storage", f"sqlite:///{tmp_path}/s.db"])
    assert code == 2 and "unknown model kind 'painn'" in capsys.readouterr().err


@pytest.mark.slow
def test_optimize_resumes_and_pareto_plots(tmp_path, capsys):
    data = builtin_path("benzene")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["optimize", str(space), "--data", str(data), "--storage", storage, "--study-name", "eth"]
    assert main(args + ["--trials", "3"]) == 0
    study = optuna.load_study(study_name="eth", storage=storage)
    first = [(t.number, t.params) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(first) == 3
    # rerunning continues the same study up to the new total
    assert main(args + ["--trials", "5"]) == 0
    study = optuna.load_study(study_name="eth", storage=storage)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 5 and [(t.number, t.params) for t in done[:3]] == first
    for t in done:
        assert t.values[0] == t.user_attrs["force_mae_meV_per_A"] > 0
        lat = t.user_attrs["latency"]   # the exported model, timed in its own process
        assert t.values[1] == t.user_attrs["latency_ms"] == lat["median_ms"] > 0
        assert lat["warmup"] == 2 and lat["calls"] == 2 and len(lat["block_medians_ms"]) == 3 and lat["threads"] == 1
        assert t.constraints["max_parameters"] == t.user_attrs["num_parameters"] - 100000
    capsys.readouterr()
    png = tmp_path / "front.png"
    assert main(["pareto", "eth", "--storage", storage, "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "force MAE" in out and "Pareto-optimal of 5 completed trials" in out
    assert main(["pareto", "nope", "--storage", storage]) == 2


def test_space_latency_section_is_what_is_measured():
    from qallegro.hpo.cli_optimize import latency_settings

    # every key of the space's latency section reaches the measurement (warmup was once dropped)
    s = latency_settings({"device": "cpu", "warmup": 7, "calls": 3, "repeats": 4, "clock": "cpu", "threads": 1}, 2)
    assert (s.warmup, s.calls, s.repeats, s.clock, s.threads) == (7, 3, 4, "cpu", 1)
    assert latency_settings({}, 2).threads == 2   # unset: the worker's thread count
    with pytest.raises(ValueError, match="latency.warmup"):
        latency_settings({"warmup": -1}, 1)


def test_samo_cobra_measures_constraints_in_their_limits():
    from qallegro.hpo.cli_optimize import make_sampler
    from qallegro.hpo.space import parse_space

    space = parse_space({**SPACE, "constraints": {"max_peak_memory_mb": 512, "max_parameters": 100000}})
    sampler = make_sampler("samo-cobra", space, seed=0)
    # set_constraint values are read in name order: max_parameters, then max_peak_memory_mb
    assert sampler._options["con_scale"] == [100000.0, 512.0]
    free = parse_space({**SPACE, "constraints": {"max_parameters": None, "max_peak_memory_mb": None}})
    assert "con_scale" not in make_sampler("samo-cobra", free, seed=0)._options
