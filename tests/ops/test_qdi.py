"""qallegro::qdi: kernel == pure-torch reference == PennyLane, exact first and second derivatives."""

import itertools
import math

import pytest
import torch
from tests.ops.qdi_tolerances import TOL

from qallegro.ops import HAS_KERNELS, reference
from qallegro.ops.qdi import ENTANGLERS, MEASUREMENT_MODES, ROTATIONS, qdi, qdi_with_state

pytestmark = pytest.mark.skipif(not HAS_KERNELS, reason="compiled qallegro ops not built")

COMBOS = list(itertools.product(ROTATIONS, ENTANGLERS, ROTATIONS, MEASUREMENT_MODES))
SIMULATORS = ("fused", "gates")
# the CUDA op's drivers (gate by gate; fused: per-upload unitaries, GEMMs through ATen) with their kernel
# bodies and launch sequences on the sequential CPU launcher
ALL_SIMULATORS = SIMULATORS + ("device-kernels", "device-fused")


@pytest.fixture(params=ALL_SIMULATORS)
def simulator(request, monkeypatch):
    """Runs a test with the fused simulator (one unitary per upload, GEMM), the gate-by-gate one (the op
    otherwise picks between them by its cost model; second derivatives always run gate by gate) and the
    CUDA op's gate-by-gate and fused drivers with their kernel bodies on the sequential CPU launcher
    (device-fused runs second derivatives gate by gate, as the fused CPU simulator does)."""
    monkeypatch.setenv("QALLEGRO_QDI_SIMULATOR", request.param)
    return request.param


def sample_inputs(device="cpu", dtype=torch.float64, n=3, uploads=2, depth=2, entangling="strong", batch=5, seed=0):
    """Random angles over several periods: inputs [batch, uploads*n], weights [uploads, depth, n, K]."""
    gen = torch.Generator().manual_seed(seed)
    k = 3 if entangling == "strong" else 1
    x = (torch.rand(batch, uploads * n, generator=gen, dtype=torch.float64) * 4 - 2) * math.pi
    w = torch.rand(uploads, depth, n, k, generator=gen, dtype=torch.float64) * 2 * math.pi
    return x.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rotation,entangling,measure,mode", COMBOS)
def test_kernel_matches_reference(dtype, rotation, entangling, measure, mode, simulator):
    rtol, atol = TOL[dtype]
    cfg = (rotation, entangling, measure, mode)
    for n, batch, seed in [(1, 3, 1), (2, 9, 2), (4, 7, 3)]:
        x, w = sample_inputs(dtype=dtype, n=n, entangling=entangling, batch=batch, seed=seed)
        y, state = qdi_with_state(x, w, *cfg)
        y_ref, state_ref = reference.qdi_reference(x.double(), w.double(), *cfg)
        torch.testing.assert_close(y.double(), y_ref, rtol=rtol, atol=atol * 10)
        torch.testing.assert_close(state.to(torch.complex128), state_ref, rtol=rtol, atol=atol * 10)
        # unitarity: the state stays normalised through every gate
        norm = state.abs().pow(2).sum(-1).double()
        torch.testing.assert_close(norm, torch.ones_like(norm), rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize("rotation,entangling,measure,mode", COMBOS[::5])
def test_first_and_second_derivatives_match_reference(rotation, entangling, measure, mode, simulator):
    rtol, atol = TOL[torch.float64]
    cfg = (rotation, entangling, measure, mode)
    x, w = sample_inputs(n=3, entangling=entangling, batch=6, seed=7)
    outs = []
    for use_kernel in (True, False):
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = qdi(xr, wr, *cfg, use_kernel=use_kernel)
        gy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        gx, gw = torch.autograd.grad(y, (xr, wr), gy, create_graph=True)
        # a force-like loss: differentiate a function of the first derivatives again
        loss = (gx.sin() * torch.arange(gx.numel(), dtype=gx.dtype).reshape(gx.shape)).sum() + (gw**2).sum()
        hx, hw = torch.autograd.grad(loss, (xr, wr))
        outs.append((y, gx, gw, hx, hw))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * 100)


@pytest.mark.parametrize(
    "rotation,entangling,measure,mode,n",
    [("X", "strong", "Y", "none", 3), ("Z", "basic", "X", "single", 2), ("Y", "strong", "Z", "even", 1)],
)
def test_gradcheck_gradgradcheck(rotation, entangling, measure, mode, n, simulator):
    x, w = sample_inputs(n=n, entangling=entangling, batch=3, seed=11, depth=2)
    x.requires_grad_()
    w.requires_grad_()

    def f(a, b):
        return qdi(a, b, rotation, entangling, measure, mode)

    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))


def test_adjoint_gradient_equals_parameter_shift(simulator):
    """Each angle enters one Pauli rotation: d<P>/dt = (<P>(t + pi/2) - <P>(t - pi/2)) / 2, exactly."""
    cfg = ("Z", "strong", "Y", "none")
    x, w = sample_inputs(n=3, batch=4, seed=5)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = qdi(xr, wr, *cfg)
    gy = torch.rand(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    gx, gw = torch.autograd.grad(y, (xr, wr), gy)
    with torch.no_grad():
        for f in range(x.shape[1]):
            e = torch.zeros_like(x)
            e[:, f] = math.pi / 2
            shift = ((qdi(x + e, w, *cfg) - qdi(x - e, w, *cfg)) / 2 * gy).sum(-1)
            torch.testing.assert_close(gx[:, f], shift, rtol=1e-10, atol=1e-12)
        for idx in [(0, 0, 0, 0), (1, 1, 2, 1), (0, 1, 1, 2)]:
            e = torch.zeros_like(w)
            e[idx] = math.pi / 2
            shift = ((qdi(x, w + e, *cfg) - qdi(x, w - e, *cfg)) / 2 * gy).sum()
            torch.testing.assert_close(gw[idx], shift, rtol=1e-10, atol=1e-12)


def test_results_do_not_depend_on_thread_count(simulator):
    x, w = sample_inputs(n=4, batch=37, seed=9)
    x.requires_grad_()
    threads = torch.get_num_threads()
    results = []
    for t in (1, 2):
        torch.set_num_threads(t)
        y = qdi(x, w.requires_grad_())
        results.append((y,) + torch.autograd.grad(y.sum(), (x, w)))
    torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("n,uploads,depth,mode", [(5, 2, 3, "none"), (6, 3, 1, "single"), (7, 1, 2, "even")])
def test_fused_equals_gate_by_gate_on_larger_registers(monkeypatch, n, uploads, depth, mode):
    """Bigger unitaries, longer CNOT rings, one and three uploads: both simulators agree to rounding."""
    x, w = sample_inputs(n=n, uploads=uploads, depth=depth, batch=11, seed=n)
    outs = []
    for sim in SIMULATORS:
        monkeypatch.setenv("QALLEGRO_QDI_SIMULATOR", sim)
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y, state = qdi_with_state(xr.detach(), wr.detach(), "Y", "strong", "X", mode)
        y = qdi(xr, wr, "Y", "strong", "X", mode)
        gy = torch.rand(y.shape, generator=torch.Generator().manual_seed(n), dtype=y.dtype)
        outs.append((y, state) + torch.autograd.grad(y, (xr, wr), gy))
    for a, b in zip(*outs):
        assert b.abs().max() > 1e-3
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rotation,entangling,measure,mode", COMBOS)
def test_device_fused_equals_gate_by_gate(monkeypatch, rotation, entangling, measure, mode):
    """The CUDA op's fused driver (per-upload unitaries built on the host, GEMMs through ATen, the
    per-sample kernel bodies on the sequential CPU launcher) against the gate-by-gate simulator: values,
    states and first derivatives on one-qubit, single-sample and empty batches and one to three uploads;
    gradcheck of its first derivatives."""
    rtol, atol = TOL[torch.float64]
    cfg = (rotation, entangling, measure, mode)
    for n, uploads, depth, batch in [(1, 2, 2, 1), (2, 1, 1, 4), (3, 3, 2, 5), (2, 2, 1, 0)]:
        x, w = sample_inputs(n=n, uploads=uploads, depth=depth, entangling=entangling, batch=batch, seed=n + batch)
        gy = torch.rand(batch, len(reference.qdi_measured_qubits(n, mode)), generator=torch.Generator().manual_seed(3),
                        dtype=x.dtype)
        outs = []
        for sim in ("gates", "device-fused"):
            monkeypatch.setenv("QALLEGRO_QDI_SIMULATOR", sim)
            xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
            y, state = qdi_with_state(x, w, *cfg)
            outs.append((y, state) + torch.autograd.grad(qdi(xr, wr, *cfg), (xr, wr), gy))
        for a, b in zip(*outs):  # (y and gradients vanish identically for X rotations measured in X)
            torch.testing.assert_close(b, a, rtol=rtol, atol=atol)
    x, w = sample_inputs(n=2, uploads=2, depth=1, entangling=entangling, batch=2, seed=21)
    assert torch.autograd.gradcheck(lambda a, b: qdi(a, b, *cfg), (x.requires_grad_(), w.requires_grad_()))


@pytest.mark.parametrize("n,depth,batch,picked", [(5, 2, 33, "gates"), (4, 6, 256, "fused")])
def test_cost_rule_picks_the_cheaper_simulator(monkeypatch, n, depth, batch, picked):
    """The automatic choice (prefer_fused, which the CUDA op follows too) runs exactly one of the two
    simulators, told apart by their rounding: the sizes test_cuda_matches_cpu relies on."""
    x, w = sample_inputs(n=n, depth=depth, batch=batch, seed=17)
    ys = {}
    for sim in ("auto", "fused", "gates"):
        monkeypatch.setenv("QALLEGRO_QDI_SIMULATOR", sim)
        ys[sim] = qdi(x, w)
    other = "gates" if picked == "fused" else "fused"
    assert torch.equal(ys["auto"], ys[picked]) and not torch.equal(ys["auto"], ys[other])


def test_simulator_choice_is_checked(monkeypatch):
    monkeypatch.setenv("QALLEGRO_QDI_SIMULATOR", "fast")
    x, w = sample_inputs(n=2, batch=2)
    with pytest.raises(RuntimeError, match="QALLEGRO_QDI_SIMULATOR must be 'auto', 'fused', 'gates', 'device-kernels' or 'device-fused', got 'fast'"):
        qdi(x, w)


def test_opcheck():
    x, w = sample_inputs(n=2, batch=4, seed=3)
    cfg = ("X", "strong", "Y", "none")
    torch.library.opcheck(torch.ops.qallegro.qdi.default, (x, w) + cfg, test_utils=("test_schema", "test_faketensor"))
    y, state = torch.ops.qallegro.qdi(x, w, *cfg)
    gy = torch.ones_like(y)
    torch.library.opcheck(
        torch.ops.qallegro.qdi_backward.default, (gy, state, x, w) + cfg, test_utils=("test_schema", "test_faketensor")
    )
    torch.library.opcheck(
        torch.ops.qallegro.qdi_double_backward.default,
        (torch.ones_like(x), None, gy, x, w) + cfg,
        test_utils=("test_schema", "test_faketensor"),
    )


def test_autograd_is_registered_in_cpp_for_every_device():
    """One Autograd-key kernel (csrc/cpu/qdi_autograd.cpp) serves CPU and CUDA; opcheck accepts it."""
    for name in ("qdi", "qdi_backward", "qdi_double_backward"):
        table = torch._C._dispatch_dump(f"qallegro::{name}")
        autograd = [line for line in table.splitlines() if line.startswith("Autograd[alias]")]
        assert autograd and "qdi_autograd.cpp" in autograd[0], table
    x, w = sample_inputs(n=2, batch=3, seed=4)
    torch.library.opcheck(
        torch.ops.qallegro.qdi.default,
        (x.requires_grad_(), w.requires_grad_(), "X", "strong", "Y", "none"),
        test_utils=("test_autograd_registration",),
    )


def test_torchscript_differentiates_twice():
    """torch.autograd.grad inside TorchScript (what an exported model does) reaches the C++ autograd:
    forces and a force-loss gradient equal the pure-torch reference."""

    def second(x: torch.Tensor, w: torch.Tensor, gy: torch.Tensor):
        y = torch.ops.qallegro.qdi(x, w, "Y", "basic", "Z", "none")[0]
        g = torch.autograd.grad([(y * gy).sum()], [x, w], create_graph=True)
        gx, gw = g[0], g[1]
        assert gx is not None and gw is not None
        h = torch.autograd.grad([(gx * gx).sum() + gw.sum()], [x, w])
        hx, hw = h[0], h[1]
        assert hx is not None and hw is not None
        return y, gx, gw, hx, hw

    scripted = torch.jit.script(second)
    x, w = sample_inputs(n=3, entangling="basic", batch=4, seed=8)
    gy = torch.rand(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = scripted(x.clone().requires_grad_(), w.clone().requires_grad_(), gy)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = reference.qdi_reference(xr, wr, "Y", "basic", "Z", "none")[0]
    gx, gw = torch.autograd.grad((y * gy).sum(), (xr, wr), create_graph=True)
    hx, hw = torch.autograd.grad((gx * gx).sum() + gw.sum(), (xr, wr))
    rtol, atol = TOL[torch.float64]
    for a, b in zip(got, (y, gx, gw, hx, hw)):
        assert b.abs().max() > 1e-3
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol * 100)


def test_undefined_incoming_gradients_are_zeros():
    """Second derivatives through only one of (grad_inputs, grad_weights), and a first derivative
    where only the non-differentiable state is used, equal the reference's."""
    x, w = sample_inputs(n=2, batch=3, seed=6)
    cfg = ("X", "strong", "Y", "none")
    results = []
    for use_kernel in (True, False):
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = qdi(xr, wr, *cfg, use_kernel=use_kernel)
        gx, gw = torch.autograd.grad(y.pow(2).sum(), (xr, wr), create_graph=True)
        only_gx = torch.autograd.grad(gx.cos().sum(), (xr, wr), retain_graph=True)
        only_gw = torch.autograd.grad(gw.pow(3).sum(), (xr, wr))
        results.append(only_gx + only_gw)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    xr = x.clone().requires_grad_()
    y, state = torch.ops.qallegro.qdi(xr, w, *cfg)
    assert y.requires_grad and not state.requires_grad  # the state is a cache, not an output to differentiate


def test_third_derivative_raises():
    x, w = sample_inputs(n=2, batch=2)
    x.requires_grad_()
    (gx,) = torch.autograd.grad(qdi(x, w).sum(), x, create_graph=True)
    (hx,) = torch.autograd.grad(gx.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="third derivatives"):
        torch.autograd.grad(hx.sum(), x)


def test_bad_inputs():
    x, w = sample_inputs(n=2, batch=2)
    with pytest.raises(RuntimeError, match="rotation must be"):
        torch.ops.qallegro.qdi(x, w, "W", "strong", "Y", "none")
    with pytest.raises(RuntimeError, match="measurement_mode"):
        torch.ops.qallegro.qdi(x, w, "X", "strong", "Y", "odd")
    with pytest.raises(RuntimeError, match="inputs.size\\(1\\)"):
        torch.ops.qallegro.qdi(x[:, :3], w, "X", "strong", "Y", "none")
    with pytest.raises(RuntimeError, match="needs 1 parameters per gate"):
        torch.ops.qallegro.qdi(x, w, "X", "basic", "Y", "none")
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.qallegro.qdi(x.float(), w, "X", "strong", "Y", "none")
    with pytest.raises(ValueError, match="n_qubits"):
        qdi(torch.zeros(1, 26, dtype=torch.float64), torch.zeros(1, 1, 26, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="measure must be"):
        qdi(x, w, measure="W")
    y, state = torch.ops.qallegro.qdi(x, w, "X", "strong", "Y", "none")
    with pytest.raises(RuntimeError, match="state must be"):
        torch.ops.qallegro.qdi_backward(torch.ones_like(y), state[:, :2], x, w, "X", "strong", "Y", "none")


def test_batch_too_large_for_memory_names_the_size():
    x = torch.zeros(1 << 20, 25, dtype=torch.float64)
    w = torch.zeros(1, 1, 25, 3, dtype=torch.float64)
    with pytest.raises(MemoryError, match=r"needs [0-9.]+ GiB"):
        qdi(x, w)


def _pennylane_circuit(qml, n, uploads, rotation, entangling, measure, mode):
    dev = qml.device("default.qubit", wires=n)
    pauli = {"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}[measure]

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x, w):
        for u in range(uploads):
            if rotation == "Z":
                for q in range(n):
                    qml.Hadamard(wires=q)
            qml.AngleEmbedding(x[u * n : (u + 1) * n], wires=range(n), rotation=rotation)
            if entangling == "strong":
                qml.StronglyEntanglingLayers(w[u], wires=range(n))
            else:
                qml.BasicEntanglerLayers(w[u, :, :, 0], wires=range(n))
        if mode == "single":
            for q in range(n - 1):
                qml.CNOT(wires=[q, q + 1])
        return [qml.expval(pauli(q)) for q in reference.qdi_measured_qubits(n, mode)]

    return circuit


@pytest.mark.parametrize("rotation,entangling,measure,mode", COMBOS)
def test_matches_pennylane(rotation, entangling, measure, mode, simulator):
    """The same circuit as a PennyLane QNode (default.qubit): expectations and gradients to 1e-10."""
    qml = pytest.importorskip("pennylane")
    n = 3 if mode != "single" else 4
    cfg = (rotation, entangling, measure, mode)
    x, w = sample_inputs(n=n, entangling=entangling, batch=2, seed=13)
    circuit = _pennylane_circuit(qml, n, 2, *cfg)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = qdi(xr, wr, *cfg)
    gy = torch.rand(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    gx, gw = torch.autograd.grad(y, (xr, wr), gy)
    gw_pl = torch.zeros_like(w)
    for b in range(x.shape[0]):
        xb, wb = x[b].clone().requires_grad_(), w.clone().requires_grad_()
        yb = torch.stack(list(circuit(xb, wb)))
        torch.testing.assert_close(y[b].detach(), yb.detach(), rtol=1e-10, atol=1e-10)
        gxb, gwb = torch.autograd.grad((yb * gy[b]).sum(), (xb, wb))
        torch.testing.assert_close(gx[b], gxb, rtol=1e-10, atol=1e-10)
        gw_pl += gwb
    torch.testing.assert_close(gw, gw_pl, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rotation,entangling,measure,mode", COMBOS[::4])
@pytest.mark.parametrize("n,depth,batch", [(5, 2, 33), (4, 6, 256)])
def test_cuda_matches_cpu(dtype, rotation, entangling, measure, mode, n, depth, batch):
    """The CUDA op against the CPU kernel, all orders. The cost rule picks, for first derivatives, the
    gate-by-gate path (cuStateVec forward, adjoint kernels) at 5 qubits, batch 33, and the fused one
    (unitaries, cuBLAS GEMMs, embedding kernels) at 4 qubits, depth 6, batch 256."""
    rtol, atol = TOL[dtype]
    cfg = (rotation, entangling, measure, mode)
    x, w = sample_inputs(dtype=dtype, n=n, depth=depth, entangling=entangling, batch=batch, seed=17)
    outs = []
    for device in ("cpu", "cuda"):
        xr, wr = x.to(device).requires_grad_(), w.to(device).requires_grad_()
        y, state = qdi_with_state(xr.detach(), wr.detach(), *cfg)
        y = qdi(xr, wr, *cfg)
        gx, gw = torch.autograd.grad((y * y.detach().cos()).sum(), (xr, wr), create_graph=True)
        hx, hw = torch.autograd.grad((gx**2).sum() + gw.sin().sum(), (xr, wr))
        outs.append([t.detach().cpu() for t in (y, state, gx, gw, hx, hw)])
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=rtol * 10, atol=atol * 100)
