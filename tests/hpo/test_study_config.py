"""STUDY.yaml validation (every error names the key), transfer rules, budgets, shipped studies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qallegro.hpo.study_config import StudyConfigError, load_study_config, parse_study
from tests.hpo.study_helpers import tiny_study

ROOT = Path(__file__).resolve().parents[2]


def _values(tmp_path):
    return yaml.safe_load(tiny_study(tmp_path).read_text())


def _edit(values, path, value):
    node = values
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return values


@pytest.mark.parametrize("path,value,message", [
    (("colour",), "red", "top level: unknown key(s) ['colour']"),
    (("name",), "a/b", "name: required: a name without '/'"),
    (("datasets", "culi", "source"), KeyError, "datasets.culi.source: required"),
    (("datasets", "culi", "sauce"), "x", "datasets.culi: unknown key(s) ['sauce']"),
    (("datasets", "culi", "split", "train"), 0, "datasets.culi.split.train: must be a count"),
    (("datasets", "culi", "split", "test"), KeyError, "datasets.culi.split.test: must be a count"),
    (("datasets", "culi", "target"), "stress", "datasets.culi.target: must be one of ['forces', 'energy']"),
    (("datasets", "culi", "limit"), "all", "datasets.culi.limit: must be a whole number >= 1"),
    (("datasets", "culi", "trial"), {"epochs": 3}, "datasets.culi.trial: unknown key(s) ['epochs']"),
    (("datasets", "benzene", "transfer_from"), "benzene", "datasets.benzene.transfer_from: must name another"),
    (("kinds", "painn"), {}, "kinds.painn: unknown model kind"),
    (("kinds", "allegro_qdi", "transfer_from"), "qm9", "kinds.allegro_qdi.transfer_from: must name a data set"),
    (("kinds", "allegro", "params", "n_qubits"), 4, "unknown hyperparameter(s) ['n_qubits']"),
    (("kinds", "allegro", "space"), "allegro_mlp", "kinds.allegro.space: "),
    (("samo_cobra", "trials"), "many", "samo_cobra.trials: must be a whole number >= 2"),
    (("samo_cobra", "n_init"), 9, "samo_cobra.n_init: the initial design (9) cannot exceed trials (3)"),
    (("trial", "time_budget"), "x", "trial.time_budget: must be a positive number"),
    (("final", "points"), ["best"], "final.points: must be a non-empty list of"),
    (("latency", "clock"), "sundial", "latency: latency.clock must be wall or cpu"),
    (("latency", "threads"), 2, "latency.clock: cpu measures latency only with threads: 1"),
    (("storage",), "study.db", "storage: must be an SQLAlchemy URL"),
])
def test_errors_name_the_key(tmp_path, path, value, message):
    values = _edit(_values(tmp_path), path, value)
    with pytest.raises(StudyConfigError) as err:
        parse_study(values, "s.yaml", tmp_path)
    assert str(err.value).startswith("s.yaml: ") and message in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(StudyConfigError, match="no such study file"):
        load_study_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(StudyConfigError, match="bad.yaml: not valid YAML"):
        load_study_config(bad)


def test_transfer_rules_budgets_and_paths(tmp_path):
    values = _values(tmp_path)
    values["datasets"]["gpaw"] = {"source": "culi-gpaw", "transfer_from": "culi",
                                  "split": {"train": 5, "val": 3, "test": 3}, "final": {"max_epochs": 7}}
    cfg = parse_study(values, "s.yaml", tmp_path)
    tuned = [(d, k) for d in cfg.datasets for k in cfg.kinds if cfg.tuned(d, k)]
    assert tuned == [("culi", "allegro"), ("culi", "allegro_qdi"), ("benzene", "allegro")]
    assert cfg.transfer_source("benzene", "allegro_qdi") == "culi"
    assert cfg.transfer_source("gpaw", "allegro") == "culi" and cfg.transfer_source("gpaw", "allegro_qdi") == "culi"
    assert cfg.budget("gpaw", "final") == (30.0, 7) and cfg.budget("gpaw", "trial") == (30.0, 1)
    assert cfg.out == tmp_path / "out" and cfg.storage == f"sqlite:///{(tmp_path / 'out' / 'studies.db').resolve()}"
    # the overrides narrow the shipped space; unnamed parameters keep the shipped ranges
    space = cfg.kinds["allegro"].space
    assert space.fixed["num_layers"] == 1 and "readout_mlp_hidden_layers_depth" in space.distributions


@pytest.mark.parametrize("name", ["laskaris2026_cpu", "laskaris2026_full"])
def test_shipped_studies_are_valid(name):
    cfg = load_study_config(ROOT / "studies" / f"{name}.yaml")
    assert set(cfg.kinds) == {"allegro", "allegro_mlp", "allegro_qdi"}
    assert {"culi", "benzene", "aspirin", "qm9"} <= set(cfg.datasets)
    # the paper's protocol: Allegro+QDI tuned on Cu-Li only, transferred to every other set
    assert [d for d in cfg.datasets if cfg.tuned(d, "allegro_qdi")] == ["culi"]
    assert cfg.datasets["qm9"].target == "energy"
    assert cfg.out.resolve() == (ROOT / "results" / name).resolve()


@pytest.mark.parametrize("action", ["status", "report"])
def test_reading_a_study_that_never_ran_creates_nothing(tmp_path, capsys, action):
    from qallegro.cli import main

    path = tiny_study(tmp_path)
    assert main(["study", action, str(path)]) == 2
    assert "no results of study 'tiny' yet (run: qallegro study run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
