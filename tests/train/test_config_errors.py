"""Bad configs and bad data fail with a clear message before any training step."""

from __future__ import annotations

import pytest
import yaml

from tests.train.train_fixtures import standin_config, teacher_structures
from qallegro.train import fit, load_config
from qallegro.train.config import config_from_dict


def _no_training(epoch, row):  # pragma: no cover - reaching it means the error came too late
    raise AssertionError("training started before the config error was raised")


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) training\.max_epoch\b"):
        config_from_dict({"training": {"max_epoch": 3}})
    with pytest.raises(ValueError, match="unknown top-level key"):
        config_from_dict({"trainig": {}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optimizer": {"name": "adam", "learning_rate": 0.1}}))
    with pytest.raises(ValueError, match=rf"{path}.*optimizer\.learning_rate"):
        load_config(path)
    # model keys are checked against the builder (qallegro's resolve_hparams) before data is read
    with pytest.raises(ValueError, match="num_layer"):
        fit({"data": {"train": str(tmp_path / "absent.extxyz")}, "model": {"kind": "allegro", "num_layer": 2}})


@pytest.mark.parametrize("bad, match", [
    ({"dtype": "float16"}, "dtype"),
    ({"optimizer": {"name": "sgd"}}, "optimizer.name"),
    ({"data": {"train_size": 1.5}}, "data.train_size"),
    ({"training": {"ema_decay": 1.0}}, "training.ema_decay"),
    ({"model": {"per_type_energy_shifts": "median"}}, "model.per_type_energy_shifts"),
    ({"loss": {"energy_weight": 0, "forces_weight": 0}}, "loss weights are zero"),
    ({"data": {"type_names": ["H", "Xx"]}}, r"data\.type_names: \['Xx'\] are not chemical symbols"),
])
def test_bad_values_name_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(bad)


def test_element_absent_from_data(tmp_path):
    cfg = standin_config(tmp_path, data__type_names=["H", "C", "O"])
    with pytest.raises(ValueError, match=r"\['C'\].*do not occur in the training data"):
        fit(cfg, teacher_structures(6), callback=_no_training)


def test_element_in_data_missing_from_type_names(tmp_path):
    cfg = standin_config(tmp_path, data__type_names=["H"])
    with pytest.raises(ValueError, match=r"element\(s\) \['O'\] not in the model's type_names"):
        fit(cfg, teacher_structures(6), callback=_no_training)


def test_no_forces_while_loss_needs_them(tmp_path):
    structures = teacher_structures(6, with_forces=False)
    with pytest.raises(ValueError, match=r"no 'forces' label.*loss\.forces_weight > 0"):
        fit(standin_config(tmp_path), structures, callback=_no_training)
    # energies only works once the force term (and the force-derived scale) are switched off
    cfg = standin_config(tmp_path, loss__forces_weight=0.0, model__per_type_energy_scales=None,
                         training__max_epochs=1)
    assert fit(cfg, structures, write_files=False).history[0]["epoch"] == 1


def test_no_stress_while_loss_needs_it(tmp_path):
    with pytest.raises(ValueError, match=r"no 'stress' label.*loss\.stress_weight"):
        fit(standin_config(tmp_path, loss__stress_weight=1.0), teacher_structures(6), callback=_no_training)


def test_r_max_mismatch_between_checkpoint_and_config(tmp_path):
    structures = teacher_structures(6)
    fit(standin_config(tmp_path, training__max_epochs=1), structures)
    changed = standin_config(tmp_path, training__max_epochs=2)
    changed["model"]["r_max"] = 2.5
    with pytest.raises(ValueError, match=r"r_max=3\.0 Å but the config has model\.r_max=2\.5"):
        fit(changed, structures, resume=True, callback=_no_training)
    # the same for fine-tuning from a checkpoint
    init = standin_config(tmp_path / "ft", training__max_epochs=1)
    init["model"].update(r_max=2.5, initialize_from=str(tmp_path / "run" / "best.pt"))
    with pytest.raises(ValueError, match=r"r_max=3\.0 Å but the config has model\.r_max=2\.5"):
        fit(init, structures, callback=_no_training)


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        fit(standin_config(tmp_path), teacher_structures(6), resume=True)


def test_resume_with_changed_model_hyperparameters(tmp_path):
    structures = teacher_structures(6)
    fit(standin_config(tmp_path, training__max_epochs=1), structures)
    changed = standin_config(tmp_path, training__max_epochs=2)
    changed["model"]["num_basis"] = 4
    with pytest.raises(ValueError, match=r"model\.num_basis: 8 in the checkpoint, 4 in the config"):
        fit(changed, structures, resume=True, callback=_no_training)


@pytest.mark.parametrize("yaml_text, key, extra", [
    ("optimizer: {lr: fast}", "optimizer.lr", "must be a number, got 'fast'"),
    ("optimizer: {lr: \"0.01\"}", "optimizer.lr", "remove the quotes"),
    ("optimizer: {lr: .inf}", "optimizer.lr", "must be finite"),
    ("training: {ema_decay: x}", "training.ema_decay", "must be a number or null"),
    ("training: {time_budget: x}", "training.time_budget", "must be a number or null"),
    ("scheduler: {factor: x}", "scheduler.factor", "must be a number"),
    ("training: {max_epochs: 2.5}", "training.max_epochs", "must be an integer"),
    ("training: {progress: maybe}", "training.progress", "must be true or false"),
    ("data: {type_names: H}", "data.type_names", "must be a list of strings or null"),
    ("model: {num_layers: two}", "model.num_layers", "must be an integer (like its default"),
])
def test_wrong_types_name_the_key(tmp_path, yaml_text, key, extra):
    from qallegro.errors import ConfigTypeError

    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigTypeError, match=rf"{path}: {key} must be .*") as info:
        cfg = load_config(path)
        fit(cfg, callback=_no_training)  # model keys are checked against the builder by fit
    assert extra in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_exponent_without_dot_is_a_number(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; the config loader reads it as YAML 1.2 does
    path = tmp_path / "c.yaml"
    path.write_text("optimizer: {lr: 1e-3}\ntraining: {time_budget: 2E+2}\n")
    cfg = load_config(path)
    assert cfg.optimizer.lr == 1e-3 and cfg.training.time_budget == 200.0


def test_cli_train_wrong_type_is_one_line(tmp_path, capsys):
    from qallegro.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("optimizer: {lr: fast}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qallegro train: error: {path}: optimizer.lr must be a number") and err.count("\n") == 1
    # --set values are typed the same way
    good = tmp_path / "g.yaml"
    good.write_text("seed: 0\n")
    assert main(["train", str(good), "--set", "scheduler.factor=x"]) == 2
    assert "scheduler.factor must be a number" in capsys.readouterr().err


def test_missing_data_file_names_the_key(tmp_path):
    cfg = standin_config(tmp_path, data__train=str(tmp_path / "absent.extxyz"))
    with pytest.raises(FileNotFoundError, match=r"data\.train=.*absent\.extxyz: no such file"):
        fit(cfg, callback=_no_training)
