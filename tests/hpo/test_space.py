"""Search-space files: shipped defaults load; bad files fail with the file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, IntDistribution

from qallegro.hpo.space import SpaceError, load_space, shipped_spaces


def test_shipped_spaces_load():
    assert shipped_spaces() == ["allegro", "allegro_mlp", "allegro_qdi"]
    for name in shipped_spaces():
        space = load_space(name)
        assert space.kind == name
        assert {"num_layers", "l_max", "r_max", "learning_rate", "num_bessels"} <= set(space.distributions)
    qdi = load_space("allegro_qdi")
    assert isinstance(qdi.distributions["qdi_placement"], CategoricalDistribution)
    assert {"n_qubits", "qdi_depth", "rotation", "entangling", "measure"} <= set(qdi.distributions)
    mlp = load_space("allegro_mlp").distributions
    assert isinstance(mlp["mlp_readout_depth"], IntDistribution)
    hp, r_max, lr = load_space("allegro").split({"num_layers": 2, "r_max": 4.5, "learning_rate": 0.01})
    assert hp == {"num_layers": 2, "parity": True} and r_max == 4.5 and lr == 0.01


def _write(tmp_path: Path, values) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    return path


GOOD = {"kind": "allegro", "params": {"num_layers": {"type": "int", "low": 1, "high": 3}}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, r"top level: unknown key\(s\) \['colour'\]"),
        ({"kind": "painn"}, r"kind: unknown model kind 'painn'"),
        ({"kind": None}, r"kind: required"),
        ({"params": {"num_lyers": {"type": "int", "low": 1, "high": 3}}}, r"params: unknown hyperparameter.*num_lyers"),
        ({"params": {"num_layers": {"type": "int", "low": 3, "high": 1}}}, r"params.num_layers: need low < high"),
        ({"params": {"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}}, r"params.learning_rate: log scale needs low > 0"),
        ({"params": {"num_layers": {"type": "int", "low": 1.5, "high": 3}}}, r"integer bounds"),
        ({"params": {"num_layers": {"type": "integer", "low": 1, "high": 3}}}, r"'type' must be int, float or categorical"),
        ({"params": {"rotation": {"type": "categorical", "choices": []}}}, r"params.rotation: categorical needs a non-empty list"),
        ({"params": {"num_layers": {"type": "int", "low": 1, "high": 3, "stride": 2}}}, r"params.num_layers: unknown key\(s\) \['stride'\]"),
        ({"params": {"num_layers": {"type": "int", "low": "one", "high": 3}}}, r"params.num_layers.low: must be a number"),
        ({"training": {"epochs": 3}}, r"training: unknown key\(s\) \['epochs'\]"),
        ({"ref_point": [1.0]}, r"ref_point: must be \[force MAE"),
        ({"params": {}}, r"params: required"),
    ],
)
def test_bad_space_files_name_file_and_key(tmp_path, change, message):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(_write(tmp_path, "kind: [allegro\nparams: {"))
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space(tmp_path / "nope.yaml")
