#pragma once
/// The QDI circuit as data: a list of steps (fused single-qubit blocks and CNOT chains) built once per
/// call from the layer's hyperparameters, walked forwards by the simulators and backwards by the
/// adjoint passes. Host-only (std::vector); the CUDA driver copies it to the device as flat arrays.
///
/// Circuit, per upload u = 0..U-1 of n features (x[u*n + q] on qubit q):
///   [Hadamard layer if rotation == Z]  embedding R_rotation(x) on every qubit,
///   then `depth` variational layers: "strong" = Rot(phi, theta, omega) on every qubit and a CNOT ring
///   CNOT(q, q + r mod n) with range r = l mod (n - 1) + 1 (PennyLane's StronglyEntanglingLayers);
///   "basic" = RX(w) on every qubit and the ring CNOT(q, q + 1 mod n) (BasicEntanglerLayers; one CNOT
///   for n = 2). Measurement: Pauli `measure` on every qubit ("none"), on even qubits ("even"), or,
///   after the cascade CNOT(0,1) ... CNOT(n-2, n-1), on qubit n - 1 only ("single").
/// The embedding of upload u and the first variational rotations act on the same qubit with no
/// entangler in between, so they are fused into one block (one pass over the state instead of two).
#include <cstdint>
#include <string>
#include <vector>

#include "qallegro/qdi_gates.h"

namespace qallegro {
namespace qdi {

/// Entangler families and measurement modes.
enum Entangling : int32_t { kStrong = 0, kBasic = 1 };
enum MeasurementMode : int32_t { kModeNone = 0, kModeEven = 1, kModeSingle = 2 };

/// Largest number of factors in one fused block: H, embedding, RZ, RY, RZ.
constexpr int kMaxFactors = 5;
/// Largest supported register (a 25-qubit complex128 state is 512 MiB per sample).
constexpr int kMaxQubits = 25;

/// One factor of a fused block; `param` indexes the per-sample parameter vector
/// theta = (x[0..F), weights[0..P)), or is -1 for the Hadamard.
struct Factor {
    int32_t kind;
    int32_t param;
};

/// A step: a fused single-qubit block (chain < 0) or a CNOT chain (chain >= 0).
struct Step {
    int32_t qubit = 0;
    int32_t n_factors = 0;
    Factor factors[kMaxFactors];  // factors[0] acts first
    int32_t chain = -1;
};

/// A CNOT chain as bit positions, in application order.
struct Chain {
    std::vector<int32_t> control_bits, target_bits;
};

/// The whole circuit.
struct Program {
    int32_t n_qubits = 0, uploads = 0, depth = 0, params_per_gate = 0;
    int32_t n_inputs = 0, n_weights = 0;  // F = uploads * n_qubits, P = uploads * depth * n * K
    int32_t pauli = kPauliY;
    std::vector<Step> steps;
    std::vector<Chain> chains;
    std::vector<int32_t> measured;  // qubits whose expectation is an output, in output order

    int32_t n_params() const { return n_inputs + n_weights; }
    int64_t dim() const { return int64_t(1) << n_qubits; }
    /// Bit position of qubit q in a basis index (PennyLane: wire 0 is the most significant bit).
    int32_t bit(int32_t q) const { return n_qubits - 1 - q; }
};

/// Code of a rotation / Pauli name ("X", "Y", "Z"), or -1.
inline int32_t parse_axis(const std::string& name) {
    if (name == "X") return kRX;
    if (name == "Y") return kRY;
    if (name == "Z") return kRZ;
    return -1;
}
/// Code of an entangler name ("strong", "basic"), or -1.
inline int32_t parse_entangling(const std::string& name) {
    if (name == "strong") return kStrong;
    if (name == "basic") return kBasic;
    return -1;
}
/// Code of a measurement mode ("none", "even", "single"), or -1.
inline int32_t parse_mode(const std::string& name) {
    if (name == "none") return kModeNone;
    if (name == "even") return kModeEven;
    if (name == "single") return kModeSingle;
    return -1;
}

/// Builds the circuit; codes must be valid (callers check and report names).
inline Program build_program(int32_t n, int32_t uploads, int32_t depth, int32_t rotation, int32_t entangling,
                             int32_t pauli, int32_t mode) {
    Program prog;
    prog.n_qubits = n;
    prog.uploads = uploads;
    prog.depth = depth;
    prog.params_per_gate = entangling == kStrong ? 3 : 1;
    prog.n_inputs = uploads * n;
    prog.n_weights = uploads * depth * n * prog.params_per_gate;
    prog.pauli = pauli;
    const int32_t K = prog.params_per_gate;
    // one chain per distinct entangler ring, indexed by layer for "strong" (ranges differ)
    auto add_chain = [&](const std::vector<std::pair<int, int>>& cnots) {
        Chain c;
        for (auto& ct : cnots) {
            c.control_bits.push_back(prog.bit(ct.first));
            c.target_bits.push_back(prog.bit(ct.second));
        }
        prog.chains.push_back(c);
        return int32_t(prog.chains.size() - 1);
    };
    std::vector<int32_t> ring_of_layer(depth, -1);
    for (int32_t l = 0; l < depth; ++l) {
        std::vector<std::pair<int, int>> cnots;
        if (entangling == kStrong && n > 1) {
            const int r = l % (n - 1) + 1;
            for (int q = 0; q < n; ++q) cnots.push_back({q, (q + r) % n});
        } else if (entangling == kBasic && n == 2) {
            cnots.push_back({0, 1});
        } else if (entangling == kBasic && n > 2) {
            for (int q = 0; q < n; ++q) cnots.push_back({q, (q + 1) % n});
        }
        if (!cnots.empty()) ring_of_layer[l] = add_chain(cnots);
    }
    for (int32_t u = 0; u < uploads; ++u) {
        for (int32_t l = 0; l < depth; ++l) {
            for (int32_t q = 0; q < n; ++q) {
                Step s;
                s.qubit = q;
                if (l == 0) {  // fused embedding
                    if (rotation == kRZ) s.factors[s.n_factors++] = {kH, -1};
                    s.factors[s.n_factors++] = {rotation, u * n + q};
                }
                const int32_t w = prog.n_inputs + ((u * depth + l) * n + q) * K;
                if (entangling == kStrong) {  // Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)
                    s.factors[s.n_factors++] = {kRZ, w};
                    s.factors[s.n_factors++] = {kRY, w + 1};
                    s.factors[s.n_factors++] = {kRZ, w + 2};
                } else {
                    s.factors[s.n_factors++] = {kRX, w};
                }
                prog.steps.push_back(s);
            }
            if (ring_of_layer[l] >= 0) {
                Step s;
                s.chain = ring_of_layer[l];
                prog.steps.push_back(s);
            }
        }
    }
    if (mode == kModeSingle) {
        if (n > 1) {
            std::vector<std::pair<int, int>> cascade;
            for (int q = 0; q + 1 < n; ++q) cascade.push_back({q, q + 1});
            Step s;
            s.chain = add_chain(cascade);
            prog.steps.push_back(s);
        }
        prog.measured.push_back(n - 1);
    } else {
        for (int32_t q = 0; q < n; q += (mode == kModeEven ? 2 : 1)) prog.measured.push_back(q);
    }
    return prog;
}

/// Block matrix M = F_{k-1} ... F_0 for parameters theta, and optionally its derivative with respect
/// to factor j's parameter (replace F_j by dF_j) and second derivative with respect to factors i, j.
template <typename T>
QALLEGRO_HD Mat2<T> block_matrix(const Factor* factors, int n_factors, const T* theta, int d1 = -1,
                                 int d2 = -1) {
    Mat2<T> m = mat2_identity<T>();
    for (int f = 0; f < n_factors; ++f) {
        const T t = factors[f].param >= 0 ? theta[factors[f].param] : T(0);
        Mat2<T> g;
        if (f == d1 && f == d2) {  // d^2 R / dt^2 = -R / 4
            g = mat2_axpy(mat2_zero<T>(), T(-0.25), factor_matrix<T>(factors[f].kind, t));
        } else if (f == d1 || f == d2) {
            g = factor_derivative<T>(factors[f].kind, t);
        } else {
            g = factor_matrix<T>(factors[f].kind, t);
        }
        m = mat2_mul(g, m);
    }
    return m;
}

/// Permutation tables of a program's CNOT chains (new[j] = old[source(j)]); computed on the fly above
/// 16 qubits, where a table would no longer fit in cache.
struct Chains {
    std::vector<std::vector<int32_t>> tables;
    const Program* prog;
    explicit Chains(const Program& p) : prog(&p) {
        if (p.n_qubits > 16) return;
        for (const auto& c : p.chains) {
            std::vector<int32_t> t(p.dim());
            for (int64_t j = 0; j < p.dim(); ++j)
                t[j] = int32_t(cnot_chain_source(j, c.control_bits.data(), c.target_bits.data(),
                                                 int(c.control_bits.size())));
            tables.push_back(std::move(t));
        }
    }
    /// Source index of basis state j under chain `chain`.
    int64_t source(int chain, int64_t j) const {
        if (!tables.empty()) return tables[chain][j];
        const auto& c = prog->chains[chain];
        return cnot_chain_source(j, c.control_bits.data(), c.target_bits.data(), int(c.control_bits.size()));
    }
};

/// Per-step matrices shared by every sample: a fused block is M = post * E(x) * pre, with E the
/// embedding rotation (the only per-sample factor), pre the Hadamard (or identity) and post the
/// variational factors. Blocks without an embedding have E = pre = identity, so M = post.
template <typename T>
struct StepMats {
    int32_t emb_kind = -1, emb_param = -1;  // embedding rotation and its input index, or -1
    int32_t n_w = 0;
    int32_t w_param[kMaxFactors];      // theta indices of the variational factors
    Mat2<T> pre, post;                 // see above
    Mat2<T> dpost[kMaxFactors];        // d post / d w_f
    Mat2<T> dpost_t;                   // sum_f t_f d post / d w_f (weight tangent t; second order)
    Mat2<T> ddpost_t[kMaxFactors];     // sum_g t_g d^2 post / d w_f d w_g (second order)
};

/// Builds StepMats for every block step. theta_w: [n_params] with the weights at n_inputs.. (the input
/// entries are ignored); tangent_w: same layout or null (first order only).
template <typename T>
std::vector<StepMats<T>> prepare_steps(const Program& prog, const T* theta_w, const T* tangent_w) {
    std::vector<StepMats<T>> out(prog.steps.size());
    for (size_t i = 0; i < prog.steps.size(); ++i) {
        const Step& st = prog.steps[i];
        StepMats<T>& sm = out[i];
        if (st.chain >= 0) continue;
        int emb = -1;
        for (int f = 0; f < st.n_factors; ++f)
            if (st.factors[f].param >= 0 && st.factors[f].param < prog.n_inputs) emb = f;
        const Factor* post = st.factors + emb + 1;
        const int n_post = st.n_factors - emb - 1;
        sm.pre = emb >= 0 ? block_matrix<T>(st.factors, emb, theta_w) : mat2_identity<T>();
        sm.post = block_matrix<T>(post, n_post, theta_w);
        if (emb >= 0) sm.emb_kind = st.factors[emb].kind, sm.emb_param = st.factors[emb].param;
        sm.n_w = n_post;
        sm.dpost_t = mat2_zero<T>();
        for (int f = 0; f < n_post; ++f) {
            sm.w_param[f] = post[f].param;
            sm.dpost[f] = block_matrix<T>(post, n_post, theta_w, f);
            if (tangent_w) sm.dpost_t = mat2_axpy(sm.dpost_t, tangent_w[post[f].param], sm.dpost[f]);
        }
        for (int f = 0; f < n_post && tangent_w; ++f) {
            sm.ddpost_t[f] = mat2_zero<T>();
            for (int g = 0; g < n_post; ++g)
                sm.ddpost_t[f] = mat2_axpy(sm.ddpost_t[f], tangent_w[post[g].param],
                                           block_matrix<T>(post, n_post, theta_w, f, g));
        }
    }
    return out;
}

/// Input terms of a block's derivatives for one sample, from its cross matrices C0 = sum phi_b (x)
/// conj(lam_a) and (second order) C12 = sum phi_b (x) conj(dlam_a) + dphi_b (x) conj(lam_a):
///   first order  dL/dx = 2 Re tr(post E' pre C0);
///   second order d(dL/dx)[t] = 2 Re tr(post E' pre C12 + (dpost_t E' pre - t_x/4 M) C0)  (E'' = -E/4).
/// Adds to gx and accumulates S1 (+= A C12 + t_x A' C0) and S2 (+= A C0), A = E pre, for the weights.
/// Requires sm.emb_param >= 0.
template <typename T>
QALLEGRO_HD void block_input_terms(const StepMats<T>& sm, T x, T tx, const Mat2<T>& C0, const Mat2<T>& C12,
                                   bool second, T& gx, Mat2<T>& S1, Mat2<T>& S2) {
    const Mat2<T> A = mat2_mul(factor_matrix<T>(sm.emb_kind, x), sm.pre);
    const Mat2<T> dA = mat2_mul(factor_derivative<T>(sm.emb_kind, x), sm.pre);
    const Mat2<T> AC0 = mat2_mul(A, C0), dAC0 = mat2_mul(dA, C0);
    if (!second) {
        gx += 2 * mat2_re_trace_product(sm.post, dAC0);
    } else {
        gx += 2 * (mat2_re_trace_product(sm.post, mat2_mul(dA, C12)) + mat2_re_trace_product(sm.dpost_t, dAC0) -
                   tx / 4 * mat2_re_trace_product(sm.post, AC0));
        S1 = mat2_axpy(mat2_axpy(S1, T(1), mat2_mul(A, C12)), tx, dAC0);
    }
    S2 = mat2_axpy(S2, T(1), AC0);
}

/// Weight terms of a block: dL/dw_f = 2 Re tr(dpost_f S2); second order adds the tangent derivative
/// 2 Re tr(dpost_f S1 + ddpost_t_f S2). gw is indexed by weight (theta index - n_inputs).
template <typename T>
QALLEGRO_HD void block_weight_terms(const StepMats<T>& sm, const Mat2<T>& S1, const Mat2<T>& S2, bool second,
                                    int32_t n_inputs, T* gw) {
    for (int f = 0; f < sm.n_w; ++f) {
        T& g = gw[sm.w_param[f] - n_inputs];
        if (!second)
            g += 2 * mat2_re_trace_product(sm.dpost[f], S2);
        else
            g += 2 * (mat2_re_trace_product(sm.dpost[f], S1) + mat2_re_trace_product(sm.ddpost_t[f], S2));
    }
}

/// Pointers of one kernel call (host memory, contiguous).
template <typename T>
struct Job {
    const Program* prog;
    const Chains* chains;
    const std::vector<StepMats<T>>* mats;
    int64_t batch;
    const T* x;          // [B, F] inputs
    const T* tx;         // [B, F] input tangents, or null
    const T* gy;         // [B, M] output cotangents (backward), or null
    const T* state_in;   // [B, dim] interleaved complex final states (first-order backward), or null
    T* y;                // [B, M] expectations (forward)
    T* state_out;        // [B, dim] interleaved complex (forward)
    T* gx;               // [B, F] input gradients / Hessian-vector products
    T* gw;               // [P] weight gradients (sum of gw_parts)
    T* gw_parts;         // [groups, P] weight gradients per group
    T* jvp;              // [B, M] Jacobian-vector product (second order)
};

}  // namespace qdi
}  // namespace qallegro
