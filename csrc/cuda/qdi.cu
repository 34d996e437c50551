// CUDA face of the qdi ops: launch configuration and memory movement only. The kernel bodies
// (qallegro/qdi_kernels.h) and their launch sequences (qallegro/qdi_driver.h gate by gate,
// qallegro/qdi_fused_driver.h fused) are shared with a sequential CPU launcher
// (csrc/cpu/qdi_kernels_cpu.cpp), so the CPU test suite runs the very code this file launches
// (QALLEGRO_QDI_SIMULATOR=device-kernels and device-fused); gate arithmetic and derivative terms are
// qallegro/qdi_gates.h and qdi_program.h, shared with the CPU simulators.
//
// Layout: states [B, 2^n] interleaved complex, one state vector after another (cuStateVec's batched
// layout). Which simulator runs a first-order pass is the CPU op's rule (prefer_fused, qdi_fused.h: its
// cost model is fitted to CPU times and has not been refitted on a GPU):
//   fused: per upload one 2^n x 2^n unitary V_u built on the host (as the CPU fused driver builds it)
//   and copied to the device; the batch meets it in complex GEMMs through ATen (cuBLAS); the first
//   product state, the later embeddings, expectations, observables and input gradients are kernels;
//   weight gradients from C_u = Phi^+ Lam (one GEMM) back on the host over the basis states.
//   gate by gate: backward (adjoint method) one reduce kernel per block - one thread block per sample,
//   threads over amplitude pairs - un-computes phi and lam and reduces the 2x2 cross matrix; a
//   per-sample kernel turns it into input gradients and per-sample weight gradients (summed by ATen,
//   deterministic). Forward: with cuStateVec (QALLEGRO_HAVE_CUSTATEVEC), custatevecApplyMatrixBatched
//   for the blocks (per sample for embedding blocks, broadcast otherwise; CNOTs as X with one control)
//   and custatevecComputeExpectationBatched; without it, the shared kernels.
// Second derivatives always run gate by gate with the shared kernels.
//
// What the CPU cannot test: the cuStateVec forward (its matrices, bit positions and gate order are read
// from the same Program and StepMats as every other simulator, its Pauli and X matrices come from
// pauli_matrix(), but the library calls themselves run only on a GPU); the fused path's cuBLAS GEMMs on
// complex CUDA tensors with conjugate-transposed views (the CPU runs the same ATen calls, on BLAS) and
// its host<->device copies (V_u^T to the device, C_u back); the shared-memory tree reduction of
// reduce_kernel (the CPU launcher sums the same partials in thread order); which path the cost rule
// picks on a GPU at a given size (tests/ops/test_qdi.py::test_cuda_matches_cpu covers one size of each,
// with a GPU); and stream/launch errors.
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
#include "qallegro/qdi_driver.h"
#include "qallegro/qdi_fused_driver.h"

namespace qallegro {
namespace {
using namespace qdi;

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

// Block-wide sum of NV values per thread (shared-memory tree); result valid in thread 0.
template <typename T, int NV>
__device__ void block_reduce(T (&v)[NV]) {
    __shared__ T sh[NV][kKernelThreads];
    for (int e = 0; e < NV; ++e) sh[e][threadIdx.x] = v[e];
    __syncthreads();
    for (int stride = kKernelThreads / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride)
            for (int e = 0; e < NV; ++e) sh[e][threadIdx.x] += sh[e][threadIdx.x + stride];
        __syncthreads();
    }
    for (int e = 0; e < NV; ++e) v[e] = sh[e][0];
}

template <class Body>
__global__ void map_kernel(const Body body) {
    body(blockIdx.x, threadIdx.x, blockDim.x);
}

// The two phases of a reduce body with the barrier between them.
template <class Body>
__global__ void reduce_kernel(const Body body) {
    using T = typename Body::value_type;
    T acc[Body::kValues];
    for (int e = 0; e < Body::kValues; ++e) acc[e] = T(0);
    body.partial(blockIdx.x, threadIdx.x, blockDim.x, acc);
    block_reduce<T, Body::kValues>(acc);
    if (threadIdx.x == 0) body.finish(blockIdx.x, acc);
}

struct CudaLaunch {
    cudaStream_t stream;
    template <class Body>
    void map(int64_t grid, const Body& body) {
        if (grid == 0) return;
        map_kernel<Body><<<grid, kKernelThreads, 0, stream>>>(body);
        check_launch();
    }
    template <class Body>
    void reduce(int64_t grid, const Body& body) {
        if (grid == 0) return;
        reduce_kernel<Body><<<grid, kKernelThreads, 0, stream>>>(body);
        check_launch();
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
void forward_custatevec(const Program& prog, CudaLaunch& launch, const std::vector<StepMats<T>>& mats,
                        const at::Tensor& x, T* sv, at::Tensor& y) {
    KernelDriver<T, CudaLaunch> run(prog, launch, x, mats);
    const int64_t B = run.B, dim = prog.dim();
    const uint32_t n = uint32_t(prog.n_qubits);
    const auto dt = CusvTypes<T>::data;
    const auto ct = CusvTypes<T>::compute;
    custatevecHandle_t h = custatevec_handle(x.device().index(), launch.stream);
    at::Tensor mats_dev = at::empty({B, 8}, x.options());
    at::Tensor index = at::arange(B, x.options().dtype(at::kInt));
    launch.map(kernel_blocks(B * dim), InitStates<T>{sv, B, dim});
    T pauli_x[8], observable[8];
    mat2_row_major(pauli_matrix<T>(kPauliX), pauli_x);
    mat2_row_major(pauli_matrix<T>(prog.pauli), observable);
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
            launch.map(kernel_blocks(B), BlockMatrices<T>{run.sm(i), x.data_ptr<T>(), nullptr, B, prog.n_inputs,
                                                          false, mats_dev.data_ptr<T>(), nullptr});
            QDI_CUSV(custatevecApplyMatrixBatched(h, sv, dt, n, uint32_t(B), dim, CUSTATEVEC_MATRIX_MAP_TYPE_MATRIX_INDEXED,
                                                  index.data_ptr<int32_t>(), mats_dev.data_ptr<T>(), dt,
                                                  CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, uint32_t(B), &target, 1, nullptr,
                                                  nullptr, 0, ct, nullptr, 0));
        } else {
            T post[8];
            mat2_row_major(mats[i].post, post);
            QDI_CUSV(custatevecApplyMatrixBatched(h, sv, dt, n, uint32_t(B), dim, CUSTATEVEC_MATRIX_MAP_TYPE_BROADCAST,
                                                  nullptr, post, dt, CUSTATEVEC_MATRIX_LAYOUT_ROW, 0, 1, &target, 1,
                                                  nullptr, nullptr, 0, ct, nullptr, 0));
        }
    }
    at::Tensor ev = at::empty({B, 2}, x.options().dtype(at::kDouble));  // double2 per sample
    for (size_t m = 0; m < prog.measured.size(); ++m) {
        const int32_t bit = prog.bit(prog.measured[m]);
        QDI_CUSV(custatevecComputeExpectationBatched(h, sv, dt, n, uint32_t(B), dim,
                                                     reinterpret_cast<double2*>(ev.data_ptr<double>()),
                                                     observable, dt, CUSTATEVEC_MATRIX_LAYOUT_ROW, 1, &bit, 1,
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
    const Device dev(x.device());
    CudaLaunch launch{dev.stream};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_cuda", [&] {
        const auto mats = host_step_mats<scalar_t>(prog, weights, at::Tensor());
        if (prefer_fused(prog, x.size(0))) return fused_kernels_forward<scalar_t>(prog, launch, mats, x, y, state);
#ifdef QALLEGRO_HAVE_CUSTATEVEC
        forward_custatevec<scalar_t>(prog, launch, mats, x, reinterpret_cast<scalar_t*>(state.data_ptr()), y);
#else
        kernels_forward<scalar_t>(prog, launch, mats, x, y, state);
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
    at::Tensor gx = at::zeros_like(x);
    if (B == 0) return {gx, at::zeros_like(weights)};
    const Device dev(x.device());
    CudaLaunch launch{dev.stream};
    const bool fused = prefer_fused(prog, B);
    at::Tensor gw = fused ? at::empty_like(weights, at::MemoryFormat::Contiguous)
                          : at::zeros({B, prog.n_weights}, x.options());  // per-sample terms, summed below
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_backward_cuda", [&] {
        const auto mats = host_step_mats<scalar_t>(prog, weights, at::Tensor());
        if (fused) return fused_kernels_backward<scalar_t>(prog, launch, mats, x, gy, state, gx, gw);
        kernels_backward<scalar_t>(prog, launch, mats, x, gy, state, gx, gw);
    });
    return {gx, fused ? gw : gw.sum(0).view(weights.sizes())};
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
    const Device dev(x.device());
    CudaLaunch launch{dev.stream};
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_double_backward_cuda", [&] {
        const auto mats = host_step_mats<scalar_t>(prog, weights, tw.defined() ? tw : at::zeros_like(weights));
        kernels_double_backward<scalar_t>(prog, launch, mats, x, tx, gy, jvp, gx, gw_ps);
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
