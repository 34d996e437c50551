// CUDA kernels of qallegro::allegro_tp and qallegro::allegro_tp_backward (issue 4): launch and
// indexing only; the arithmetic is csrc/include/qallegro/allegro_tp.h, the same the CPU runs.
//
// One thread per (node, channel) for the node stages (neighbour sum, A = weighted CG contraction
// of env, backward sums B) walking the node's edges through a CSR built with ATen sort/bincount,
// and one thread per (edge, channel) for the edge stages. Node-level scratch ([N, rows, mul],
// channel fastest so a warp reads consecutive channels) replaces the [E, mul, dim2] gather; every
// thread owns its outputs, so there are no atomics and the results are deterministic (the weight
// gradient is summed over per-node partials by ATen).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <cuda_runtime.h>
#include <torch/library.h>
// torch's CUDA headers exist only in CUDA builds of torch; a CPU torch (our CI) still compiles this
// file as a check, with the legacy default stream and cudaSetDevice in their place.
#if __has_include(<c10/cuda/impl/cuda_cmake_macros.h>)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define QALLEGRO_TORCH_HAS_CUDA 1
#endif

#include <algorithm>
#include <array>
#include <tuple>

#include "qallegro/allegro_tp.h"

namespace qallegro {
namespace {

constexpr int kThreads = 128;

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

void check_launch(const char* kernel) {
    const cudaError_t err = cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, "allegro_tp: launching ", kernel, " failed: ", cudaGetErrorString(err));
}

// Device copy of a tp::Plan: the five int32 arrays packed in one tensor.
struct DevicePlan {
    at::Tensor storage;
    tp::Plan plan;
};

DevicePlan device_plan(const at::Tensor& cg_indices, int64_t num_paths, int64_t dim1, int64_t dim2, int64_t dim_out,
                       const at::Device& device) {
    const at::Tensor idx = cg_indices.to(at::kCPU).contiguous();
    tp::PlanData host;
    const int64_t bad = tp::build_plan(idx.data_ptr<int64_t>(), idx.size(0), num_paths, dim1, dim2, dim_out, host);
    TORCH_CHECK(bad < 0, "allegro_tp: cg_indices row ", bad, " is outside (num_paths=", num_paths, ", dim1=", dim1,
                ", dim2=", dim2, ", dim_out=", dim_out, ")");
    const int64_t M = static_cast<int64_t>(host.pair_i.size()), K = static_cast<int64_t>(host.entry_pair.size());
    at::Tensor packed = at::empty({2 * M + 3 * K}, idx.options().dtype(at::kInt));
    int* p = packed.data_ptr<int>();
    for (const std::vector<int>* v :
         {&host.pair_i, &host.pair_k, &host.entry_pair, &host.entry_j, &host.entry_path}) {
        std::copy(v->begin(), v->end(), p);
        p += v->size();
    }
    DevicePlan out{packed.to(device), {}};
    const int* d = out.storage.data_ptr<int>();
    out.plan = {static_cast<int>(M), d, d + M, static_cast<int>(K), d + 2 * M, d + 2 * M + K, d + 2 * M + 2 * K};
    return out;
}

// Edges of node n are order[ptr[n] .. ptr[n+1]).
std::pair<at::Tensor, at::Tensor> make_csr(const at::Tensor& center, int64_t num_nodes) {
    const at::Tensor order = std::get<1>(at::sort(center, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    const at::Tensor counts = at::bincount(center, {}, num_nodes);
    const at::Tensor ptr = at::cat({at::zeros({1}, center.options()), at::cumsum(counts, 0)});
    return {order.contiguous(), ptr.contiguous()};
}

// s[n][j][u] (neighbour sum), env = node_norm * s, and (when A != nullptr) A[n][m][u].
template <typename T>
__global__ void node_stage_kernel(tp::Plan plan, const T* __restrict__ y, const int64_t* __restrict__ order,
                                  const int64_t* __restrict__ ptr, const T* __restrict__ nn, const T* __restrict__ cw,
                                  T* s, T* env, T* A, int64_t num_nodes, int mul, int dim2) {
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tid >= num_nodes * mul) return;
    const int64_t n = tid / mul;
    const int u = static_cast<int>(tid % mul);
    T* sn = s + n * dim2 * mul;
    T* en = env + n * dim2 * mul;
    for (int j = 0; j < dim2; ++j) sn[j * mul + u] = T(0);
    for (int64_t pos = ptr[n]; pos < ptr[n + 1]; ++pos) {
        const T* ye = y + (order[pos] * mul + u) * dim2;
        for (int j = 0; j < dim2; ++j) sn[j * mul + u] += ye[j];
    }
    for (int j = 0; j < dim2; ++j) en[j * mul + u] = nn[n] * sn[j * mul + u];
    if (A == nullptr) return;
    tp::node_matrix<T>(plan, tp::ChannelRows<const T>{cw, mul}, tp::ChannelRows<const T>{en, mul},
                       tp::ChannelRows<T>{A + n * plan.num_pairs * mul, mul}, u, u + 1);
}

template <typename T>
__global__ void edge_forward_kernel(tp::Plan plan, const T* __restrict__ x, const int64_t* __restrict__ center,
                                    const T* __restrict__ A, T* __restrict__ out, int64_t num_edges, int mul, int dim1,
                                    int dim_out) {
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tid >= num_edges * mul) return;
    const int64_t e = tid / mul;
    const int u = static_cast<int>(tid % mul);
    // views of the op's [E, mul, dim] tensors shifted so that channel u sits at index u
    tp::edge_forward<T>(plan, tp::ChannelRows<const T>{A + center[e] * plan.num_pairs * mul, mul},
                        tp::Strided<const T>{x + e * mul * dim1, 1, dim1},
                        tp::Strided<T>{out + e * mul * dim_out, 1, dim_out}, dim_out, u, u + 1);
}

template <typename T>
__global__ void edge_grad_x_kernel(tp::Plan plan, const T* __restrict__ g, const int64_t* __restrict__ center,
                                   const T* __restrict__ A, T* __restrict__ gx, int64_t num_edges, int mul, int dim1,
                                   int dim_out) {
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tid >= num_edges * mul) return;
    const int64_t e = tid / mul;
    const int u = static_cast<int>(tid % mul);
    const tp::Strided<const T> gv{g + e * mul * dim_out, 1, dim_out};
    tp::edge_backward<T>(plan, tp::ChannelRows<const T>{A + center[e] * plan.num_pairs * mul, mul}, gv, gv,
                         tp::Strided<T>{gx + e * mul * dim1, 1, dim1}, tp::ChannelRows<T>{nullptr, mul}, dim1, true,
                         false, u, u + 1);
}

// Per (node, channel): B over the node's edges, then G = dL/d env, the node_norm partial
// sum_j G s, and the weight-gradient partial of this node.
template <typename T>
__global__ void node_backward_kernel(tp::Plan plan, const T* __restrict__ g, const T* __restrict__ x,
                                     const int64_t* __restrict__ order, const int64_t* __restrict__ ptr,
                                     const T* __restrict__ coeff, const T* __restrict__ cw, const T* __restrict__ s,
                                     const T* __restrict__ env, T* B, T* G, T* gnn_part, T* gw_part,
                                     int64_t num_nodes, int mul, int dim1, int dim2, int dim_out, int num_paths,
                                     bool want_G, bool want_gw) {
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tid >= num_nodes * mul) return;
    const int64_t n = tid / mul;
    const int u = static_cast<int>(tid % mul);
    const tp::ChannelRows<T> bn{B + n * plan.num_pairs * mul, mul};
    for (int m = 0; m < plan.num_pairs; ++m) bn(m, u) = T(0);
    for (int64_t pos = ptr[n]; pos < ptr[n + 1]; ++pos) {
        const int64_t e = order[pos];
        tp::edge_backward<T>(plan, tp::ChannelRows<const T>{nullptr, mul}, tp::Strided<const T>{x + e * mul * dim1, 1, dim1},
                             tp::Strided<const T>{g + e * mul * dim_out, 1, dim_out}, tp::ChannelRows<T>{nullptr, mul},
                             bn, dim1, false, true, u, u + 1);
    }
    const tp::ChannelRows<T> Gn{G + n * dim2 * mul, mul};
    const tp::ChannelRows<T> gwn{gw_part + n * num_paths * mul, mul};
    if (want_gw)
        for (int p = 0; p < num_paths; ++p) gwn(p, u) = T(0);
    tp::node_backward<T>(plan, coeff, tp::ChannelRows<const T>{cw, mul},
                         tp::ChannelRows<const T>{env + n * dim2 * mul, mul}, tp::ChannelRows<const T>{bn.data, mul}, Gn,
                         gwn, dim2, want_G, want_gw, u, u + 1);
    if (want_G) {
        T acc = T(0);
        for (int j = 0; j < dim2; ++j) acc += Gn(j, u) * s[(n * dim2 + j) * mul + u];
        gnn_part[n * mul + u] = acc;
    }
}

template <typename T>
__global__ void edge_grad_env_kernel(const int64_t* __restrict__ center, const T* __restrict__ nn,
                                     const T* __restrict__ G, T* __restrict__ gy, int64_t num_edges, int mul, int dim2) {
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (tid >= num_edges * mul) return;
    const int64_t e = tid / mul;
    const int u = static_cast<int>(tid % mul);
    const int64_t n = center[e];
    for (int j = 0; j < dim2; ++j) gy[(e * mul + u) * dim2 + j] = nn[n] * G[(n * dim2 + j) * mul + u];
}

unsigned blocks_for(int64_t threads) { return static_cast<unsigned>((threads + kThreads - 1) / kThreads); }

void check_cuda_inputs(std::initializer_list<const at::Tensor*> tensors, const char* op) {
    for (const at::Tensor* t : tensors)
        TORCH_CHECK(t->is_cuda() && t->device() == (*tensors.begin())->device(), op,
                    ": all inputs must be on the same CUDA device");
}

// An out-of-range centre would index outside the node scratch: checked here (one sync).
void check_centers(const at::Tensor& center, int64_t num_nodes) {
    if (center.numel() == 0) return;
    const int64_t lo = center.min().item<int64_t>(), hi = center.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_nodes, "allegro_tp: edge_center has values outside [0, N=", num_nodes,
                ") (min ", lo, ", max ", hi, ")");
}

// cw[t][u] = c_t * w[u, p_t]
at::Tensor weighted_table(const at::Tensor& weights, const at::Tensor& cg_indices, const at::Tensor& cg_values) {
    return (cg_values.unsqueeze(1) * weights.t().index_select(0, cg_indices.select(1, 0))).contiguous();
}

at::Tensor allegro_tp_cuda(const at::Tensor& tensor_features, const at::Tensor& env_edge, const at::Tensor& edge_center,
                           const at::Tensor& node_norm, const at::Tensor& weights, const at::Tensor& cg_indices,
                           const at::Tensor& cg_values, int64_t dim_out) {
    check_cuda_inputs({&tensor_features, &env_edge, &edge_center, &node_norm, &weights, &cg_indices, &cg_values},
                      "allegro_tp_cuda");
    TORCH_CHECK(tensor_features.dim() == 3 && env_edge.dim() == 3 && weights.dim() == 2,
                "allegro_tp_cuda: tensor_features/env_edge must be [E, mul, dim], weights [mul, P]");
    const DeviceScope scope(tensor_features.device());
    const int64_t E = tensor_features.size(0), mul = tensor_features.size(1), dim1 = tensor_features.size(2);
    const int64_t dim2 = env_edge.size(2), N = node_norm.size(0), P = weights.size(1);
    at::Tensor out = at::zeros({E, mul, dim_out}, tensor_features.options());
    if (E == 0 || mul == 0) return out;
    const DevicePlan dp = device_plan(cg_indices, P, dim1, dim2, dim_out, tensor_features.device());
    const at::Tensor x = tensor_features.contiguous(), y = env_edge.contiguous(), c = edge_center.contiguous(),
                     nn = node_norm.contiguous(), cw = weighted_table(weights, cg_indices, cg_values);
    check_centers(c, N);
    const std::pair<at::Tensor, at::Tensor> csr = make_csr(c, N);
    const at::Tensor &order = csr.first, &ptr = csr.second;
    at::Tensor s = at::empty({N, dim2, mul}, x.options()), env = at::empty_like(s);
    at::Tensor A = at::empty({N, std::max<int64_t>(dp.plan.num_pairs, 1), mul}, x.options());
    const cudaStream_t stream = current_stream(tensor_features.device());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_tp_cuda", [&] {
        node_stage_kernel<scalar_t><<<blocks_for(N * mul), kThreads, 0, stream>>>(
            dp.plan, y.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
            nn.data_ptr<scalar_t>(), cw.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), env.data_ptr<scalar_t>(),
            A.data_ptr<scalar_t>(), N, static_cast<int>(mul), static_cast<int>(dim2));
        check_launch("node_stage_kernel");
        edge_forward_kernel<scalar_t><<<blocks_for(E * mul), kThreads, 0, stream>>>(
            dp.plan, x.data_ptr<scalar_t>(), c.data_ptr<int64_t>(), A.data_ptr<scalar_t>(),
            out.data_ptr<scalar_t>(), E, static_cast<int>(mul), static_cast<int>(dim1), static_cast<int>(dim_out));
        check_launch("edge_forward_kernel");
    });
    return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allegro_tp_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& tensor_features, const at::Tensor& env_edge,
    const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
    const at::Tensor& cg_indices, const at::Tensor& cg_values, std::array<bool, 4> want) {
    check_cuda_inputs(
        {&grad_out, &tensor_features, &env_edge, &edge_center, &node_norm, &weights, &cg_indices, &cg_values},
        "allegro_tp_backward_cuda");
    TORCH_CHECK(grad_out.dim() == 3 && tensor_features.dim() == 3 && env_edge.dim() == 3 && weights.dim() == 2,
                "allegro_tp_backward_cuda: grad_out/tensor_features/env_edge must be [E, mul, dim], weights [mul, P]");
    const DeviceScope scope(tensor_features.device());
    const int64_t E = tensor_features.size(0), mul = tensor_features.size(1), dim1 = tensor_features.size(2);
    const int64_t dim2 = env_edge.size(2), dim_out = grad_out.size(2), N = node_norm.size(0), P = weights.size(1);
    at::Tensor gx = at::zeros({E, mul, dim1}, tensor_features.options());
    at::Tensor gy = at::zeros({E, mul, dim2}, env_edge.options());
    at::Tensor gnn = at::zeros({N}, node_norm.options());
    at::Tensor gw = at::zeros({mul, P}, weights.options());
    const bool want_G = want[1] || want[2], want_B = want_G || want[3];
    if (E == 0 || mul == 0 || !(want[0] || want_B)) return {gx, gy, gnn, gw};
    const DevicePlan dp = device_plan(cg_indices, P, dim1, dim2, dim_out, tensor_features.device());
    const at::Tensor g = grad_out.contiguous(), x = tensor_features.contiguous(), y = env_edge.contiguous(),
                     c = edge_center.contiguous(), nn = node_norm.contiguous(), v = cg_values.contiguous(),
                     cw = weighted_table(weights, cg_indices, v);
    check_centers(c, N);
    const std::pair<at::Tensor, at::Tensor> csr = make_csr(c, N);
    const at::Tensor &order = csr.first, &ptr = csr.second;
    const int64_t M1 = std::max<int64_t>(dp.plan.num_pairs, 1);
    at::Tensor s = at::empty({N, dim2, mul}, x.options()), env = at::empty_like(s), G = at::empty_like(s);
    at::Tensor A = want[0] ? at::empty({N, M1, mul}, x.options()) : at::Tensor();
    at::Tensor B = want_B ? at::empty({N, M1, mul}, x.options()) : at::Tensor();
    at::Tensor gnn_part = at::zeros({N, mul}, x.options());
    at::Tensor gw_part = at::zeros({N, std::max<int64_t>(P, 1), mul}, x.options());
    const cudaStream_t stream = current_stream(tensor_features.device());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_tp_backward_cuda", [&] {
        node_stage_kernel<scalar_t><<<blocks_for(N * mul), kThreads, 0, stream>>>(
            dp.plan, y.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
            nn.data_ptr<scalar_t>(), cw.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), env.data_ptr<scalar_t>(),
            want[0] ? A.data_ptr<scalar_t>() : nullptr, N, static_cast<int>(mul), static_cast<int>(dim2));
        check_launch("node_stage_kernel");
        if (want[0]) {
            edge_grad_x_kernel<scalar_t><<<blocks_for(E * mul), kThreads, 0, stream>>>(
                dp.plan, g.data_ptr<scalar_t>(), c.data_ptr<int64_t>(), A.data_ptr<scalar_t>(),
                gx.data_ptr<scalar_t>(), E, static_cast<int>(mul), static_cast<int>(dim1), static_cast<int>(dim_out));
            check_launch("edge_grad_x_kernel");
        }
        if (want_B) {
            node_backward_kernel<scalar_t><<<blocks_for(N * mul), kThreads, 0, stream>>>(
                dp.plan, g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), order.data_ptr<int64_t>(),
                ptr.data_ptr<int64_t>(), v.data_ptr<scalar_t>(), cw.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                env.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), G.data_ptr<scalar_t>(),
                gnn_part.data_ptr<scalar_t>(), gw_part.data_ptr<scalar_t>(), N, static_cast<int>(mul),
                static_cast<int>(dim1), static_cast<int>(dim2), static_cast<int>(dim_out), static_cast<int>(P), want_G,
                want[3]);
            check_launch("node_backward_kernel");
        }
        if (want[1]) {
            edge_grad_env_kernel<scalar_t><<<blocks_for(E * mul), kThreads, 0, stream>>>(
                c.data_ptr<int64_t>(), nn.data_ptr<scalar_t>(), G.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), E,
                static_cast<int>(mul), static_cast<int>(dim2));
            check_launch("edge_grad_env_kernel");
        }
    });
    if (want[2]) gnn = gnn_part.sum(1);
    if (want[3] && P > 0) gw = gw_part.sum(0).t().contiguous();
    return {gx, gy, gnn, gw};
}

}  // namespace
}  // namespace qallegro

TORCH_LIBRARY_IMPL(qallegro, CUDA, m) {
    m.impl("allegro_tp", &qallegro::allegro_tp_cuda);
    m.impl("allegro_tp_backward", &qallegro::allegro_tp_backward_cuda);
}
