// CUDA kernel of qallegro::neighbor_list: launch only. The kernel bodies are
// qallegro/neighbor_list_kernels.h (geometry: qallegro/neighbor_list.h, shared with the CPU kernel)
// and the host side is neighbor_list_driver.h, which the CPU test build also runs, bodies included,
// with the sequential launcher (csrc/cpu/cuda_emulated.cpp).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "neighbor_list_driver.h"
#include "qallegro/launch.h"

namespace qallegro {
namespace {

// `launch(name, threads, body)` on the current stream of the current device
struct CudaLauncher {
    cudaStream_t stream;
    template <class Body>
    void operator()(const char* name, int64_t threads, const Body& body) const {
        const cudaError_t err = launch_cuda(threads, stream, body);
        TORCH_CHECK(err == cudaSuccess, "neighbor_list: launching ", name, " failed: ", cudaGetErrorString(err));
    }
};

std::tuple<at::Tensor, at::Tensor> neighbor_list_cuda(const at::Tensor& positions, double cutoff,
                                                      const at::Tensor& cells, const at::Tensor& pbc,
                                                      const at::Tensor& ptr) {
    TORCH_CHECK(positions.is_cuda(), "neighbor_list (CUDA): positions must be a CUDA tensor, got ",
                positions.device());
    const c10::cuda::CUDAGuard guard(positions.device());
    const CudaLauncher launch{c10::cuda::getCurrentCUDAStream(positions.device().index()).stream()};
    return nl_device::neighbor_list(launch, positions, cutoff, cells, pbc, ptr);
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CUDA, m) { m.impl("neighbor_list", &neighbor_list_cuda); }

}  // namespace qallegro
