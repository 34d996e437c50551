"""The ops' autograd is registered in C++ (csrc/cpu/*_autograd.cpp), not from Python: a fresh process
that loads only ``libqallegro_ops.so`` with ``torch.ops.load_library`` — no qallegro Python, so no
Python registrations, as in a C++ host like LAMMPS — differentiates qdi and allegro_tp to second order
(forces and force training), and its numbers equal the pure-torch reference's in float64."""

import subprocess
import sys

import pytest
import torch

from qallegro.ops import HAS_KERNELS, reference
from tests.ops.qdi_tolerances import TOL
from tests.ops.test_qdi import sample_inputs as qdi_inputs

pytestmark = pytest.mark.skipif(not HAS_KERNELS, reason="compiled qallegro ops not built")

QDI_CFG = ("Z", "strong", "Y", "even")

# Runs in the child: y, first derivatives along a fixed cotangent (create_graph), then the gradient of a
# force-like function of them. Third order of qdi must raise; allegro_tp has every order.
CHILD = r"""
import sys
import torch
torch.ops.load_library(sys.argv[1])
assert not any(m == "qallegro" or m.startswith("qallegro.") for m in sys.modules), "qallegro was imported"
data = torch.load(sys.argv[2])
out = {}

x, w = (t.clone().requires_grad_() for t in data["qdi"])
y = torch.ops.qallegro.qdi(x, w, *data["qdi_cfg"])[0]
gx, gw = torch.autograd.grad(y, (x, w), data["qdi_gy"], create_graph=True)
hx, hw = torch.autograd.grad((gx.sin() * data["qdi_sx"]).sum() + (gw ** 2).sum(), (x, w), create_graph=True)
(hx_only,) = torch.autograd.grad((gx ** 2).sum(), (x,))  # gw unused: an undefined incoming gradient
out["qdi"] = [t.detach() for t in (y, gx, gw, hx, hw, hx_only)]
try:
    torch.autograd.grad(hx.sum(), (x,))
    out["third"] = "no error"
except NotImplementedError as exc:
    out["third"] = "NotImplementedError: " + str(exc)

tf, env, center, nn, tw, idx, val, dim_out = data["tp"]
args = [t.clone().requires_grad_() for t in (tf, env, nn, tw)]
o = torch.ops.qallegro.allegro_tp(args[0], args[1], center, args[2], args[3], idx, val, dim_out)
g1 = torch.autograd.grad((o * data["tp_gy"]).sum(), args, create_graph=True)
g2 = torch.autograd.grad(sum((g ** 2).sum() for g in g1), args, create_graph=True)
g3 = torch.autograd.grad(g2[0].pow(2).sum(), args[1:])  # third order, linear-algebra exact
out["tp"] = [t.detach() for t in (o, *g1, *g2, *g3)]
torch.save(out, sys.argv[3])
"""


def reference_derivatives(data):
    """The same quantities from the pure-torch references (autograd of any order)."""
    x, w = (t.clone().requires_grad_() for t in data["qdi"])
    y = reference.qdi_reference(x, w, *data["qdi_cfg"])[0]
    gx, gw = torch.autograd.grad(y, (x, w), data["qdi_gy"], create_graph=True)
    hx, hw = torch.autograd.grad((gx.sin() * data["qdi_sx"]).sum() + (gw**2).sum(), (x, w), retain_graph=True)
    (hx_only,) = torch.autograd.grad((gx**2).sum(), (x,))
    qdi_out = [t.detach() for t in (y, gx, gw, hx, hw, hx_only)]

    tf, env, center, nn, tw, idx, val, dim_out = data["tp"]
    args = [t.clone().requires_grad_() for t in (tf, env, nn, tw)]
    o = reference.allegro_tp_reference(args[0], args[1], center, args[2], args[3], idx, val, dim_out)
    g1 = torch.autograd.grad((o * data["tp_gy"]).sum(), args, create_graph=True)
    g2 = torch.autograd.grad(sum((g**2).sum() for g in g1), args, create_graph=True)
    g3 = torch.autograd.grad(g2[0].pow(2).sum(), args[1:])
    return qdi_out, [t.detach() for t in (o, *g1, *g2, *g3)]


def test_derivatives_without_python_registrations(tmp_path):
    from qallegro.ops import library_path
    from tests.ops.test_allegro_tp_kernel import sample_inputs as tp_inputs
    from tests.ops.test_allegro_tp_kernel import tp_irreps

    x, w = qdi_inputs(n=3, uploads=2, depth=2, batch=5, seed=21)
    gen = torch.Generator().manual_seed(4)
    tp = tp_inputs(tp_irreps(2, True), 3, 24, 7, torch.float64, seed=5)
    data = {
        "qdi": (x, w),
        "qdi_cfg": QDI_CFG,
        "qdi_gy": torch.randn(5, 2, generator=gen, dtype=torch.float64),  # "even" on 3 qubits: 2 outputs
        "qdi_sx": torch.randn(x.shape, generator=gen, dtype=torch.float64),
        "tp": tp,
        "tp_gy": torch.randn(24, 3, tp[-1], generator=gen, dtype=torch.float64),
    }
    torch.save(data, tmp_path / "in.pt")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(library_path()), str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert got["third"].startswith("NotImplementedError") and "third derivatives" in got["third"], got["third"]
    want_qdi, want_tp = reference_derivatives(data)
    rtol, atol = TOL[torch.float64]
    names = ("y", "d/dx", "d/dw", "d2/dx", "d2/dw", "d2/dx (gw unused)")
    for name, a, b in zip(names, got["qdi"], want_qdi):
        assert b.abs().max() > 1e-3, name  # not a comparison of zeros
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * 100, msg=lambda m: f"qdi {name}: {m}")
    assert len(got["tp"]) == len(want_tp) == 12
    for k, (a, b) in enumerate(zip(got["tp"], want_tp)):
        assert b.abs().max() > 1e-3, k
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * 100, msg=lambda m: f"allegro_tp output {k}: {m}")
