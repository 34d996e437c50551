"""The QDI circuit of bench_qdi.py written for each simulator a user might pick instead of qallegro.

Circuit (Laskaris et al. 2026's QDI at the paper's settings): per upload u, AngleEmbedding (RX) of
n inputs, then StronglyEntanglingLayers (Rot + CNOT ring of range l mod (n-1) + 1) with weights
w[u]; output <Y_q> on every qubit. Every implementation here returns a function ``run(x, w) -> y``
([B, F], [U, depth, n, 3] -> [B, n], float64, differentiable by torch autograd), so bench_qdi.py
times forward + backward the same way for all of them and checks them equal first.

    qallegro_auto / _fused / _gates  the compiled op (auto = the simulator its cost model picks)
    default_qubit      PennyLane default.qubit, parameter broadcasting over the batch, backprop
    fastqml            fastqml's Kronecker fusion: each upload's variational layers composed into one
                       dense unitary (compose_dense over kron'd Rot layers and CNOT permutations),
                       applied with apply_dense; per-sample embedding by apply_per_batch_su2_chain
    tensorcircuit      tensorcircuit-ng, pytorch backend, Circuit vmapped over the batch
    torchquantum       torchquantum-ng QuantumDevice(bsz=B), functional gates, complex128
"""

from __future__ import annotations

import os
import sys
import types
from typing import Callable
from unittest import mock

import torch

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ring(n: int, layer: int) -> list:
    """StronglyEntanglingLayers' CNOTs of one layer as (control, target)."""
    if n == 1:
        return []
    r = layer % (n - 1) + 1
    return [(q, (q + r) % n) for q in range(n)]


def qallegro(simulator: str) -> Run:
    from qallegro.ops.qdi import qdi

    def run(x, w):
        os.environ["QALLEGRO_QDI_SIMULATOR"] = simulator
        return qdi(x, w, "X", "strong", "Y", "none")

    return run


def default_qubit(n: int, uploads: int) -> Run:
    import pennylane as qml

    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x, w):
        for u in range(uploads):
            qml.AngleEmbedding(x[..., u * n : (u + 1) * n], wires=range(n), rotation="X")
            qml.StronglyEntanglingLayers(w[u], wires=range(n))
        return [qml.expval(qml.PauliY(q)) for q in range(n)]

    return lambda x, w: torch.stack(list(circuit(x, w)), dim=-1)


def _cnot_permutation(n: int, pairs: list, dtype) -> torch.Tensor:
    """Dense matrix of a CNOT chain (qubit 0 the most significant bit)."""
    dim = 1 << n
    idx = torch.arange(dim)
    out = idx.clone()
    for c, t in pairs:
        cb, tb = n - 1 - c, n - 1 - t
        out = torch.where((out >> cb) & 1 == 1, out ^ (1 << tb), out)
    perm = torch.zeros(dim, dim, dtype=dtype)
    perm[out, idx] = 1
    return perm


def fastqml(n: int, uploads: int) -> Run:
    from fastqml import gate_fusion as gf
    from fastqml import register_ops as ro
    from fastqml import torch_sim_real as sim

    depth_perm = {}

    def kron_layer(g_re, g_im):
        u_re, u_im = g_re[0], g_im[0]
        for q in range(1, g_re.shape[0]):
            u_re, u_im = (torch.kron(u_re, g_re[q]) - torch.kron(u_im, g_im[q]),
                          torch.kron(u_re, g_im[q]) + torch.kron(u_im, g_re[q]))
        return u_re, u_im

    def run(x, w):
        batch, dim = x.shape[0], 1 << n
        re = torch.zeros((batch,) + (2,) * n, dtype=x.dtype)
        re.view(batch, -1)[:, 0] = 1
        im = torch.zeros_like(re)
        for u in range(uploads):
            g_re, g_im = gf.build_rx_per_batch(x[:, u * n : (u + 1) * n])
            re, im = gf.apply_per_batch_su2_chain(re, im, g_re, g_im)
            mats = []
            for layer in range(w.shape[1]):
                r_re, r_im = gf.build_rot_gates(w[u, layer, :, 0], w[u, layer, :, 1], w[u, layer, :, 2])
                mats.append(kron_layer(r_re, r_im))
                key = (layer, x.dtype)
                if key not in depth_perm:
                    depth_perm[key] = _cnot_permutation(n, ring(n, layer), x.dtype)
                if n > 1:
                    mats.append((depth_perm[key], torch.zeros_like(depth_perm[key])))
            u_re, u_im = ro.compose_dense(mats)
            f_re, f_im = ro.apply_dense(re.reshape(batch, dim), im.reshape(batch, dim), u_re, u_im)
            re, im = f_re.reshape(re.shape), f_im.reshape(im.shape)
        ys = []
        for q in range(n):
            y_re, y_im = sim.apply_y(re, im, q, n)
            ys.append((re * y_re + im * y_im).reshape(batch, -1).sum(-1))
        return torch.stack(ys, dim=-1)

    return run


def tensorcircuit(n: int, uploads: int) -> Run:
    import tensorcircuit as tc

    tc.set_backend("pytorch")
    tc.set_dtype("complex128")

    def one(x, w):
        c = tc.Circuit(n)
        for u in range(uploads):
            for q in range(n):
                c.rx(q, theta=x[u * n + q])
            for layer in range(w.shape[1]):
                for q in range(n):
                    c.rz(q, theta=w[u, layer, q, 0])
                    c.ry(q, theta=w[u, layer, q, 1])
                    c.rz(q, theta=w[u, layer, q, 2])
                for ctrl, tgt in ring(n, layer):
                    c.cnot(ctrl, tgt)
        return torch.stack([c.expectation_ps(y=[q]).real for q in range(n)])

    batched = tc.backend.vmap(one, vectorized_argnums=0)
    return lambda x, w: batched(x, w)


def _import_torchquantum():
    """torchquantum imports torchvision for its data sets only; the PyPI torchvision wheel is built for
    CUDA torch and does not load next to torch+cpu, so a stand-in module lets the simulator import."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.datasets.utils"):
            mod = types.ModuleType(name)
            mod.__getattr__ = lambda attr: mock.MagicMock(name=attr)  # type: ignore[attr-defined]
            sys.modules[name] = mod
    import torchquantum as tq
    import torchquantum.functional  # noqa: F401

    # torchquantum fixes complex64 in a module constant its gates read at call time; the benchmark
    # compares in float64
    for name, module in list(sys.modules.items()):
        if name.startswith("torchquantum") and hasattr(module, "C_DTYPE"):
            module.C_DTYPE = torch.complex128
    return tq


def torchquantum(n: int, uploads: int) -> Run:
    tq = _import_torchquantum()
    import torchquantum.functional as tqf

    def run(x, w):
        batch = x.shape[0]
        qdev = tq.QuantumDevice(n_wires=n, bsz=batch)
        states = torch.zeros((batch,) + (2,) * n, dtype=torch.complex128)
        states.view(batch, -1)[:, 0] = 1
        qdev.set_states(states)
        for u in range(uploads):
            for q in range(n):
                tqf.rx(qdev, wires=q, params=x[:, u * n + q])
            for layer in range(w.shape[1]):
                for q in range(n):
                    tqf.rot(qdev, wires=q, params=w[u, layer, q].unsqueeze(0))
                for ctrl, tgt in ring(n, layer):
                    tqf.cnot(qdev, wires=[ctrl, tgt])
        psi = qdev.get_states_1d()
        ys = []
        for q in range(n):
            flipped = psi.reshape((batch,) + (2,) * n).movedim(q + 1, -1)
            y_psi = torch.stack([-1j * flipped[..., 1], 1j * flipped[..., 0]], dim=-1).movedim(-1, q + 1)
            ys.append((psi.conj() * y_psi.reshape(batch, -1)).sum(-1).real)
        return torch.stack(ys, dim=-1)

    return run


IMPLEMENTATIONS = {
    "qallegro": lambda n, uploads: qallegro("auto"),
    "qallegro_fused": lambda n, uploads: qallegro("fused"),
    "qallegro_gates": lambda n, uploads: qallegro("gates"),
    "default_qubit": default_qubit,
    "fastqml": fastqml,
    "tensorcircuit": tensorcircuit,
    "torchquantum": torchquantum,
}
REFERENCES = ("default_qubit", "fastqml", "tensorcircuit", "torchquantum")
