// CPU kernels of the QDI layer: batched state-vector simulation with exact first (adjoint method) and
// second (tangent-propagated adjoint) derivatives. Gate arithmetic lives in qallegro/qdi_gates.h.
//
// Layout: samples are processed in groups of L "lanes"; a group's states are stored amplitude-major,
// lane-minor (re[i * L + s], im[i * L + s]) so every gate's inner loop runs over lanes with a fixed trip
// count and vectorises, while the whole group's states stay in cache for all gates. Groups are spread
// over threads with at::parallel_for; weight gradients are summed per group and reduced in group
// order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "qallegro/qdi_check.h"
#include "qallegro/qdi_program.h"

namespace {
using namespace qallegro::qdi;

// Permutation tables of the CNOT chains (new[j] = old[src[j]]); computed on the fly above 16 qubits.
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
    int64_t source(int chain, int64_t j) const {
        if (!tables.empty()) return tables[chain][j];
        const auto& c = prog->chains[chain];
        return cnot_chain_source(j, c.control_bits.data(), c.target_bits.data(), int(c.control_bits.size()));
    }
};

// A state of L lanes (re, im) plus scratch for permutations.
template <typename T, int L>
struct LaneState {
    std::vector<T> re, im;
    explicit LaneState(int64_t dim) : re(dim * L), im(dim * L) {}
    void zero() {
        std::fill(re.begin(), re.end(), T(0));
        std::fill(im.begin(), im.end(), T(0));
    }
};

// Per-lane 2x2 matrices in structure-of-arrays form: m[e][s], e = 00r,00i,01r,01i,10r,10i,11r,11i.
template <typename T, int L>
struct LaneMat {
    T m[8][L] = {};
    void set(int s, const Mat2<T>& a) {
        m[0][s] = a.re[0][0], m[1][s] = a.im[0][0], m[2][s] = a.re[0][1], m[3][s] = a.im[0][1];
        m[4][s] = a.re[1][0], m[5][s] = a.im[1][0], m[6][s] = a.re[1][1], m[7][s] = a.im[1][1];
    }
};

#define QDI_M(M, s) M.m[0][s], M.m[1][s], M.m[2][s], M.m[3][s], M.m[4][s], M.m[5][s], M.m[6][s], M.m[7][s]
#define QDI_A(S, i0, i1, s) S.re[i0 * L + s], S.im[i0 * L + s], S.re[i1 * L + s], S.im[i1 * L + s]

template <typename T, int L>
void permute(const Chains& chains, int chain, int64_t dim, bool inverse, LaneState<T, L>& st, LaneState<T, L>& tmp) {
    for (int64_t j = 0; j < dim; ++j) {
        const int64_t src = chains.source(chain, j);
        const int64_t to = inverse ? src : j, from = inverse ? j : src;
        for (int s = 0; s < L; ++s) {
            tmp.re[to * L + s] = st.re[from * L + s];
            tmp.im[to * L + s] = st.im[from * L + s];
        }
    }
    std::swap(st.re, tmp.re);
    std::swap(st.im, tmp.im);
}

// Everything one group of L samples needs: the circuit, per-lane parameters and tangents.
template <typename T, int L>
struct Group {
    const Program& prog;
    const Chains& chains;
    int count;                      // valid lanes (the rest repeat lane 0 with zero cotangents)
    std::vector<T> theta, tangent;  // [L, n_params]
    Group(const Program& p, const Chains& c) : prog(p), chains(c), count(0), theta(L * p.n_params()), tangent(L * p.n_params()) {}

    // theta_s = (x[b], w) for b = first + s
    void load(const T* x, const T* w, int64_t first, int64_t batch) {
        const int F = prog.n_inputs, P = prog.n_weights, NP = prog.n_params();
        count = int(std::min<int64_t>(L, batch - first));
        for (int s = 0; s < L; ++s) {
            const int64_t b = first + (s < count ? s : 0);
            std::copy(x + b * F, x + (b + 1) * F, theta.begin() + s * NP);
            std::copy(w, w + P, theta.begin() + s * NP + F);
        }
    }
    const T* th(int s) const { return theta.data() + s * prog.n_params(); }
    const T* tg(int s) const { return tangent.data() + s * prog.n_params(); }

    Mat2<T> matrix(const Step& st, int s, int d1 = -1, int d2 = -1) const {
        return block_matrix<T>(st.factors, st.n_factors, th(s), d1, d2);
    }
    // dM = sum_j t_j dM/dtheta_j along the lane's tangent
    Mat2<T> tangent_matrix(const Step& st, int s) const {
        Mat2<T> d = mat2_zero<T>();
        for (int f = 0; f < st.n_factors; ++f)
            if (st.factors[f].param >= 0 && tg(s)[st.factors[f].param] != T(0))
                d = mat2_axpy(d, tg(s)[st.factors[f].param], matrix(st, s, f));
        return d;
    }

    // Forward simulation from |0>; with `dpsi` also the tangent state d psi (forward mode).
    void simulate(LaneState<T, L>& psi, LaneState<T, L>& tmp, LaneState<T, L>* dpsi) const {
        const int64_t dim = prog.dim();
        psi.zero();
        for (int s = 0; s < L; ++s) psi.re[s] = T(1);
        if (dpsi) dpsi->zero();
        for (const Step& st : prog.steps) {
            if (st.chain >= 0) {
                permute(chains, st.chain, dim, false, psi, tmp);
                if (dpsi) permute(chains, st.chain, dim, false, *dpsi, tmp);
                continue;
            }
            LaneMat<T, L> M, dM;
            for (int s = 0; s < L; ++s) {
                M.set(s, matrix(st, s));
                if (dpsi) dM.set(s, tangent_matrix(st, s));
            }
            const int k = prog.bit(st.qubit);
            for (int64_t p = 0; p < dim / 2; ++p) {
                const int64_t i0 = pair_index(p, k), i1 = i0 | (int64_t(1) << k);
                if (dpsi) {
                    for (int s = 0; s < L; ++s) {  // d(M psi) = M dpsi + dM psi
                        apply_pair(QDI_M(M, s), QDI_A((*dpsi), i0, i1, s));
                        add_apply_pair(QDI_M(dM, s), QDI_A(psi, i0, i1, s), QDI_A((*dpsi), i0, i1, s));
                    }
                }
                for (int s = 0; s < L; ++s) apply_pair(QDI_M(M, s), QDI_A(psi, i0, i1, s));
            }
        }
    }

    // y[s][m] = <a| P_m |b>, real part times 2 if `cross` (for d<psi|P|psi> = 2 Re <psi|P|dpsi>).
    void expectations(const LaneState<T, L>& a, const LaneState<T, L>* b, T* y /*[L, M]*/) const {
        const int64_t dim = prog.dim();
        const int nm = int(prog.measured.size());
        for (int m = 0; m < nm; ++m) {
            const int k = prog.bit(prog.measured[m]);
            T acc[L] = {};
            for (int64_t p = 0; p < dim / 2; ++p) {
                const int64_t i0 = pair_index(p, k), i1 = i0 | (int64_t(1) << k);
                for (int s = 0; s < L; ++s) {
                    if (!b) {
                        acc[s] += pauli_expectation_pair(prog.pauli, QDI_A(a, i0, i1, s));
                    } else {
                        T l0r = 0, l0i = 0, l1r = 0, l1i = 0;  // P b, then 2 Re <a|P b>
                        add_pauli_pair(prog.pauli, T(1), QDI_A((*b), i0, i1, s), l0r, l0i, l1r, l1i);
                        acc[s] += 2 * (a.re[i0 * L + s] * l0r + a.im[i0 * L + s] * l0i + a.re[i1 * L + s] * l1r +
                                       a.im[i1 * L + s] * l1i);
                    }
                }
            }
            for (int s = 0; s < L; ++s) y[s * nm + m] = acc[s];
        }
    }

    // lam = sum_m g[s][m] P_m psi
    void observable(const LaneState<T, L>& psi, const T* g /*[L, M]*/, LaneState<T, L>& lam) const {
        const int64_t dim = prog.dim();
        const int nm = int(prog.measured.size());
        lam.zero();
        for (int m = 0; m < nm; ++m) {
            const int k = prog.bit(prog.measured[m]);
            for (int64_t p = 0; p < dim / 2; ++p) {
                const int64_t i0 = pair_index(p, k), i1 = i0 | (int64_t(1) << k);
                for (int s = 0; s < L; ++s)
                    add_pauli_pair(prog.pauli, g[s * nm + m], QDI_A(psi, i0, i1, s), QDI_A(lam, i0, i1, s));
            }
        }
    }

    // Adjoint sweep from the final state phi and lam = H phi. Adds dL/dtheta to grad [L, NP].
    // With tangents (dphi, dlam != null) adds instead the Hessian-vector product d(dL/dtheta)[t].
    void adjoint(LaneState<T, L>& phi, LaneState<T, L>& lam, LaneState<T, L>* dphi, LaneState<T, L>* dlam,
                 LaneState<T, L>& tmp, T* grad) const {
        const int64_t dim = prog.dim();
        const int NP = prog.n_params();
        const bool second = dphi != nullptr;
        for (auto it = prog.steps.rbegin(); it != prog.steps.rend(); ++it) {
            const Step& st = *it;
            if (st.chain >= 0) {
                permute(chains, st.chain, dim, true, phi, tmp);
                permute(chains, st.chain, dim, true, lam, tmp);
                if (second) {
                    permute(chains, st.chain, dim, true, *dphi, tmp);
                    permute(chains, st.chain, dim, true, *dlam, tmp);
                }
                continue;
            }
            LaneMat<T, L> Md, dMd;  // M^dagger and (dM)^dagger
            for (int s = 0; s < L; ++s) {
                Md.set(s, mat2_adjoint(matrix(st, s)));
                if (second) dMd.set(s, mat2_adjoint(tangent_matrix(st, s)));
            }
            T c0[8][L] = {}, c1[8][L] = {}, c2[8][L] = {};
            const int k = prog.bit(st.qubit);
            for (int64_t p = 0; p < dim / 2; ++p) {
                const int64_t i0 = pair_index(p, k), i1 = i0 | (int64_t(1) << k);
                for (int s = 0; s < L; ++s) {
                    T l0r = lam.re[i0 * L + s], l0i = lam.im[i0 * L + s], l1r = lam.re[i1 * L + s],
                      l1i = lam.im[i1 * L + s];
                    if (second) {  // uses phi and lam *after* the block, so before they are updated
                        T d0r = dlam->re[i0 * L + s], d0i = dlam->im[i0 * L + s], d1r = dlam->re[i1 * L + s],
                          d1i = dlam->im[i1 * L + s];
                        apply_pair(QDI_M(Md, s), QDI_A((*dphi), i0, i1, s));
                        add_apply_pair(QDI_M(dMd, s), QDI_A(phi, i0, i1, s), QDI_A((*dphi), i0, i1, s));
                        apply_pair(QDI_M(Md, s), QDI_A((*dlam), i0, i1, s));
                        add_apply_pair(QDI_M(dMd, s), l0r, l0i, l1r, l1i, QDI_A((*dlam), i0, i1, s));
                        T tc1[8], tc2[8];
                        for (int e = 0; e < 8; ++e) tc1[e] = tc2[e] = 0;
                        apply_pair(QDI_M(Md, s), QDI_A(phi, i0, i1, s));
                        accumulate_cross(QDI_A(phi, i0, i1, s), d0r, d0i, d1r, d1i, tc1);
                        accumulate_cross(QDI_A((*dphi), i0, i1, s), l0r, l0i, l1r, l1i, tc2);
                        for (int e = 0; e < 8; ++e) c1[e][s] += tc1[e], c2[e][s] += tc2[e];
                    } else {
                        apply_pair(QDI_M(Md, s), QDI_A(phi, i0, i1, s));
                    }
                    T tc0[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    accumulate_cross(QDI_A(phi, i0, i1, s), l0r, l0i, l1r, l1i, tc0);
                    for (int e = 0; e < 8; ++e) c0[e][s] += tc0[e];
                    apply_pair(QDI_M(Md, s), QDI_A(lam, i0, i1, s));
                }
            }
            for (int s = 0; s < L; ++s) {
                T a0[8], a1[8];
                for (int e = 0; e < 8; ++e) a0[e] = c0[e][s], a1[e] = c1[e][s] + c2[e][s];
                const Mat2<T> C0 = cross_to_mat2(a0), C12 = cross_to_mat2(a1);
                for (int f = 0; f < st.n_factors; ++f) {
                    const int param = st.factors[f].param;
                    if (param < 0) continue;
                    const Mat2<T> dM = matrix(st, s, f);
                    if (!second) {
                        grad[s * NP + param] += 2 * mat2_re_trace_product(dM, C0);
                        continue;
                    }
                    Mat2<T> ddM = mat2_zero<T>();  // sum_i t_i d^2 M / dtheta_i dtheta_f
                    for (int i = 0; i < st.n_factors; ++i)
                        if (st.factors[i].param >= 0 && tg(s)[st.factors[i].param] != T(0))
                            ddM = mat2_axpy(ddM, tg(s)[st.factors[i].param], matrix(st, s, f, i));
                    grad[s * NP + param] +=
                        2 * (mat2_re_trace_product(dM, C12) + mat2_re_trace_product(ddM, C0));
                }
            }
        }
    }
};

#undef QDI_M
#undef QDI_A

// Runs `body(group, first_sample, group_index)` over groups of L samples on all threads.
template <typename T, int L, typename Body>
void for_groups(const Program& prog, const Chains& chains, int64_t batch, Body body) {
    const int64_t groups = (batch + L - 1) / L;
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        Group<T, L> g(prog, chains);
        for (int64_t gi = begin; gi < end; ++gi) body(g, gi * L, gi);
    });
}

template <typename T, int L>
void forward_impl(const Program& prog, const at::Tensor& x, const at::Tensor& w, at::Tensor& y, at::Tensor& state) {
    const Chains chains(prog);
    const int64_t B = x.size(0), dim = prog.dim();
    const int nm = int(prog.measured.size());
    const T *xp = x.data_ptr<T>(), *wp = w.data_ptr<T>();
    T *yp = y.data_ptr<T>(), *sp = reinterpret_cast<T*>(state.data_ptr());
    for_groups<T, L>(prog, chains, B, [&](Group<T, L>& g, int64_t first, int64_t) {
        LaneState<T, L> psi(dim), tmp(dim);
        g.load(xp, wp, first, B);
        g.simulate(psi, tmp, nullptr);
        std::vector<T> yv(L * nm);
        g.expectations(psi, nullptr, yv.data());
        for (int s = 0; s < g.count; ++s) {
            std::copy(yv.begin() + s * nm, yv.begin() + (s + 1) * nm, yp + (first + s) * nm);
            for (int64_t i = 0; i < dim; ++i) {
                sp[2 * ((first + s) * dim + i)] = psi.re[i * L + s];
                sp[2 * ((first + s) * dim + i) + 1] = psi.im[i * L + s];
            }
        }
    });
}

// First derivatives (state given) or, with tangents, the double-backward products.
template <typename T, int L>
void backward_impl(const Program& prog, const at::Tensor& gy, const at::Tensor* state, const at::Tensor& x,
                   const at::Tensor& w, const T* tx, const T* tw, at::Tensor& out_gx, at::Tensor& out_gw,
                   T* out_ggy) {
    const Chains chains(prog);
    const int64_t B = x.size(0), dim = prog.dim();
    const int nm = int(prog.measured.size()), F = prog.n_inputs, P = prog.n_weights, NP = prog.n_params();
    const int64_t groups = (B + L - 1) / L;
    std::vector<T> gw_parts(groups * P, T(0));
    const T *xp = x.data_ptr<T>(), *wp = w.data_ptr<T>(), *gyp = gy.data_ptr<T>();
    const T* sp = state ? reinterpret_cast<const T*>(state->data_ptr()) : nullptr;
    T* gxp = out_gx.data_ptr<T>();
    const bool second = tx || tw;
    for_groups<T, L>(prog, chains, B, [&](Group<T, L>& g, int64_t first, int64_t gi) {
        LaneState<T, L> phi(dim), lam(dim), tmp(dim);
        std::unique_ptr<LaneState<T, L>> dphi, dlam;
        g.load(xp, wp, first, B);
        std::vector<T> gl(L * nm, T(0)), grad(L * NP, T(0));
        for (int s = 0; s < g.count; ++s) std::copy(gyp + (first + s) * nm, gyp + (first + s + 1) * nm, gl.begin() + s * nm);
        if (second) {
            dphi.reset(new LaneState<T, L>(dim));
            dlam.reset(new LaneState<T, L>(dim));
            std::fill(g.tangent.begin(), g.tangent.end(), T(0));
            for (int s = 0; s < g.count; ++s) {
                if (tx) std::copy(tx + (first + s) * F, tx + (first + s + 1) * F, g.tangent.begin() + s * NP);
                if (tw) std::copy(tw, tw + P, g.tangent.begin() + s * NP + F);
            }
            g.simulate(phi, tmp, dphi.get());
            std::vector<T> dy(L * nm);
            g.expectations(phi, dphi.get(), dy.data());  // JVP: d y along (tx, tw)
            for (int s = 0; s < g.count; ++s)
                std::copy(dy.begin() + s * nm, dy.begin() + (s + 1) * nm, out_ggy + (first + s) * nm);
            g.observable(*dphi, gl.data(), *dlam);
        } else {
            for (int s = 0; s < L; ++s) {
                const int64_t b = first + (s < g.count ? s : 0);
                for (int64_t i = 0; i < dim; ++i) {
                    phi.re[i * L + s] = sp[2 * (b * dim + i)];
                    phi.im[i * L + s] = sp[2 * (b * dim + i) + 1];
                }
            }
        }
        g.observable(phi, gl.data(), lam);
        g.adjoint(phi, lam, dphi.get(), dlam.get(), tmp, grad.data());
        for (int s = 0; s < g.count; ++s) {
            std::copy(grad.begin() + s * NP, grad.begin() + s * NP + F, gxp + (first + s) * F);
            for (int p = 0; p < P; ++p) gw_parts[gi * P + p] += grad[s * NP + F + p];
        }
    });
    T* gwp = out_gw.data_ptr<T>();
    for (int p = 0; p < P; ++p) gwp[p] = T(0);
    for (int64_t gi = 0; gi < groups; ++gi)
        for (int p = 0; p < P; ++p) gwp[p] += gw_parts[gi * P + p];
}

// Lanes per group: a SIMD register's worth of samples (32 bytes) while the group's states fit in L2.
constexpr int kLaneQubitLimit = 14;

std::tuple<at::Tensor, at::Tensor> qdi_cpu(const at::Tensor& inputs, const at::Tensor& weights,
                                           c10::string_view rotation, c10::string_view entangling,
                                           c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    const at::Tensor x = inputs.contiguous(), w = weights.contiguous();
    at::Tensor y = at::empty({x.size(0), int64_t(prog.measured.size())}, x.options());
    const auto ctype = x.scalar_type() == at::kFloat ? at::kComplexFloat : at::kComplexDouble;
    at::Tensor state = at::empty({x.size(0), prog.dim()}, x.options().dtype(ctype));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_cpu", [&] {
        if (prog.n_qubits <= kLaneQubitLimit)
            forward_impl<scalar_t, 32 / sizeof(scalar_t)>(prog, x, w, y, state);
        else
            forward_impl<scalar_t, 1>(prog, x, w, y, state);
    });
    return {y, state};
}

std::tuple<at::Tensor, at::Tensor> qdi_backward_cpu(const at::Tensor& grad_output, const at::Tensor& state,
                                                    const at::Tensor& inputs, const at::Tensor& weights,
                                                    c10::string_view rotation, c10::string_view entangling,
                                                    c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    check_like(grad_output, "grad_output", {inputs.size(0), int64_t(prog.measured.size())}, inputs);
    check_state(state, inputs, prog);
    const at::Tensor x = inputs.contiguous(), w = weights.contiguous(), gy = grad_output.contiguous();
    const at::Tensor st = state.contiguous();
    at::Tensor gx = at::empty_like(x), gw = at::empty_like(w);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_backward_cpu", [&] {
        if (prog.n_qubits <= kLaneQubitLimit)
            backward_impl<scalar_t, 32 / sizeof(scalar_t)>(prog, gy, &st, x, w, nullptr, nullptr, gx, gw, nullptr);
        else
            backward_impl<scalar_t, 1>(prog, gy, &st, x, w, nullptr, nullptr, gx, gw, nullptr);
    });
    return {gx, gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qdi_double_backward_cpu(
    const c10::optional<at::Tensor>& grad_grad_inputs, const c10::optional<at::Tensor>& grad_grad_weights,
    const at::Tensor& grad_output, const at::Tensor& inputs, const at::Tensor& weights, c10::string_view rotation,
    c10::string_view entangling, c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    check_like(grad_output, "grad_output", {inputs.size(0), int64_t(prog.measured.size())}, inputs);
    const at::Tensor x = inputs.contiguous(), w = weights.contiguous(), gy = grad_output.contiguous();
    at::Tensor tx, tw;
    if (grad_grad_inputs.has_value() && grad_grad_inputs->defined()) {
        check_like(*grad_grad_inputs, "grad_grad_inputs", x.sizes(), x);
        tx = grad_grad_inputs->contiguous();
    }
    if (grad_grad_weights.has_value() && grad_grad_weights->defined()) {
        check_like(*grad_grad_weights, "grad_grad_weights", w.sizes(), x);
        tw = grad_grad_weights->contiguous();
    }
    at::Tensor ggy = at::zeros_like(gy), gx = at::zeros_like(x), gw = at::zeros_like(w);
    if (!tx.defined() && !tw.defined()) return {ggy, gx, gw};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_double_backward_cpu", [&] {
        const scalar_t* txp = tx.defined() ? tx.data_ptr<scalar_t>() : nullptr;
        const scalar_t* twp = tw.defined() ? tw.data_ptr<scalar_t>() : nullptr;
        if (prog.n_qubits <= kLaneQubitLimit)
            backward_impl<scalar_t, 32 / sizeof(scalar_t)>(prog, gy, nullptr, x, w, txp, twp, gx, gw,
                                                           ggy.data_ptr<scalar_t>());
        else
            backward_impl<scalar_t, 1>(prog, gy, nullptr, x, w, txp, twp, gx, gw, ggy.data_ptr<scalar_t>());
    });
    return {ggy, gx, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CPU, m) {
    m.impl("qdi", &qdi_cpu);
    m.impl("qdi_backward", &qdi_backward_cpu);
    m.impl("qdi_double_backward", &qdi_double_backward_cpu);
}
