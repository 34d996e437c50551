"""TorchScript export: metadata, the pair_allegro-style contract, fresh-process loading, bad files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.deploy.conftest import ALL_KINDS, R_MAX, TYPE_NAMES, assert_close, build_real, culi_cell, molecule

import qallegro
from qallegro.deploy.export import METADATA_KEYS, export, load, wrap
from qallegro.ops import neighbor_list


def periodic_inputs(atoms, type_names, dtype=torch.float64, periodic=True):
    pos = torch.tensor(atoms.positions, dtype=dtype)
    cell = torch.tensor(atoms.cell[:], dtype=dtype) if periodic else torch.zeros((3, 3), dtype=dtype)
    edge_index, shifts = neighbor_list(pos, R_MAX, cell if periodic else None, periodic)
    shifts = shifts.to(dtype)
    types = torch.tensor([type_names.index(s) for s in atoms.get_chemical_symbols()])
    return {"pos": pos, "edge_index": edge_index, "edge_cell_shift": shifts, "cell": cell[None], "atom_types": types}


def ghost_inputs(data):
    """The same periodic structure as LAMMPS presents it: every neighbour image an explicit ghost
    atom appended after the local ones, no cell, no shifts, ``num_local`` = local atom count."""
    pos, cell, shifts, (i, j) = data["pos"], data["cell"][0], data["edge_cell_shift"], data["edge_index"]
    n = pos.shape[0]
    images = {}
    ghost_pos, ghost_owner, new_j = [], [], []
    for e in range(i.shape[0]):
        key = (int(j[e]), *[int(round(float(s))) for s in shifts[e]])
        if key[1:] == (0, 0, 0):
            new_j.append(key[0])
            continue
        if key not in images:
            images[key] = n + len(ghost_pos)
            ghost_pos.append(pos[key[0]] + shifts[e] @ cell)
            ghost_owner.append(key[0])
        new_j.append(images[key])
    owner = torch.tensor(list(range(n)) + ghost_owner)
    all_pos = torch.cat([pos, torch.stack(ghost_pos)]) if ghost_pos else pos
    out = {"pos": all_pos, "edge_index": torch.stack([i, torch.tensor(new_j)]),
           "atom_types": data["atom_types"][owner], "num_local": torch.tensor([n])}
    return out, owner


def test_metadata_written_and_read(morse_export):
    module, meta = load(morse_export)
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["type_names"].split() == TYPE_NAMES
    assert meta["num_types"] == str(len(TYPE_NAMES))
    assert float(meta["r_max"]) == R_MAX
    assert meta["model_dtype"] == "float64"
    assert meta["model_kind"] == "test_morse"
    assert meta["qallegro_version"] == qallegro.__version__
    assert isinstance(module, torch.jit.ScriptModule)


def test_export_contract(any_export):
    kind, path = any_export
    module, meta = load(path)
    data = periodic_inputs(culi_cell(), TYPE_NAMES)
    out = module(dict(data))
    assert out["atomic_energy"].shape == (data["pos"].shape[0], 1)
    assert out["total_energy"].shape == (1, 1)
    assert out["forces"].shape == data["pos"].shape
    assert out["virial"].shape == (1, 3, 3)
    assert_close(out["total_energy"].sum(), out["atomic_energy"].sum(), what="total vs sum of atomic")
    # Newton's third law: a periodic structure's forces sum to zero
    assert_close(out["forces"].sum(0), np.zeros(3), what="net force")
    assert_close(out["virial"][0], out["virial"][0].T, what="virial symmetry")


def python_batch(data):
    n = data["pos"].shape[0]
    return {"pos": data["pos"], "atom_type": data["atom_types"], "edge_index": data["edge_index"],
            "edge_cell_shift": data["edge_cell_shift"], "cell": data["cell"],
            "batch": torch.zeros(n, dtype=torch.long), "num_atoms": torch.tensor([n])}


#: exported file vs the Python model (measured: ~1e-15 relative in float64, ~1e-7 in float32)
EAGER_REL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_export_matches_eager_model(kind, dtype, tmp_path):
    """The exported file (run as TorchScript) gives the eager Python model's energies, per-atom
    energies, forces and stress, on a periodic Cu-Li cell and on a molecule."""
    model = copy.deepcopy(build_real(kind)).to(dtype)
    path = tmp_path / f"{kind}.pt"
    export(model, path)
    module, meta = load(path)
    assert meta["model_dtype"] == str(dtype).replace("torch.", "")
    for atoms in (culi_cell(), molecule()):
        data = periodic_inputs(atoms, TYPE_NAMES, dtype=dtype, periodic=bool(atoms.pbc.all()))
        expected = model.predict(python_batch(data))
        got = module(dict(data))
        pairs = [("total_energy", got["total_energy"], expected["total_energy"]),
                 ("atomic_energy", got["atomic_energy"], expected["atomic_energy"]),
                 ("forces", got["forces"], expected["forces"])]
        if atoms.pbc.all():
            volume = float(torch.linalg.det(data["cell"][0]).abs())
            pairs.append(("stress", -got["virial"].reshape(3, 3) / volume, expected["stress"].reshape(3, 3)))
        for name, value, want in pairs:
            scale = float(want.abs().max())
            assert scale > 1e-6, f"{kind} {name}: reference ~0"
            err = float((value.reshape(want.shape).double() - want.double()).abs().max())
            assert err <= EAGER_REL[dtype] * scale, f"{kind} {dtype} {name}: max |difference| {err:.3g} (scale {scale:.3g})"


def test_ghost_atom_contract_equals_periodic(any_export):
    """What LAMMPS passes (ghost images, num_local) gives the periodic energy, forces and virial."""
    kind, path = any_export
    module, _ = load(path)
    data = periodic_inputs(culi_cell(), TYPE_NAMES)
    ref = module(dict(data))
    ghosts, owner = ghost_inputs(data)
    out = module(ghosts)
    n = data["pos"].shape[0]
    assert_close(out["total_energy"], ref["total_energy"], what=f"{kind} energy")
    assert_close(out["atomic_energy"][:n], ref["atomic_energy"], what=f"{kind} atomic energies")
    folded = torch.zeros_like(ref["forces"]).index_add(0, owner, out["forces"])  # reverse communication
    assert_close(folded, ref["forces"], what=f"{kind} forces")
    assert_close(out["virial"], ref["virial"], what=f"{kind} virial")


def test_atom_type_key_spellings_agree(morse_export):
    module, _ = load(morse_export)
    data = periodic_inputs(culi_cell(), TYPE_NAMES)
    ours = dict(data)
    ours["atom_type"] = ours.pop("atom_types")
    assert_close(module(ours)["forces"], module(dict(data))["forces"], what="atom_type vs atom_types")


def test_out_of_range_type_index_is_an_error(morse_export):
    module, _ = load(morse_export)
    data = periodic_inputs(culi_cell(), TYPE_NAMES)
    data["atom_types"] = data["atom_types"].clone()
    data["atom_types"][3] = len(TYPE_NAMES)
    with pytest.raises(Exception, match="outside"):
        module(data)


def test_fresh_process_loads_export(morse_export):
    """Exported in this process, loaded and run in a new interpreter: same numbers."""
    module, _ = load(morse_export)
    atoms = molecule()
    pos = torch.tensor(atoms.positions)
    edge_index, _ = neighbor_list(pos, R_MAX)
    types = [TYPE_NAMES.index(s) for s in atoms.get_chemical_symbols()]
    expected = module({"pos": pos, "edge_index": edge_index, "atom_types": torch.tensor(types)})
    script = (
        "import json, sys, torch\n"
        "from qallegro.deploy.export import load\n"
        "m, meta = load(sys.argv[1])\n"
        "d = json.loads(sys.argv[2])\n"
        "out = m({'pos': torch.tensor(d['pos'], dtype=torch.float64), 'edge_index': torch.tensor(d['edge_index']),"
        " 'atom_types': torch.tensor(d['types'])})\n"
        "print(json.dumps({'e': out['total_energy'].item(), 'f': out['forces'].tolist(), 'kind': meta['model_kind']}))\n"
    )
    payload = json.dumps({"pos": atoms.positions.tolist(), "edge_index": edge_index.tolist(), "types": types})
    proc = subprocess.run([sys.executable, "-c", script, str(morse_export), payload],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["kind"] == "test_morse"
    assert_close(got["e"], expected["total_energy"].item(), what="energy in fresh process")
    assert_close(got["f"], expected["forces"], what="forces in fresh process")


def test_not_a_torchscript_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a model\n" * 10)
    with pytest.raises(ValueError, match="not a qallegro export"):
        load(path)


def test_torchscript_without_metadata(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ValueError, match="qallegro_format"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load(tmp_path / "nothere.pt")


def test_wrap_rejects_bad_type_names(morse_model):
    with pytest.raises(ValueError, match="unique"):
        wrap(morse_model, type_names=["Cu", "Cu", "C", "H", "O"])
    with pytest.raises(ValueError, match="spaces"):
        wrap(morse_model, type_names=["Cu Li", "Li", "C", "H", "O"])


@pytest.mark.parametrize("kind", ["allegro", "allegro_qdi"])
def test_cli_export(kind, tmp_path):
    from qallegro.cli import main

    model = build_real(kind)
    from qallegro.model.io import save_model

    save_model(model, tmp_path / "model.pth")
    out = tmp_path / "deployed.pt"
    assert main(["export", str(tmp_path / "model.pth"), "-o", str(out), "--dtype", "float64"]) == 0
    _, meta = load(out)
    assert meta["model_kind"] == kind and meta["type_names"].split() == TYPE_NAMES
    assert main(["export", str(tmp_path / "missing.pth"), "-o", str(out)]) == 2


def test_qdi_export_runs_in_fresh_process(qdi_export):
    """An Allegro+QDI export (both placements), loaded in a new interpreter, gives the Python model's
    energy, per-atom energies, forces and virial (float64, 1e-8 relative) on a periodic cell."""
    placement, model, path = qdi_export
    meta = load(path)[1]
    assert meta["model_kind"] == "allegro_qdi"
    atoms = culi_cell()
    data = periodic_inputs(atoms, TYPE_NAMES)
    batch = {"pos": data["pos"], "atom_type": data["atom_types"], "edge_index": data["edge_index"],
             "edge_cell_shift": data["edge_cell_shift"], "cell": data["cell"],
             "batch": torch.zeros(len(atoms), dtype=torch.long), "num_atoms": torch.tensor([len(atoms)])}
    expected = model.predict(batch)  # the eager model: Python QDI path, Python dispatch
    script = (
        "import sys, torch\n"
        "from qallegro.deploy.export import load\n"
        "m, meta = load(sys.argv[1])\n"
        "d = torch.load(sys.argv[2])\n"
        "torch.save({k: v for k, v in m(d).items()}, sys.argv[3])\n"
    )
    tmp = path.parent
    torch.save(data, tmp / f"in_{placement}.pt")
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(tmp / f"in_{placement}.pt"),
                           str(tmp / f"out_{placement}.pt")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp / f"out_{placement}.pt")
    energy = float(expected["total_energy"].sum())
    assert abs(energy) > 1e-3 and expected["forces"].abs().max() > 1e-3  # a real, non-trivial reference
    assert abs(float(got["total_energy"].sum()) - energy) <= 1e-8 * abs(energy)
    for key, want in (("atomic_energy", expected["atomic_energy"]), ("forces", expected["forces"]),
                      ("virial", expected["virial"])):
        err = float((got[key].reshape(want.shape) - want).abs().max())
        assert err <= 1e-8 * float(want.abs().max()), f"{placement} {key}: max |difference| {err:.3g}"


def test_qdi_export_with_shot_noise_is_refused(tmp_path):
    from qallegro.deploy.export import export
    from qallegro.nn.qdi import set_shots

    model = build_real("allegro_qdi")
    set_shots(model, 1000, seed=1)
    with pytest.raises(ValueError, match=r"1000-shot estimates.*set_shots\(model, None\)"):
        export(model, tmp_path / "qdi.pt")
    assert not (tmp_path / "qdi.pt").exists()
    set_shots(model, None)
    export(model, tmp_path / "qdi.pt")
    assert load(tmp_path / "qdi.pt")[1]["model_kind"] == "allegro_qdi"


def test_qdi_model_object_in_ase_calculator():
    from qallegro.calculator import QAllegroCalculator

    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(build_real("allegro_qdi"))
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
    assert abs(forces.sum(axis=0)).max() < 1e-8  # Newton's third law holds for the model object
