"""Readers on real files: the shared DFT data, and rMD17 / MD17 / QM9 files written from it in their
published layouts (so the unit conversions are checked against known values)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ase import units

import qallegro.data as qd
from qallegro.data import DataError, Structure
from tests.conftest import shared_file

KCAL = units.kcal / units.mol


def test_extxyz_ethanol_rmd17():
    frames = qd.read(shared_file("ethanol_rmd17_100.extxyz"))
    assert len(frames) == 100
    assert frames[0].symbols.count("C") == 2 and frames[0].symbols.count("O") == 1
    assert frames[0].forces.shape == (9, 3) and not frames[0].pbc.any()
    energies = np.array([f.energy for f in frames])
    assert -4210.5 < energies.min() < energies.max() < -4208.0  # eV: ethanol at PBE/def2-SVP
    forces = np.concatenate([f.forces for f in frames])
    assert 0.5 < forces.std() < 2.5  # eV/Å


def test_extxyz_periodic_cu_with_stress():
    frames = qd.read(shared_file("cu_pbe_zuo2020_test.extxyz"))
    assert all(f.pbc.all() for f in frames)
    s = frames[0].stress
    assert s.shape == (3, 3) and np.allclose(s, s.T)
    # VASP PBE energies (against VASP's atomic references): bulk fcc Cu is ~-4.10 eV/atom; frame 0 of the
    # published 31-frame test split is a 108-atom AIMD snapshot at 300 K, -4.058 eV/atom
    assert len(frames) == 31 and frames[0].num_atoms == 108
    assert -4.10 < frames[0].energy / frames[0].num_atoms < -4.0


def test_index_selection():
    path = shared_file("culi_vasp_rss.extxyz")
    assert len(qd.read(path, index="10:20")) == 10
    assert len(qd.read(path, index="-1")) == 1


def test_rmd17_npz_units(tmp_path):
    frames = qd.read(shared_file("ethanol_rmd17_100.extxyz"), index=":5")
    path = tmp_path / "rmd17_ethanol.npz"
    np.savez(
        path,
        nuclear_charges=frames[0].numbers,
        coords=np.stack([f.positions for f in frames]),
        energies=np.array([f.energy for f in frames]) / KCAL,
        forces=np.stack([f.forces for f in frames]) / KCAL,
        old_indices=np.arange(5),
    )
    back = qd.read(path)
    assert len(back) == 5
    for a, b in zip(frames, back):
        assert b.energy == pytest.approx(a.energy, rel=1e-12)
        np.testing.assert_allclose(b.forces, a.forces, rtol=1e-12)
        np.testing.assert_array_equal(b.numbers, a.numbers)


def test_md17_npz_default_and_sgdml_units(tmp_path):
    frames = qd.read(shared_file("ethanol_rmd17_100.extxyz"), index=":3")
    R = np.stack([f.positions for f in frames])
    path = tmp_path / "md17.npz"
    np.savez(path, z=frames[0].numbers, R=R, E=np.array([[f.energy / KCAL] for f in frames]),
             F=np.stack([f.forces for f in frames]) / KCAL)
    back = qd.read(path)
    assert back[1].energy == pytest.approx(frames[1].energy, rel=1e-12)
    # sGDML file in eV and Bohr
    path2 = tmp_path / "sgdml.npz"
    np.savez(path2, z=frames[0].numbers, R=R / units.Bohr, E=np.array([f.energy for f in frames]),
             F=np.stack([f.forces for f in frames]) * units.Bohr, e_unit="eV", r_unit="bohr")
    back2 = qd.read(path2)
    np.testing.assert_allclose(back2[2].positions, frames[2].positions, rtol=1e-12)
    np.testing.assert_allclose(back2[2].forces, frames[2].forces, rtol=1e-12)


def test_md17_ragged_forces_error(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, z=np.array([1, 1]), R=np.zeros((3, 2, 3)), E=np.zeros(3), F=np.zeros((3, 1, 3)))
    with pytest.raises(DataError, match=r"bad\.npz: forces have shape"):
        qd.read(path)
    np.savez(path, z=np.array([1, 1]), R=np.zeros((3, 2, 3)), E=np.zeros(3))
    with pytest.raises(DataError, match="missing key 'F'"):
        qd.read(path)


def test_qm9pack_csv_matches_shared_qm9():
    if importlib.util.find_spec("qm9pack") is None:  # the wheel's data folder is what we read
        pytest.skip("qm9pack wheel not installed")
    shared = qd.read(shared_file("qm9_100.extxyz"), index=":5")
    csv = qd.read_qm9_csv(target="U0", limit=5)
    for a, b in zip(shared, csv):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
        assert b.energy == pytest.approx(a.energy, rel=1e-7)  # U0 in eV (Hartree constants differ in the 9th digit)
    h = qd.read_qm9_csv(target="H", limit=1)[0]
    assert h.energy == pytest.approx(-40.475117 * units.Hartree, rel=1e-9)
    with pytest.raises(ValueError, match="target"):
        qd.read_qm9_csv(target="E", limit=1)


def test_qm9_original_xyz(tmp_path):
    text = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""
    path = tmp_path / "dsgdb9nsd_000001.xyz"
    path.write_text(text.replace("0.0080009958", "8.0009958*^-3"))
    (frame,) = qd.read(path)
    assert frame.energy == pytest.approx(-40.47893 * units.Hartree, rel=1e-12)
    assert frame.positions[0, 2] == pytest.approx(0.0080009958)
    (g,) = qd.read_qm9_xyz(tmp_path, target="G")
    assert g.energy == pytest.approx(-40.498597 * units.Hartree, rel=1e-12)


def test_bad_structures_name_the_problem(tmp_path):
    with pytest.raises(DataError, match=r"'forces' has shape \(1, 3\), expected \(2, 3\)"):
        Structure(positions=np.zeros((2, 3)), numbers=[1, 1], forces=np.zeros((1, 3)), source="x.xyz, frame 4")
    with pytest.raises(DataError, match="frame 4: 'positions' contains NaN"):
        Structure(positions=[[0, 0, 0], [np.nan, 0, 0]], numbers=[1, 1], source="x.xyz, frame 4")
    with pytest.raises(DataError, match="unknown element with atomic number 200"):
        Structure(positions=np.zeros((1, 3)), numbers=[200])
    with pytest.raises(DataError, match="singular"):
        Structure(positions=np.zeros((1, 3)), numbers=[29], cell=np.zeros((3, 3)), pbc=True)
    bad = tmp_path / "bad.extxyz"
    bad.write_text("2\nProperties=species:S:1:pos:R:3 energy=nan pbc=\"F F F\"\nH 0 0 0\nH 0 0 0.7\n")
    with pytest.raises(DataError, match=r"bad\.extxyz, frame 0: 'energy' is nan"):
        qd.read(bad)
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        qd.read(tmp_path / "nope.xyz")


def test_collate_batch_and_unknown_element():
    frames = qd.read(shared_file("culi_vasp_rss.extxyz"), index=":6")
    data = qd.collate(frames, 4.0, ["Cu", "Li"])
    n = sum(f.num_atoms for f in frames)
    assert data["pos"].shape == (n, 3) and data["batch"].shape == (n,)
    assert data["total_energy"].shape == (6, 1) and data["forces"].shape == (n, 3)
    vec = qd.edge_vectors(data)
    assert bool((vec.norm(dim=1) < 4.0).all())
    # edges never cross structures
    assert torch.equal(data["batch"][data["edge_index"][0]], data["batch"][data["edge_index"][1]])
    with pytest.raises(DataError, match=r"atom \d+ is (Cu|Li), which is not among the model's type_names \['Cu'\]"):
        qd.collate(frames, 4.0, ["Cu"])


def test_random_split_seeded_and_disjoint():
    items = list(range(100))
    a, b = qd.random_split(items, [80, 20], seed=3)
    assert len(a) == 80 and len(b) == 20 and not set(a) & set(b)
    assert qd.random_split(items, [0.8, 0.2], seed=3) == (a, b)
    with pytest.raises(ValueError, match="need 120 items"):
        qd.random_split(items, [100, 20])
