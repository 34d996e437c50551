// CPU lane engine of the QDI simulator: a group of L samples whose states are stored amplitude-major,
// lane-minor (re[i * L + s]), so every gate's inner loop runs over lanes with a fixed trip count and
// vectorises, and the group's states stay in cache while all its gates are applied.
//
// NOT include-guarded on purpose: csrc/cpu/qdi.cpp includes this file once per instruction set
// (baseline x86-64 and AVX2+FMA) inside a namespace of its own, after qallegro/qdi_program.h.
// No torch headers: the drivers own threading and tensors.
using namespace ::qallegro::qdi;

// A lane vector: L samples' values of one amplitude component (GCC vector extension; a plain scalar
// for one lane). Loads and stores go through memcpy, which compiles to unaligned vector moves.
template <typename T, int L>
struct LaneVec {
    typedef T type __attribute__((vector_size(sizeof(T) * L)));
};
template <typename T>
struct LaneVec<T, 1> {
    typedef T type;
};
template <typename V, typename T>
inline __attribute__((always_inline)) V vload(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}
template <typename V, typename T>
inline __attribute__((always_inline)) void vstore(T* p, const V& v) {
    std::memcpy(p, &v, sizeof(V));
}

template <typename T, int L>
struct LaneState {
    std::vector<T> re, im;
    explicit LaneState(int64_t dim) : re(dim * L), im(dim * L) {}
    void zero() {
        std::fill(re.begin(), re.end(), T(0));
        std::fill(im.begin(), im.end(), T(0));
    }
};

// Per-lane 2x2 matrices, structure of arrays: m[e][s], e = 00r,00i,01r,01i,10r,10i,11r,11i.
template <typename T, int L>
struct LaneMat {
    T m[8][L] = {};
    void set(int s, const Mat2<T>& a) {
        m[0][s] = a.re[0][0], m[1][s] = a.im[0][0], m[2][s] = a.re[0][1], m[3][s] = a.im[0][1];
        m[4][s] = a.re[1][0], m[5][s] = a.im[1][0], m[6][s] = a.re[1][1], m[7][s] = a.im[1][1];
    }
};

#define QDI_M(M, s) M.m[0][s], M.m[1][s], M.m[2][s], M.m[3][s], M.m[4][s], M.m[5][s], M.m[6][s], M.m[7][s]
#define QDI_C(C, s) C[0][s], C[1][s], C[2][s], C[3][s], C[4][s], C[5][s], C[6][s], C[7][s]
#define QDI_V(m) m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]
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

template <typename T, int L>
struct Engine {
    const Job<T>& job;
    const Program& prog;
    int count = 0;              // valid lanes; the others repeat lane 0 with zero cotangent/tangent
    std::vector<T> x, tx;       // [L, F]
    Engine(const Job<T>& j) : job(j), prog(*j.prog), x(L * j.prog->n_inputs), tx(L * j.prog->n_inputs) {}

    void load(int64_t first) {
        const int F = prog.n_inputs;
        count = int(std::min<int64_t>(L, job.batch - first));
        for (int s = 0; s < L; ++s) {
            const int64_t b = first + (s < count ? s : 0);
            std::copy(job.x + b * F, job.x + (b + 1) * F, x.begin() + s * F);
            for (int f = 0; f < F; ++f) tx[s * F + f] = (job.tx && s < count) ? job.tx[b * F + f] : T(0);
        }
    }

    // M = post E(x) pre per lane; with dM also the tangent dM = t_x post E' pre + dpost_t E pre.
    void lane_mats(const StepMats<T>& sm, LaneMat<T, L>& M, LaneMat<T, L>* dM, bool adjoint) const {
        for (int s = 0; s < L; ++s) {
            Mat2<T> m = sm.post, d = sm.dpost_t;
            if (sm.emb_param >= 0) {
                const T xs = x[s * prog.n_inputs + sm.emb_param];
                const Mat2<T> A = mat2_mul(factor_matrix<T>(sm.emb_kind, xs), sm.pre);
                m = mat2_mul(sm.post, A);
                if (dM) {
                    const Mat2<T> dA = mat2_mul(factor_derivative<T>(sm.emb_kind, xs), sm.pre);
                    d = mat2_axpy(mat2_mul(sm.dpost_t, A), tx[s * prog.n_inputs + sm.emb_param],
                                  mat2_mul(sm.post, dA));
                }
            }
            M.set(s, adjoint ? mat2_adjoint(m) : m);
            if (dM) dM->set(s, adjoint ? mat2_adjoint(d) : d);
        }
    }

    // Forward simulation from |0>; with dpsi also the tangent state (forward mode).
    void simulate(LaneState<T, L>& psi, LaneState<T, L>& tmp, LaneState<T, L>* dpsi) const {
        const int64_t dim = prog.dim();
        psi.zero();
        for (int s = 0; s < L; ++s) psi.re[s] = T(1);
        if (dpsi) dpsi->zero();
        for (size_t i = 0; i < prog.steps.size(); ++i) {
            const Step& st = prog.steps[i];
            if (st.chain >= 0) {
                permute(*job.chains, st.chain, dim, false, psi, tmp);
                if (dpsi) permute(*job.chains, st.chain, dim, false, *dpsi, tmp);
                continue;
            }
            LaneMat<T, L> M, dM;
            lane_mats((*job.mats)[i], M, dpsi ? &dM : nullptr, false);
            const int k = prog.bit(st.qubit);
            if (dpsi)
                forward_pass<true>(dim, k, M, dM, psi, dpsi);
            else
                forward_pass<false>(dim, k, M, dM, psi, dpsi);
        }
    }

    // out[s][m] = <a|P_m|a>, or with b: 2 Re <a|P_m|b> (the derivative of <psi|P|psi> along b = dpsi).
    void expectations(const LaneState<T, L>& a, const LaneState<T, L>* b, T* out) const {
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
                        acc[s] += tangent_expectation_pair(prog.pauli, QDI_A(a, i0, i1, s), QDI_A((*b), i0, i1, s));
                    }
                }
            }
            for (int s = 0; s < L; ++s) out[s * nm + m] = acc[s];
        }
    }

    // lam = sum_m g[s][m] P_m psi
    void observable(const LaneState<T, L>& psi, const T* g, LaneState<T, L>& lam) const {
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

    // One block of the adjoint sweep: phi <- M^+ phi, lam <- M^+ lam, c0 += phi_b (x) conj(lam_a); with
    // tangents also dphi <- M^+ dphi + dM^+ phi_a, dlam likewise, c12 += phi_b (x) dlam_a* + dphi_b (x) lam_a*.
    // Written on explicit lane vectors (GCC vector extension): the auto-vectoriser gives up on this body.
    template <bool Second>
    static void adjoint_pass(int64_t dim, int k, const LaneMat<T, L>& Md, const LaneMat<T, L>& dMd,
                             LaneState<T, L>& phi, LaneState<T, L>& lam, LaneState<T, L>* dphi,
                             LaneState<T, L>* dlam, T* c0_out, T* c12_out) {
        using V = typename LaneVec<T, L>::type;
        T *pr = phi.re.data(), *pi = phi.im.data(), *lr = lam.re.data(), *li = lam.im.data();
        T *dpr = Second ? dphi->re.data() : nullptr, *dpi = Second ? dphi->im.data() : nullptr;
        T *dlr = Second ? dlam->re.data() : nullptr, *dli = Second ? dlam->im.data() : nullptr;
        V m[8], dm[8], c0[8], c12[8];
        for (int e = 0; e < 8; ++e) {
            m[e] = vload<V>(Md.m[e]);
            dm[e] = vload<V>(dMd.m[e]);
            c0[e] = c12[e] = V{};
        }
        for (int64_t p = 0; p < dim / 2; ++p) {
            const int64_t i0 = pair_index(p, k) * L, i1 = i0 + (int64_t(L) << k);
            const V l0r = vload<V>(lr + i0), l0i = vload<V>(li + i0), l1r = vload<V>(lr + i1), l1i = vload<V>(li + i1);
            V p0r = vload<V>(pr + i0), p0i = vload<V>(pi + i0), p1r = vload<V>(pr + i1), p1i = vload<V>(pi + i1);
            if (Second) {
                const V d0r = vload<V>(dlr + i0), d0i = vload<V>(dli + i0), d1r = vload<V>(dlr + i1),
                        d1i = vload<V>(dli + i1);
                V q0r = vload<V>(dpr + i0), q0i = vload<V>(dpi + i0), q1r = vload<V>(dpr + i1), q1i = vload<V>(dpi + i1);
                apply_pair(QDI_V(m), q0r, q0i, q1r, q1i);
                add_apply_pair(QDI_V(dm), p0r, p0i, p1r, p1i, q0r, q0i, q1r, q1i);
                V e0r = d0r, e0i = d0i, e1r = d1r, e1i = d1i;
                apply_pair(QDI_V(m), e0r, e0i, e1r, e1i);
                add_apply_pair(QDI_V(dm), l0r, l0i, l1r, l1i, e0r, e0i, e1r, e1i);
                apply_pair(QDI_V(m), p0r, p0i, p1r, p1i);
                accumulate_cross(p0r, p0i, p1r, p1i, d0r, d0i, d1r, d1i, QDI_V(c12));
                accumulate_cross(q0r, q0i, q1r, q1i, l0r, l0i, l1r, l1i, QDI_V(c12));
                vstore(dpr + i0, q0r), vstore(dpi + i0, q0i), vstore(dpr + i1, q1r), vstore(dpi + i1, q1i);
                vstore(dlr + i0, e0r), vstore(dli + i0, e0i), vstore(dlr + i1, e1r), vstore(dli + i1, e1i);
            } else {
                apply_pair(QDI_V(m), p0r, p0i, p1r, p1i);
            }
            accumulate_cross(p0r, p0i, p1r, p1i, l0r, l0i, l1r, l1i, QDI_V(c0));
            V m0r = l0r, m0i = l0i, m1r = l1r, m1i = l1i;
            apply_pair(QDI_V(m), m0r, m0i, m1r, m1i);
            vstore(pr + i0, p0r), vstore(pi + i0, p0i), vstore(pr + i1, p1r), vstore(pi + i1, p1i);
            vstore(lr + i0, m0r), vstore(li + i0, m0i), vstore(lr + i1, m1r), vstore(li + i1, m1i);
        }
        for (int e = 0; e < 8; ++e) vstore(c0_out + e * L, c0[e]), vstore(c12_out + e * L, c12[e]);
    }

    // Forward pass of one block: psi <- M psi; with tangents dpsi <- M dpsi + dM psi (old psi).
    template <bool Tangent>
    static void forward_pass(int64_t dim, int k, const LaneMat<T, L>& M, const LaneMat<T, L>& dM,
                             LaneState<T, L>& psi, LaneState<T, L>* dpsi) {
        using V = typename LaneVec<T, L>::type;
        T *pr = psi.re.data(), *pi = psi.im.data();
        T *dpr = Tangent ? dpsi->re.data() : nullptr, *dpi = Tangent ? dpsi->im.data() : nullptr;
        V m[8], dm[8];
        for (int e = 0; e < 8; ++e) m[e] = vload<V>(M.m[e]), dm[e] = vload<V>(dM.m[e]);
        for (int64_t p = 0; p < dim / 2; ++p) {
            const int64_t i0 = pair_index(p, k) * L, i1 = i0 + (int64_t(L) << k);
            V a0r = vload<V>(pr + i0), a0i = vload<V>(pi + i0), a1r = vload<V>(pr + i1), a1i = vload<V>(pi + i1);
            if (Tangent) {
                V q0r = vload<V>(dpr + i0), q0i = vload<V>(dpi + i0), q1r = vload<V>(dpr + i1), q1i = vload<V>(dpi + i1);
                apply_pair(QDI_V(m), q0r, q0i, q1r, q1i);
                add_apply_pair(QDI_V(dm), a0r, a0i, a1r, a1i, q0r, q0i, q1r, q1i);
                vstore(dpr + i0, q0r), vstore(dpi + i0, q0i), vstore(dpr + i1, q1r), vstore(dpi + i1, q1i);
            }
            apply_pair(QDI_V(m), a0r, a0i, a1r, a1i);
            vstore(pr + i0, a0r), vstore(pi + i0, a0i), vstore(pr + i1, a1r), vstore(pi + i1, a1i);
        }
    }

    // Adjoint sweep from phi (final state) and lam = H phi. First order: gx [L, F] += dL/dx and
    // gw [P] += dL/dw (summed over lanes). With the tangent states dphi, dlam: Hessian-vector products.
    void adjoint(LaneState<T, L>& phi, LaneState<T, L>& lam, LaneState<T, L>* dphi, LaneState<T, L>* dlam,
                 LaneState<T, L>& tmp, T* gx, T* gw) const {
        const int64_t dim = prog.dim();
        const int F = prog.n_inputs;
        const bool second = dphi != nullptr;
        for (size_t i = prog.steps.size(); i-- > 0;) {
            const Step& st = prog.steps[i];
            if (st.chain >= 0) {
                permute(*job.chains, st.chain, dim, true, phi, tmp);
                permute(*job.chains, st.chain, dim, true, lam, tmp);
                if (second) {
                    permute(*job.chains, st.chain, dim, true, *dphi, tmp);
                    permute(*job.chains, st.chain, dim, true, *dlam, tmp);
                }
                continue;
            }
            const StepMats<T>& sm = (*job.mats)[i];
            LaneMat<T, L> Md, dMd;  // M^dagger and (dM)^dagger
            lane_mats(sm, Md, second ? &dMd : nullptr, true);
            T c0[8][L] = {}, c12[8][L] = {};  // cross matrices phi_before (x) conj(lam_after), see below
            const int k = prog.bit(st.qubit);
            if (second)
                adjoint_pass<true>(dim, k, Md, dMd, phi, lam, dphi, dlam, &c0[0][0], &c12[0][0]);
            else
                adjoint_pass<false>(dim, k, Md, dMd, phi, lam, dphi, dlam, &c0[0][0], &c12[0][0]);
            // derivative terms (qdi_program.h: block_input_terms, block_weight_terms); the weight terms
            // are summed over lanes before the traces
            Mat2<T> S1 = mat2_zero<T>(), S2 = mat2_zero<T>();
            if (sm.emb_param < 0) {  // M = post for every lane: sum the cross matrices over lanes
                T a0[8] = {}, a12[8] = {};
                for (int e = 0; e < 8; ++e)
                    for (int s = 0; s < count; ++s) a0[e] += c0[e][s], a12[e] += c12[e][s];
                S1 = cross_to_mat2(a12);
                S2 = cross_to_mat2(a0);
            }
            for (int s = 0; s < count && sm.emb_param >= 0; ++s) {
                T a0[8], a12[8];
                for (int e = 0; e < 8; ++e) a0[e] = c0[e][s], a12[e] = c12[e][s];
                block_input_terms(sm, x[s * F + sm.emb_param], tx[s * F + sm.emb_param], cross_to_mat2(a0),
                                  cross_to_mat2(a12), second, gx[s * F + sm.emb_param], S1, S2);
            }
            block_weight_terms(sm, S1, S2, second, F, gw);
        }
    }
};

/// Forward: expectations and final states of groups [g0, g1).
template <typename T, int L>
void run_forward(const Job<T>& job, int64_t g0, int64_t g1) {
    const Program& prog = *job.prog;
    const int64_t dim = prog.dim();
    const int nm = int(prog.measured.size());
    Engine<T, L> e(job);
    LaneState<T, L> psi(dim), tmp(dim);
    std::vector<T> yv(L * nm);
    for (int64_t gi = g0; gi < g1; ++gi) {
        const int64_t first = gi * L;
        e.load(first);
        e.simulate(psi, tmp, nullptr);
        e.expectations(psi, nullptr, yv.data());
        for (int s = 0; s < e.count; ++s) {
            std::copy(yv.begin() + s * nm, yv.begin() + (s + 1) * nm, job.y + (first + s) * nm);
            T* out = job.state_out + 2 * (first + s) * dim;
            for (int64_t i = 0; i < dim; ++i) out[2 * i] = psi.re[i * L + s], out[2 * i + 1] = psi.im[i * L + s];
        }
    }
}

/// Backward of groups [g0, g1): first order from the cached states, or (job.tx / tangent weights in
/// the StepMats) second order by recomputing the forward with tangents.
template <typename T, int L>
void run_backward(const Job<T>& job, int64_t g0, int64_t g1, bool second) {
    const Program& prog = *job.prog;
    const int64_t dim = prog.dim();
    const int nm = int(prog.measured.size()), F = prog.n_inputs, P = prog.n_weights;
    Engine<T, L> e(job);
    LaneState<T, L> phi(dim), lam(dim), tmp(dim);
    std::unique_ptr<LaneState<T, L>> dphi, dlam;
    if (second) dphi.reset(new LaneState<T, L>(dim)), dlam.reset(new LaneState<T, L>(dim));
    std::vector<T> gl(L * nm), gx(L * F), dy(L * nm);
    for (int64_t gi = g0; gi < g1; ++gi) {
        const int64_t first = gi * L;
        e.load(first);
        std::fill(gl.begin(), gl.end(), T(0));
        std::fill(gx.begin(), gx.end(), T(0));
        for (int s = 0; s < e.count; ++s)
            std::copy(job.gy + (first + s) * nm, job.gy + (first + s + 1) * nm, gl.begin() + s * nm);
        if (second) {
            e.simulate(phi, tmp, dphi.get());
            e.expectations(phi, dphi.get(), dy.data());
            for (int s = 0; s < e.count; ++s)
                std::copy(dy.begin() + s * nm, dy.begin() + (s + 1) * nm, job.jvp + (first + s) * nm);
            e.observable(*dphi, gl.data(), *dlam);
        } else {
            for (int s = 0; s < L; ++s) {
                const T* in = job.state_in + 2 * (first + (s < e.count ? s : 0)) * dim;
                for (int64_t i = 0; i < dim; ++i) phi.re[i * L + s] = in[2 * i], phi.im[i * L + s] = in[2 * i + 1];
            }
        }
        e.observable(phi, gl.data(), lam);
        e.adjoint(phi, lam, dphi.get(), dlam.get(), tmp, gx.data(), job.gw_parts + gi * P);
        for (int s = 0; s < e.count; ++s) std::copy(gx.begin() + s * F, gx.begin() + (s + 1) * F, job.gx + (first + s) * F);
    }
}

#undef QDI_M
#undef QDI_A
#undef QDI_C
#undef QDI_V
