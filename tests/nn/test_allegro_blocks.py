"""qallegro.nn building blocks vs nequip-allegro and e3nn: cutoff, Bessel, MLP, irreps, equivariance."""

import math

import pytest
import torch

from qallegro.utils import default_dtype

from qallegro.nn import (
    AllegroTensorProduct,
    BesselBasis,
    EdgeSphericalHarmonics,
    PolynomialCutoff,
    ScalarMLP,
    WeightedChannels,
    layer_irreps,
    scatter_sum,
    sh_irreps,
)
from tests.nn.nn_tolerances import TOL

F64 = torch.float64


def test_polynomial_cutoff_values_and_derivatives():
    cutoff = PolynomialCutoff(6)
    x = torch.tensor([[0.0], [0.5], [1.0 - 1e-9], [1.0], [1.3]], dtype=F64, requires_grad=True)
    u = cutoff(x)
    assert u[0].item() == 1.0 and u[3].item() == 0.0 and u[4].item() == 0.0
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    # value, first and second derivatives vanish at x = 1 (the envelope touches zero smoothly)
    assert abs(u[2].item()) < 1e-20 and abs(du[2].item()) < 1e-12 and abs(d2u[2].item()) < 1e-6
    nequip_cutoffs = pytest.importorskip("nequip.nn.embedding.cutoffs")
    torch.testing.assert_close(u, nequip_cutoffs.PolynomialCutoff(6)(x), rtol=0, atol=1e-15)


def test_bessel_basis_formula():
    x = torch.linspace(0.05, 0.99, 7, dtype=F64).unsqueeze(1)
    basis = BesselBasis(5).to(F64)(x)
    n = torch.arange(1, 6, dtype=F64)
    expected = torch.sin(n * math.pi * x) / (math.pi * x)
    rtol, atol = TOL[F64]
    torch.testing.assert_close(basis, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("depth,act", [(0, "silu"), (2, "silu"), (1, None), (2, "tanh")])
def test_scalar_mlp_matches_nequip(depth, act):
    mlp_mod = pytest.importorskip("nequip.nn.mlp")
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # nequip makes its constant alphas in the default dtype
    try:
        theirs = mlp_mod.ScalarMLPFunction(6, 3, hidden_layers_depth=depth, hidden_layers_width=5 if depth else None, nonlinearity=act)
    finally:
        torch.set_default_dtype(old)
    ours = ScalarMLP(6, 3, depth, 5 if depth else None, act).to(F64)
    weights = [w for w in theirs.mlp.weights] if hasattr(theirs.mlp, "weights") else [m.weight for m in theirs.mlp if hasattr(m, "weight")]
    with torch.no_grad():
        for lin, w in zip(ours.linears, weights):
            lin.weight.copy_(w)
    x = torch.randn(11, 6, dtype=F64)
    rtol, atol = TOL[F64]
    torch.testing.assert_close(ours(x), theirs(x), rtol=rtol, atol=atol)
    assert ours.is_nonlinear == (act is not None and depth > 0)


def test_scalar_mlp_bad_arguments():
    with pytest.raises(ValueError, match="hidden_layers_width"):
        ScalarMLP(3, 1, hidden_layers_depth=2)
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        ScalarMLP(3, 1, 1, 4, "relu")


def _nequip_tp_irreps(l_max: int, parity: bool, num_layers: int):
    """(in, out) irreps of every Allegro_Module TP, read off a small nequip-allegro model."""
    from allegro.model import AllegroModel
    from nequip.utils.global_state import set_global_state

    set_global_state()
    model = AllegroModel(
        seed=0, model_dtype="float64", type_names=["A"], r_max=3.0, l_max=l_max, parity=parity,
        radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 2},
        num_layers=num_layers, num_scalar_features=4, num_tensor_features=1, avg_num_neighbors=1.0,
        scalar_embed_mlp_hidden_layers_width=2, allegro_mlp_hidden_layers_width=2, readout_mlp_hidden_layers_width=2,
    )
    return [
        ([(ir.l, ir.p) for _, ir in tp.irreps_in1], [(ir.l, ir.p) for _, ir in tp.irreps_out])
        for tp in model.model.func.allegro.tps
    ]


@pytest.mark.parametrize("l_max,parity,num_layers", [(1, True, 3), (2, False, 2), (3, True, 2), (2, True, 1)])
def test_layer_irreps_match_nequip_allegro(l_max, parity, num_layers):
    pytest.importorskip("allegro")
    assert layer_irreps(l_max, parity, num_layers) == _nequip_tp_irreps(l_max, parity, num_layers)


@pytest.fixture
def float64_default():
    """e3nn builds Wigner D matrices and SH/CG constants in the default dtype: float64 for 1e-12 checks."""
    with default_dtype(F64):
        yield


@pytest.mark.usefixtures("float64_default")
def test_spherical_harmonics_and_weighted_channels_are_equivariant():
    from e3nn import o3

    irreps = sh_irreps(3)
    with default_dtype(F64):  # e3nn computes its SH constants in the default dtype
        sh = EdgeSphericalHarmonics(3)
    vec = torch.randn(10, 3, dtype=F64)
    rot = o3.rand_matrix(dtype=F64)
    D = o3.Irreps([(1, ir) for ir in irreps]).D_from_matrix(rot)
    rtol, atol = TOL[F64]
    torch.testing.assert_close(sh(vec @ rot.T), sh(vec) @ D.T, rtol=rtol, atol=atol)
    with default_dtype(F64):
        weighter = WeightedChannels(irreps, multiplicity=3)
    w = torch.randn(10, weighter.weight_numel, dtype=F64)
    feats, feats_rot = weighter(sh(vec), w), weighter(sh(vec @ rot.T), w)
    torch.testing.assert_close(feats_rot, feats @ D.T, rtol=rtol, atol=atol)


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("coupling", [True, False])
def test_tensor_product_module_equivariant_and_bilinear(coupling):
    from e3nn import o3

    (irreps_in, irreps_out), _ = layer_irreps(2, True, 2)
    env = sh_irreps(2)
    with default_dtype(F64):  # Clebsch-Gordan buffers in float64, not float32 cast up
        tp = AllegroTensorProduct(irreps_in, env, irreps_out, mul=3, path_channel_coupling=coupling).to(F64)
    to_e3nn = lambda irs: o3.Irreps([(1, ir) for ir in irs])  # noqa: E731
    rot = o3.rand_matrix(dtype=F64) * (-1.0)  # rotation times inversion: tests parity too
    D1, D2, Do = (to_e3nn(i).D_from_matrix(rot) for i in (irreps_in, env, irreps_out))
    x1 = torch.randn(8, 3, D1.shape[0], dtype=F64)
    x2 = torch.randn(8, 3, D2.shape[0], dtype=F64)
    center = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1])
    norm = torch.rand(4, dtype=F64)
    out = tp(x1, x2, center, norm)
    rtol, atol = TOL[F64]
    torch.testing.assert_close(tp(x1 @ D1.T, x2 @ D2.T, center, norm), out @ Do.T, rtol=rtol, atol=atol)
    torch.testing.assert_close(tp(2.5 * x1, x2, center, norm), 2.5 * out, rtol=rtol, atol=atol)
    torch.testing.assert_close(tp(x1, x2 + x2, center, norm), 2 * out, rtol=rtol, atol=atol)
    assert out.abs().max() > 0


def test_scatter_sum():
    src = torch.arange(12, dtype=F64).view(6, 2)
    out = scatter_sum(src, torch.tensor([2, 0, 2, 2, 0, 3]), 5)
    # rows: 0 <- src[1] + src[4]; 2 <- src[0] + src[2] + src[3]; 3 <- src[5]; 1 and 4 empty
    expected = torch.tensor([[2 + 8, 3 + 9], [0, 0], [0 + 4 + 6, 1 + 5 + 7], [10, 11], [0, 0]], dtype=F64)
    torch.testing.assert_close(out, expected)


def test_spherical_harmonics_ignore_other_libraries_e3nn_jit_mode():
    # nequip switches e3nn's process-wide jit_mode to "script"; a model built afterwards must still copy
    import copy

    import e3nn

    from qallegro.nn.spherical_harmonics import EdgeSphericalHarmonics

    saved = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_mode="script")
    try:
        sh = EdgeSphericalHarmonics(2)
        assert e3nn.get_optimization_defaults()["jit_mode"] == "script"   # the caller's setting is kept
    finally:
        e3nn.set_optimization_defaults(**saved)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(copy.deepcopy(sh)(x), sh(x))
