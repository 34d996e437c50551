#pragma once
/// Gate arithmetic of the QDI (quantum depth-infused) layer, shared by the CPU and CUDA kernels.
///
/// Following pennylane-lightning, a gate is a small function of one amplitude pair (a0, a1) - the two
/// amplitudes whose indices differ only in the target qubit's bit - and its 2x2 matrix; the drivers
/// (csrc/cpu/qdi.cpp, csrc/cuda/qdi.cu) own the index arithmetic. Real and imaginary parts are passed
/// separately so the CPU driver can keep several samples' states side by side (SIMD lanes) and the
/// CUDA driver can map threads onto pairs.
///
/// Conventions (PennyLane's): RX(t) = exp(-i t X / 2), RY(t) = exp(-i t Y / 2), RZ(t) = exp(-i t Z / 2),
/// Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi); qubit q is bit (n - 1 - q) of a basis index.
#include "qallegro/common.h"

#include <cmath>
#include <cstdint>

/// Pair-level functions sit in the innermost (SIMD) loops and the 2x2 algebra runs per lane per gate:
/// force inlining on the host too, or GCC's heuristics leave 16-argument calls in place (the lane loops
/// then do not vectorise) and call baseline-ISA copies from the AVX2 engine.
#if defined(__CUDACC__)
#define QALLEGRO_QDI_PAIR QALLEGRO_HD
#elif defined(__GNUC__)
#define QALLEGRO_QDI_PAIR inline __attribute__((always_inline))
#else
#define QALLEGRO_QDI_PAIR inline
#endif

namespace qallegro {
namespace qdi {

/// Kinds of single-qubit factor: the three Pauli rotations and the (parameter-free) Hadamard.
enum FactorKind : int32_t { kRX = 0, kRY = 1, kRZ = 2, kH = 3 };
/// Pauli observables, same codes as the rotation axes.
enum Pauli : int32_t { kPauliX = 0, kPauliY = 1, kPauliZ = 2 };

/// A 2x2 complex matrix m[row][col] stored as separate real and imaginary parts.
template <typename T>
struct Mat2 {
    T re[2][2];
    T im[2][2];
};

/// The zero matrix.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> mat2_zero() {
    Mat2<T> m;
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) m.re[r][c] = m.im[r][c] = T(0);
    return m;
}

/// The identity matrix.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> mat2_identity() {
    Mat2<T> m = mat2_zero<T>();
    m.re[0][0] = m.re[1][1] = T(1);
    return m;
}

/// Matrix of a factor from c = cos(t/2), s = sin(t/2): a Pauli rotation by angle t (radians) or the
/// Hadamard (c, s ignored). Callers that meet the same angle often pass precomputed c, s.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> factor_matrix_cs(int32_t kind, T c, T s) {
    Mat2<T> m = mat2_zero<T>();
    if (kind == kRX) {  // [[c, -is], [-is, c]]
        m.re[0][0] = m.re[1][1] = c;
        m.im[0][1] = m.im[1][0] = -s;
    } else if (kind == kRY) {  // [[c, -s], [s, c]]
        m.re[0][0] = m.re[1][1] = c;
        m.re[0][1] = -s;
        m.re[1][0] = s;
    } else if (kind == kRZ) {  // diag(e^{-it/2}, e^{it/2})
        m.re[0][0] = m.re[1][1] = c;
        m.im[0][0] = -s;
        m.im[1][1] = s;
    } else {  // Hadamard
        const T h = T(0.70710678118654752440);
        m.re[0][0] = m.re[0][1] = m.re[1][0] = h;
        m.re[1][1] = -h;
    }
    return m;
}

/// Matrix of a factor: a Pauli rotation by angle t (radians) or the Hadamard (t ignored).
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> factor_matrix(int32_t kind, T t) {
    return factor_matrix_cs<T>(kind, cos(t / 2), sin(t / 2));
}

/// d/dt of a Pauli rotation: dR/dt = -(i/2) P R(t). (The Hadamard has no parameter: zero.)
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> factor_derivative(int32_t kind, T t) {
    Mat2<T> m = mat2_zero<T>();
    const T c = cos(t / 2) / 2, s = sin(t / 2) / 2;
    if (kind == kRX) {
        m.re[0][0] = m.re[1][1] = -s;
        m.im[0][1] = m.im[1][0] = -c;
    } else if (kind == kRY) {
        m.re[0][0] = m.re[1][1] = -s;
        m.re[0][1] = -c;
        m.re[1][0] = c;
    } else if (kind == kRZ) {
        m.re[0][0] = m.re[1][1] = -s;
        m.im[0][0] = -c;
        m.im[1][1] = c;
    }
    return m;
}

/// Matrix product a * b.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> mat2_mul(const Mat2<T>& a, const Mat2<T>& b) {
    Mat2<T> m;
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) {
            m.re[r][c] = a.re[r][0] * b.re[0][c] - a.im[r][0] * b.im[0][c] + a.re[r][1] * b.re[1][c] -
                         a.im[r][1] * b.im[1][c];
            m.im[r][c] = a.re[r][0] * b.im[0][c] + a.im[r][0] * b.re[0][c] + a.re[r][1] * b.im[1][c] +
                         a.im[r][1] * b.re[1][c];
        }
    return m;
}

/// a + s * b for a real scalar s.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> mat2_axpy(const Mat2<T>& a, T s, const Mat2<T>& b) {
    Mat2<T> m;
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) {
            m.re[r][c] = a.re[r][c] + s * b.re[r][c];
            m.im[r][c] = a.im[r][c] + s * b.im[r][c];
        }
    return m;
}

/// Conjugate transpose.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> mat2_adjoint(const Mat2<T>& a) {
    Mat2<T> m;
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) {
            m.re[r][c] = a.re[c][r];
            m.im[r][c] = -a.im[c][r];
        }
    return m;
}

/// Re tr(a * c): the real part of sum_{r,k} a[r][k] c[k][r]. With the cross matrix
/// c = sum_pairs phi (x) conj(lambda) this is Re <lambda| a |phi>, the adjoint method's inner product.
template <typename T>
QALLEGRO_QDI_PAIR T mat2_re_trace_product(const Mat2<T>& a, const Mat2<T>& c) {
    T acc = T(0);
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 2; ++k) acc += a.re[r][k] * c.re[k][r] - a.im[r][k] * c.im[k][r];
    return acc;
}

/// (a0, a1) <- m (a0, a1): a single-qubit gate on one amplitude pair.
template <typename T>
QALLEGRO_QDI_PAIR void apply_pair(T m00r, T m00i, T m01r, T m01i, T m10r, T m10i, T m11r, T m11i, T& a0r,
                            T& a0i, T& a1r, T& a1i) {
    const T b0r = m00r * a0r - m00i * a0i + m01r * a1r - m01i * a1i;
    const T b0i = m00r * a0i + m00i * a0r + m01r * a1i + m01i * a1r;
    const T b1r = m10r * a0r - m10i * a0i + m11r * a1r - m11i * a1i;
    const T b1i = m10r * a0i + m10i * a0r + m11r * a1i + m11i * a1r;
    a0r = b0r;
    a0i = b0i;
    a1r = b1r;
    a1i = b1i;
}

/// (b0, b1) += m (a0, a1), leaving a untouched (used for tangent terms dM * psi).
template <typename T>
QALLEGRO_QDI_PAIR void add_apply_pair(T m00r, T m00i, T m01r, T m01i, T m10r, T m10i, T m11r, T m11i, T a0r,
                                T a0i, T a1r, T a1i, T& b0r, T& b0i, T& b1r, T& b1i) {
    b0r += m00r * a0r - m00i * a0i + m01r * a1r - m01i * a1i;
    b0i += m00r * a0i + m00i * a0r + m01r * a1i + m01i * a1r;
    b1r += m10r * a0r - m10i * a0i + m11r * a1r - m11i * a1i;
    b1i += m10r * a0i + m10i * a0r + m11r * a1i + m11i * a1r;
}

/// c += phi (x) conj(lam) on one pair: c[r][k] += phi_r * conj(lam_k), the cross matrix of the adjoint
/// method, as 8 reals (re00, im00, re01, im01, re10, im10, re11, im11).
template <typename T>
QALLEGRO_QDI_PAIR void accumulate_cross(T p0r, T p0i, T p1r, T p1i, T l0r, T l0i, T l1r, T l1i, T& c0, T& c1, T& c2,
                                  T& c3, T& c4, T& c5, T& c6, T& c7) {
    c0 += p0r * l0r + p0i * l0i;
    c1 += p0i * l0r - p0r * l0i;
    c2 += p0r * l1r + p0i * l1i;
    c3 += p0i * l1r - p0r * l1i;
    c4 += p1r * l0r + p1i * l0i;
    c5 += p1i * l0r - p1r * l0i;
    c6 += p1r * l1r + p1i * l1i;
    c7 += p1i * l1r - p1r * l1i;
}

/// Unpacks an 8-real cross accumulator into a Mat2.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> cross_to_mat2(const T* c) {
    Mat2<T> m;
    m.re[0][0] = c[0];
    m.im[0][0] = c[1];
    m.re[0][1] = c[2];
    m.im[0][1] = c[3];
    m.re[1][0] = c[4];
    m.im[1][0] = c[5];
    m.re[1][1] = c[6];
    m.im[1][1] = c[7];
    return m;
}

/// Contribution of one pair to <psi| P |psi> for the Pauli P on the pair's qubit.
template <typename T>
QALLEGRO_QDI_PAIR T pauli_expectation_pair(int32_t pauli, T a0r, T a0i, T a1r, T a1i) {
    if (pauli == kPauliX) return 2 * (a0r * a1r + a0i * a1i);  // 2 Re(conj(a0) a1)
    if (pauli == kPauliY) return 2 * (a0r * a1i - a0i * a1r);  // 2 Im(conj(a0) a1)
    return a0r * a0r + a0i * a0i - a1r * a1r - a1i * a1i;
}

/// (l0, l1) += g P (a0, a1): builds lambda = H psi for the observable H = sum_m g_m P_{q_m}.
template <typename T>
QALLEGRO_QDI_PAIR void add_pauli_pair(int32_t pauli, T g, T a0r, T a0i, T a1r, T a1i, T& l0r, T& l0i, T& l1r,
                                T& l1i) {
    if (pauli == kPauliX) {
        l0r += g * a1r;
        l0i += g * a1i;
        l1r += g * a0r;
        l1i += g * a0i;
    } else if (pauli == kPauliY) {  // Y (a0, a1) = (-i a1, i a0)
        l0r += g * a1i;
        l0i -= g * a1r;
        l1r -= g * a0i;
        l1i += g * a0r;
    } else {
        l0r += g * a0r;
        l0i += g * a0i;
        l1r -= g * a1r;
        l1i -= g * a1i;
    }
}

/// Contribution of one pair to 2 Re <a| P |b> (the derivative of <psi|P|psi> along b = dpsi).
template <typename T>
QALLEGRO_QDI_PAIR T tangent_expectation_pair(int32_t pauli, T a0r, T a0i, T a1r, T a1i, T b0r, T b0i, T b1r, T b1i) {
    T l0r = 0, l0i = 0, l1r = 0, l1i = 0;
    add_pauli_pair(pauli, T(1), b0r, b0i, b1r, b1i, l0r, l0i, l1r, l1i);
    return 2 * (a0r * l0r + a0i * l0i + a1r * l1r + a1i * l1i);
}

/// The Pauli matrix itself, built from add_pauli_pair on the basis states so that every consumer
/// (the cuStateVec path's expectation and CNOT matrices) has the simulator's convention by construction.
template <typename T>
QALLEGRO_QDI_PAIR Mat2<T> pauli_matrix(int32_t pauli) {
    Mat2<T> m = mat2_zero<T>();
    add_pauli_pair(pauli, T(1), T(1), T(0), T(0), T(0), m.re[0][0], m.im[0][0], m.re[1][0], m.im[1][0]);
    add_pauli_pair(pauli, T(1), T(0), T(0), T(1), T(0), m.re[0][1], m.im[0][1], m.re[1][1], m.im[1][1]);
    return m;
}

/// Row-major interleaved complex copy of a 2x2 matrix (cuStateVec's CUSTATEVEC_MATRIX_LAYOUT_ROW).
template <typename T>
QALLEGRO_QDI_PAIR void mat2_row_major(const Mat2<T>& m, T* out) {
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) out[4 * r + 2 * c] = m.re[r][c], out[4 * r + 2 * c + 1] = m.im[r][c];
}

/// Index of the first amplitude of pair p for a gate on bit position k: p with a 0 inserted at bit k.
QALLEGRO_QDI_PAIR int64_t pair_index(int64_t p, int k) {
    const int64_t low = p & ((int64_t(1) << k) - 1);
    return ((p >> k) << (k + 1)) | low;
}

/// Source index of a CNOT chain as a permutation of basis states: the chain maps basis state s to
/// A s (over GF(2)); new[j] = old[source(j)] with source = A^{-1} j, i.e. the CNOTs undone in reverse.
/// controls/targets hold bit positions.
QALLEGRO_HD int64_t cnot_chain_source(int64_t j, const int32_t* control_bits, const int32_t* target_bits,
                                      int count) {
    for (int g = count - 1; g >= 0; --g)
        if ((j >> control_bits[g]) & 1) j ^= int64_t(1) << target_bits[g];
    return j;
}

}  // namespace qdi
}  // namespace qallegro
