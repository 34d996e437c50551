"""Model API: build kinds and errors, float32, TorchScript, training graph, readout plug-in, save/load."""

import math

import pytest
import torch
from tests.model.allegro_helpers import SMALL, TOL, batch_from_atoms, culi_cell

import qallegro.models as models
from qallegro.model.readouts import AtomEnergyReadout, register_readout
from qallegro.nn import ScalarMLP

R_MAX = 4.0
CULI = ["Cu", "Li"]


def _data(dtype=torch.float64, seeds=(1, 2)):
    return batch_from_atoms([culi_cell(seed=s) for s in seeds], R_MAX, CULI, dtype=dtype)


def _assert_conservative(model, atoms_list, seed=0):
    """Forces are -dE/dr: a central difference of the energy along a random displacement of every atom
    equals -F.d (float64), and the net force of each periodic cell vanishes (translation invariance)."""
    import numpy as np

    data = batch_from_atoms(atoms_list, R_MAX, CULI)
    forces = model(data)["forces"].detach()
    assert forces.abs().max() > 1e-3  # a non-trivial function: zero forces would pass the checks below
    direction = torch.tensor(np.random.default_rng(seed).normal(size=tuple(forces.shape)))
    h = 1e-5

    def energy(sign):
        shifted = dict(data, pos=data["pos"] + sign * h * direction)
        return float(model(shifted)["total_energy"].detach().sum())

    numeric = (energy(1) - energy(-1)) / (2 * h)
    analytic = -float((forces * direction).sum())
    assert math.isclose(numeric, analytic, rel_tol=1e-6, abs_tol=1e-8), (numeric, analytic)
    for b in range(len(atoms_list)):
        net = forces[data["batch"] == b].sum(0)
        assert float(net.abs().max()) < 1e-10 * max(1.0, float(forces.abs().max())), net


def _build(kind="allegro", dtype="float64", **kw):
    hp = {**SMALL, "model_dtype": dtype, "seed": 0, **kw}
    if kind not in ("allegro", "allegro_mlp"):
        hp.pop("readout_mlp_hidden_layers_width")  # the MLP readout's key is unknown to other kinds
    return models.build(kind, CULI, R_MAX, **hp)


def test_build_records_metadata_and_is_deterministic():
    m1, m2 = _build(), _build()
    assert m1.kind == "allegro" and m1.type_names == CULI and m1.r_max == R_MAX
    assert m1.hparams["num_tensor_features"] == SMALL["num_tensor_features"]
    assert m1.hparams["model_dtype"] == "float64"
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    out = m1(_data())
    assert set(out) == {"atomic_energy", "total_energy", "forces", "virial", "stress"}
    assert out["total_energy"].shape == (2, 1) and out["forces"].shape == (32, 3)
    assert out["stress"].shape == (2, 3, 3) and out["virial"].shape == (2, 3, 3)
    # total energy is the per-structure sum of atomic energies
    torch.testing.assert_close(out["total_energy"][:, 0], out["atomic_energy"].view(2, 16).sum(1))


def test_build_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_tensor_feature"):
        models.build("allegro", CULI, R_MAX, num_tensor_feature=4)
    with pytest.raises(ValueError, match="known kinds"):
        models.build("allegro_xyz", CULI, R_MAX)
    with pytest.raises(ValueError, match="mlp_readout_depth"):
        models.build("allegro", CULI, R_MAX, mlp_readout_depth=2)  # only for allegro_mlp
    with pytest.raises(ValueError, match="avg_num_neighbors.*Li"):
        models.build("allegro", CULI, R_MAX, avg_num_neighbors={"Cu": 3.0})
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        models.build("allegro", CULI, R_MAX, allegro_mlp_nonlinearity="relu6")


def test_allegro_mlp_has_deeper_readout_and_differs():
    base, deep = _build("allegro"), _build("allegro_mlp", mlp_readout_depth=3, mlp_readout_width=12)
    dims = deep.energy.readout.net.dims
    assert dims == [16 * 3, 8, 12, 12, 12, 1]
    assert base.energy.readout.net.dims == [16 * 3, 8, 1]
    # the same seed and trunk, a different readout: the energies differ, and both stay conservative
    data = _data()
    assert not torch.allclose(deep(data)["total_energy"], base(data)["total_energy"])
    _assert_conservative(deep, [culi_cell(seed=s) for s in (1, 2)])


def test_float32_matches_float64():
    m64 = _build()
    m32 = _build(dtype="float32")
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    out64 = m64(_data())
    out32 = m32(_data(torch.float32))
    assert out32["forces"].dtype == torch.float32
    rtol, atol = TOL[torch.float32]
    for key in ("total_energy", "forces", "stress"):
        scale = float(out64[key].detach().abs().max())
        torch.testing.assert_close(out32[key].double(), out64[key], rtol=rtol, atol=atol * max(scale, 1.0))
    # float64 positions into a float32 model are cast, not an error
    assert m32(_data())["forces"].dtype == torch.float32


@pytest.mark.parametrize("kind", ["allegro", "allegro_mlp"])
def test_torchscript_model_matches_eager(kind):
    model = _build(kind)
    scripted = torch.jit.script(model)
    data = _data()
    eager, script = model(data), scripted(data)
    for key in eager:
        torch.testing.assert_close(script[key], eager[key], rtol=1e-12, atol=1e-12, equal_nan=True)
    assert scripted.kind == kind and list(scripted.type_names) == CULI and scripted.r_max == R_MAX
    energy_only = _build(kind, do_derivatives=False)
    assert set(torch.jit.script(energy_only)(data)) == {"atomic_energy", "total_energy"}


def test_training_mode_keeps_graph_for_force_loss():
    model = _build()
    data = _data()
    model.eval()
    assert model(data)["forces"].grad_fn is None  # inference: no graph kept
    model.train()
    forces = model(data)["forces"]
    assert forces.grad_fn is not None
    # d(sum F^2)/d(weight) by autograd (double backward through the tensor product) vs central FD
    weight = model.energy.tps[0].weights
    (grad,) = torch.autograd.grad((forces**2).sum(), [weight])
    eps = 1e-6
    with torch.no_grad():
        weight[0, 0] += eps
    f_plus = (model(data)["forces"] ** 2).sum()
    with torch.no_grad():
        weight[0, 0] -= 2 * eps
    f_minus = (model(data)["forces"] ** 2).sum()
    fd = float((f_plus - f_minus) / (2 * eps))
    assert abs(grad[0, 0].item()) > 1e-6
    assert math.isclose(grad[0, 0].item(), fd, rel_tol=1e-5, abs_tol=1e-8)


def test_predict_works_under_no_grad():
    model = _build().eval()
    data = _data()
    with torch.no_grad():
        out = model.predict(data)
    assert out["forces"].requires_grad is False
    expected = model(data)  # forces by autograd, outside no_grad
    for key in ("total_energy", "forces", "stress"):
        torch.testing.assert_close(out[key], expected[key].detach(), rtol=1e-12, atol=1e-12)


def test_readout_plug_in_point_atom_placement():
    """A new readout kind plugs in by a factory; atom placement keeps fragments additive."""

    def factory(in_features, hp):
        # a net with net(0) != 0 (bias), as a QDI circuit has: the atom readout must subtract it
        net = torch.nn.Sequential(ScalarMLP(in_features, hp["plug_width"]), torch.nn.Tanh(), torch.nn.Linear(hp["plug_width"], 1))
        torch.nn.init.constant_(net[2].bias, 0.7)
        return AtomEnergyReadout(net)

    register_readout("test_plug_atom", factory, {"plug_width": 5})
    assert "test_plug_atom" in models.readout_kinds()
    model = _build("test_plug_atom", plug_width=7)
    assert model.energy.readout.net[0].dims == [48, 7]
    a, b = culi_cell(seed=1, n_rep=1), culi_cell(seed=2, n_rep=1)
    a.pbc = b.pbc = False
    a.cell = b.cell = None
    b.positions += [30.0, 0.0, 0.0]
    out_ab = model(batch_from_atoms([a + b], R_MAX, CULI))
    out_a = model(batch_from_atoms([a], R_MAX, CULI))
    out_b = model(batch_from_atoms([b], R_MAX, CULI))
    torch.testing.assert_close(out_ab["total_energy"], out_a["total_energy"] + out_b["total_energy"])
    assert out_ab["forces"].abs().max() > 0


def test_allegro_qdi_is_conservative_in_both_placements():
    energies = {}
    for placement in ("edge", "atom"):
        model = _build("allegro_qdi", n_qubits=2, qdi_uploads=2, qdi_depth=1, qdi_placement=placement)
        energies[placement] = model(_data(seeds=(3,)))["total_energy"].detach()
        _assert_conservative(model, [culi_cell(seed=3)])
    assert not torch.allclose(energies["edge"], energies["atom"])  # two different readouts


def test_save_load_roundtrip(tmp_path):
    model = _build("allegro_mlp", per_type_energy_shifts_trainable=True, per_type_energy_shifts={"Cu": -3.0, "Li": -1.0})
    with torch.no_grad():
        model.energy.shifts += 0.25  # a trained value, not the build default
    path = models.save_model(model, tmp_path / "sub" / "model.pt")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    loaded = models.load_model(path)
    assert loaded.kind == "allegro_mlp" and loaded.hparams == model.hparams
    data = _data()
    torch.testing.assert_close(loaded(data)["total_energy"], model(data)["total_energy"], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        models.load_model(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt.*missing key"):
        models.load_model(tmp_path / "bad.pt")


def test_qallegro_collate_batches_give_the_same_outputs():
    """The data contract end to end: qallegro.data.collate (own neighbour list) == ASE's list."""
    import qallegro.data as data_mod

    frames = [culi_cell(seed=s) for s in (1, 2)]
    ours = data_mod.collate([data_mod.Structure.from_ase(a) for a in frames], R_MAX, CULI)
    model = _build()
    out_c, out_a = model(ours), model(_data())
    rtol, atol = TOL[torch.float64]
    for key in ("total_energy", "forces", "stress"):
        torch.testing.assert_close(out_c[key], out_a[key], rtol=rtol, atol=atol)


def test_reference_and_kernel_paths_agree():
    from qallegro.ops import allegro_tp as tp_ops

    if not tp_ops.kernel_available():
        pytest.skip("compiled allegro_tp not built")
    kernel_model = _build()
    tp_ops.FORCE_REFERENCE = True
    try:
        reference_model = _build()
    finally:
        tp_ops.FORCE_REFERENCE = False
    assert kernel_model.energy.tps[0].use_kernel and not reference_model.energy.tps[0].use_kernel
    data = _data()
    out_k, out_r = kernel_model(data), reference_model(data)
    for key in ("atomic_energy", "forces", "stress"):
        torch.testing.assert_close(out_k[key], out_r[key], rtol=1e-10, atol=1e-10)
    # switching an existing model (before scripting) gives the reference path's numbers
    kernel_model.set_tp_kernel(False)
    assert not any(tp.use_kernel for tp in kernel_model.energy.tps)
    scripted = torch.jit.script(kernel_model)
    torch.testing.assert_close(scripted(data)["forces"], out_r["forces"], rtol=1e-12, atol=1e-12)


class _StandInQDI(torch.nn.Module):
    """QDILayer's interface with a classical body (cos of a linear map): tests the readout wiring only."""

    def __init__(self, in_features, n_qubits, depth, rotation, entangling, measure, measurement_mode):
        super().__init__()
        assert in_features % n_qubits == 0
        self.out_features = n_qubits
        self.lin = torch.nn.Linear(in_features, n_qubits)

    def forward(self, x):
        return torch.cos(self.lin(x))  # like an expectation value: bounded and != 0 at x = 0


@pytest.mark.parametrize("placement", ["edge", "atom"])
def test_qdi_readout_wiring_is_smooth_and_local(monkeypatch, placement):
    import types

    from ase import Atoms

    fake = types.ModuleType("qallegro.nn.qdi")
    fake.QDILayer = _StandInQDI
    monkeypatch.setitem(__import__("sys").modules, "qallegro.nn.qdi", fake)
    model = _build("allegro_qdi", n_qubits=2, qdi_uploads=3, qdi_placement=placement)
    assert isinstance(model.energy.readout.net[1], _StandInQDI)
    assert model.energy.readout.net[0].out_features == 6

    def dimer(r):
        return model(batch_from_atoms([Atoms("CuLi", positions=[[0, 0, 0], [r, 0, 0]])], R_MAX, CULI))

    isolated = dimer(R_MAX + 1.0)["total_energy"]
    torch.testing.assert_close(isolated, torch.zeros_like(isolated))  # no shifts: isolated atoms are 0
    near = dimer(R_MAX - 1e-3)
    # although QDI(0) != 0, an edge entering r_max starts at zero energy and force
    assert float((near["total_energy"] - isolated).detach().abs()) < 1e-8
    assert float(near["forces"].abs().max()) < 1e-5
    assert float(dimer(2.5)["forces"].abs().max()) > 1e-4
