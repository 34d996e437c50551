"""metatomic export: metatomic-ase with the exported file == our calculator with the Python model.

The metatomic engine (here metatomic-ase) builds the neighbour list, passes the pair vectors and takes
forces and stress by autograd through them; ours takes them through positions and strain. Agreement
to round-off in float64 checks the export, the capabilities and the neighbour-list request at once.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from metatomic_ase import MetatomicCalculator

from tests.deploy.conftest import ALL_KINDS, R_MAX, build_real, culi_cell, molecule

from qallegro.calculator import QAllegroCalculator
from qallegro.deploy.export import model_dtype
from qallegro.deploy.metatomic import export_metatomic

# measured: max relative difference ~1e-15 (energies, forces, stress) for every kind, float64
REL64 = 1e-11
REL32 = 1e-5


def shipped_culi_frame():
    """A periodic Cu-Li DFT frame shipped with qallegro (GPAW, PBE)."""
    from ase.io import read

    from qallegro.data.datasets import builtin_path

    # the first periodic frame holding both elements
    atoms = next(a for a in read(str(builtin_path("culi-gpaw")), index=":")
                 if a.pbc.all() and {"Cu", "Li"} <= set(a.get_chemical_symbols()))
    atoms.calc = None
    assert atoms.pbc.all() and {"Cu", "Li"} <= set(atoms.get_chemical_symbols())
    return atoms


STRUCTURES = {"molecule": molecule, "periodic": culi_cell, "shipped_culi": shipped_culi_frame}


@pytest.fixture(scope="module", params=ALL_KINDS)
def metatomic_export(request, tmp_path_factory):
    """(kind, float64 Python model, path of its metatomic export)."""
    model = build_real(request.param)
    path = tmp_path_factory.mktemp("metatomic") / f"{request.param}.pt"
    export_metatomic(model, path)
    return request.param, model, path


def properties(atoms, calc, periodic):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces()}
    if periodic:
        out["stress"] = atoms.get_stress()
    return out


def max_relative(got, want):
    want, got = np.asarray(want, dtype=float), np.asarray(got, dtype=float)
    scale = float(np.abs(want).max())
    assert scale > 1e-6, "the reference is ~0: the comparison would be vacuous"
    return float(np.abs(got - want).max()) / scale


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_metatomic_ase_equals_our_calculator(metatomic_export, structure):
    kind, model, path = metatomic_export
    atoms = STRUCTURES[structure]()
    periodic = bool(atoms.pbc.all())
    ours = properties(atoms, QAllegroCalculator(model), periodic)
    calc = MetatomicCalculator(str(path), extensions_directory=str(path.parent / "extensions"), check_consistency=True)
    theirs = properties(atoms, calc, periodic)
    assert set(ours) == set(theirs)
    for name in ours:
        err = max_relative(theirs[name], ours[name])
        assert err <= REL64, f"{kind} {structure} {name}: max relative difference {err:.3g}"


def test_float32_export(tmp_path):
    model = build_real("allegro")
    path = tmp_path / "allegro32.pt"
    meta = export_metatomic(model, path, dtype=torch.float32)
    assert meta["model_dtype"] == "float32"
    atoms = culi_cell()
    assert model_dtype(model) == torch.float64  # the export cast a copy
    ours = properties(atoms, QAllegroCalculator(copy.deepcopy(model).to(torch.float32)), True)
    theirs = properties(atoms, MetatomicCalculator(str(path), extensions_directory=str(tmp_path / "extensions")), True)
    for name in ours:
        err = max_relative(theirs[name], ours[name])
        assert err <= REL32, f"float32 {name}: max relative difference {err:.3g}"


def test_capabilities_and_neighbor_request(metatomic_export):
    from metatomic.torch import load_atomistic_model

    kind, model, path = metatomic_export
    loaded = load_atomistic_model(str(path), extensions_directory=str(path.parent / "extensions"))
    caps = loaded.capabilities()
    assert caps.atomic_types == [29, 3, 6, 1, 8]  # Cu Li C H O, in type-index order
    assert caps.length_unit == "angstrom" and caps.dtype == "float64"
    assert caps.interaction_range == R_MAX
    assert caps.outputs["energy"].unit == "eV" and caps.outputs["energy"].sample_kind == "atom"
    assert "cpu" in caps.supported_devices
    (request,) = loaded.requested_neighbor_lists()
    assert request.cutoff == R_MAX and request.full_list and request.strict
    assert kind in loaded.metadata().name
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("extra/extensions"))
        extensions = json.loads(archive.read(name))
    assert [e["name"] for e in extensions] == ["qallegro_ops"]
    assert extensions[0]["path"].endswith("qallegro/lib/libqallegro_ops.so")
    assert (path.parent / "extensions" / extensions[0]["path"]).is_file()  # collected beside the model


def test_selected_atoms_count_only_those(metatomic_export):
    """Domain decomposition: with selected_atoms, per-atom energies of those atoms only, and the total
    is their sum (the other atoms act as neighbours)."""
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, load_atomistic_model, systems_to_torch
    from vesin.metatomic import neighbor_lists_for_model

    kind, model, path = metatomic_export
    atoms = culi_cell()
    atoms.calc = QAllegroCalculator(model)
    reference = atoms.get_potential_energies()
    loaded = load_atomistic_model(str(path), extensions_directory=str(path.parent / "extensions"))
    system = systems_to_torch(atoms, dtype=torch.float64)
    for calculator in neighbor_lists_for_model("angstrom", loaded, skin=0.0):
        calculator.add_neighbor_list([system])
    chosen = [1, 4, 9, 30]
    selected = Labels(["system", "atom"], torch.tensor([[0, i] for i in chosen], dtype=torch.int32))
    for sample_kind in ("system", "atom"):
        options = ModelEvaluationOptions(length_unit="angstrom", selected_atoms=selected,
                                         outputs={"energy": ModelOutput(unit="eV", sample_kind=sample_kind)})
        block = loaded([system], options, check_consistency=True)["energy"].block()
        values = block.values.detach().numpy().reshape(-1)
        if sample_kind == "atom":
            assert block.samples.values[:, 1].tolist() == chosen
            np.testing.assert_allclose(values, reference[chosen], rtol=1e-12)
        else:
            np.testing.assert_allclose(values, [reference[chosen].sum()], rtol=1e-12)


def test_runs_in_a_process_that_never_imports_qallegro(metatomic_export):
    """metatomic loads our op library from the collected extensions folder; qallegro's Python is never
    imported (the child refuses any import of it)."""
    kind, model, path = metatomic_export
    atoms = culi_cell()
    expected = properties(atoms, QAllegroCalculator(model), True)
    script = (
        "import sys, json\n"
        # any import of qallegro in this process fails: the model must run without it
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'qallegro' or name.startswith('qallegro.'):\n"
        "            raise ImportError('qallegro must not be imported here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ase.io import read\n"
        "from metatomic_ase import MetatomicCalculator\n"
        "atoms = read(sys.argv[2])\n"
        "atoms.calc = MetatomicCalculator(sys.argv[1], extensions_directory=sys.argv[3])\n"
        "out = {'energy': atoms.get_potential_energy(), 'forces': atoms.get_forces().tolist()}\n"
        "assert not any(m == 'qallegro' or m.startswith('qallegro.') for m in sys.modules), 'qallegro imported'\n"
        "print(json.dumps(out))\n"
    )
    structure = path.parent / f"{kind}_culi.traj"  # full precision, unlike extxyz
    atoms.write(str(structure))
    # one thread in the child: a fresh process running a TorchScript Allegro+MLP export with 2 threads gives
    # forces that differ from the eager model's by 1.5e-9 relative in about 1 run in 5 (energies agree to
    # 1e-15; not MKL's reproducibility mode, the JIT fuser or the profiling executor; 1 thread: always 1e-15).
    # This test is about the import-free process; the cause is open (see the issue notes).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(structure), str(path.parent / "extensions")],
                          capture_output=True, text=True, timeout=300, cwd=str(path.parent), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max_relative(got["energy"], expected["energy"]) <= REL64
    assert max_relative(got["forces"], expected["forces"]) <= REL64


def test_type_names_must_be_elements(tmp_path):
    model = build_real("allegro")
    with pytest.raises(ValueError, match=r"\['A1'\] are not chemical symbols.*--type-names"):
        export_metatomic(model, tmp_path / "x.pt", type_names=["Cu", "Li", "C", "H", "A1"])
    assert not (tmp_path / "x.pt").exists()


def test_cli_export_metatomic(tmp_path):
    from qallegro.cli import main
    from qallegro.model.io import save_model

    model = build_real("allegro_mlp")
    save_model(model, tmp_path / "model.pth")
    out = tmp_path / "mta.pt"
    assert main(["export", str(tmp_path / "model.pth"), "-o", str(out), "--format", "metatomic"]) == 0
    atoms = molecule()
    ours = properties(atoms, QAllegroCalculator(model), False)
    theirs = properties(atoms, MetatomicCalculator(str(out), extensions_directory=str(tmp_path / "extensions")), False)
    assert max_relative(theirs["forces"], ours["forces"]) <= REL64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extensions", "model.pth", "mta.pt"]  # no temporary left
