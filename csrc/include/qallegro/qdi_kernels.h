#pragma once
/// Kernel bodies of the device QDI simulator: each is a functor over plain pointers called with its
/// (block, thread, block size) indices, so csrc/cuda/qdi.cu launches it with <<<>>> and
/// csrc/cpu/qdi_kernels_cpu.cpp runs the very same code with a sequential CPU launcher in the CPU
/// test suite. Two shapes:
///   map bodies     operator()(block, thread, block_dim): one thread per (sample, pair) or per sample;
///   reduce bodies  partial(block, thread, block_dim, acc[kValues]) then finish(block, sum): one block
///                  per sample; the CUDA wrapper sums the partials in shared memory (the barrier sits
///                  between the two phases), the CPU launcher sums them in thread order.
/// States are [count, 2^n] interleaved complex, one vector after another (cuStateVec's batched layout).
/// Gate arithmetic: qallegro/qdi_gates.h; derivative terms: qallegro/qdi_program.h; the per-sample
/// kernels of the fused simulator (qallegro/qdi_fused_driver.h) at the end. Torch-free.
#include <cstdint>

#include "qallegro/qdi_fused.h"
#include "qallegro/qdi_program.h"

namespace qallegro {
namespace qdi {

/// Threads per block of every QDI kernel, on the GPU and in the CPU launcher.
constexpr int kKernelThreads = 128;

#define QDI_MAT(p) p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
#define QDI_AMP(v, i0, i1) v[2 * (i0)], v[2 * (i0) + 1], v[2 * (i1)], v[2 * (i1) + 1]

/// |0...0> in `count` states; one thread per amplitude.
template <typename T>
struct InitStates {
    T* sv;
    int64_t count, dim;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t i = block * block_dim + thread;
        if (i >= count * dim) return;
        sv[2 * i] = (i % dim == 0) ? T(1) : T(0);
        sv[2 * i + 1] = T(0);
    }
};

/// Per-sample block matrix M_b = post E(x_b) pre (or its adjoint) and, with dmats, the tangent
/// dM_b = t_x post E' pre + dpost_t E pre; row-major complex [B, 2, 2]. One thread per sample.
template <typename T>
struct BlockMatrices {
    const StepMats<T>* sm;
    const T *x, *tx;
    int64_t batch;
    int F;
    bool adjoint;
    T *mats, *dmats;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t b = block * block_dim + thread;
        if (b >= batch) return;
        Mat2<T> m = sm->post, d = sm->dpost_t;
        if (sm->emb_param >= 0) {
            const T xb = x[b * F + sm->emb_param];
            const Mat2<T> A = mat2_mul(factor_matrix<T>(sm->emb_kind, xb), sm->pre);
            m = mat2_mul(sm->post, A);
            if (dmats) {
                const T tb = tx ? tx[b * F + sm->emb_param] : T(0);
                d = mat2_axpy(mat2_mul(sm->dpost_t, A), tb,
                              mat2_mul(sm->post, mat2_mul(factor_derivative<T>(sm->emb_kind, xb), sm->pre)));
            }
        }
        if (adjoint) m = mat2_adjoint(m), d = mat2_adjoint(d);
        mat2_row_major(m, mats + 8 * b);
        if (dmats) mat2_row_major(d, dmats + 8 * b);
    }
};

/// psi <- M_b psi (and dpsi <- M_b dpsi + dM_b psi); one thread per (sample, pair).
template <typename T, bool Tangent>
struct ForwardBlock {
    T *sv, *dsv;
    const T *mats, *dmats;
    int64_t batch;
    int n, bit;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t half = int64_t(1) << (n - 1), t = block * block_dim + thread;
        if (t >= batch * half) return;
        const int64_t b = t / half, i0 = (b << n) + pair_index(t % half, bit), i1 = i0 + (int64_t(1) << bit);
        const T* m = mats + 8 * b;
        if (Tangent) {
            const T* d = dmats + 8 * b;
            apply_pair(QDI_MAT(m), QDI_AMP(dsv, i0, i1));
            add_apply_pair(QDI_MAT(d), QDI_AMP(sv, i0, i1), QDI_AMP(dsv, i0, i1));
        }
        apply_pair(QDI_MAT(m), QDI_AMP(sv, i0, i1));
    }
};

/// A CNOT chain as the basis-state permutation the CPU engine uses (cnot_chain_source): dst[j] =
/// src[source(j)], or the inverse (dst[source(j)] = src[j]); [count, dim] each. One thread per amplitude.
template <typename T>
struct ChainPermute {
    const T* src;
    T* dst;
    int64_t count;
    int n;
    const int32_t *control_bits, *target_bits;
    int gates;
    bool inverse;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t dim = int64_t(1) << n, t = block * block_dim + thread;
        if (t >= count * dim) return;
        const int64_t base = (t / dim) << n, j = t % dim;
        const int64_t s = cnot_chain_source(j, control_bits, target_bits, gates);
        const int64_t to = base + (inverse ? s : j), from = base + (inverse ? j : s);
        dst[2 * to] = src[2 * from];
        dst[2 * to + 1] = src[2 * from + 1];
    }
};

/// lam += g[b, m] P_bit psi for one measured qubit; one thread per (sample, pair).
template <typename T>
struct ObservableAdd {
    const T *sv, *g;
    int64_t batch;
    int n, bit, pauli, nm, m;
    T* lam;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t half = int64_t(1) << (n - 1), t = block * block_dim + thread;
        if (t >= batch * half) return;
        const int64_t b = t / half, i0 = (b << n) + pair_index(t % half, bit), i1 = i0 + (int64_t(1) << bit);
        add_pauli_pair(pauli, g[b * nm + m], QDI_AMP(sv, i0, i1), QDI_AMP(lam, i0, i1));
    }
};

/// out[b, m] = <psi|P|psi>, or with dsv 2 Re <psi|P|dpsi>; reduce body, one block per sample.
template <typename T>
struct Expectation {
    using value_type = T;
    static constexpr int kValues = 1;
    const T *sv, *dsv;
    int n, bit, pauli, nm, m;
    T* out;
    QALLEGRO_HD void partial(int64_t b, int thread, int block_dim, T* acc) const {
        const int64_t half = int64_t(1) << (n - 1), base = b << n;
        for (int64_t p = thread; p < half; p += block_dim) {
            const int64_t i0 = base + pair_index(p, bit), i1 = i0 + (int64_t(1) << bit);
            acc[0] += dsv ? tangent_expectation_pair(pauli, QDI_AMP(sv, i0, i1), QDI_AMP(dsv, i0, i1))
                          : pauli_expectation_pair(pauli, QDI_AMP(sv, i0, i1));
        }
    }
    QALLEGRO_HD void finish(int64_t b, const T* sum) const { out[b * nm + m] = sum[0]; }
};

/// One block of the adjoint sweep for one sample (see qdi_lanes.h adjoint_pass): phi, lam (and dphi,
/// dlam) un-computed through M^+, cross matrices c0 = phi_before (x) conj(lam_after) and (second order)
/// c12 reduced into cross[b, 16]; reduce body, one block per sample.
template <typename T, bool Second>
struct AdjointBlock {
    using value_type = T;
    static constexpr int kValues = 16;
    T *phi, *lam, *dphi, *dlam;
    const T *mats_adj, *dmats_adj;
    int n, bit;
    T* cross;
    QALLEGRO_HD void partial(int64_t b, int thread, int block_dim, T* c) const {
        const int64_t half = int64_t(1) << (n - 1), base = b << n;
        const T* m = mats_adj + 8 * b;
        const T* d = Second ? dmats_adj + 8 * b : nullptr;
        for (int64_t p = thread; p < half; p += block_dim) {
            const int64_t i0 = base + pair_index(p, bit), i1 = i0 + (int64_t(1) << bit);
            const T l0r = lam[2 * i0], l0i = lam[2 * i0 + 1], l1r = lam[2 * i1], l1i = lam[2 * i1 + 1];
            if (Second) {
                const T d0r = dlam[2 * i0], d0i = dlam[2 * i0 + 1], d1r = dlam[2 * i1], d1i = dlam[2 * i1 + 1];
                apply_pair(QDI_MAT(m), QDI_AMP(dphi, i0, i1));
                add_apply_pair(QDI_MAT(d), QDI_AMP(phi, i0, i1), QDI_AMP(dphi, i0, i1));
                apply_pair(QDI_MAT(m), QDI_AMP(dlam, i0, i1));
                add_apply_pair(QDI_MAT(d), l0r, l0i, l1r, l1i, QDI_AMP(dlam, i0, i1));
                apply_pair(QDI_MAT(m), QDI_AMP(phi, i0, i1));
                accumulate_cross(QDI_AMP(phi, i0, i1), d0r, d0i, d1r, d1i, c[8], c[9], c[10], c[11], c[12], c[13],
                                 c[14], c[15]);
                accumulate_cross(QDI_AMP(dphi, i0, i1), l0r, l0i, l1r, l1i, c[8], c[9], c[10], c[11], c[12], c[13],
                                 c[14], c[15]);
            } else {
                apply_pair(QDI_MAT(m), QDI_AMP(phi, i0, i1));
            }
            accumulate_cross(QDI_AMP(phi, i0, i1), l0r, l0i, l1r, l1i, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
            apply_pair(QDI_MAT(m), QDI_AMP(lam, i0, i1));
        }
    }
    QALLEGRO_HD void finish(int64_t b, const T* sum) const {
        for (int e = 0; e < 16; ++e) cross[16 * b + e] = sum[e];
    }
};

/// Per-sample derivative terms of one block (qdi_program.h) into gx [B, F] and gw_ps [B, P]; one
/// thread per sample.
template <typename T>
struct BlockTerms {
    const StepMats<T>* sm;
    const T *cross, *x, *tx;
    int64_t batch;
    int F, P;
    bool second;
    T *gx, *gw_ps;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t b = block * block_dim + thread;
        if (b >= batch) return;
        const Mat2<T> C0 = cross_to_mat2(cross + 16 * b), C12 = cross_to_mat2(cross + 16 * b + 8);
        Mat2<T> S1 = C12, S2 = C0;
        if (sm->emb_param >= 0) {
            S1 = S2 = mat2_zero<T>();
            const int64_t f = b * F + sm->emb_param;
            block_input_terms(*sm, x[f], tx ? tx[f] : T(0), C0, C12, second, gx[f], S1, S2);
        }
        block_weight_terms(*sm, S1, S2, second, F, gw_ps + b * P);
    }
};

// ---- per-sample kernels of the fused simulator (qallegro/qdi_fused.h): the embeddings ----
// emb[q] is the step of qubit q's embedding in the upload at hand; qubit q acts on bit n - 1 - q
// (Program::bit). Factors are row-major complex [B, n, 2, 2].

/// The embedding factors A_q = R(x_bq) pre_q of one upload, or their adjoints; one thread per
/// (sample, qubit).
template <typename T>
struct EmbeddingFactors {
    const StepMats<T>* sm;
    const int32_t* emb;
    const T* x;
    int64_t batch;
    int n, F;
    bool adjoint;
    T* factors;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t t = block * block_dim + thread;
        if (t >= batch * n) return;
        const StepMats<T>& s = sm[emb[t % n]];
        const T xb = x[(t / n) * F + s.emb_param];
        Mat2<T> a = embedding_matrix(s, T(cos(xb / 2)), T(sin(xb / 2)));
        if (adjoint) a = mat2_adjoint(a);
        mat2_row_major(a, factors + 8 * t);
    }
};

/// The first upload's embedding on |0...0>: the product states (x)_q A_q |0>, amplitude i of sample b
/// the product over q of A_q[i_q][0] (i_q: qubit q's bit of i). One thread per amplitude.
template <typename T>
struct ProductStates {
    const T* factors;
    int64_t batch;
    int n;
    T* sv;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t t = block * block_dim + thread;
        if (t >= (batch << n)) return;
        const int64_t b = t >> n, i = t & ((int64_t(1) << n) - 1);
        T re = T(1), im = T(0);
        for (int q = 0; q < n; ++q) {
            const T* a = factors + 8 * (b * n + q) + 4 * ((i >> (n - 1 - q)) & 1);  // row i_q, column 0
            const T r = re * a[0] - im * a[1];
            im = re * a[1] + im * a[0];
            re = r;
        }
        sv[2 * t] = re;
        sv[2 * t + 1] = im;
    }
};

/// psi <- A_q psi on qubit q in `count` states; state s uses sample s % batch's factor (phi and lam
/// stored back to back share them). One thread per (state, pair).
template <typename T>
struct EmbeddingFactorApply {
    T* sv;
    const T* factors;
    int64_t count, batch;
    int n, q;
    QALLEGRO_HD void operator()(int64_t block, int thread, int block_dim) const {
        const int64_t half = int64_t(1) << (n - 1), t = block * block_dim + thread;
        if (t >= count * half) return;
        const int bit = n - 1 - q;
        const int64_t s = t / half, i0 = (s << n) + pair_index(t % half, bit), i1 = i0 + (int64_t(1) << bit);
        const T* m = factors + 8 * ((s % batch) * n + q);
        apply_pair(QDI_MAT(m), QDI_AMP(sv, i0, i1));
    }
};

/// gx[b, f] = Im <lam_b|P_q|phi_b> for the embedding rotation of qubit q (Pauli P_q, input f): the input
/// derivative, phi and lam taken right after the embedding. Reduce body, one block per (sample, qubit).
template <typename T>
struct EmbeddingInputGradient {
    using value_type = T;
    static constexpr int kValues = 1;
    const T *phi, *lam;
    const StepMats<T>* sm;
    const int32_t* emb;
    int n, F;
    T* gx;
    QALLEGRO_HD void partial(int64_t block, int thread, int block_dim, T* acc) const {
        const int q = int(block % n), bit = n - 1 - q, pauli = sm[emb[q]].emb_kind;
        const int64_t half = int64_t(1) << (n - 1), base = (block / n) << n;
        for (int64_t p = thread; p < half; p += block_dim) {
            const int64_t i0 = base + pair_index(p, bit), i1 = i0 + (int64_t(1) << bit);
            acc[0] += im_pauli_pair(pauli, QDI_AMP(lam, i0, i1), QDI_AMP(phi, i0, i1));
        }
    }
    QALLEGRO_HD void finish(int64_t block, const T* sum) const {
        gx[(block / n) * F + sm[emb[block % n]].emb_param] = sum[0];
    }
};

#undef QDI_MAT
#undef QDI_AMP

}  // namespace qdi
}  // namespace qallegro
