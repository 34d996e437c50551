#pragma once
/// Device driver of the fused QDI simulator (math: qallegro/qdi_fused.h), written once against a
/// launcher like KernelDriver (qallegro/qdi_driver.h): csrc/cuda/qdi.cu runs it with the CUDA launcher,
/// csrc/cpu/qdi_kernels_cpu.cpp with the sequential CPU launcher (QALLEGRO_QDI_SIMULATOR=device-fused).
///
/// What runs where:
///   host     V_u^T per upload and the weight gradients from C_u (qallegro/qdi_fused_host.h, shared
///            with the CPU fused driver), both over the 2^n basis states, independent of the batch;
///   ATen     the batch GEMMs on complex [B, 2^n] states (cuBLAS for CUDA tensors, BLAS for CPU ones):
///            psi V_u^T forwards, [phi; lam] conj(V_u^T)^T backwards, C_u = Phi^+ Lam;
///   kernels  per sample (qallegro/qdi_kernels.h): the first upload's product state, the later
///            embeddings (and their inverses backwards), expectations, lam = sum_m g_m P_m psi and the
///            input gradients Im <lam|P_q|phi>.
/// First derivatives only: the double backward runs gate by gate (kernels_double_backward), as on the CPU.
#include <ATen/ATen.h>

#include <vector>

#include "qallegro/qdi_driver.h"
#include "qallegro/qdi_fused_host.h"

namespace qallegro {
namespace qdi {

template <typename T, class Launch>
struct FusedDriver {
    const Program& prog;
    Launch& launch;
    KernelDriver<T, Launch> kernels;   // StepMats on the device; expectation and observable kernels
    Chains chains;
    std::vector<Segment> segs;
    std::vector<at::Tensor> vts_host;  // V_u^T, complex [dim, dim] on the host
    std::vector<at::Tensor> vts;       // the same on the inputs' device
    at::Tensor emb_buf;                // int32 [U, n]: step of qubit q's embedding in upload u
    at::Tensor factors;                // [B, n, 2, 2] complex: one upload's embedding factors
    const T* x;

    FusedDriver(const Program& p, Launch& l, const at::Tensor& inputs, const std::vector<StepMats<T>>& mats)
        : prog(p), launch(l), kernels(p, l, inputs, mats), chains(p), segs(upload_segments(p)),
          x(inputs.data_ptr<T>()) {
        const int n = prog.n_qubits;
        std::vector<int32_t> emb;
        for (const Segment& seg : segs)
            for (int q = 0; q < n; ++q) {
                // the kernels take qubit q's bit as n - 1 - q: the embedding steps come in qubit order
                TORCH_CHECK(int(seg.emb_steps.size()) == n && prog.steps[seg.emb_steps[q]].qubit == q,
                            "qdi: upload embeddings out of qubit order");
                emb.push_back(seg.emb_steps[q]);
            }
        emb_buf = at::from_blob(emb.data(), {int64_t(emb.size())}, at::kInt)
                      .to(inputs.options().dtype(at::kInt), false, true);
        vts_host = upload_unitaries(prog, chains, mats, segs);
        for (const at::Tensor& v : vts_host) vts.push_back(v.to(inputs.device()));
        factors = at::empty({kernels.B, n, 8}, inputs.options());
    }
    int n() const { return prog.n_qubits; }
    const int32_t* emb(size_t u) const { return emb_buf.data_ptr<int32_t>() + u * n(); }

    // factors <- upload u's embedding factors (adjoint: their inverses)
    void embedding_factors(size_t u, bool adjoint) {
        launch.map(kernel_blocks(kernels.B * n()), EmbeddingFactors<T>{kernels.sm(0), emb(u), x, kernels.B, n(),
                                                                     prog.n_inputs, adjoint, factors.data_ptr<T>()});
    }
    // the embedding factors on `count` consecutive states (sample s % B's factors for state s)
    void apply_factors(T* sv, int64_t count) {
        for (int q = 0; q < n(); ++q)
            launch.map(kernel_blocks(count * (prog.dim() / 2)),
                       EmbeddingFactorApply<T>{sv, factors.data_ptr<T>(), count, kernels.B, n(), q});
    }
};

/// Fused forward: y [B, M] and the final states [B, dim] (complex, contiguous).
template <typename T, class Launch>
void fused_kernels_forward(const Program& prog, Launch& launch, const std::vector<StepMats<T>>& mats,
                           const at::Tensor& x, at::Tensor& y, at::Tensor& state) {
    FusedDriver<T, Launch> run(prog, launch, x, mats);
    const int64_t B = x.size(0);
    at::Tensor psi = at::empty_like(state);
    run.embedding_factors(0, false);
    launch.map(kernel_blocks(B * prog.dim()), ProductStates<T>{run.factors.template data_ptr<T>(), B, prog.n_qubits,
                                                               amplitudes<T>(psi)});
    for (size_t u = 0; u < run.segs.size(); ++u) {
        if (u > 0) {
            run.embedding_factors(u, false);
            run.apply_factors(amplitudes<T>(psi), B);
        }
        if (u + 1 < run.segs.size())
            psi = at::mm(psi, run.vts[u]);
        else
            at::mm_out(state, psi, run.vts[u]);
    }
    run.kernels.expectations(amplitudes<T>(state), nullptr, y.data_ptr<T>());
}

/// Fused adjoint backward from the final states: writes gx [B, F] and gw (the weights' shape; summed
/// over the batch through C_u).
template <typename T, class Launch>
void fused_kernels_backward(const Program& prog, Launch& launch, const std::vector<StepMats<T>>& mats,
                            const at::Tensor& x, const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx,
                            at::Tensor& gw) {
    FusedDriver<T, Launch> run(prog, launch, x, mats);
    const int64_t B = x.size(0), dim = prog.dim();
    const int U = int(run.segs.size());
    // phi (rows 0..B) and lam (rows B..2B) back to back: each un-computation is one GEMM
    at::Tensor both = at::zeros({2 * B, dim}, state.options());
    both.narrow(0, 0, B).copy_(state);
    run.kernels.observable(amplitudes<T>(both), gy.data_ptr<T>(), amplitudes<T>(both) + 2 * B * dim);
    std::vector<at::Tensor> c(U);
    for (int u = U; u-- > 0;) {
        c[u] = at::mm(both.narrow(0, 0, B).t().conj(), both.narrow(0, B, B));  // Phi^+ Lam after V_u
        both = at::mm(both, run.vts[u].t().conj());                            // V_u^+ on every row
        const T* phi = amplitudes<T>(both);
        launch.reduce(B * prog.n_qubits, EmbeddingInputGradient<T>{phi, phi + 2 * B * dim, run.kernels.sm(0),
                                                                  run.emb(u), prog.n_qubits, prog.n_inputs,
                                                                  gx.data_ptr<T>()});
        if (u > 0) {
            run.embedding_factors(u, true);
            run.apply_factors(amplitudes<T>(both), 2 * B);
        }
    }
    std::vector<T> gw_host(prog.n_weights, T(0));
    for (int u = 0; u < U; ++u)
        matrix_weight_gradients(prog, run.chains, mats, run.segs[u], run.vts_host[u], c[u].to(at::kCPU),
                                gw_host.data());
    gw.copy_(at::from_blob(gw_host.data(), gw.sizes(), gw.options().device(at::kCPU)));
}

}  // namespace qdi
}  // namespace qallegro
