#pragma once
/// Host driver of the device QDI simulator: the sequence of kernel launches (qallegro/qdi_kernels.h)
/// for the forward, the adjoint backward and the tangent-propagated double backward, written once
/// against a launcher. csrc/cuda/qdi.cu instantiates it with the CUDA launcher (<<<>>> on the current
/// stream); csrc/cpu/qdi_kernels_cpu.cpp with a sequential CPU launcher, so the CPU tests run this very
/// sequence and these very kernel bodies. Buffers are ATen tensors on the inputs' device; the circuit
/// (StepMats, CNOT chains) is copied there once per call. Needs ATen (included by the drivers only).
///
/// A launcher provides
///   template <class Body> void map(int64_t grid, const Body& body);        // grid x kKernelThreads
///   template <class Body> void reduce(int64_t grid, const Body& body);     // one block per sample
#include <ATen/ATen.h>

#include <vector>

#include "qallegro/qdi_kernels.h"

namespace qallegro {
namespace qdi {

inline int64_t kernel_blocks(int64_t n) { return (n + kKernelThreads - 1) / kKernelThreads; }

template <typename T, class Launch>
struct KernelDriver {
    const Program& prog;
    Launch& launch;
    int64_t B;
    at::Tensor sm_buf;     // StepMats<T>[steps] on the device
    at::Tensor chain_buf;  // int32 [chains, 2, n]: control and target bits of each chain
    KernelDriver(const Program& p, Launch& l, const at::Tensor& x, const std::vector<StepMats<T>>& mats)
        : prog(p), launch(l), B(x.size(0)) {
        const int64_t bytes = int64_t(mats.size() * sizeof(StepMats<T>));
        const auto to_device = at::TensorOptions().device(x.device());
        sm_buf = at::from_blob(const_cast<StepMats<T>*>(mats.data()), {bytes}, at::kByte)
                     .to(to_device.dtype(at::kByte), false, true);
        const int64_t nc = int64_t(prog.chains.size()), n = prog.n_qubits;
        std::vector<int32_t> bits(std::max<int64_t>(nc, 1) * 2 * n, 0);
        for (int64_t c = 0; c < nc; ++c)
            for (size_t k = 0; k < prog.chains[c].control_bits.size(); ++k) {
                bits[(c * 2) * n + int64_t(k)] = prog.chains[c].control_bits[k];
                bits[(c * 2 + 1) * n + int64_t(k)] = prog.chains[c].target_bits[k];
            }
        chain_buf = at::from_blob(bits.data(), {int64_t(bits.size())}, at::kInt).to(to_device.dtype(at::kInt), false, true);
    }
    const StepMats<T>* sm(size_t i) const { return reinterpret_cast<const StepMats<T>*>(sm_buf.data_ptr()) + i; }
    int n() const { return prog.n_qubits; }
    int64_t pairs(int64_t count) const { return count * (prog.dim() / 2); }

    // CNOT chain on `count` consecutive states, forwards or (inverse) backwards, through `tmp`.
    void chain(T* sv, T* tmp, int64_t count, int id, bool inverse) const {
        const int32_t* bits = chain_buf.data_ptr<int32_t>() + int64_t(id) * 2 * n();
        const int gates = int(prog.chains[id].control_bits.size());
        launch.map(kernel_blocks(count * prog.dim()),
                   ChainPermute<T>{sv, tmp, count, n(), bits, bits + n(), gates, inverse});
        launch.map(kernel_blocks(count * prog.dim()), ChainPermute<T>{tmp, sv, count, n(), bits, bits, 0, false});
    }

    // Forward from |0>; with dsv also the tangent (tx: input tangents). tmp: [B, dim] complex scratch.
    void simulate(const T* x, const T* tx, T* sv, T* dsv, T* tmp, T* mats, T* dmats) const {
        launch.map(kernel_blocks(B * prog.dim()), InitStates<T>{sv, B, prog.dim()});
        for (size_t i = 0; i < prog.steps.size(); ++i) {
            const Step& st = prog.steps[i];
            if (st.chain >= 0) {
                chain(sv, tmp, B, st.chain, false);
                if (dsv) chain(dsv, tmp, B, st.chain, false);
                continue;
            }
            launch.map(kernel_blocks(B), BlockMatrices<T>{sm(i), x, tx, B, prog.n_inputs, false, mats,
                                                          dsv ? dmats : nullptr});
            const int bit = prog.bit(st.qubit);
            if (dsv)
                launch.map(kernel_blocks(pairs(B)), ForwardBlock<T, true>{sv, dsv, mats, dmats, B, n(), bit});
            else
                launch.map(kernel_blocks(pairs(B)), ForwardBlock<T, false>{sv, dsv, mats, dmats, B, n(), bit});
        }
    }

    void expectations(const T* sv, const T* dsv, T* out) const {
        const int nm = int(prog.measured.size());
        for (int m = 0; m < nm; ++m)
            launch.reduce(B, Expectation<T>{sv, dsv, n(), prog.bit(prog.measured[m]), prog.pauli, nm, m, out});
    }

    // lam += sum_m g[:, m] P_m sv (lam zeroed by the caller)
    void observable(const T* sv, const T* g, T* lam) const {
        const int nm = int(prog.measured.size());
        for (int m = 0; m < nm; ++m)
            launch.map(kernel_blocks(pairs(B)),
                       ObservableAdd<T>{sv, g, B, n(), prog.bit(prog.measured[m]), prog.pauli, nm, m, lam});
    }

    // Adjoint sweep over buffers [2 or 4, B, dim] = (phi, lam[, dphi, dlam]); writes gx and gw_ps [B, P].
    void adjoint(T* bufs, T* tmp, const T* x, const T* tx, bool second, T* mats, T* dmats, T* cross, T* gx,
                 T* gw_ps) const {
        const int64_t stride = 2 * B * prog.dim();
        T *phi = bufs, *lam = bufs + stride, *dphi = second ? bufs + 2 * stride : nullptr;
        T* dlam = second ? bufs + 3 * stride : nullptr;
        for (size_t i = prog.steps.size(); i-- > 0;) {
            const Step& st = prog.steps[i];
            if (st.chain >= 0) {  // the buffers are consecutive: one permutation for all of them
                chain(bufs, tmp, (second ? 4 : 2) * B, st.chain, true);
                continue;
            }
            launch.map(kernel_blocks(B), BlockMatrices<T>{sm(i), x, tx, B, prog.n_inputs, true, mats,
                                                          second ? dmats : nullptr});
            const int bit = prog.bit(st.qubit);
            if (second)
                launch.reduce(B, AdjointBlock<T, true>{phi, lam, dphi, dlam, mats, dmats, n(), bit, cross});
            else
                launch.reduce(B, AdjointBlock<T, false>{phi, lam, dphi, dlam, mats, dmats, n(), bit, cross});
            launch.map(kernel_blocks(B), BlockTerms<T>{sm(i), cross, x, tx, B, prog.n_inputs, prog.n_weights,
                                                       second, gx, gw_ps});
        }
    }
};

template <typename T>
T* amplitudes(const at::Tensor& t) {
    return reinterpret_cast<T*>(t.data_ptr());
}

/// Forward with the device kernels: y [B, M] and the final states [B, dim] (complex).
template <typename T, class Launch>
void kernels_forward(const Program& prog, Launch& launch, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                     at::Tensor& y, at::Tensor& state) {
    KernelDriver<T, Launch> run(prog, launch, x, mats);
    at::Tensor m = at::empty({x.size(0), 8}, x.options()), tmp = at::empty_like(state);
    run.simulate(x.data_ptr<T>(), nullptr, amplitudes<T>(state), nullptr, amplitudes<T>(tmp), m.data_ptr<T>(),
                 nullptr);
    run.expectations(amplitudes<T>(state), nullptr, y.data_ptr<T>());
}

/// Adjoint backward from the cached final states: gx [B, F] and per-sample weight gradients [B, P].
template <typename T, class Launch>
void kernels_backward(const Program& prog, Launch& launch, const std::vector<StepMats<T>>& mats,
                      const at::Tensor& x, const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx,
                      at::Tensor& gw_ps) {
    KernelDriver<T, Launch> run(prog, launch, x, mats);
    const int64_t B = x.size(0), dim = prog.dim();
    at::Tensor bufs = at::zeros({2, B, dim, 2}, x.options());  // (phi, lam) back to back
    bufs.select(0, 0).copy_(at::view_as_real(state.contiguous()));
    T* phi = bufs.data_ptr<T>();
    run.observable(phi, gy.data_ptr<T>(), phi + 2 * B * dim);
    at::Tensor m = at::empty({B, 8}, x.options()), cross = at::empty({B, 16}, x.options());
    at::Tensor tmp = at::empty({2, B, dim, 2}, x.options());
    run.adjoint(phi, tmp.data_ptr<T>(), x.data_ptr<T>(), nullptr, false, m.data_ptr<T>(), nullptr,
                cross.data_ptr<T>(), gx.data_ptr<T>(), gw_ps.data_ptr<T>());
}

/// Double backward: tangent forward, then the second-order adjoint sweep. tx: input tangents or undefined;
/// the weight tangents are inside `mats` (prepare_steps). Writes jvp [B, M], gx [B, F], gw_ps [B, P].
template <typename T, class Launch>
void kernels_double_backward(const Program& prog, Launch& launch, const std::vector<StepMats<T>>& mats,
                             const at::Tensor& x, const at::Tensor& tx, const at::Tensor& gy, at::Tensor& jvp,
                             at::Tensor& gx, at::Tensor& gw_ps) {
    KernelDriver<T, Launch> run(prog, launch, x, mats);
    const int64_t B = x.size(0), stride = 2 * B * prog.dim();
    at::Tensor bufs = at::zeros({4, B, prog.dim(), 2}, x.options());  // phi, lam, dphi, dlam
    at::Tensor tmp = at::empty({4, B, prog.dim(), 2}, x.options());
    T* b = bufs.data_ptr<T>();
    const T* txp = tx.defined() ? tx.data_ptr<T>() : nullptr;
    at::Tensor m = at::empty({B, 8}, x.options()), dm = at::empty({B, 8}, x.options());
    at::Tensor cross = at::empty({B, 16}, x.options());
    run.simulate(x.data_ptr<T>(), txp, b, b + 2 * stride, tmp.data_ptr<T>(), m.data_ptr<T>(), dm.data_ptr<T>());
    run.expectations(b, b + 2 * stride, jvp.data_ptr<T>());
    run.observable(b, gy.data_ptr<T>(), b + stride);
    run.observable(b + 2 * stride, gy.data_ptr<T>(), b + 3 * stride);
    run.adjoint(b, tmp.data_ptr<T>(), x.data_ptr<T>(), txp, true, m.data_ptr<T>(), dm.data_ptr<T>(),
                cross.data_ptr<T>(), gx.data_ptr<T>(), gw_ps.data_ptr<T>());
}

}  // namespace qdi
}  // namespace qallegro
