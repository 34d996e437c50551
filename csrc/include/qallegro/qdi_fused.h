#pragma once
/// Fused simulation of QDI circuits: what the batch shares is applied as one matrix.
///
/// The variational part of every upload has the same weights for every sample, so it is one 2^n x 2^n
/// unitary V_u, built once per call by running its gates on the basis states; the batch then meets it
/// in one complex GEMM. Only the embeddings are per sample: E_u(x) = (x)_q R_q(x_q) pre_q, n single-qubit
/// rotations, and the first one acts on |0...0> and gives a product state built directly in O(2^n).
///
///   psi = V_{U-1} E_{U-1}(x) ... V_0 E_0(x) |0>,  the final CNOT cascade ("single") folded into V_{U-1}.
///
/// Derivatives (adjoint method, L = sum_m g_m <psi|P_m|psi>, lam = sum_m g_m P_m psi, dL = 2 Re <lam|dpsi>):
///   inputs:  dR_q/dx = -(i/2) P_q R_q, so dL/dx_uq = Im <lam_u|P_q|phi_u>, phi_u and lam_u taken right
///            after E_u (no un-applying of the rotation itself);
///   weights: dL = 2 Re tr(dV_u C_u), C_u = sum_b phi_ub lam_ub^+ (one GEMM over the batch), and
///            tr(dV C) = sum_r <mu_r| dV |e_r> with mu_r = conj(C[r, :]): the adjoint method over the
///            2^n basis states instead of the batch (matrix_weight_gradients, qallegro/qdi_fused_host.h).
/// Functions here act on one state vector (interleaved complex) so the CPU drivers loop over samples or
/// basis states with them; torch-free. Drivers: csrc/cpu/qdi_fused.cpp (CPU), qallegro/qdi_fused_driver.h
/// (device kernels, on CUDA or on the sequential CPU launcher).
#include <cstdint>
#include <vector>

#include "qallegro/qdi_program.h"

namespace qallegro {
namespace qdi {

/// Steps [first, end) of upload u; emb_steps[q] is the step holding qubit q's embedding.
struct Segment {
    int32_t first = 0, end = 0;
    std::vector<int32_t> emb_steps;
};

/// Splits the program into uploads: each starts at the block step of its first embedding; the last
/// one runs to the end (with the "single" cascade).
inline std::vector<Segment> upload_segments(const Program& prog) {
    std::vector<Segment> segs;
    for (int32_t i = 0; i < int32_t(prog.steps.size()); ++i) {
        const Step& st = prog.steps[i];
        int32_t emb = -1;
        for (int f = 0; f < st.n_factors && st.chain < 0; ++f)
            if (st.factors[f].param >= 0 && st.factors[f].param < prog.n_inputs) emb = st.factors[f].param;
        if (emb < 0) continue;
        if (emb % prog.n_qubits == 0) {
            if (!segs.empty()) segs.back().end = i;
            segs.push_back(Segment{i, i, {}});
        }
        segs.back().emb_steps.push_back(i);
    }
    if (!segs.empty()) segs.back().end = int32_t(prog.steps.size());
    return segs;
}

/// Embedding factor A = R(x) pre of a block step (E = (x)_q A_q), from c = cos(x/2), s = sin(x/2).
template <typename T>
QALLEGRO_HD Mat2<T> embedding_matrix(const StepMats<T>& sm, T c, T s) {
    return mat2_mul(factor_matrix_cs<T>(sm.emb_kind, c, s), sm.pre);
}

/// s <- m s on qubit bit `bit` of one state (interleaved complex, dim amplitudes).
template <typename T>
QALLEGRO_HD void apply_mat2(T* s, int64_t dim, int bit, const Mat2<T>& m) {
    for (int64_t p = 0; p < dim / 2; ++p) {
        const int64_t i0 = pair_index(p, bit), i1 = i0 | (int64_t(1) << bit);
        apply_pair(m.re[0][0], m.im[0][0], m.re[0][1], m.im[0][1], m.re[1][0], m.im[1][0], m.re[1][1], m.im[1][1],
                   s[2 * i0], s[2 * i0 + 1], s[2 * i1], s[2 * i1 + 1]);
    }
}

/// The product state (x)_q A_q |0> (qubit 0 most significant), from the first columns of A_q.
template <typename T>
QALLEGRO_HD void product_state(const Mat2<T>* a, int n, T* s) {
    s[0] = T(1), s[1] = T(0);
    int64_t len = 1;
    for (int q = 0; q < n; ++q, len *= 2)
        for (int64_t i = len; i-- > 0;) {  // backwards: entry i is read before 2i, 2i + 1 are written
            const T r = s[2 * i], im = s[2 * i + 1];
            for (int b = 1; b >= 0; --b) {
                const T vr = a[q].re[b][0], vi = a[q].im[b][0];
                s[2 * (2 * i + b)] = r * vr - im * vi;
                s[2 * (2 * i + b) + 1] = r * vi + im * vr;
            }
        }
}

/// One amplitude pair's term of Im <lam| P |phi> (P a Pauli on the pair's bit).
template <typename T>
QALLEGRO_HD T im_pauli_pair(int32_t pauli, T l0r, T l0i, T l1r, T l1i, T p0r, T p0i, T p1r, T p1i) {
    T q0r = 0, q0i = 0, q1r = 0, q1i = 0;  // P phi on the pair
    add_pauli_pair(pauli, T(1), p0r, p0i, p1r, p1i, q0r, q0i, q1r, q1i);
    return l0r * q0i - l0i * q0r + l1r * q1i - l1i * q1r;
}

/// Im <lam| P |phi> for the Pauli P on bit `bit`: the input derivative of an embedding rotation.
template <typename T>
QALLEGRO_HD T im_pauli_inner(int32_t pauli, const T* lam, const T* phi, int64_t dim, int bit) {
    T acc = T(0);
    for (int64_t p = 0; p < dim / 2; ++p) {
        const int64_t i0 = pair_index(p, bit), i1 = i0 | (int64_t(1) << bit);
        acc += im_pauli_pair(pauli, lam[2 * i0], lam[2 * i0 + 1], lam[2 * i1], lam[2 * i1 + 1], phi[2 * i0],
                             phi[2 * i0 + 1], phi[2 * i1], phi[2 * i1 + 1]);
    }
    return acc;
}

/// y[m] = <s|P_m|s> over the measured qubits, and (g non-null) lam = sum_m g[m] P_m s.
template <typename T>
inline void measure_state(const Program& prog, const T* s, T* y, const T* g, T* lam) {
    const int64_t dim = prog.dim();
    if (g)
        for (int64_t i = 0; i < 2 * dim; ++i) lam[i] = T(0);
    for (size_t m = 0; m < prog.measured.size(); ++m) {
        const int bit = prog.bit(prog.measured[m]);
        T acc = T(0);
        for (int64_t p = 0; p < dim / 2; ++p) {
            const int64_t i0 = pair_index(p, bit), i1 = i0 | (int64_t(1) << bit);
            if (y) acc += pauli_expectation_pair(prog.pauli, s[2 * i0], s[2 * i0 + 1], s[2 * i1], s[2 * i1 + 1]);
            if (g)
                add_pauli_pair(prog.pauli, g[m], s[2 * i0], s[2 * i0 + 1], s[2 * i1], s[2 * i1 + 1], lam[2 * i0],
                               lam[2 * i0 + 1], lam[2 * i1], lam[2 * i1 + 1]);
        }
        if (y) y[m] = acc;
    }
}

/// Applies steps [first, end) of the variational part to one state (the embeddings are left out:
/// a block step contributes its `post` matrix); tmp: scratch of the state's size.
template <typename T>
void apply_variational(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                       int32_t first, int32_t end, T* s, T* tmp) {
    const int64_t dim = prog.dim();
    for (int32_t i = first; i < end; ++i) {
        const Step& st = prog.steps[i];
        if (st.chain < 0) {
            apply_mat2(s, dim, prog.bit(st.qubit), mats[i].post);
            continue;
        }
        for (int64_t j = 0; j < dim; ++j) {
            const int64_t src = chains.source(st.chain, j);
            tmp[2 * j] = s[2 * src], tmp[2 * j + 1] = s[2 * src + 1];
        }
        for (int64_t j = 0; j < 2 * dim; ++j) s[j] = tmp[j];
    }
}

/// Adjoint sweep of steps [first, end) for one basis state r: phi = V e_r (consumed), mu = its
/// cotangent (consumed). Adds the 2x2 cross matrices phi_before (x) conj(mu_after) of every block step to
/// cross[8 * (i - first) ...]; the weight gradients are 2 Re tr(dpost cross) summed over r.
template <typename T>
void variational_adjoint(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                         int32_t first, int32_t end, T* phi, T* mu, T* tmp, T* cross) {
    const int64_t dim = prog.dim();
    for (int32_t i = end; i-- > first;) {
        const Step& st = prog.steps[i];
        if (st.chain >= 0) {
            for (T* s : {phi, mu}) {
                for (int64_t j = 0; j < dim; ++j) {
                    const int64_t src = chains.source(st.chain, j);
                    tmp[2 * src] = s[2 * j], tmp[2 * src + 1] = s[2 * j + 1];
                }
                for (int64_t j = 0; j < 2 * dim; ++j) s[j] = tmp[j];
            }
            continue;
        }
        const Mat2<T> md = mat2_adjoint(mats[i].post);
        const int bit = prog.bit(st.qubit);
        T* c = cross + 8 * (i - first);
        for (int64_t p = 0; p < dim / 2; ++p) {
            const int64_t i0 = pair_index(p, bit), i1 = i0 | (int64_t(1) << bit);
            T* a = phi;
            apply_pair(md.re[0][0], md.im[0][0], md.re[0][1], md.im[0][1], md.re[1][0], md.im[1][0], md.re[1][1],
                       md.im[1][1], a[2 * i0], a[2 * i0 + 1], a[2 * i1], a[2 * i1 + 1]);
            accumulate_cross(a[2 * i0], a[2 * i0 + 1], a[2 * i1], a[2 * i1 + 1], mu[2 * i0], mu[2 * i0 + 1],
                             mu[2 * i1], mu[2 * i1 + 1], c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
            apply_pair(md.re[0][0], md.im[0][0], md.re[0][1], md.im[0][1], md.re[1][0], md.im[1][0], md.re[1][1],
                       md.im[1][1], mu[2 * i0], mu[2 * i0 + 1], mu[2 * i1], mu[2 * i1 + 1]);
        }
    }
}

/// Estimated time (microseconds) of one forward + backward by the gate-by-gate and by the fused
/// simulator, fitted to CPU-time measurements of both (float64, 1 thread, B = 64 and 4096, n = 2..8,
/// bench/bench_qdi.py); the driver runs the smaller. Gate-by-gate: a pass over 2^n amplitudes per
/// block step and sample, plus a per-step overhead. Fused: per sample ~4 GEMM rows of 2^n x 2^n per
/// upload and the embedding rotations; per call building V and its adjoint over the basis states.
inline double gate_cost(const Program& prog, int64_t batch) {
    const double steps = double(prog.steps.size()), d = double(prog.dim());
    return double(batch) * (0.0017 * steps * d + 0.04 * steps);
}
inline double fused_cost(const Program& prog, int64_t batch) {
    const double steps = double(prog.steps.size()), d = double(prog.dim());
    const double per_sample = 3.4e-4 * prog.uploads * d * d + 0.0098 * prog.n_inputs * d + 0.3;
    return double(batch) * per_sample + 0.01 * d * d * steps + 200.0;
}

/// Largest register the fused simulator takes: above it the 2^n x 2^n unitaries (16 MiB each at 10
/// qubits in complex128) stop paying off.
constexpr int kMaxFusedQubits = 12;

/// Whether a first-order pass over `batch` samples runs fused: the rule of the CPU op, which the CUDA op
/// follows too (the cost model is fitted to CPU times; no GPU measurement exists to refit it).
inline bool prefer_fused(const Program& prog, int64_t batch) {
    return prog.n_qubits <= kMaxFusedQubits && batch > 0 && fused_cost(prog, batch) < gate_cost(prog, batch);
}

}  // namespace qdi
}  // namespace qallegro
