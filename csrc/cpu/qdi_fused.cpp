// CPU driver of the fused QDI simulator (math: qallegro/qdi_fused.h): per upload one unitary V_u
// shared by the batch and applied with complex GEMMs (ATen -> BLAS), per-sample work only for the
// embeddings. Fixed-size chunks of samples are spread over threads in one parallel region per pass;
// every reduction over samples is a GEMM within a chunk and an ordered sum over chunks, so results do
// not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "qallegro/qdi_fused_host.h"

namespace qallegro {
namespace qdi {

namespace {

template <typename T>
T* amp(const at::Tensor& t) {
    return reinterpret_cast<T*>(t.data_ptr());
}

// Half-angle cosines and sines of the inputs, [rows, F] each: vectorised once per chunk instead of two
// scalar sin/cos per sample, qubit and pass.
struct HalfAngles {
    at::Tensor c, s;
    explicit HalfAngles(const at::Tensor& x) : c(at::cos(x * 0.5)), s(at::sin(x * 0.5)) {}
};

// The embedding factors A_q of (chunk-local) sample b in upload `seg`.
template <typename T>
void embedding_factors(const Program& prog, const std::vector<StepMats<T>>& mats, const Segment& seg,
                       const HalfAngles& h, int64_t b, Mat2<T>* a) {
    const T *c = h.c.data_ptr<T>() + b * prog.n_inputs, *s = h.s.data_ptr<T>() + b * prog.n_inputs;
    for (int q = 0; q < prog.n_qubits; ++q) {
        const StepMats<T>& sm = mats[seg.emb_steps[q]];
        a[q] = embedding_matrix(sm, c[sm.emb_param], s[sm.emb_param]);
    }
}

// psi <- E_u(x_b) psi, or its inverse, for rows b and (copies = 2) rows + b of `states` ([copies * rows, dim]).
template <typename T>
void apply_embedding(const Program& prog, const std::vector<StepMats<T>>& mats, const Segment& seg,
                     const HalfAngles& h, int64_t rows, int copies, T* s, bool inverse) {
    const int64_t dim = prog.dim();
    Mat2<T> a[kMaxQubits];
    for (int64_t b = 0; b < rows; ++b) {
        embedding_factors(prog, mats, seg, h, b, a);
        for (int q = 0; q < prog.n_qubits; ++q) {
            const Mat2<T> m = inverse ? mat2_adjoint(a[q]) : a[q];
            for (int k = 0; k < copies; ++k)
                apply_mat2(s + 2 * (k * rows + b) * dim, dim, prog.bit(prog.steps[seg.emb_steps[q]].qubit), m);
        }
    }
}

// Samples per chunk: each thread takes whole chunks, and runs its GEMMs single-threaded inside the one
// parallel region of a pass (a region per small step costs a barrier each, which on a loaded machine
// waits for a descheduled thread). A function of 2^n only, so sums over chunks do not depend on the
// thread count.
int64_t chunk_rows(int64_t dim) { return std::max<int64_t>(256, 16 * dim); }

}  // namespace

template <typename T>
void fused_forward(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                   const at::Tensor& x, at::Tensor& y, at::Tensor& state) {
    const int64_t batch = x.size(0), dim = prog.dim(), rows = chunk_rows(dim);
    const int nm = int(prog.measured.size());
    const auto segs = upload_segments(prog);
    const auto vts = upload_unitaries(prog, chains, mats, segs);
    T* yp = y.data_ptr<T>();
    at::parallel_for(0, (batch + rows - 1) / rows, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
            const int64_t b0 = c * rows, nb = std::min(rows, batch - b0);
            const HalfAngles h(x.narrow(0, b0, nb));
            at::Tensor psi = at::empty({nb, dim}, state.options());
            Mat2<T> a[kMaxQubits];
            for (int64_t b = 0; b < nb; ++b) {
                embedding_factors(prog, mats, segs[0], h, b, a);
                product_state(a, prog.n_qubits, amp<T>(psi) + 2 * b * dim);
            }
            at::Tensor out = state.narrow(0, b0, nb);
            for (size_t u = 0; u < segs.size(); ++u) {
                if (u > 0) apply_embedding(prog, mats, segs[u], h, nb, 1, amp<T>(psi), false);
                if (u + 1 < segs.size())
                    psi = at::mm(psi, vts[u]);
                else
                    at::mm_out(out, psi, vts[u]);
            }
            const T* fp = amp<T>(out);
            for (int64_t b = 0; b < nb; ++b)
                measure_state<T>(prog, fp + 2 * b * dim, yp + (b0 + b) * nm, nullptr, nullptr);
        }
    });
}

template <typename T>
void fused_backward(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                    const at::Tensor& x, const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx,
                    at::Tensor& gw) {
    const int64_t batch = x.size(0), dim = prog.dim(), rows = chunk_rows(dim);
    const int64_t chunks = (batch + rows - 1) / rows;
    const int nm = int(prog.measured.size()), F = prog.n_inputs, U = int(prog.uploads);
    const auto segs = upload_segments(prog);
    const auto vts = upload_unitaries(prog, chains, mats, segs);
    // per chunk and upload: Phi^+ Lam over the chunk's samples (Phi the states after V_u, Lam their
    // cotangents), summed in chunk order below
    at::Tensor parts = at::empty({chunks, U, dim, dim}, state.options());
    const T* gyp = gy.data_ptr<T>();
    T* gxp = gx.data_ptr<T>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
            const int64_t b0 = c * rows, nb = std::min(rows, batch - b0);
            const HalfAngles h(x.narrow(0, b0, nb));
            // phi (rows 0..nb) and lam = H phi (rows nb..2nb): each un-computation is one GEMM
            at::Tensor both = at::empty({2 * nb, dim}, state.options());
            both.narrow(0, 0, nb).copy_(state.narrow(0, b0, nb));
            T* bp = amp<T>(both);
            for (int64_t b = 0; b < nb; ++b)
                measure_state<T>(prog, bp + 2 * b * dim, nullptr, gyp + (b0 + b) * nm, bp + 2 * (nb + b) * dim);
            for (int u = U; u-- > 0;) {
                const Segment& seg = segs[u];
                at::Tensor part = parts[c][u];
                at::mm_out(part, both.narrow(0, 0, nb).t().conj(), both.narrow(0, nb, nb));
                both = at::mm(both, vts[u].t().conj());  // psi^T conj(V): V^+ applied to every row
                // inputs: Im <lam|P|phi> right after the embedding
                const T *pp = amp<T>(both), *lp = pp + 2 * nb * dim;
                for (int64_t b = 0; b < nb; ++b)
                    for (int q = 0; q < prog.n_qubits; ++q) {
                        const StepMats<T>& sm = mats[seg.emb_steps[q]];
                        gxp[(b0 + b) * F + sm.emb_param] =
                            im_pauli_inner(sm.emb_kind, lp + 2 * b * dim, pp + 2 * b * dim, dim,
                                           prog.bit(prog.steps[seg.emb_steps[q]].qubit));
                    }
                if (u > 0) apply_embedding(prog, mats, seg, h, nb, 2, amp<T>(both), true);
            }
        }
    });
    T* gwp = gw.data_ptr<T>();
    for (int u = 0; u < U; ++u) {
        at::Tensor sum = parts[0][u].clone();
        for (int64_t c = 1; c < chunks; ++c) sum.add_(parts[c][u]);
        // weights: the adjoint method over the basis states
        matrix_weight_gradients(prog, chains, mats, segs[u], vts[u], sum, gwp);
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
