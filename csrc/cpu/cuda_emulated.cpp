// The CUDA kernels run on the CPU, for the CPU test suite: qallegro::_neighbor_list_cuda_emulated,
// _allegro_tp_cuda_emulated and _allegro_tp_backward_cuda_emulated take CPU tensors and run the
// host side of the CUDA ops (csrc/cuda/*_driver.h) with the sequential launcher of
// qallegro/launch.h, so that the kernel bodies the GPU runs (qallegro/*_kernels.h), their indexing
// and the ATen steps around them execute here, one thread after the other. No GPU exists on our
// machines; these ops are how that code is tested (tests/ops/test_cuda_bodies.py). Not for use in
// models: one CPU thread, slow.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../cuda/allegro_tp_driver.h"
#include "../cuda/neighbor_list_driver.h"
#include "qallegro/launch.h"

namespace qallegro {
namespace {

void check_cpu(const at::Tensor& t, const char* op, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), op, ": ", name,
                " must be a CPU tensor (the CUDA code runs emulated on the CPU), got ", t.device());
}

std::tuple<at::Tensor, at::Tensor> neighbor_list_emulated(const at::Tensor& positions, double cutoff,
                                                          const at::Tensor& cells, const at::Tensor& pbc,
                                                          const at::Tensor& ptr, bool reverse_threads) {
    check_cpu(positions, "_neighbor_list_cuda_emulated", "positions");
    return nl_device::neighbor_list(SequentialLauncher{reverse_threads}, positions, cutoff, cells, pbc, ptr);
}

at::Tensor allegro_tp_emulated(const at::Tensor& tensor_features, const at::Tensor& env_edge,
                               const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
                               const at::Tensor& cg_indices, const at::Tensor& cg_values, int64_t dim_out,
                               bool reverse_threads) {
    check_cpu(tensor_features, "_allegro_tp_cuda_emulated", "tensor_features");
    return tp_device::allegro_tp(SequentialLauncher{reverse_threads}, tensor_features, env_edge, edge_center,
                                 node_norm, weights, cg_indices, cg_values, dim_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allegro_tp_backward_emulated(
    const at::Tensor& grad_out, const at::Tensor& tensor_features, const at::Tensor& env_edge,
    const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
    const at::Tensor& cg_indices, const at::Tensor& cg_values, std::array<bool, 4> output_mask,
    bool reverse_threads) {
    check_cpu(tensor_features, "_allegro_tp_backward_cuda_emulated", "tensor_features");
    return tp_device::allegro_tp_backward(SequentialLauncher{reverse_threads}, grad_out, tensor_features, env_edge,
                                          edge_center, node_norm, weights, cg_indices, cg_values, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CPU, m) {
    m.impl("_neighbor_list_cuda_emulated", &neighbor_list_emulated);
    m.impl("_allegro_tp_cuda_emulated", &allegro_tp_emulated);
    m.impl("_allegro_tp_backward_cuda_emulated", &allegro_tp_backward_emulated);
}

}  // namespace qallegro
