// CPU driver of the fused QDI simulator (math: qallegro/qdi_fused.h): per upload one unitary V_u
// shared by the batch and applied with one complex GEMM (ATen -> BLAS), per-sample work only for the
// embeddings. Per-sample loops and per-basis-state loops run on all threads with at::parallel_for;
// every reduction over samples is a GEMM or an ordered sum, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "qallegro/qdi_fused.h"

namespace qallegro {
namespace qdi {

namespace {

constexpr int64_t kSampleGrain = 64;

template <typename T>
T* amp(const at::Tensor& t) {
    return reinterpret_cast<T*>(t.data_ptr());
}

// V_u^T for every upload: row r is V_u e_r (the basis state r run through the upload's variational part).
template <typename T>
std::vector<at::Tensor> unitaries(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                                  const std::vector<Segment>& segs, const at::TensorOptions& copts) {
    const int64_t dim = prog.dim();
    std::vector<at::Tensor> out;
    for (const Segment& seg : segs) {
        at::Tensor vt = at::zeros({dim, dim}, copts);
        T* p = amp<T>(vt);
        at::parallel_for(0, dim, 8, [&](int64_t r0, int64_t r1) {
            std::vector<T> tmp(2 * dim);
            for (int64_t r = r0; r < r1; ++r) {
                p[2 * (r * dim + r)] = T(1);
                apply_variational(prog, chains, mats, seg.first, seg.end, p + 2 * r * dim, tmp.data());
            }
        });
        out.push_back(vt);
    }
    return out;
}

// Half-angle cosines and sines of the inputs, [B, F] each: vectorised once per call instead of two
// scalar sin/cos per sample, qubit and pass.
struct HalfAngles {
    at::Tensor c, s;
    explicit HalfAngles(const at::Tensor& x) : c(at::cos(x * 0.5)), s(at::sin(x * 0.5)) {}
};

// The embedding factors A_q of sample b in upload `seg`.
template <typename T>
void embedding_factors(const Program& prog, const std::vector<StepMats<T>>& mats, const Segment& seg,
                       const HalfAngles& h, int64_t b, Mat2<T>* a) {
    const T *c = h.c.data_ptr<T>() + b * prog.n_inputs, *s = h.s.data_ptr<T>() + b * prog.n_inputs;
    for (int q = 0; q < prog.n_qubits; ++q) {
        const StepMats<T>& sm = mats[seg.emb_steps[q]];
        a[q] = embedding_matrix(sm, c[sm.emb_param], s[sm.emb_param]);
    }
}

// psi <- E_u(x_b) psi, or its inverse, for rows b and (with k = 2) B + b of `states` ([k * B, dim]).
template <typename T>
void apply_embedding(const Program& prog, const std::vector<StepMats<T>>& mats, const Segment& seg,
                     const HalfAngles& h, int64_t batch, const at::Tensor& states, bool inverse) {
    const int64_t dim = prog.dim(), copies = states.size(0) / batch;
    T* s = amp<T>(states);
    at::parallel_for(0, batch, kSampleGrain, [&](int64_t b0, int64_t b1) {
        Mat2<T> a[kMaxQubits];
        for (int64_t b = b0; b < b1; ++b) {
            embedding_factors(prog, mats, seg, h, b, a);
            for (int q = 0; q < prog.n_qubits; ++q) {
                const Mat2<T> m = inverse ? mat2_adjoint(a[q]) : a[q];
                for (int64_t k = 0; k < copies; ++k)
                    apply_mat2(s + 2 * (k * batch + b) * dim, dim, prog.bit(prog.steps[seg.emb_steps[q]].qubit), m);
            }
        }
    });
}

}  // namespace

template <typename T>
void fused_forward(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                   const at::Tensor& x, at::Tensor& y, at::Tensor& state) {
    const int64_t batch = x.size(0), dim = prog.dim();
    const int nm = int(prog.measured.size());
    const auto segs = upload_segments(prog);
    const auto vts = unitaries(prog, chains, mats, segs, state.options());
    const HalfAngles h(x);
    at::Tensor psi = at::empty({batch, dim}, state.options());
    T* sp = amp<T>(psi);
    at::parallel_for(0, batch, kSampleGrain, [&](int64_t b0, int64_t b1) {
        Mat2<T> a[kMaxQubits];
        for (int64_t b = b0; b < b1; ++b) {
            embedding_factors(prog, mats, segs[0], h, b, a);
            product_state(a, prog.n_qubits, sp + 2 * b * dim);
        }
    });
    for (size_t u = 0; u < segs.size(); ++u) {
        if (u > 0) apply_embedding(prog, mats, segs[u], h, batch, psi, false);
        if (u + 1 < segs.size())
            psi = at::matmul(psi, vts[u]);
        else
            at::mm_out(state, psi, vts[u]);
    }
    const T* fp = amp<T>(state);
    T* yp = y.data_ptr<T>();
    at::parallel_for(0, batch, kSampleGrain, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) measure_state<T>(prog, fp + 2 * b * dim, yp + b * nm, nullptr, nullptr);
    });
}

template <typename T>
void fused_backward(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                    const at::Tensor& x, const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx,
                    at::Tensor& gw) {
    const int64_t batch = x.size(0), dim = prog.dim();
    const int nm = int(prog.measured.size()), F = prog.n_inputs;
    const auto segs = upload_segments(prog);
    const auto vts = unitaries(prog, chains, mats, segs, state.options());
    const HalfAngles h(x);
    const T* gyp = gy.data_ptr<T>();
    // phi (rows 0..B) and lam = H phi (rows B..2B) in one tensor: each un-computation is one GEMM
    at::Tensor both = at::empty({2 * batch, dim}, state.options());
    both.narrow(0, 0, batch).copy_(state);
    {
        T* bp = amp<T>(both);
        at::parallel_for(0, batch, kSampleGrain, [&](int64_t b0, int64_t b1) {
            for (int64_t b = b0; b < b1; ++b)
                measure_state<T>(prog, bp + 2 * b * dim, nullptr, gyp + b * nm, bp + 2 * (batch + b) * dim);
        });
    }
    T *gxp = gx.data_ptr<T>(), *gwp = gw.data_ptr<T>();
    for (size_t u = segs.size(); u-- > 0;) {
        const Segment& seg = segs[u];
        // weights: adjoint method over the basis states with cotangents mu = Phi'^+ Lam, Phi' = Phi conj(V)
        // the states before V_u and Lam the cotangents after it: mu = V^T (Phi^+ Lam)
        const at::Tensor mu = at::matmul(vts[u], at::matmul(both.narrow(0, 0, batch).t().conj(),
                                                            both.narrow(0, batch, batch)));
        both = at::matmul(both, vts[u].t().conj());  // psi^T conj(V): V^+ applied to every row
        const at::Tensor vt = vts[u].clone();
        const int32_t n_steps = seg.end - seg.first;
        std::vector<T> cross(size_t(dim) * n_steps * 8, T(0));
        {
            T *vp = amp<T>(vt), *mp = amp<T>(mu);
            at::parallel_for(0, dim, 8, [&](int64_t r0, int64_t r1) {
                std::vector<T> tmp(2 * dim);
                for (int64_t r = r0; r < r1; ++r)
                    variational_adjoint(prog, chains, mats, seg.first, seg.end, vp + 2 * r * dim, mp + 2 * r * dim,
                                        tmp.data(), cross.data() + size_t(r) * n_steps * 8);
            });
        }
        for (int32_t i = seg.first; i < seg.end; ++i) {
            if (prog.steps[i].chain >= 0) continue;
            T sum[8] = {};
            for (int64_t r = 0; r < dim; ++r)
                for (int e = 0; e < 8; ++e) sum[e] += cross[(size_t(r) * n_steps + (i - seg.first)) * 8 + e];
            block_weight_terms(mats[i], mat2_zero<T>(), cross_to_mat2(sum), false, F, gwp);
        }
        // inputs: Im <lam|P|phi> right after the embedding
        {
            const T *pp = amp<T>(both), *lp = pp + 2 * batch * dim;
            at::parallel_for(0, batch, kSampleGrain, [&](int64_t b0, int64_t b1) {
                for (int64_t b = b0; b < b1; ++b)
                    for (int q = 0; q < prog.n_qubits; ++q) {
                        const StepMats<T>& sm = mats[seg.emb_steps[q]];
                        gxp[b * F + sm.emb_param] = im_pauli_inner(sm.emb_kind, lp + 2 * b * dim, pp + 2 * b * dim,
                                                                   dim, prog.bit(prog.steps[seg.emb_steps[q]].qubit));
                    }
            });
        }
        if (u > 0) apply_embedding(prog, mats, seg, h, batch, both, true);
    }
}

template void fused_forward<float>(const Program&, const Chains&, const std::vector<StepMats<float>>&,
                                   const at::Tensor&, at::Tensor&, at::Tensor&);
template void fused_forward<double>(const Program&, const Chains&, const std::vector<StepMats<double>>&,
                                    const at::Tensor&, at::Tensor&, at::Tensor&);
template void fused_backward<float>(const Program&, const Chains&, const std::vector<StepMats<float>>&,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
template void fused_backward<double>(const Program&, const Chains&, const std::vector<StepMats<double>>&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                                     at::Tensor&);

}  // namespace qdi
}  // namespace qallegro
