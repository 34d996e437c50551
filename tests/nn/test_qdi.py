"""QDILayer: hyperparameter errors, backends agree, shot-noise statistics, force-style training."""

import math

import pytest
import torch
from tests.ops.qdi_tolerances import TOL

from qallegro.nn.qdi import QDILayer, sample_expectations
from qallegro.ops import HAS_KERNELS

needs_kernels = pytest.mark.skipif(not HAS_KERNELS, reason="compiled qallegro ops not built")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_features=4, n_qubits=0), "n_qubits"),
        (dict(in_features=26, n_qubits=26), "n_qubits"),
        (dict(in_features=6, n_qubits=4), "multiple of n_qubits"),
        (dict(in_features=4, rotation="W"), "rotation"),
        (dict(in_features=4, measure="W"), "measure"),
        (dict(in_features=4, entangling="random"), "entangling"),
        (dict(in_features=4, measurement_mode="odd"), "measurement_mode"),
        (dict(in_features=4, backend="tpu"), "backend"),
        (dict(in_features=4, shots=0), "shots"),
        (dict(in_features=4, depth=0), "depth"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QDILayer(**kwargs)


@pytest.mark.parametrize("mode,n,expected", [("none", 5, 5), ("even", 5, 3), ("single", 5, 1), ("even", 4, 2)])
def test_out_features(mode, n, expected):
    layer = QDILayer(2 * n, n_qubits=n, depth=1, measurement_mode=mode, backend="reference")
    assert layer.out_features == expected
    assert layer.uploads == 2
    assert layer(torch.rand(3, 2 * n)).shape == (3, expected)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_backend_matches_reference(dtype):
    rtol, atol = TOL[dtype]
    torch.manual_seed(0)
    layer = QDILayer(8, n_qubits=4, depth=3, rotation="Z", entangling="basic", measure="X").to(dtype)
    ref = QDILayer(8, n_qubits=4, depth=3, rotation="Z", entangling="basic", measure="X", backend="reference")
    ref = ref.to(dtype)
    ref.load_state_dict(layer.state_dict())
    x = torch.rand(2, 5, 8, dtype=dtype) * 3  # leading dims are flattened and restored
    y, y_ref = layer(x), ref(x)
    assert y.shape == (2, 5, 4)
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol * 10)
    assert (y.abs() <= 1 + 1e-6).all()


@needs_kernels
def test_wrong_device_backend_is_an_error():
    layer = QDILayer(4, n_qubits=4, backend="cuda")
    with pytest.raises(ValueError, match="backend='cuda'"):
        layer(torch.rand(2, 4))


@needs_kernels
@pytest.mark.parametrize("simulator", ["fused", "gates", "device-fused"])
def test_force_training_step_matches_reference(monkeypatch, simulator):
    """E(r) = sum(lin(QDI(lin(r)))); loss on F = -dE/dr; the weight gradient needs d^2 E / dr dw."""
    monkeypatch.setenv("QALLEGRO_QDI_SIMULATOR", simulator)
    torch.manual_seed(1)
    grads = []
    for backend in ("cpu", "reference"):
        torch.manual_seed(1)
        pre = torch.nn.Linear(3, 6).double()
        layer = QDILayer(6, n_qubits=3, depth=2, backend=backend).double()
        post = torch.nn.Linear(3, 1).double()
        pos = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
        energy = post(layer(pre(pos))).sum()
        (forces,) = torch.autograd.grad(-energy, pos, create_graph=True)
        loss = (forces - 1.0).pow(2).mean() + 0.1 * energy**2
        loss.backward()
        grads.append([p.grad.clone() for p in (*pre.parameters(), layer.weights, *post.parameters())])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_sample_expectations_statistics():
    """N-shot estimates are unbiased with variance (1 - <P>^2) / N."""
    gen = torch.Generator().manual_seed(123)
    exact = torch.tensor([-0.9, -0.3, 0.0, 0.5, 1.0], dtype=torch.float64)
    shots, repeats = 200, 4000
    est = sample_expectations(exact.expand(repeats, -1).contiguous(), shots, gen)
    assert est.shape == (repeats, 5)
    # estimates lie on the 2k/N - 1 grid
    k = (est + 1) * shots / 2
    torch.testing.assert_close(k, k.round())
    var = (1 - exact**2) / shots
    mean_err = (est.mean(0) - exact).abs()
    assert (mean_err <= 5 * torch.sqrt(var / repeats) + 1e-12).all(), mean_err
    ratio = est.var(0)[:4] / var[:4]  # chi-square: relative sd of a variance estimate ~ sqrt(2/repeats)
    assert ((ratio - 1).abs() < 5 * math.sqrt(2 / repeats)).all(), ratio
    assert est[:, 4].eq(1).all()  # an eigenstate gives no noise


@needs_kernels
def test_shot_mode_is_seeded_and_converges():
    torch.manual_seed(2)
    make = lambda shots: QDILayer(4, n_qubits=2, depth=2, shots=shots, shot_seed=7).double()  # noqa: E731
    exact_layer = make(None).eval()
    x = torch.rand(64, 4, dtype=torch.float64, requires_grad=True)
    a, b = make(1000).eval(), make(1000).eval()
    b.load_state_dict(a.state_dict())
    exact_layer.load_state_dict(a.state_dict())
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)  # same seed, same samples
    exact = exact_layer(x)
    assert not torch.equal(ya, exact)
    sd = torch.sqrt((1 - exact.detach() ** 2) / 1000)
    assert ((ya - exact).abs() <= 6 * sd + 1e-12).all()
    # training mode ignores shots
    a.train()
    torch.testing.assert_close(a(x), exact)
    a.eval()
    # parameter-shift gradients from shots approach the exact adjoint gradient as shots grow
    (g_exact,) = torch.autograd.grad(exact.sum(), x)
    errs = []
    for shots in (100, 100000):
        layer = make(shots).eval()
        layer.load_state_dict(a.state_dict())
        (g,) = torch.autograd.grad(layer(x).sum(), x)
        errs.append((g - g_exact).abs().mean().item())
    assert errs[1] < errs[0] / 10
    assert errs[1] < 0.02


@pytest.mark.slow
@needs_kernels
def test_allegro_qdi_trains_on_benzene_with_forces():
    """Allegro with the QDI readout (kernel backend) fits shipped PBE benzene energies+forces: loss falls."""
    models = pytest.importorskip("qallegro.models")
    from qallegro.data import collate
    from qallegro.data.datasets import load_dataset

    structures = load_dataset("benzene", limit=8)
    batch = collate(structures, 4.0, ["H", "C"])
    assert batch["forces"].abs().max() > 0.1  # real DFT forces, eV/Å
    model = models.build("allegro_qdi", ["H", "C"], 4.0, seed=0, model_dtype="float64")
    assert any(isinstance(m, QDILayer) for m in model.modules())
    energy = batch["total_energy"]
    e_ref = energy.mean()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(15):
        out = model(dict(batch))
        e_loss = ((out["total_energy"] - energy) - (out["total_energy"] - energy).mean()).pow(2).mean()
        loss = e_loss + (out["forces"] - batch["forces"]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        qdi_grad = next(m for m in model.modules() if isinstance(m, QDILayer)).weights.grad
        assert qdi_grad is not None and torch.isfinite(qdi_grad).all() and qdi_grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert e_ref.abs() > 0
    assert min(losses[-3:]) < 0.7 * losses[0], losses


@needs_kernels
def test_set_shots_switches_every_layer():
    from qallegro.nn.qdi import set_shots

    net = torch.nn.Sequential(QDILayer(4, n_qubits=2, depth=1), QDILayer(2, n_qubits=2, depth=1)).double().eval()
    x = torch.rand(16, 4, dtype=torch.float64)
    exact = net(x)
    assert set_shots(net, 50, seed=3) == 2
    noisy = net(x)
    assert not torch.equal(noisy, exact) and noisy.shape == exact.shape
    set_shots(net, 50, seed=3)
    torch.testing.assert_close(net(x), noisy)  # reseeded: same samples
    set_shots(net, None)
    torch.testing.assert_close(net(x), exact)
    with pytest.raises(ValueError, match="shots"):
        set_shots(net, -1)


@needs_kernels
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torchscript_layer_matches_eager(backend):
    """The scripted layer calls the compiled op directly (whatever the eager backend): same values,
    forces and force-training gradients as the eager layer, in float64."""
    torch.manual_seed(3)
    layer = QDILayer(6, n_qubits=3, depth=2, rotation="Y", measurement_mode="even", backend=backend).double()
    scripted = torch.jit.script(layer)
    x = torch.rand(2, 4, 6, dtype=torch.float64) * 3
    results = []
    for module in (layer, scripted):
        xr = x.clone().requires_grad_()
        y = module(xr)
        (gx,) = torch.autograd.grad((y * y.detach().sin()).sum(), xr, create_graph=True)
        (gw,) = torch.autograd.grad(gx.pow(2).sum(), module.weights)
        results.append((y, gx, gw))
    assert results[1][0].shape == (2, 4, 2)
    for a, b in zip(*results):
        assert b.abs().max() > 1e-3
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@needs_kernels
def test_torchscript_layer_errors():
    layer = QDILayer(4, n_qubits=2, depth=1).double()
    scripted = torch.jit.script(layer)
    with pytest.raises(Exception, match=r"QDILayer expects \[\.\.\., 4\] inputs, got \(3, 5\)"):
        scripted(torch.rand(3, 5, dtype=torch.float64))
    # shot noise has no TorchScript path: the scripted layer says so instead of returning exact values
    layer.shots = 100
    scripted = torch.jit.script(layer.eval())
    with pytest.raises(Exception, match=r"shots=100\) have no TorchScript path"):
        scripted(torch.rand(3, 4, dtype=torch.float64))
    scripted.train()  # shots apply in eval mode only, as in eager mode
    x = torch.rand(2, 4, dtype=torch.float64)
    torch.testing.assert_close(scripted(x), layer.train()(x))
