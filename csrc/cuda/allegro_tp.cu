// CUDA kernels of qallegro::allegro_tp and qallegro::allegro_tp_backward: launch only. The kernel
// bodies are qallegro/allegro_tp_kernels.h (arithmetic: qallegro/allegro_tp.h, shared with the CPU
// kernel) and the host side is allegro_tp_driver.h, which the CPU test build also runs, bodies
// included, with the sequential launcher (csrc/cpu/cuda_emulated.cpp).
#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <torch/library.h>
// torch's CUDA headers exist only in CUDA builds of torch; a CPU torch (our CI) still compiles this
// file as a check, with the legacy default stream and cudaSetDevice in their place.
#if __has_include(<c10/cuda/impl/cuda_cmake_macros.h>)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define QALLEGRO_TORCH_HAS_CUDA 1
#endif

#include <array>
#include <tuple>

#include "allegro_tp_driver.h"
#include "qallegro/launch.h"

namespace qallegro {
namespace {

struct DeviceScope {
#ifdef QALLEGRO_TORCH_HAS_CUDA
    explicit DeviceScope(const at::Device& device) : guard(device) {}
    c10::cuda::CUDAGuard guard;
#else
    explicit DeviceScope(const at::Device& device) { (void)cudaSetDevice(device.index()); }
#endif
};

cudaStream_t current_stream(const at::Device& device) {
#ifdef QALLEGRO_TORCH_HAS_CUDA
    return c10::cuda::getCurrentCUDAStream(device.index()).stream();
#else
    (void)device;
    return nullptr;
#endif
}

// `launch(name, threads, body)` on the current stream of the inputs' device
struct CudaLauncher {
    cudaStream_t stream;
    template <class Body>
    void operator()(const char* name, int64_t threads, const Body& body) const {
        const cudaError_t err = launch_cuda(threads, stream, body);
        TORCH_CHECK(err == cudaSuccess, "allegro_tp: launching ", name, " failed: ", cudaGetErrorString(err));
    }
};

at::Tensor allegro_tp_cuda(const at::Tensor& tensor_features, const at::Tensor& env_edge, const at::Tensor& edge_center,
                           const at::Tensor& node_norm, const at::Tensor& weights, const at::Tensor& cg_indices,
                           const at::Tensor& cg_values, int64_t dim_out) {
    TORCH_CHECK(tensor_features.is_cuda(), "allegro_tp (CUDA): tensor_features must be a CUDA tensor, got ",
                tensor_features.device());
    const DeviceScope scope(tensor_features.device());
    return tp_device::allegro_tp(CudaLauncher{current_stream(tensor_features.device())}, tensor_features, env_edge,
                                 edge_center, node_norm, weights, cg_indices, cg_values, dim_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allegro_tp_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& tensor_features, const at::Tensor& env_edge,
    const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
    const at::Tensor& cg_indices, const at::Tensor& cg_values, std::array<bool, 4> output_mask) {
    TORCH_CHECK(tensor_features.is_cuda(), "allegro_tp_backward (CUDA): tensor_features must be a CUDA tensor, got ",
                tensor_features.device());
    const DeviceScope scope(tensor_features.device());
    return tp_device::allegro_tp_backward(CudaLauncher{current_stream(tensor_features.device())}, grad_out,
                                          tensor_features, env_edge, edge_center, node_norm, weights, cg_indices,
                                          cg_values, output_mask);
}

}  // namespace
}  // namespace qallegro

TORCH_LIBRARY_IMPL(qallegro, CUDA, m) {
    m.impl("allegro_tp", &qallegro::allegro_tp_cuda);
    m.impl("allegro_tp_backward", &qallegro::allegro_tp_backward_cuda);
}
