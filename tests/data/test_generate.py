"""Reference-data generator: real calculators on tiny systems, resume, failure handling, CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import SCFError, all_changes
from ase.calculators.emt import EMT
from ase.units import Hartree

from qallegro.data.generate import (CalculatorSpec, CuLiAlloy, ExtxyzStore, SamplingOptions, generate,
                                    make_calculator, parse_system, scan_frames)

# (rtol, atol) per comparison: extxyz stores positions/forces with 8 decimals, energies in full.
TOLERANCES = {
    "float64": (1e-10, 1e-10),
    "extxyz": (1e-7, 1e-6),
    "finite_difference": (1e-4, 2e-4),
}

# EMT knows Cu, so pure-Cu "alloys" give a fast, deterministic real calculator for the bookkeeping tests.
FAST_OPTIONS = SamplingOptions(equilibration=2, every=2, segment=3, temperatures=(500.0,))


def pure_cu(n=(4, 8)) -> CuLiAlloy:
    return CuLiAlloy(compositions=(1.0,), lattices=("fcc",), atoms=n)


def emt_spec() -> CalculatorSpec:
    return make_calculator("emt")


def keys_of(path: Path):
    return [(a.info["config_type"], a.info["frame_index"]) for a in ase.io.read(path, ":")]


class CountingEMT(EMT):
    """EMT that counts its calculations and fails (like a non-converged SCF) on chosen call numbers."""

    calls = 0
    fail_on: set = set()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        type(self).calls += 1
        if type(self).calls in type(self).fail_on:
            raise SCFError(f"SCF did not converge (test failure on call {type(self).calls})")
        super().calculate(atoms, properties, system_changes)


def counting_spec(fail_on=()) -> CalculatorSpec:
    CountingEMT.calls = 0
    CountingEMT.fail_on = set(fail_on)
    return CalculatorSpec("counting-emt", "EMT (counting)", CountingEMT)


def test_frames_labels_and_info(tmp_path):
    out = tmp_path / "cu.extxyz"
    report = generate(out, pure_cu((4, 16)), emt_spec(), {"rattle": 3, "strain": 2, "vacancy": 2, "surface": 1, "md": 3},
                      seed=1, options=FAST_OPTIONS, progress=False)
    assert report.written == 11 and report.failed == 0
    frames = ase.io.read(out, ":")
    assert sorted(keys_of(out)) == sorted([("rattle", i) for i in range(3)] + [("strain", i) for i in range(2)]
                                          + [("vacancy", i) for i in range(2)] + [("surface", 0)]
                                          + [("md", i) for i in range(3)])
    rtol, atol = TOLERANCES["extxyz"]
    for atoms in frames:
        assert atoms.info["method"].startswith("EMT") and atoms.info["wall_time"] >= 0 and atoms.info["cpu_time"] >= 0
        # the stored labels are EMT's at the stored positions
        ref = atoms.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(atoms.get_potential_energy(), ref.get_potential_energy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), rtol=rtol, atol=atol)
    vacancy = [a for a in frames if a.info["config_type"] == "vacancy"]
    assert all(len(a) in (2, 3, 6, 7, 14, 15) for a in vacancy)  # 4-, 8- or 16-atom cells minus 1..2 atoms
    md = [a for a in frames if a.info["config_type"] == "md"]
    assert [a.info["md_step"] for a in md] == [4, 6, 8]  # equilibration 2, then every 2 steps
    assert all(a.info["temperature_K"] == 500.0 and a.info["driver"].startswith("EMT") for a in md)


def test_md_driver_other_than_labeller(tmp_path):
    """EMT drives the dynamics; a Lennard-Jones calculator given by import path labels the frames."""
    from ase.calculators.lj import LennardJones

    out = tmp_path / "cu.extxyz"
    lj = make_calculator("ase.calculators.lj:LennardJones", {"sigma": 2.3, "epsilon": 0.4, "rc": 5.0})
    assert lj.method.startswith("LennardJones (ase")
    report = generate(out, pure_cu(), lj, {"md": 3}, seed=0, options=FAST_OPTIONS, driver=emt_spec(), progress=False)
    assert report.written == 3
    rtol, atol = TOLERANCES["extxyz"]
    for atoms in ase.io.read(out, ":"):
        assert atoms.info["driver"].startswith("EMT") and atoms.info["method"].startswith("LennardJones")
        ref, drv = atoms.copy(), atoms.copy()
        ref.calc = LennardJones(sigma=2.3, epsilon=0.4, rc=5.0)
        drv.calc = EMT()
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), rtol=rtol, atol=atol)
        assert not np.allclose(atoms.get_forces(), drv.get_forces(), atol=1e-3)


def test_seeded_and_resumable(tmp_path):
    counts = {"rattle": 4, "md": 5}
    a, b = tmp_path / "a.extxyz", tmp_path / "b.extxyz"
    generate(a, pure_cu(), emt_spec(), counts, seed=3, options=FAST_OPTIONS, progress=False)
    # b is made in two runs: first part of the frames, then the rest
    generate(b, pure_cu(), emt_spec(), {"rattle": 2, "md": 4}, seed=3, options=FAST_OPTIONS, progress=False)
    spec = counting_spec()
    report = generate(b, pure_cu(), spec, counts, seed=3, options=FAST_OPTIONS, progress=False, force=True)
    assert report.already_done == 6 and report.written == 3
    frames_a = {(f.info["config_type"], f.info["frame_index"]): f for f in ase.io.read(a, ":")}
    frames_b = {(f.info["config_type"], f.info["frame_index"]): f for f in ase.io.read(b, ":")}
    assert frames_a.keys() == frames_b.keys()
    for key, fa in frames_a.items():
        np.testing.assert_allclose(fa.positions, frames_b[key].positions, atol=1e-7, err_msg=str(key))
    # nothing left to do: no calculation at all
    spec = counting_spec()
    report = generate(b, pure_cu(), spec, counts, seed=3, options=FAST_OPTIONS, progress=False, force=True)
    assert report.written == 0 and report.already_done == 9 and CountingEMT.calls == 0
    # another seed makes other structures
    c = tmp_path / "c.extxyz"
    generate(c, pure_cu(), emt_spec(), {"rattle": 1}, seed=4, options=FAST_OPTIONS, progress=False)
    pos_c = ase.io.read(c).positions
    pos_a = frames_a[("rattle", 0)].positions
    assert pos_c.shape != pos_a.shape or not np.allclose(pos_c, pos_a)


def test_torn_frame_is_cut_and_redone(tmp_path):
    out = tmp_path / "cu.extxyz"
    generate(out, pure_cu(), emt_spec(), {"rattle": 3}, seed=0, progress=False)
    text = out.read_text()
    whole = text.count("Lattice=")
    # simulate a kill in the middle of the last frame
    out.write_text(text[: len(text) - 40])
    keys, end = scan_frames(out)
    assert len(keys) == whole - 1 and end < len(text) - 40
    store = ExtxyzStore(out)
    assert store.truncated_bytes > 0 and len(store.done) == whole - 1
    before = ase.io.read(out, ":")  # the frames that survived the cut
    report = generate(out, pure_cu(), emt_spec(), {"rattle": 3}, seed=0, progress=False)
    after = ase.io.read(out, ":")
    assert report.written == 1 and len(after) == 3 and len(before) == 2
    # the redone frame is the same structure with the same labels (only wall_time may differ)
    redone, original = after[-1], ase.io.read(io.StringIO(text), ":", format="extxyz")[-1]
    np.testing.assert_allclose(redone.positions, original.positions, atol=1e-8)
    np.testing.assert_allclose(redone.get_potential_energy(), original.get_potential_energy(), rtol=1e-12)


def test_failed_frames_are_logged_not_written_nor_retried(tmp_path):
    out = tmp_path / "cu.extxyz"
    spec = counting_spec(fail_on={2})
    report = generate(out, pure_cu(), spec, {"rattle": 4}, seed=0, progress=False)
    assert report.written == 3 and report.failed == 1
    failed = [json.loads(line) for line in (tmp_path / "cu.extxyz.failed.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and failed[0]["error"] == "SCFError" and failed[0]["config_type"] == "rattle"
    assert ("rattle", failed[0]["frame_index"]) not in keys_of(out)
    assert len(failed[0]["positions"]) == len(failed[0]["symbols"])
    spec = counting_spec()
    report = generate(out, pure_cu(), spec, {"rattle": 4}, seed=0, progress=False)
    assert report.written == 0 and report.already_failed == 1 and CountingEMT.calls == 0


def test_too_close_atoms_are_not_calculated(tmp_path):
    out = tmp_path / "cu.extxyz"
    spec = counting_spec()
    report = generate(out, pure_cu(), spec, {"rattle": 3}, seed=0, progress=False,
                      options=SamplingOptions(rattle=3.0))  # absurd rattles put atoms on top of each other
    failed = [json.loads(line) for line in (tmp_path / "cu.extxyz.failed.jsonl").read_text().splitlines()]
    assert report.failed == len(failed) >= 1 and all(f["error"] == "TooClose" for f in failed)
    assert CountingEMT.calls == report.written


def test_driver_failure_ends_the_segment(tmp_path):
    out = tmp_path / "cu.extxyz"
    # the labeller drives the MD; its 4th call (2 equilibration steps, 1st frame's step 2) fails
    spec = counting_spec(fail_on={4})
    report = generate(out, pure_cu(), spec, {"md": 6}, seed=0, options=FAST_OPTIONS, progress=False)
    failed = [json.loads(line) for line in (tmp_path / "cu.extxyz.failed.jsonl").read_text().splitlines()]
    # MD force calls: steps 1-2 of equilibration are calls 1-3, frame 0's two steps calls 4-5
    assert report.written == 3 and {f["frame_index"] for f in failed} == {0, 1, 2}  # segment 0 lost
    assert "driver failed" in failed[0]["message"]


def test_settings_mismatch_is_refused(tmp_path):
    out = tmp_path / "cu.extxyz"
    generate(out, pure_cu(), emt_spec(), {"rattle": 1}, seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        generate(out, pure_cu(), emt_spec(), {"rattle": 2}, seed=1, progress=False)
    generate(out, pure_cu(), emt_spec(), {"rattle": 2}, seed=0, progress=False)  # more frames: fine


def test_periodic_samplers_need_a_periodic_system(tmp_path):
    with pytest.raises(ValueError, match="strain"):
        generate(tmp_path / "x.extxyz", parse_system("H2O"), emt_spec(), {"strain": 1}, progress=False)


def test_culi_compositions_and_sizes():
    system = CuLiAlloy(compositions=(0.25, 0.75), atoms=(32, 64))
    rng = np.random.default_rng(0)
    for _ in range(20):
        atoms, desc = system.bulk(rng)
        n_cu = atoms.get_chemical_symbols().count("Cu")
        assert 32 <= len(atoms) <= 64 and n_cu in (round(0.25 * len(atoms)), round(0.75 * len(atoms)))
        assert desc.split()[0] in ("fcc", "bcc")
        slab, _ = system.surface(rng)
        assert 32 <= len(slab) <= 64 and slab.pbc.all()
        # the vacuum gap along z leaves the slab's two faces at least 2 * vacuum apart through the boundary
        z = slab.positions[:, 2]
        assert slab.cell[2, 2] - (z.max() - z.min()) >= 2 * system.vacuum - 1e-6
    with pytest.raises(ValueError, match="composition"):
        CuLiAlloy(compositions=(1.5,))


def test_gfn1_xtb_on_a_tiny_culi_cell(tmp_path):
    from tblite.ase import TBLite  # tblite is in the test extra: its absence is an error

    out = tmp_path / "culi.extxyz"
    system = CuLiAlloy(compositions=(0.5,), lattices=("bcc",), atoms=(16, 16))
    report = generate(out, system, make_calculator("gfn1-xtb"), {"rattle": 1, "strain": 1}, seed=0, progress=False)
    assert report.written == 2
    rtol, atol = TOLERANCES["extxyz"]
    for atoms in ase.io.read(out, ":"):
        assert atoms.get_chemical_symbols().count("Cu") == 8 and "GFN1-xTB" in atoms.info["method"]
        ref = atoms.copy()
        ref.calc = TBLite(method="GFN1-xTB", verbosity=0)
        np.testing.assert_allclose(atoms.get_potential_energy(), ref.get_potential_energy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), rtol=rtol, atol=1e-5)
        np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), rtol=rtol, atol=1e-6)
    # the package's reader sees the labels with the contract's units and shapes
    from qallegro.data import read

    structures = read(out)
    assert structures[0].stress.shape == (3, 3) and structures[0].forces.shape == (16, 3)


def test_pyscf_h2o_energy_and_forces(tmp_path):
    from ase.build import molecule
    from pyscf import dft, gto

    from qallegro.data.generate.pyscf_calculator import PySCFCalculator

    atoms = molecule("H2O")
    atoms.positions[0] += [0.02, -0.03, 0.01]  # off equilibrium so forces are not ~0
    # grid response on: forces are then the exact gradient of the energy, even on the coarse grid
    options = dict(basis="sto-3g", grids_level=1, conv_tol=1e-11, grid_response=True)
    atoms.calc = PySCFCalculator(**options)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis="sto-3g", unit="Angstrom", verbose=0)
    mf = dft.RKS(mol, xc="PBE").density_fit()
    mf.grids.level, mf.conv_tol = 1, 1e-11
    rtol, atol = TOLERANCES["float64"]
    np.testing.assert_allclose(energy, mf.kernel() * Hartree, rtol=rtol, atol=1e-7)
    # forces (eV/Å) are minus the energy gradient: central differences
    h = 1e-3
    components = [(0, 0), (0, 1), (0, 2), (1, 1), (2, 2)]  # O fully, one component of each H
    fd = np.zeros(len(components))
    for n, (i, k) in enumerate(components):
        shifted = []
        for sign in (1, -1):
            b = atoms.copy()
            b.positions[i, k] += sign * h
            b.calc = PySCFCalculator(**options)
            shifted.append(b.get_potential_energy())
        fd[n] = -(shifted[0] - shifted[1]) / (2 * h)
    rtol, atol = TOLERANCES["finite_difference"]
    np.testing.assert_allclose([forces[i, k] for i, k in components], fd, rtol=rtol, atol=atol)
    # through the generator, with the preset and a failing SCF (one cycle cannot converge)
    out = tmp_path / "h2o.extxyz"
    report = generate(out, parse_system("H2O"), make_calculator("pbe-def2svp", {"basis": "sto-3g", "grids_level": 1}),
                      {"rattle": 2}, seed=0, progress=False)
    assert report.written == 2 and "PBE/sto-3g RI (PySCF" in ase.io.read(out).info["method"]
    bad = make_calculator("pbe-def2svp", {"basis": "sto-3g", "max_cycle": 1, "grids_level": 1})
    report = generate(tmp_path / "bad.extxyz", parse_system("H2O"), bad, {"rattle": 1}, seed=0, progress=False)
    assert report.failed == 1 and report.written == 0
    assert "SCFError" in (tmp_path / "bad.extxyz.failed.jsonl").read_text()


def test_cli_generate_and_errors(tmp_path, capsys):
    from qallegro.cli import main

    out = tmp_path / "cu.extxyz"
    argv = ["data", "generate", "--system", "culi", "--compositions", "1", "--lattices", "fcc", "--atoms", "4-8",
            "--calculator", "emt", "--rattle", "2", "--md", "2", "--md-segment", "2", "--md-every", "1",
            "--md-equilibration", "1", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    assert len(ase.io.read(out, ":")) == 4 and "4 frames written" in capsys.readouterr().out
    assert main(argv) == 0 and "0 frames written, 0 failed, 4 were done before" in capsys.readouterr().out
    assert main(["data", "generate", "--system", "nonsense", "--rattle", "1", "-o", str(out)]) == 2
    assert "unknown system 'nonsense'" in capsys.readouterr().err
    assert main(["data", "generate", "--system", "culi", "--calculator", "emt", "-o", str(out)]) == 2
    assert "no frames asked for" in capsys.readouterr().err


def test_generate_json_rebuilds_labeller_and_driver(tmp_path, capsys):
    """generate.json records the calculators with their options; *_from_settings rebuild them exactly."""
    import json

    from qallegro.cli import main
    from qallegro.data.generate.cli import driver_from_settings, labeller_from_settings

    out = tmp_path / "cu.extxyz"
    seed = int(np.random.SeedSequence().entropy % 2**32)  # a fresh sigma each run, replayable from the print
    print(f"sigma drawn with seed {seed}")
    sigma = float(np.random.default_rng(seed).uniform(2.2, 2.4))
    argv = ["data", "generate", "--system", "culi", "--compositions", "1", "--lattices", "fcc", "--atoms", "4-4",
            "--calculator", "ase.calculators.lj:LennardJones", "--calc-option", f"sigma={sigma!r}",
            "--calc-option", "rc=5", "--driver", "emt", "--md", "1", "--md-segment", "1", "--md-every", "1",
            "--md-equilibration", "1", "--rattle", "1", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    settings = json.loads((tmp_path / "cu.extxyz.generate.json").read_text())
    assert settings["calculator_options"] == {"sigma": sigma, "rc": 5}
    assert settings["driver_calculator"] == "emt" and settings["driver_options"] == {}
    labeller, driver = labeller_from_settings(settings), driver_from_settings(settings)
    assert labeller.method == settings["method"] and driver.method == settings["driver"]
    for atoms in ase.io.read(out, ":"):
        fresh = atoms.copy()
        fresh.calc = labeller.build()
        assert fresh.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    # the labeller drives its own MD: no driver recorded
    argv_same = argv[:argv.index("--driver")] + argv[argv.index("--driver") + 2:]
    assert main(argv_same[:-1] + [str(tmp_path / "same.extxyz")]) == 0
    same = json.loads((tmp_path / "same.extxyz.generate.json").read_text())
    assert same["driver_calculator"] is None and driver_from_settings(same) is None
    # a changed calculator option is a changed data set: resuming with it is refused
    argv[argv.index(f"sigma={sigma!r}")] = f"sigma={sigma + 0.1!r}"
    assert main(argv) == 2 and "generated with calculator_options=" in capsys.readouterr().err


@pytest.mark.slow
def test_gpaw_lcao_preset_on_a_two_atom_cell(tmp_path):
    pytest.importorskip("gpaw")
    out = tmp_path / "culi.extxyz"
    system = CuLiAlloy(compositions=(0.5,), lattices=("bcc",), atoms=(2, 2))
    # Gamma point only keeps this a plumbing test (seconds), not a converged calculation
    spec = make_calculator("gpaw-pbe", {"kpts": (1, 1, 1)})
    assert not spec.stress and "GPAW" in spec.method
    report = generate(out, system, spec, {"rattle": 1}, seed=0, progress=False)
    assert report.written == 1
    atoms = ase.io.read(out)
    assert atoms.get_chemical_formula() == "CuLi" and "stress" not in atoms.calc.results
    assert np.isfinite(atoms.get_potential_energy())
    # momentum conservation: the forces of a periodic cell sum to ~zero
    np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0.0, atol=0.05)
