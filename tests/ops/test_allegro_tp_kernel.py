"""qallegro::allegro_tp kernel (issue 4) vs the pure-torch reference: values, first and second
derivatives, opcheck, edge cases, determinism, export paths, and the model with kernel == reference."""

from __future__ import annotations

from typing import List, Tuple

import pytest
import torch

from qallegro.nn.tensor_product import layer_irreps, sh_irreps
from qallegro.ops import allegro_tp as tp_mod
from qallegro.ops.allegro_tp import allegro_tp, cg_table, irreps_dim, tp_paths
from qallegro.ops.reference import allegro_tp_reference

pytestmark = pytest.mark.skipif(not tp_mod.kernel_available(), reason="compiled qallegro::allegro_tp not built")

#: one (dtype) -> (rtol, atol) table for every comparison in this file
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 2e-5)}
DTYPES = [torch.float64, torch.float32]
Irreps = List[Tuple[int, int]]


def tp_irreps(l_max: int, parity: bool, layer: int = 0, num_layers: int = 3) -> Tuple[Irreps, Irreps, Irreps]:
    """(tensor_features, env, output) irreps of one layer of an Allegro model (nequip-allegro's rules)."""
    i1, io = layer_irreps(l_max, parity, num_layers)[layer]
    return i1, sh_irreps(l_max), io


def sample_inputs(irreps, mul: int, num_edges: int, num_nodes: int, dtype, seed: int, grouped: bool = False):
    """Fresh random inputs of allegro_tp; ``grouped`` sorts the centres (as the neighbour list does),
    otherwise they are in random order. Atoms may have no edges."""
    g = torch.Generator().manual_seed(seed)
    i1, i2, io = irreps
    idx, val = cg_table(i1, i2, io, dtype=dtype)
    x1 = torch.randn(num_edges, mul, irreps_dim(i1), generator=g, dtype=dtype)
    env_edge = torch.randn(num_edges, mul, irreps_dim(i2), generator=g, dtype=dtype)
    center = torch.randint(0, max(num_nodes, 1), (num_edges,), generator=g)
    if grouped:
        center = torch.sort(center).values
    node_norm = torch.rand(num_nodes, generator=g, dtype=dtype) + 0.5
    weights = torch.randn(mul, len(tp_paths(i1, i2, io)), generator=g, dtype=dtype)
    return x1, env_edge, center, node_norm, weights, idx, val, irreps_dim(io)


def both(inputs):
    """(kernel output, reference output) on the same inputs."""
    return allegro_tp(*inputs, use_kernel=True), allegro_tp_reference(*inputs)


CASES = [(l_max, parity, layer) for l_max in range(4) for parity in (False, True) for layer in (0, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l_max,parity,layer", CASES)
def test_forward_matches_reference(l_max, parity, layer, dtype):
    irreps = tp_irreps(l_max, parity, layer)
    for seed, (mul, e, n, grouped) in enumerate([(3, 60, 9, False), (8, 150, 20, True), (1, 7, 30, False)]):
        got, want = both(sample_inputs(irreps, mul, e, n, dtype, seed=seed, grouped=grouped))
        rtol, atol = TOL[dtype]
        assert got.shape == want.shape and got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def _grads(inputs, use_kernel: bool, seed: int = 0):
    x, y, c, n, w, idx, val, dim_out = inputs
    args = [t.detach().clone().requires_grad_() for t in (x, y, n, w)]
    out = allegro_tp(args[0], args[1], c, args[2], args[3], idx, val, dim_out, use_kernel=use_kernel)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    return torch.autograd.grad(out, args, cot)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
def test_backward_matches_reference(l_max, dtype):
    inputs = sample_inputs(tp_irreps(l_max, True), 5, 120, 15, dtype, seed=10 + l_max)
    rtol, atol = TOL[dtype]
    for name, got, want in zip(("x", "env_edge", "node_norm", "weights"), _grads(inputs, True), _grads(inputs, False)):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol * 10, msg=lambda m: f"d {name}: {m}")


@pytest.mark.parametrize("grouped", [False, True])
def test_gradcheck_and_gradgradcheck(grouped):
    # 5 atoms, 9 edges: some atoms have no edges, centres in random order unless grouped
    x, y, c, n, w, idx, val, dim_out = sample_inputs(tp_irreps(2, True), 2, 9, 5, torch.float64, seed=3, grouped=grouped)
    args = [t.requires_grad_() for t in (x, y, n, w)]

    def f(a, b, nn, ww):
        return allegro_tp(a, b, c, nn, ww, idx, val, dim_out, use_kernel=True)

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_third_derivative_exists():
    # the backward of the backward is built of allegro_tp/allegro_tp_backward calls: differentiable again
    x, y, c, n, w, idx, val, dim_out = sample_inputs(tp_irreps(1, True), 2, 6, 3, torch.float64, seed=4)
    args = [t.requires_grad_() for t in (x, y, n, w)]

    def grad_sq(a, b, nn, ww):  # a function whose gradient needs the second derivative of allegro_tp
        out = allegro_tp(a, b, c, nn, ww, idx, val, dim_out, use_kernel=True)
        g = torch.autograd.grad(out.pow(2).sum(), (a, b, nn, ww), create_graph=True)
        return sum((t * t).sum() for t in g)

    assert torch.autograd.gradgradcheck(grad_sq, args)


@pytest.mark.parametrize("dtype", DTYPES)
def test_force_training_second_derivatives_match_reference(dtype):
    """Energy -> d/d(inputs) with create_graph -> loss on that gradient -> d/d(all): what a force loss does."""
    inputs = sample_inputs(tp_irreps(2, True), 4, 80, 12, dtype, seed=7)

    def second(use_kernel: bool):
        x, y, c, n, w, idx, val, dim_out = inputs
        args = [t.detach().clone().requires_grad_() for t in (x, y, n, w)]
        out = allegro_tp(args[0], args[1], c, args[2], args[3], idx, val, dim_out, use_kernel=use_kernel)
        energy = (out * out.detach().sin()).sum()
        gx, gy = torch.autograd.grad(energy, args[:2], create_graph=True)
        loss = (gx**2).sum() + (gy * args[1]).sum()
        return torch.autograd.grad(loss, args)

    rtol, atol = TOL[dtype]
    for got, want in zip(second(True), second(False)):
        torch.testing.assert_close(got, want, rtol=rtol * 10, atol=atol * 100)


def test_opcheck():
    for seed, grouped in ((0, True), (1, False)):
        x, y, c, n, w, idx, val, dim_out = sample_inputs(tp_irreps(2, True), 3, 20, 6, torch.float64, seed, grouped)
        for t in (x, y, n, w):
            t.requires_grad_()
        torch.library.opcheck(torch.ops.qallegro.allegro_tp.default, (x, y, c, n, w, idx, val, dim_out))
        g = torch.randn(x.shape[0], x.shape[1], dim_out, dtype=x.dtype, requires_grad=True)
        for mask in ([True, True, True, True], [False, True, False, True]):
            torch.library.opcheck(
                torch.ops.qallegro.allegro_tp_backward.default, (g, x, y, c, n, w, idx, val, mask)
            )


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_edges(dtype):
    x, y, c, n, w, idx, val, dim_out = sample_inputs(tp_irreps(2, True), 4, 0, 3, dtype, seed=0)
    args = [t.requires_grad_() for t in (x, y, n, w)]
    out = allegro_tp(args[0], args[1], c, args[2], args[3], idx, val, dim_out, use_kernel=True)
    assert out.shape == (0, 4, dim_out) and out.dtype == dtype
    grads = torch.autograd.grad(out.sum(), args, allow_unused=True)
    assert grads[0].shape == x.shape and grads[1].shape == y.shape
    assert torch.all(grads[2] == 0) and torch.all(grads[3] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_edge_and_isolated_atoms(dtype):
    # one edge out of atom 3 of 6: the other atoms have empty environments and zero node_norm gradient
    x, y, _, n, w, idx, val, dim_out = sample_inputs(tp_irreps(3, True), 4, 1, 6, dtype, seed=5)
    c = torch.tensor([3])
    n.requires_grad_()
    out = allegro_tp(x, y, c, n, w, idx, val, dim_out, use_kernel=True)
    dense = torch.zeros(w.shape[1], x.shape[2], y.shape[2], dim_out, dtype=dtype)
    dense[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = val
    manual = torch.einsum("ui,uj,up,pijk->uk", x[0], y[0] * n[3].detach(), w, dense)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out[0], manual, rtol=rtol, atol=atol)
    (gn,) = torch.autograd.grad(out.sum(), n)
    assert torch.all(gn[[0, 1, 2, 4, 5]] == 0) and gn[3] != 0


def test_empty_table_and_strided_inputs():
    x, y, c, n, w, idx, val, dim_out = sample_inputs(tp_irreps(2, True), 3, 30, 7, torch.float64, seed=6)
    # no CG rows: the output is zero
    out = allegro_tp(x, y, c, n, w, idx[:0], val[:0], dim_out, use_kernel=True)
    assert out.shape == (30, 3, dim_out) and torch.all(out == 0)
    # non-contiguous features and stride-0 (expanded) weights, as a model without path-channel coupling
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)
    w_shared = torch.randn(w.shape[1], dtype=w.dtype)
    inputs = (xt, y, c, n, w_shared.expand(3, -1), idx, val, dim_out)
    got, want = both(inputs)
    torch.testing.assert_close(got, want, rtol=TOL[torch.float64][0], atol=TOL[torch.float64][1])


def test_bad_inputs_are_named_by_the_op():
    x, y, c, n, w, idx, val, dim_out = sample_inputs(tp_irreps(1, True), 2, 5, 3, torch.float64, seed=0)
    op = torch.ops.qallegro.allegro_tp
    with pytest.raises(RuntimeError, match="edge_center"):
        op(x, y, c + 3, n, w, idx, val, dim_out)
    with pytest.raises(RuntimeError, match="cg_indices row"):
        op(x, y, c, n, w, idx, val, dim_out - 1)
    with pytest.raises(RuntimeError, match="weights"):
        op(x, y, c, n, w.float(), idx, val, dim_out)
    with pytest.raises(RuntimeError, match="env_edge"):
        op(x, y[:, :1], c, n, w, idx, val, dim_out)


def test_results_do_not_depend_on_thread_count():
    inputs = sample_inputs(tp_irreps(2, True), 4, 300, 70, torch.float64, seed=8)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(inputs, True)
        torch.set_num_threads(2)
        two = _grads(inputs, True)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_torchscript_and_compile():
    inputs = sample_inputs(tp_irreps(2, True), 3, 40, 8, torch.float64, seed=9)
    scripted = torch.jit.script(tp_mod.allegro_tp_kernel)
    torch.testing.assert_close(scripted(*inputs), allegro_tp_reference(*inputs), rtol=1e-10, atol=1e-12)
    x, y, c, n, w, idx, val, dim_out = inputs

    def loss(a, b, nn, ww):
        return tp_mod.allegro_tp_kernel(a, b, c, nn, ww, idx, val, dim_out).pow(2).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    args = [t.clone().requires_grad_() for t in (x, y, n, w)]
    got = torch.autograd.grad(compiled(*args), args)
    want = _ref_grads_of_square(inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _ref_grads_of_square(inputs):
    x, y, c, n, w, idx, val, dim_out = inputs
    args = [t.clone().requires_grad_() for t in (x, y, n, w)]
    out = allegro_tp_reference(args[0], args[1], c, args[2], args[3], idx, val, dim_out)
    return torch.autograd.grad(out.pow(2).sum(), args)


def test_model_energies_forces_kernel_equals_reference():
    """The Allegro model (qallegro.models.build) gives the same energies, forces and stress, and the
    same force-loss parameter gradients, with the kernel and with the einsum reference (float64)."""
    import qallegro.models as models
    from tests.model.allegro_helpers import SMALL, batch_from_atoms, culi_cell

    type_names = ["Cu", "Li"]
    batch = batch_from_atoms([culi_cell(seed=1), culi_cell(seed=2, n_rep=3)], 4.0, type_names)
    results = []
    for use_kernel in (True, False):
        model = models.build("allegro", type_names, 4.0, seed=11, model_dtype="float64", **{**SMALL, "l_max": 3})
        model.set_tp_kernel(use_kernel)
        model.train()
        out = model(batch)
        loss = out["total_energy"].pow(2).sum() + out["forces"].pow(2).sum()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        results.append((out, grads))
    (ko, kg), (ro, rg) = results
    for key in ("total_energy", "atomic_energy", "forces", "stress"):
        torch.testing.assert_close(ko[key], ro[key], rtol=1e-10, atol=1e-10, msg=lambda m: f"{key}: {m}")
    for a, b in zip(kg, rg):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_reference(dtype):
    """The CUDA kernels (same header math) against the reference on the GPU: values and derivatives."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    inputs = sample_inputs(tp_irreps(3, True), 8, 400, 40, dtype, seed=12)
    cuda = [t.cuda() if isinstance(t, torch.Tensor) else t for t in inputs]
    got, want = both(cuda)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    for a, b in zip(_grads(cuda, True), _grads(cuda, False)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * 10)
    if dtype == torch.float64:
        x, y, c, n, w, idx, val, dim_out = [t[:12] if isinstance(t, torch.Tensor) and t.dim() == 3 else t for t in cuda]
        c, args = c[:12] % 5, [t.requires_grad_() for t in (x, y, n[:5].clone(), w)]
        f = lambda a, b, nn, ww: allegro_tp(a, b, c, nn, ww, idx, val, dim_out, use_kernel=True)  # noqa: E731
        assert torch.autograd.gradcheck(f, args) and torch.autograd.gradgradcheck(f, args)
