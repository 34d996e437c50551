"""Allegro tensor product: qallegro's fused kernel vs the einsum reference, nequip-allegro 0.8.3's
``Contracter`` and e3nn's ``TensorProduct`` ("uuu" paths), forward and forward+backward, in float32
and float64; then the end-to-end Allegro model (energy+forces, one training step) vs nequip-allegro at
the same hyperparameters and weights, in float32 and float64, on a 64-atom and a 1,024-atom Cu-Li
cell; and the peak memory of a training step.

    OMP_NUM_THREADS=1 python -m pytest bench/bench_allegro_tp.py --benchmark-only -s -p no:cacheprovider

Shapes follow Allegro's rMD17 (l_max 2) and Cu-Li (l_max 3) settings; the edge counts are capped so
that the references, which materialise [E, mul, dim1, dim2, dim_out], fit in memory. Every group
times all implementations on the same inputs and the summary prints qallegro's time over each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qallegro.nn.tensor_product import layer_irreps, sh_irreps
from qallegro.ops import allegro_tp as tp_mod
from qallegro.ops.allegro_tp import cg_table, irreps_dim, tp_paths
from qallegro.ops.reference import allegro_tp_reference
from qallegro.utils import default_dtype

pytestmark = pytest.mark.skipif(not tp_mod.kernel_available(), reason="compiled qallegro::allegro_tp not built")

# (name, l_max, mul, edges, atoms): first-layer tensor product of a 2-layer model with parity
SHAPES = [
    ("rmd17-l2-mul8", 2, 8, 8000, 400),
    ("rmd17-l2-mul32", 2, 32, 2000, 100),
    ("culi-l3-mul16", 3, 16, 1000, 40),
    ("culi-l3-mul64", 3, 64, 250, 10),
]
DTYPES = {"f32": torch.float32, "f64": torch.float64}
IMPLS = ["qallegro", "einsum", "nequip_contracter", "e3nn"]




def _irreps(l_max):
    i1, io = layer_irreps(l_max, True, 2)[0]
    return i1, sh_irreps(l_max), io


def make_case(l_max, mul, num_edges, num_nodes, dtype):
    """Inputs (grouped centres, as the neighbour list gives) and one callable per implementation,
    each computing the same [E, mul, dim_out] output from per-edge env contributions."""
    i1, i2, io = _irreps(l_max)
    g = torch.Generator().manual_seed(0)
    idx, val = cg_table(i1, i2, io, dtype=dtype)
    P = len(tp_paths(i1, i2, io))
    x = torch.randn(num_edges, mul, irreps_dim(i1), dtype=dtype, generator=g)
    y = torch.randn(num_edges, mul, irreps_dim(i2), dtype=dtype, generator=g)
    center = torch.sort(torch.randint(0, num_nodes, (num_edges,), generator=g)).values
    nn = torch.rand(num_nodes, dtype=dtype, generator=g) + 0.5
    w = torch.randn(mul, P, dtype=dtype, generator=g)
    dim_out = irreps_dim(io)
    leaves = (x, y, nn, w)

    def ours(a, b, n, ww):
        return tp_mod.allegro_tp_kernel(a, b, center, n, ww, idx, val, dim_out)

    def einsum(a, b, n, ww):
        return allegro_tp_reference(a, b, center, n, ww, idx, val, dim_out)

    calls = {"qallegro": (ours, leaves), "einsum": (einsum, leaves)}
    try:
        from allegro.nn._strided import Contracter
        from e3nn.o3 import Irreps

        to_e3nn = lambda irr: Irreps([(1, (l, p)) for l, p in irr])  # noqa: E731
        with default_dtype(dtype):
            contracter = Contracter(to_e3nn(i1), to_e3nn(i2), to_e3nn(io), mul=mul)
        del contracter.weights  # the benchmark passes the weights in (plain tensors, for their gradient)

        def nequip(a, b, n, ww):  # nequip-allegro's layer: scatter, normalise, Contracter (gather inside)
            contracter.weights = ww
            env = torch.zeros(n.shape[0], mul, b.shape[2], dtype=b.dtype).index_add_(0, center, b) * n[:, None, None]
            return contracter(a, env, center)

        calls["nequip_contracter"] = (nequip, leaves)
    except ImportError:
        pass
    calls["e3nn"] = _e3nn_case(i1, i2, io, mul, x, y, center, nn, dtype)
    return calls


def _e3nn_case(i1, i2, io, mul, x, y, center, nn, dtype):
    """e3nn TensorProduct with one "uuu" instruction per path (per-channel per-path weights), inputs
    in e3nn's [batch, mul x irreps] layout, same env scatter/normalise/gather around it."""
    from e3nn.o3 import Irreps, TensorProduct

    mk = lambda irr: Irreps([(mul, (l, p)) for l, p in irr])  # noqa: E731
    instr = [(a, b, c, "uuu", True) for a, b, c in tp_paths(i1, i2, io)]
    with default_dtype(dtype):
        tp = TensorProduct(mk(i1), mk(i2), mk(io), instr, irrep_normalization="component", path_normalization="none")
    E, N = x.shape[0], nn.shape[0]
    xe = x.reshape(E, -1).clone()  # same numbers, e3nn's layout (values differ, cost does not)
    ye = y.reshape(E, -1).clone()
    we = tp.weight.detach().clone()

    def e3nn_call(a, b, n, ww):
        env = torch.zeros(N, b.shape[1], dtype=b.dtype).index_add_(0, center, b) * n[:, None]
        return tp(a, torch.index_select(env, 0, center), ww)

    return e3nn_call, (xe, ye, nn, we)


_CASES = {}


def _case(shape, dtype_name):
    key = (shape, dtype_name)
    if key not in _CASES:
        _CASES.clear()  # one case alive at a time (the references' inputs are large)
        _, l_max, mul, e, n = next(s for s in SHAPES if s[0] == shape)
        _CASES[key] = make_case(l_max, mul, e, n, DTYPES[dtype_name])
    return _CASES[key]


def _rounds(shape):
    return 3


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", [s[0] for s in SHAPES])
def test_tensor_product(benchmark, record, shape, dtype_name, mode, impl):
    calls = _case(shape, dtype_name)
    if impl not in calls:
        pytest.skip(f"{impl} not installed")
    fn, leaves = calls[impl]
    if mode == "fwd":
        run = lambda: fn(*leaves)  # noqa: E731
        with torch.no_grad():
            run()
            benchmark.pedantic(run, rounds=_rounds(shape), iterations=1, warmup_rounds=1)
    else:
        args = [t.detach().clone().requires_grad_() for t in leaves]

        def run():
            out = fn(*args)
            return torch.autograd.grad(out, args, torch.ones_like(out))

        benchmark.pedantic(run, rounds=_rounds(shape), iterations=1, warmup_rounds=1)
    record(benchmark, f"allegro_tp {shape} {dtype_name} {mode}", impl)


# ---- end to end: the same Allegro model in qallegro and nequip-allegro ---------------------------

MODEL = dict(
    l_max=2, num_layers=2, num_scalar_features=64, num_tensor_features=16, num_bessels=8,
    scalar_embed_mlp_hidden_layers_width=32, allegro_mlp_hidden_layers_width=64,
    readout_mlp_hidden_layers_width=32, avg_num_neighbors=20.0,
)
R_MAX = 4.5
# atoms -> repeats of the cubic 2-atom bcc cell: a small cell (as in training sets) and a ~1,000-atom
# cell (as in MD); rounds are fewer for the large cell, where nequip-allegro's training step takes seconds
SYSTEMS = {64: (4, 4, 2), 1024: (8, 8, 8)}
E2E_ROUNDS = {64: 5, 1024: 2}
E2E_DTYPES = {"f32": "float32", "f64": "float64"}


def culi_cell(num_atoms=64, seed=0):
    """A periodic Cu-Li bcc cell (cubic cells repeated as in SYSTEMS), random species, rattled."""
    import numpy as np
    from ase.build import bulk

    atoms = bulk("Cu", "bcc", a=2.9, cubic=True).repeat(SYSTEMS[num_atoms])
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols(rng.choice(["Cu", "Li"], size=len(atoms)))
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms


def build_pair(dtype_name="float64", num_atoms=64):
    """(qallegro model with the kernel, nequip-allegro model, data dict, nequip input dict)."""
    from allegro.model import AllegroModel
    from nequip.utils.global_state import set_global_state
    from tests.model.allegro_helpers import batch_from_atoms

    import qallegro.models as models

    set_global_state()
    kw = dict(MODEL)
    num_bessels = kw.pop("num_bessels")
    nequip_model = AllegroModel(
        seed=1, model_dtype=dtype_name, type_names=["Cu", "Li"], r_max=R_MAX,
        radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": num_bessels}, **kw,
    )
    ours = models.from_nequip_allegro(nequip_model).set_tp_kernel(True)
    data = batch_from_atoms([culi_cell(num_atoms)], R_MAX, ["Cu", "Li"], dtype=getattr(torch, dtype_name))
    nequip_in = {k: v.clone() for k, v in data.items() if k != "pbc"}
    nequip_in["atom_types"] = nequip_in.pop("atom_type")
    return ours, nequip_model, data, nequip_in


_PAIRS = {}


def model_pair(num_atoms, dtype_name):
    """The models and inputs of one (size, dtype), built once; the pair of another size is dropped."""
    pytest.importorskip("allegro")
    key = (num_atoms, dtype_name)
    if key not in _PAIRS:
        _PAIRS.clear()
        ours, theirs, data, nequip_in = build_pair(E2E_DTYPES[dtype_name], num_atoms)
        # same outputs first: a speed comparison of different models would mean nothing
        a, b = ours(data)["forces"].detach(), theirs(dict(nequip_in))["forces"].detach()
        rtol = 1e-8 if dtype_name == "f64" else 1e-4
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))
        _PAIRS[key] = ours, theirs, data, nequip_in
    return _PAIRS[key]


def _train_step(model, inputs):
    model.train()
    out = model(dict(inputs))
    loss = out["total_energy"].pow(2).sum() + out["forces"].pow(2).sum()
    loss.backward()
    return loss


@pytest.mark.parametrize("impl", ["qallegro", "nequip_allegro", "qallegro_einsum"])
@pytest.mark.parametrize("mode", ["energy+forces", "train step"])
@pytest.mark.parametrize("dtype_name", list(E2E_DTYPES))
@pytest.mark.parametrize("num_atoms", list(SYSTEMS))
def test_model(benchmark, record, num_atoms, dtype_name, mode, impl):
    ours, theirs, data, nequip_in = model_pair(num_atoms, dtype_name)
    model, inputs = (theirs, nequip_in) if impl == "nequip_allegro" else (ours, data)
    if impl.startswith("qallegro"):
        ours.set_tp_kernel(impl == "qallegro")
    if mode == "energy+forces":
        model.eval()
        run = lambda: model(dict(inputs))  # noqa: E731
    else:
        run = lambda: _train_step(model, inputs)  # noqa: E731
    benchmark.pedantic(run, rounds=E2E_ROUNDS[num_atoms], iterations=1, warmup_rounds=1)
    ours.set_tp_kernel(True)
    benchmark.extra_info["edges"] = int(data["edge_index"].shape[1])
    # the reference of the summary table is nequip-allegro; qallegro_einsum shows the kernel's share
    record(benchmark, f"Allegro {num_atoms}-atom Cu-Li {mode} {dtype_name}", impl)


def peak_step_bytes(model, inputs) -> int:
    """Peak of live CPU-allocator bytes during one training step (torch profiler memory events,
    counted from the step's start; gradients are dropped first so every model allocates its own)."""
    model.zero_grad(set_to_none=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        _train_step(model, inputs)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()  # negative for frees
        peak = max(peak, live)
    return peak


def test_training_step_peak_memory(benchmark):
    """Peak memory of one training step on the 64-atom Cu-Li cell, f64 (MiB, printed and saved)."""
    ours, theirs, data, nequip_in = model_pair(64, "f64")
    peaks = {}

    def measure():
        peaks["nequip_allegro"] = peak_step_bytes(theirs, nequip_in)
        for impl in ("qallegro", "qallegro_einsum"):
            peaks[impl] = peak_step_bytes(ours.set_tp_kernel(impl == "qallegro"), data)
        ours.set_tp_kernel(True)

    benchmark.pedantic(measure, rounds=1, iterations=1)  # timed only so that --benchmark-only runs it
    mib = {k: round(v / 2**20, 1) for k, v in peaks.items()}
    benchmark.extra_info["peak_MiB"] = mib
    print("\ntraining-step peak memory (MiB):", json.dumps(mib))
    RESULTS = Path(__file__).parent / "results"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_allegro_tp_memory.json").write_text(json.dumps(mib, indent=1))
    assert peaks["qallegro"] <= peaks["qallegro_einsum"]  # the fused op must not cost memory
