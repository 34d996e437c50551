"""The trainer with the real Allegro model on real DFT data: the benzene frames shipped with qallegro
(PBE/def2-SVP), so that these run on any clone."""

from __future__ import annotations

import json

import pytest
import yaml

from qallegro.cli import main
from qallegro.data.datasets import builtin_path

BENZENE = builtin_path("benzene")

SMALL_ALLEGRO = {"kind": "allegro", "r_max": 4.0, "l_max": 1, "num_layers": 1, "num_scalar_features": 16,
                 "num_tensor_features": 4, "allegro_mlp_hidden_layers_width": 16,
                 "scalar_embed_mlp_hidden_layers_width": 16, "readout_mlp_hidden_layers_width": 16}


def test_tiny_overfit_allegro_benzene_loss_drops_100x():
    from qallegro.data import read
    from qallegro.train import fit

    structures = read(BENZENE, index=":5")
    cfg = {"dtype": "float64", "device": "cpu", "data": {"train_size": 5, "val_size": 0},
           "model": SMALL_ALLEGRO, "optimizer": {"lr": 0.05}, "scheduler": {"name": "none"},
           "training": {"max_epochs": 300, "batch_size": 5, "ema_decay": None, "progress": False,
                        "early_stopping_patience": None}}
    result = fit(cfg, structures, write_files=False)
    losses = [row["train_loss"] for row in result.history]
    # Adam at a high lr is spiky at the end; the best of the last 30 epochs is the fair "reached" value
    assert min(losses[-30:]) < losses[0] / 100, f"loss {losses[0]:.3g} -> {min(losses[-30:]):.3g}"


def test_cli_train_then_evaluate(tmp_path, capsys):
    cfg = {"run_dir": str(tmp_path / "run"), "dtype": "float64",
           "data": {"train": str(BENZENE), "index": ":12", "train_size": 8, "val_size": 4},
           "model": SMALL_ALLEGRO, "training": {"max_epochs": 2, "batch_size": 4, "progress": False}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    assert "best checkpoint" in capsys.readouterr().out
    assert main(["train", str(path), "--resume", "--max-epochs", "3"]) == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    out = tmp_path / "errors.json"
    assert main(["evaluate", str(tmp_path / "run" / "best.pt"), str(BENZENE), "--index", "12:16",
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["num_structures"] == 4 and metrics["num_atoms"] == 48
    assert set(metrics["per_element"]) == {"C", "H"}
    for key in ("energy_mae_meV_per_atom", "energy_rmse_meV", "forces_mae_meV_per_A", "forces_rmse_meV_per_A"):
        assert metrics[key] > 0
    assert metrics["forces_rmse_meV_per_A"] >= metrics["forces_mae_meV_per_A"]
    # the deployable model file gives the same numbers as the checkpoint
    assert main(["evaluate", str(tmp_path / "run" / "best_model.pt"), str(BENZENE), "--index", "12:16",
                 "--json", str(tmp_path / "e2.json")]) == 0
    again = json.loads((tmp_path / "e2.json").read_text())
    assert again["forces_mae_meV_per_A"] == pytest.approx(metrics["forces_mae_meV_per_A"], rel=1e-10)


def test_cli_evaluate_shots_on_a_qdi_model(tmp_path, capsys):
    import qallegro.models as M

    small = {k: v for k, v in SMALL_ALLEGRO.items() if k not in ("kind", "r_max", "readout_mlp_hidden_layers_width")}
    M.save_model(M.build("allegro_qdi", ["H", "C", "O"], 4.0, seed=0, **small), tmp_path / "qdi.pt")
    results = {}
    for name, extra in (("exact", []), ("a", ["--shots", "50"]), ("b", ["--shots", "50"])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", str(tmp_path / "qdi.pt"), str(BENZENE), "--index", ":3", "--json", str(out)] + extra) == 0
        results[name] = json.loads(out.read_text())["forces_mae_meV_per_A"]
    assert results["a"] == results["b"]  # seeded shot sampling is reproducible
    assert results["a"] != pytest.approx(results["exact"], rel=1e-9)  # and it is noisy
    M.save_model(M.build("allegro", ["H", "C", "O"], 4.0, seed=0, **small), tmp_path / "plain.pt")
    assert main(["evaluate", str(tmp_path / "plain.pt"), str(BENZENE), "--index", ":3", "--shots", "50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qallegro evaluate: error: --shots 50:") and "no QDI layer" in err
    with pytest.raises(ValueError, match="no QDI layer"):  # --debug shows the exception itself
        main(["evaluate", str(tmp_path / "plain.pt"), str(BENZENE), "--index", ":3", "--shots", "50", "--debug"])
