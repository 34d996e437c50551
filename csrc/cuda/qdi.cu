// CUDA face of the qdi ops (issue 5): launch, indexing and memory movement only; the gate arithmetic
// and derivative terms are csrc/include/qallegro/qdi_gates.h and qdi_program.h, shared with the CPU.
//
// Layout: states [B, 2^n] interleaved complex, one state vector after another (cuStateVec's batched
// layout). Forward: per-sample block matrices are built by a kernel, then applied with cuStateVec's
// custatevecApplyMatrixBatched (CNOTs as controlled X, broadcast) and measured with
// custatevecComputeExpectationBatched. Backward (adjoint method): one fused kernel per block - one
// thread block per sample, threads over amplitude pairs - un-computes phi and lam and reduces the 2x2
// cross matrix; a per-sample kernel turns it into input gradients and per-sample weight gradients
// (summed by ATen, deterministic). The tangent forward of the double backward uses our own kernels
// (cuStateVec has no "M dpsi + dM psi" primitive). Without cuStateVec (QALLEGRO_HAVE_CUSTATEVEC
// undefined) the forward uses the same own kernels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <cuda_runtime.h>
#include <torch/library.h>
#if __has_include(<c10/cuda/impl/cuda_cmake_macros.h>)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define QALLEGRO_TORCH_HAS_CUDA 1
#endif
#ifdef QALLEGRO_HAVE_CUSTATEVEC
#include <custatevec.h>

#include <mutex>
#include <unordered_map>
#endif

#include <vector>

#include "qallegro/qdi_check.h"
#include "qallegro/qdi_program.h"

namespace qallegro {
namespace {
using namespace qdi;

constexpr int kThreads = 128;

struct Device {
#ifdef QALLEGRO_TORCH_HAS_CUDA
    explicit Device(const at::Device& d) : guard(d), stream(c10::cuda::getCurrentCUDAStream(d.index()).stream()) {}
    c10::cuda::CUDAGuard guard;
    cudaStream_t stream;
#else
    explicit Device(const at::Device& d) { (void)cudaSetDevice(d.index()); }
    cudaStream_t stream = nullptr;
#endif
};

void check_launch() {
    const cudaError_t err = cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, "qdi CUDA kernel launch failed: ", cudaGetErrorString(err));
}

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

// ---- kernels ------------------------------------------------------------------------------------

template <typename T>
__global__ void init_state_kernel(T* sv, int64_t count, int64_t dim) {
    const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (i >= count * dim) return;
    sv[2 * i] = (i % dim == 0) ? T(1) : T(0);
    sv[2 * i + 1] = T(0);
}

// Per-sample block matrix M_b = post E(x_b) pre (or its adjoint) and, with tx, the tangent
// dM_b = t_x post E' pre + dpost_t E pre; stored row-major complex [B, 2, 2].
template <typename T>
__global__ void block_matrices_kernel(const StepMats<T>* sm_ptr, const T* x, const T* tx, int64_t batch, int F,
                                      bool adjoint, T* mats, T* dmats) {
    const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (b >= batch) return;
    const StepMats<T>& sm = *sm_ptr;
    Mat2<T> m = sm.post, d = sm.dpost_t;
    if (sm.emb_param >= 0) {
        const T xb = x[b * F + sm.emb_param];
        const Mat2<T> A = mat2_mul(factor_matrix<T>(sm.emb_kind, xb), sm.pre);
        m = mat2_mul(sm.post, A);
        if (dmats) {
            const T tb = tx ? tx[b * F + sm.emb_param] : T(0);
            d = mat2_axpy(mat2_mul(sm.dpost_t, A), tb,
                          mat2_mul(sm.post, mat2_mul(factor_derivative<T>(sm.emb_kind, xb), sm.pre)));
        }
    }
    if (adjoint) m = mat2_adjoint(m), d = mat2_adjoint(d);
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) {
            mats[8 * b + 4 * r + 2 * c] = m.re[r][c];
            mats[8 * b + 4 * r + 2 * c + 1] = m.im[r][c];
            if (dmats) dmats[8 * b + 4 * r + 2 * c] = d.re[r][c], dmats[8 * b + 4 * r + 2 * c + 1] = d.im[r][c];
        }
}

#define QDI_MAT(p) p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
#define QDI_AMP(v, i0, i1) v[2 * (i0)], v[2 * (i0) + 1], v[2 * (i1)], v[2 * (i1) + 1]

// psi <- M_b psi (and dpsi <- M_b dpsi + dM_b psi); one thread per (sample, pair).
template <typename T, bool Tangent>
__global__ void forward_block_kernel(T* sv, T* dsv, const T* mats, const T* dmats, int64_t batch, int n, int bit) {
    const int64_t half = int64_t(1) << (n - 1);
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= batch * half) return;
    const int64_t b = t / half, base = b << n;
    const int64_t i0 = base + pair_index(t % half, bit), i1 = i0 + (int64_t(1) << bit);
    const T* m = mats + 8 * b;
    if (Tangent) {
        const T* d = dmats + 8 * b;
        apply_pair(QDI_MAT(m), QDI_AMP(dsv, i0, i1));
        add_apply_pair(QDI_MAT(d), QDI_AMP(sv, i0, i1), QDI_AMP(dsv, i0, i1));
    }
    apply_pair(QDI_MAT(m), QDI_AMP(sv, i0, i1));
}

// CNOT on `count` state vectors: swap the target pair where the control bit is 1.
template <typename T>
__global__ void cnot_kernel(T* sv, int64_t count, int n, int control, int target) {
    const int64_t half = int64_t(1) << (n - 1);
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= count * half) return;
    const int64_t b = t / half;
    const int64_t i0 = pair_index(t % half, target);
    if (!((i0 >> control) & 1)) return;
    const int64_t a0 = (b << n) + i0, a1 = a0 + (int64_t(1) << target);
    const T r = sv[2 * a0], im = sv[2 * a0 + 1];
    sv[2 * a0] = sv[2 * a1], sv[2 * a0 + 1] = sv[2 * a1 + 1];
    sv[2 * a1] = r, sv[2 * a1 + 1] = im;
}

// Block-wide sum of NV values per thread (shared-memory tree); result valid in thread 0.
template <typename T, int NV>
__device__ void block_reduce(T (&v)[NV]) {
    __shared__ T sh[NV][kThreads];
    for (int e = 0; e < NV; ++e) sh[e][threadIdx.x] = v[e];
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride)
            for (int e = 0; e < NV; ++e) sh[e][threadIdx.x] += sh[e][threadIdx.x + stride];
        __syncthreads();
    }
    for (int e = 0; e < NV; ++e) v[e] = sh[e][0];
}

// out[b * nm + m] = <psi|P|psi> or, with dsv, 2 Re <psi|P|dpsi>; one thread block per sample.
template <typename T>
__global__ void expectation_kernel(const T* sv, const T* dsv, int n, int bit, int pauli, int nm, int m, T* out) {
    const int64_t b = blockIdx.x, half = int64_t(1) << (n - 1), base = b << n;
    T acc[1] = {T(0)};
    for (int64_t p = threadIdx.x; p < half; p += blockDim.x) {
        const int64_t i0 = base + pair_index(p, bit), i1 = i0 + (int64_t(1) << bit);
        if (!dsv) {
            acc[0] += pauli_expectation_pair(pauli, QDI_AMP(sv, i0, i1));
        } else {
            T l0r = 0, l0i = 0, l1r = 0, l1i = 0;
            add_pauli_pair(pauli, T(1), QDI_AMP(dsv, i0, i1), l0r, l0i, l1r, l1i);
            acc[0] += 2 * (sv[2 * i0] * l0r + sv[2 * i0 + 1] * l0i + sv[2 * i1] * l1r + sv[2 * i1 + 1] * l1i);
        }
    }
    block_reduce<T, 1>(acc);
    if (threadIdx.x == 0) out[b * nm + m] = acc[0];
}

// lam += g[b, m] P_bit psi for one measured qubit; one thread per (sample, pair).
template <typename T>
__global__ void observable_kernel(const T* sv, const T* g, int64_t batch, int n, int bit, int pauli, int nm, int m,
                                  T* lam) {
    const int64_t half = int64_t(1) << (n - 1);
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= batch * half) return;
    const int64_t b = t / half, i0 = (b << n) + pair_index(t % half, bit), i1 = i0 + (int64_t(1) << bit);
    add_pauli_pair(pauli, g[b * nm + m], QDI_AMP(sv, i0, i1), QDI_AMP(lam, i0, i1));
}

// One block of the adjoint sweep for one sample per thread block (see qdi_lanes.h adjoint_pass):
// phi, lam (and dphi, dlam) un-computed through M^+; cross matrices reduced into cross[b, 16].
template <typename T, bool Second>
__global__ void adjoint_block_kernel(T* phi, T* lam, T* dphi, T* dlam, const T* mats_adj, const T* dmats_adj, int n,
                                     int bit, T* cross) {
    const int64_t b = blockIdx.x, half = int64_t(1) << (n - 1), base = b << n;
    const T* m = mats_adj + 8 * b;
    const T* d = Second ? dmats_adj + 8 * b : nullptr;
    T c[16];
    for (int e = 0; e < 16; ++e) c[e] = T(0);
    for (int64_t p = threadIdx.x; p < half; p += blockDim.x) {
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
    block_reduce<T, 16>(c);
    if (threadIdx.x == 0)
        for (int e = 0; e < 16; ++e) cross[16 * b + e] = c[e];
}

// Per-sample derivative terms of one block (qdi_program.h), into gx [B, F] and gw_ps [B, P].
template <typename T>
__global__ void block_terms_kernel(const StepMats<T>* sm_ptr, const T* cross, const T* x, const T* tx, int64_t batch,
                                   int F, int P, bool second, T* gx, T* gw_ps) {
    const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (b >= batch) return;
    const StepMats<T>& sm = *sm_ptr;
    const Mat2<T> C0 = cross_to_mat2(cross + 16 * b), C12 = cross_to_mat2(cross + 16 * b + 8);
    Mat2<T> S1 = C12, S2 = C0;
    if (sm.emb_param >= 0) {
        S1 = S2 = mat2_zero<T>();
        const int64_t f = b * F + sm.emb_param;
        block_input_terms(sm, x[f], tx ? tx[f] : T(0), C0, C12, second, gx[f], S1, S2);
    }
    block_weight_terms(sm, S1, S2, second, F, gw_ps + b * P);
}

#undef QDI_MAT
#undef QDI_AMP

// ---- host drivers -------------------------------------------------------------------------------

template <typename T>
struct Run {
    const Program& prog;
    Device dev;
    at::Tensor sm_buf;  // StepMats<T>[steps] on the device
    int64_t B;
    Run(const Program& p, const at::Tensor& x, const std::vector<StepMats<T>>& mats)
        : prog(p), dev(x.device()), B(x.size(0)) {
        const int64_t bytes = int64_t(mats.size() * sizeof(StepMats<T>));
        sm_buf = at::empty({std::max<int64_t>(bytes, 1)}, x.options().dtype(at::kByte));
        // pageable source: the copy is staged before cudaMemcpyAsync returns, so `mats` may die after
        const cudaError_t err = cudaMemcpyAsync(sm_buf.data_ptr(), mats.data(), bytes, cudaMemcpyHostToDevice, dev.stream);
        TORCH_CHECK(err == cudaSuccess, "qdi: copying the circuit to the device failed: ", cudaGetErrorString(err));
    }
    const StepMats<T>* sm(size_t i) const { return reinterpret_cast<const StepMats<T>*>(sm_buf.data_ptr()) + i; }
    int n() const { return prog.n_qubits; }
    int64_t pairs(int64_t count) const { return count * (prog.dim() / 2); }

    // CNOT chain on `count` consecutive state vectors, forwards or (inverse) backwards.
    void chain(T* sv, int64_t count, int chain_id, bool inverse) const {
        const Chain& c = prog.chains[chain_id];
        const int g = int(c.control_bits.size());
        for (int k = 0; k < g; ++k) {
            const int j = inverse ? g - 1 - k : k;
            cnot_kernel<T><<<blocks_for(pairs(count)), kThreads, 0, dev.stream>>>(sv, count, n(), c.control_bits[j],
                                                                                 c.target_bits[j]);
            check_launch();
        }
    }

    // Forward simulation with our own kernels; with dsv also the tangent (tx: input tangents).
    void simulate(const T* x, const T* tx, T* sv, T* dsv, T* mats, T* dmats) const {
        const int64_t dim = prog.dim();
        init_state_kernel<T><<<blocks_for(B * dim), kThreads, 0, dev.stream>>>(sv, B, dim);
        check_launch();
        if (dsv) (void)cudaMemsetAsync(dsv, 0, sizeof(T) * 2 * B * dim, dev.stream);
        for (size_t i = 0; i < prog.steps.size(); ++i) {
            const Step& st = prog.steps[i];
            if (st.chain >= 0) {
                chain(sv, B, st.chain, false);
                if (dsv) chain(dsv, B, st.chain, false);
                continue;
            }
            block_matrices_kernel<T><<<blocks_for(B), kThreads, 0, dev.stream>>>(sm(i), x, tx, B, prog.n_inputs, false,
                                                                                 mats, dsv ? dmats : nullptr);
            check_launch();
            if (dsv)
                forward_block_kernel<T, true><<<blocks_for(pairs(B)), kThreads, 0, dev.stream>>>(sv, dsv, mats, dmats, B,
                                                                                              n(), prog.bit(st.qubit));
            else
                forward_block_kernel<T, false><<<blocks_for(pairs(B)), kThreads, 0, dev.stream>>>(sv, dsv, mats, dmats,
                                                                                               B, n(), prog.bit(st.qubit));
            check_launch();
        }
    }

    void expectations(const T* sv, const T* dsv, T* out) const {
        const int nm = int(prog.measured.size());
        for (int m = 0; m < nm; ++m) {
            expectation_kernel<T><<<B, kThreads, 0, dev.stream>>>(sv, dsv, n(), prog.bit(prog.measured[m]), prog.pauli,
                                                                 nm, m, out);
            check_launch();
        }
    }

    // lam = sum_m g[:, m] P_m sv (lam zeroed first)
    void observable(const T* sv, const T* g, T* lam) const {
        (void)cudaMemsetAsync(lam, 0, sizeof(T) * 2 * B * prog.dim(), dev.stream);
        const int nm = int(prog.measured.size());
        for (int m = 0; m < nm; ++m) {
            observable_kernel<T><<<blocks_for(pairs(B)), kThreads, 0, dev.stream>>>(
                sv, g, B, n(), prog.bit(prog.measured[m]), prog.pauli, nm, m, lam);
            check_launch();
        }
    }

    // Adjoint sweep over buffers [2 or 4, B, dim] = (phi, lam[, dphi, dlam]); writes gx and gw_ps.
    void adjoint(T* bufs, const T* x, const T* tx, bool second, T* mats, T* dmats, T* cross, T* gx, T* gw_ps) const {
        const int64_t stride = 2 * B * prog.dim();
        T *phi = bufs, *lam = bufs + stride, *dphi = second ? bufs + 2 * stride : nullptr;
        T* dlam = second ? bufs + 3 * stride : nullptr;
        for (size_t i = prog.steps.size(); i-- > 0;) {
            const Step& st = prog.steps[i];
            if (st.chain >= 0) {  // the buffers are consecutive: one launch per CNOT for all of them
                chain(bufs, (second ? 4 : 2) * B, st.chain, true);
                continue;
            }
            block_matrices_kernel<T><<<blocks_for(B), kThreads, 0, dev.stream>>>(sm(i), x, tx, B, prog.n_inputs, true,
                                                                                 mats, second ? dmats : nullptr);
            check_launch();
            const int bit = prog.bit(st.qubit);
            if (second)
                adjoint_block_kernel<T, true><<<B, kThreads, 0, dev.stream>>>(phi, lam, dphi, dlam, mats, dmats, n(), bit,
                                                                             cross);
            else
                adjoint_block_kernel<T, false><<<B, kThreads, 0, dev.stream>>>(phi, lam, dphi, dlam, mats, dmats, n(),
                                                                              bit, cross);
            check_launch();
            block_terms_kernel<T><<<blocks_for(B), kThreads, 0, dev.stream>>>(sm(i), cross, x, tx, B, prog.n_inputs,
                                                                              prog.n_weights, second, gx, gw_ps);
            check_launch();
        }
    }
};

#ifdef QALLEGRO_HAVE_CUSTATEVEC
#define QDI_CUSV(call)                                                                                \
    do {                                                                                              \
        const custatevecStatus_t _s = (call);                                                         \
        TORCH_CHECK(_s == CUSTATEVEC_STATUS_SUCCESS, "qdi: ", #call, " failed: ", custatevecGetErrorString(_s)); \
    } while (0)

// One cuStateVec handle per device for the life of the process (as torch pools cuBLAS handles):
// creating one allocates device workspace and costs far more than a QDI forward.
custatevecHandle_t custatevec_handle(int device, cudaStream_t stream) {
    static std::mutex mutex;
    static std::unordered_map<int, custatevecHandle_t> handles;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = handles.find(device);
    if (it == handles.end()) {
        custatevecHandle_t h;
        QDI_CUSV(custatevecCreate(&h));
        it = handles.emplace(device, h).first;
    }
    QDI_CUSV(custatevecSetStream(it->second, stream));
    return it->second;
}

template <typename T>
struct CusvTypes;
template <>
struct CusvTypes<double> {
    static constexpr cudaDataType_t data = CUDA_C_64F;
    static constexpr custatevecComputeType_t compute = CUSTATEVEC_COMPUTE_64F;
};
template <>
struct CusvTypes<float> {
    static constexpr cudaDataType_t data = CUDA_C_32F;
    static constexpr custatevecComputeType_t compute = CUSTATEVEC_COMPUTE_32F;
};

// Forward with cuStateVec: batched matrix application (indexed per sample for embedding blocks,
// broadcast otherwise; CNOTs as X with one control) and batched Pauli expectations.
template <typename T>
void forward_custatevec(const Run<T>& run, const std::vector<StepMats<T>>& mats, const at::Tensor& x, T* sv,
                        at::Tensor& y) {
    const Program& prog = run.prog;
    const int64_t B = run.B, dim = prog.dim();
    const uint32_t n = uint32_t(prog.n_qubits);
    const auto dt = CusvTypes<T>::data;
    const auto ct = CusvTypes<T>::compute;
    custatevecHandle_t h = custatevec_handle(x.device().index(), run.dev.stream);
    at::Tensor mats_dev = at::empty({B, 8}, x.options());
    at::Tensor index = at::arange(B, x.options().dtype(at::kInt));
    init_state_kernel<T><<<blocks_for(B * dim), kThreads, 0, run.dev.stream>>>(sv, B, dim);
    check_launch();
    const T pauli_x[8] = {0, 0, 1, 0, 1, 0, 0, 0};
    for (size_t i = 0; i < prog.steps.size(); ++i) {
        const Step& st = prog.steps[i];
        if (st.chain >= 0) {
            const Chain& c = prog.chains[st.chain];
            for (size_t k = 0; k < c.control_bits.size(); ++k)
                QDI_CUSV(custatevecApplyMatrixBatched(h, sv, dt, n, uint32_t(B), dim, CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST,
                                                      nullptr, pauli_x, dt, CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, 1,
                                                      &c.target_bits[k], 1, &c.control_bits[k], nullptr, 1, ct,
                                                      nullptr, 0));
            continue;
        }
        const int32_t target = prog.bit(st.qubit);
        if (mats[i].emb_param >= 0) {
            block_matrices_kernel<T><<<blocks_for(B), kThreads, 0, run.dev.stream>>>(
                run.sm(i), x.data_ptr<T>(), nullptr, B, prog.n_inputs, false, mats_dev.data_ptr<T>(), nullptr);
            check_launch();
            QDI_CUSV(custatevecApplyMatrixBatched(h, sv, dt, n, uint32_t(B), dim, CUSTATEVEC_MATRIX_MAP_TYPE_MATRIX_INDEXED,
                                                  index.data_ptr<int32_t>(), mats_dev.data_ptr<T>(), dt,
                                                  CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, uint32_t(B), &target, 1, nullptr,
                                                  nullptr, 0, ct, nullptr, 0));
        } else {
            T post[8];
            for (int r = 0; r < 2; ++r)
                for (int c = 0; c < 2; ++c) post[4 * r + 2 * c] = mats[i].post.re[r][c], post[4 * r + 2 * c + 1] = mats[i].post.im[r][c];
            QDI_CUSV(custatevecApplyMatrixBatched(h, sv, dt, n, uint32_t(B), dim, CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST,
                                                  nullptr, post, dt, CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, 1, &target, 1,
                                                  nullptr, nullptr, 0, ct, nullptr, 0));
        }
    }
    const T paulis[3][8] = {{0, 0, 1, 0, 1, 0, 0, 0}, {0, 0, 0, -1, 0, 1, 0, 0}, {1, 0, 0, 0, 0, 0, -1, 0}};
    at::Tensor ev = at::empty({B, 2}, x.options().dtype(at::kDouble));  // double2 per sample
    for (size_t m = 0; m < prog.measured.size(); ++m) {
        const int32_t bit = prog.bit(prog.measured[m]);
        QDI_CUSV(custatevecComputeExpectationBatched(h, sv, dt, n, uint32_t(B), dim,
                                                     reinterpret_cast<double2*>(ev.data_ptr<double>()),
                                                     paulis[prog.pauli], dt, CUSTATEVEC_MATRIX_LAYOUT_ROW, 1, &bit, 1,
                                                     ct, nullptr, 0));
        y.select(1, int64_t(m)).copy_(ev.select(1, 0));
    }
}
#endif

template <typename T>
std::vector<StepMats<T>> host_step_mats(const Program& prog, const at::Tensor& w, const at::Tensor& tw) {
    // the weights are tiny ([uploads, depth, n, K]): the shared per-step matrices are built on the host
    const at::Tensor wc = w.to(at::kCPU).contiguous();
    std::vector<T> theta(prog.n_params(), T(0)), tangent;
    std::copy(wc.data_ptr<T>(), wc.data_ptr<T>() + prog.n_weights, theta.begin() + prog.n_inputs);
    if (tw.defined()) {
        const at::Tensor twc = tw.to(at::kCPU).contiguous();
        tangent.assign(prog.n_params(), T(0));
        std::copy(twc.data_ptr<T>(), twc.data_ptr<T>() + prog.n_weights, tangent.begin() + prog.n_inputs);
    }
    return prepare_steps<T>(prog, theta.data(), tangent.empty() ? nullptr : tangent.data());
}

std::tuple<at::Tensor, at::Tensor> qdi_cuda(const at::Tensor& inputs, const at::Tensor& weights,
                                            c10::string_view rotation, c10::string_view entangling,
                                            c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    const at::Tensor x = inputs.contiguous();
    const auto ctype = x.scalar_type() == at::kFloat ? at::kComplexFloat : at::kComplexDouble;
    at::Tensor y = at::empty({x.size(0), int64_t(prog.measured.size())}, x.options());
    at::Tensor state = at::empty({x.size(0), prog.dim()}, x.options().dtype(ctype));
    if (x.size(0) == 0) return {y, state};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_cuda", [&] {
        const auto mats = host_step_mats<scalar_t>(prog, weights, at::Tensor());
        Run<scalar_t> run(prog, x, mats);
        scalar_t* sv = reinterpret_cast<scalar_t*>(state.data_ptr());
#ifdef QALLEGRO_HAVE_CUSTATEVEC
        forward_custatevec<scalar_t>(run, mats, x, sv, y);
#else
        at::Tensor m = at::empty({x.size(0), 8}, x.options());
        run.simulate(x.data_ptr<scalar_t>(), nullptr, sv, nullptr, m.data_ptr<scalar_t>(), nullptr);
        run.expectations(sv, nullptr, y.data_ptr<scalar_t>());
#endif
    });
    return {y, state};
}

std::tuple<at::Tensor, at::Tensor> qdi_backward_cuda(const at::Tensor& grad_output, const at::Tensor& state,
                                                     const at::Tensor& inputs, const at::Tensor& weights,
                                                     c10::string_view rotation, c10::string_view entangling,
                                                     c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    check_like(grad_output, "grad_output", {inputs.size(0), int64_t(prog.measured.size())}, inputs);
    check_state(state, inputs, prog);
    const at::Tensor x = inputs.contiguous(), gy = grad_output.contiguous();
    const int64_t B = x.size(0);
    at::Tensor gx = at::zeros_like(x), gw_ps = at::zeros({B, prog.n_weights}, x.options());
    if (B == 0) return {gx, at::zeros_like(weights)};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_backward_cuda", [&] {
        const auto mats = host_step_mats<scalar_t>(prog, weights, at::Tensor());
        Run<scalar_t> run(prog, x, mats);
        // (phi, lam) back to back, so each CNOT of the sweep is one launch for both
        at::Tensor bufs = at::empty({2, B, prog.dim(), 2}, x.options());
        bufs.select(0, 0).copy_(at::view_as_real(state.contiguous()));
        scalar_t* phi = bufs.data_ptr<scalar_t>();
        run.observable(phi, gy.data_ptr<scalar_t>(), phi + 2 * B * prog.dim());
        at::Tensor m = at::empty({B, 8}, x.options()), cross = at::empty({B, 16}, x.options());
        run.adjoint(phi, x.data_ptr<scalar_t>(), nullptr, false, m.data_ptr<scalar_t>(), nullptr,
                    cross.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gw_ps.data_ptr<scalar_t>());
    });
    return {gx, gw_ps.sum(0).view(weights.sizes())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qdi_double_backward_cuda(
    const c10::optional<at::Tensor>& grad_grad_inputs, const c10::optional<at::Tensor>& grad_grad_weights,
    const at::Tensor& grad_output, const at::Tensor& inputs, const at::Tensor& weights, c10::string_view rotation,
    c10::string_view entangling, c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    check_like(grad_output, "grad_output", {inputs.size(0), int64_t(prog.measured.size())}, inputs);
    const at::Tensor x = inputs.contiguous(), gy = grad_output.contiguous();
    at::Tensor tx, tw;
    if (grad_grad_inputs.has_value() && grad_grad_inputs->defined()) {
        check_like(*grad_grad_inputs, "grad_grad_inputs", x.sizes(), x);
        tx = grad_grad_inputs->contiguous();
    }
    if (grad_grad_weights.has_value() && grad_grad_weights->defined()) {
        check_like(*grad_grad_weights, "grad_grad_weights", weights.sizes(), x);
        tw = *grad_grad_weights;
    }
    const int64_t B = x.size(0);
    at::Tensor jvp = at::zeros_like(gy), gx = at::zeros_like(x), gw_ps = at::zeros({B, prog.n_weights}, x.options());
    if (B == 0 || (!tx.defined() && !tw.defined())) return {jvp, gx, at::zeros_like(weights)};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_double_backward_cuda", [&] {
        const auto mats = host_step_mats<scalar_t>(prog, weights, tw.defined() ? tw : at::zeros_like(weights));
        Run<scalar_t> run(prog, x, mats);
        const int64_t stride = 2 * B * prog.dim();
        at::Tensor bufs = at::empty({4, B, prog.dim(), 2}, x.options());  // phi, lam, dphi, dlam
        scalar_t* b = bufs.data_ptr<scalar_t>();
        const scalar_t* txp = tx.defined() ? tx.data_ptr<scalar_t>() : nullptr;
        at::Tensor m = at::empty({B, 8}, x.options()), dm = at::empty({B, 8}, x.options());
        at::Tensor cross = at::empty({B, 16}, x.options());
        run.simulate(x.data_ptr<scalar_t>(), txp, b, b + 2 * stride, m.data_ptr<scalar_t>(), dm.data_ptr<scalar_t>());
        run.expectations(b, b + 2 * stride, jvp.data_ptr<scalar_t>());
        run.observable(b, gy.data_ptr<scalar_t>(), b + stride);
        run.observable(b + 2 * stride, gy.data_ptr<scalar_t>(), b + 3 * stride);
        run.adjoint(b, x.data_ptr<scalar_t>(), txp, true, m.data_ptr<scalar_t>(), dm.data_ptr<scalar_t>(),
                    cross.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gw_ps.data_ptr<scalar_t>());
    });
    return {jvp, gx, gw_ps.sum(0).view(weights.sizes())};
}

}  // namespace
}  // namespace qallegro

TORCH_LIBRARY_IMPL(qallegro, CUDA, m) {
    m.impl("qdi", &qallegro::qdi_cuda);
    m.impl("qdi_backward", &qallegro::qdi_backward_cuda);
    m.impl("qdi_double_backward", &qallegro::qdi_double_backward_cuda);
}
