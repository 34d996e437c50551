#pragma once
// Host side of the CUDA allegro_tp and allegro_tp_backward: checks, the plan copied to the device,
// the CSR of edges by centre (ATen sort/bincount), scratch allocation, the kernel launches and the
// final ATen reductions. Templated on the launcher, so that csrc/cuda/allegro_tp.cu runs it with
// `<<<>>>` on CUDA tensors and csrc/cpu/cuda_emulated.cpp runs the very same code, kernel bodies
// included, on CPU tensors with the sequential launcher (for the CPU test suite).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

#include "qallegro/allegro_tp_kernels.h"

namespace qallegro {
namespace tp_device {

// Device copy of a tp::Plan: the five int32 arrays packed in one tensor.
struct DevicePlan {
    at::Tensor storage;
    tp::Plan plan;
};

inline DevicePlan device_plan(const at::Tensor& cg_indices, int64_t num_paths, int64_t dim1, int64_t dim2,
                              int64_t dim_out, const at::Device& device) {
    const at::Tensor idx = cg_indices.to(at::kCPU).contiguous();
    tp::PlanData host;
    const int64_t bad = tp::build_plan(idx.data_ptr<int64_t>(), idx.size(0), num_paths, dim1, dim2, dim_out, host);
    TORCH_CHECK(bad < 0, "allegro_tp: cg_indices row ", bad, " is outside (num_paths=", num_paths, ", dim1=", dim1,
                ", dim2=", dim2, ", dim_out=", dim_out, ")");
    const int64_t M = static_cast<int64_t>(host.pair_i.size()), K = static_cast<int64_t>(host.entry_pair.size());
    at::Tensor packed = at::empty({2 * M + 3 * K}, idx.options().dtype(at::kInt));
    int* p = packed.data_ptr<int>();
    for (const std::vector<int>* v : {&host.pair_i, &host.pair_k, &host.entry_pair, &host.entry_j, &host.entry_path}) {
        std::copy(v->begin(), v->end(), p);
        p += v->size();
    }
    DevicePlan out{packed.to(device), {}};
    const int* d = out.storage.data_ptr<int>();
    out.plan = {static_cast<int>(M), d, d + M, static_cast<int>(K), d + 2 * M, d + 2 * M + K, d + 2 * M + 2 * K};
    return out;
}

// Edges of node n are order[ptr[n] .. ptr[n+1]) (a stable sort keeps each node's edges in order).
inline std::pair<at::Tensor, at::Tensor> make_csr(const at::Tensor& center, int64_t num_nodes) {
    const at::Tensor order = std::get<1>(at::sort(center, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    const at::Tensor counts = at::bincount(center, {}, num_nodes);
    const at::Tensor ptr = at::cat({at::zeros({1}, center.options()), at::cumsum(counts, 0)});
    return {order.contiguous(), ptr.contiguous()};
}

inline void check_inputs(std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors,
                         const at::Device& device, const char* op) {
    for (const auto& [name, t] : tensors)
        TORCH_CHECK(t->device() == device, op, ": ", name, " is on ", t->device(), ", expected ", device);
}

// An out-of-range centre would index outside the node scratch: checked here (one sync).
inline void check_centers(const at::Tensor& center, int64_t num_nodes) {
    if (center.numel() == 0) return;
    const int64_t lo = center.min().item<int64_t>(), hi = center.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_nodes, "allegro_tp: edge_center has values outside [0, N=", num_nodes,
                ") (min ", lo, ", max ", hi, ")");
}

// cw[t][u] = c_t * w[u, p_t] (qallegro/allegro_tp.h, as on the CPU)
template <typename T, class Launch>
at::Tensor weighted_table(const Launch& launch, const tp::Plan& plan, const at::Tensor& coeff, const at::Tensor& w) {
    const int64_t mul = w.size(0);
    at::Tensor cw = at::empty({plan.num_entries, mul}, w.options());
    launch("weighted_table", plan.num_entries * mul,
           tp::WeightedTable<T>{plan, coeff.data_ptr<T>(), w.data_ptr<T>(), static_cast<int>(mul),
                                static_cast<int>(w.size(1)), cw.data_ptr<T>()});
    return cw;
}

template <class Launch>
at::Tensor allegro_tp(const Launch& launch, const at::Tensor& tensor_features, const at::Tensor& env_edge,
                      const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
                      const at::Tensor& cg_indices, const at::Tensor& cg_values, int64_t dim_out) {
    const at::Device device = tensor_features.device();
    check_inputs({{"env_edge", &env_edge}, {"edge_center", &edge_center}, {"node_norm", &node_norm},
                  {"weights", &weights}, {"cg_indices", &cg_indices}, {"cg_values", &cg_values}},
                 device, "allegro_tp");
    TORCH_CHECK(tensor_features.dim() == 3 && env_edge.dim() == 3 && weights.dim() == 2,
                "allegro_tp: tensor_features/env_edge must be [E, mul, dim], weights [mul, P]");
    const int64_t E = tensor_features.size(0), mul = tensor_features.size(1), dim1 = tensor_features.size(2);
    const int64_t dim2 = env_edge.size(2), N = node_norm.size(0), P = weights.size(1);
    at::Tensor out = at::zeros({E, mul, dim_out}, tensor_features.options());
    if (E == 0 || mul == 0) return out;
    const DevicePlan dp = device_plan(cg_indices, P, dim1, dim2, dim_out, device);
    const at::Tensor x = tensor_features.contiguous(), y = env_edge.contiguous(), c = edge_center.contiguous(),
                     nn = node_norm.contiguous(), w = weights.contiguous(), v = cg_values.contiguous();
    check_centers(c, N);
    const std::pair<at::Tensor, at::Tensor> csr = make_csr(c, N);
    const at::Tensor &order = csr.first, &ptr = csr.second;
    at::Tensor s = at::empty({N, dim2, mul}, x.options()), env = at::empty_like(s);
    at::Tensor A = at::empty({N, std::max<int64_t>(dp.plan.num_pairs, 1), mul}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_tp_device", [&] {
        using T = scalar_t;
        const at::Tensor cw = weighted_table<T>(launch, dp.plan, v, w);
        launch("node_stage", N * mul,
               tp::NodeStage<T>{dp.plan, y.data_ptr<T>(), order.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
                                nn.data_ptr<T>(), cw.data_ptr<T>(), s.data_ptr<T>(), env.data_ptr<T>(), A.data_ptr<T>(),
                                N, static_cast<int>(mul), static_cast<int>(dim2)});
        launch("edge_forward", E * mul,
               tp::EdgeForward<T>{dp.plan, x.data_ptr<T>(), c.data_ptr<int64_t>(), A.data_ptr<T>(), out.data_ptr<T>(),
                                  E, static_cast<int>(mul), static_cast<int>(dim1), static_cast<int>(dim_out)});
    });
    return out;
}

template <class Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allegro_tp_backward(
    const Launch& launch, const at::Tensor& grad_out, const at::Tensor& tensor_features, const at::Tensor& env_edge,
    const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
    const at::Tensor& cg_indices, const at::Tensor& cg_values, std::array<bool, 4> want) {
    const at::Device device = tensor_features.device();
    check_inputs({{"grad_out", &grad_out}, {"env_edge", &env_edge}, {"edge_center", &edge_center},
                  {"node_norm", &node_norm}, {"weights", &weights}, {"cg_indices", &cg_indices},
                  {"cg_values", &cg_values}},
                 device, "allegro_tp_backward");
    TORCH_CHECK(grad_out.dim() == 3 && tensor_features.dim() == 3 && env_edge.dim() == 3 && weights.dim() == 2,
                "allegro_tp_backward: grad_out/tensor_features/env_edge must be [E, mul, dim], weights [mul, P]");
    const int64_t E = tensor_features.size(0), mul = tensor_features.size(1), dim1 = tensor_features.size(2);
    const int64_t dim2 = env_edge.size(2), dim_out = grad_out.size(2), N = node_norm.size(0), P = weights.size(1);
    at::Tensor gx = at::zeros({E, mul, dim1}, tensor_features.options());
    at::Tensor gy = at::zeros({E, mul, dim2}, env_edge.options());
    at::Tensor gnn = at::zeros({N}, node_norm.options());
    at::Tensor gw = at::zeros({mul, P}, weights.options());
    const bool want_G = want[1] || want[2], want_B = want_G || want[3];
    if (E == 0 || mul == 0 || !(want[0] || want_B)) return {gx, gy, gnn, gw};
    const DevicePlan dp = device_plan(cg_indices, P, dim1, dim2, dim_out, device);
    const at::Tensor g = grad_out.contiguous(), x = tensor_features.contiguous(), y = env_edge.contiguous(),
                     c = edge_center.contiguous(), nn = node_norm.contiguous(), w = weights.contiguous(),
                     v = cg_values.contiguous();
    check_centers(c, N);
    const std::pair<at::Tensor, at::Tensor> csr = make_csr(c, N);
    const at::Tensor &order = csr.first, &ptr = csr.second;
    const int64_t M1 = std::max<int64_t>(dp.plan.num_pairs, 1);
    at::Tensor s = at::empty({N, dim2, mul}, x.options()), env = at::empty_like(s), G = at::empty_like(s);
    at::Tensor A = want[0] ? at::empty({N, M1, mul}, x.options()) : at::Tensor();
    at::Tensor B = want_B ? at::empty({N, M1, mul}, x.options()) : at::Tensor();
    at::Tensor gnn_part = at::zeros({N, mul}, x.options());
    at::Tensor gw_part = at::zeros({N, std::max<int64_t>(P, 1), mul}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_tp_backward_device", [&] {
        using T = scalar_t;
        const at::Tensor cw = weighted_table<T>(launch, dp.plan, v, w);
        launch("node_stage", N * mul,
               tp::NodeStage<T>{dp.plan, y.data_ptr<T>(), order.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
                                nn.data_ptr<T>(), cw.data_ptr<T>(), s.data_ptr<T>(), env.data_ptr<T>(),
                                want[0] ? A.data_ptr<T>() : nullptr, N, static_cast<int>(mul), static_cast<int>(dim2)});
        if (want[0]) {
            launch("edge_grad_x", E * mul,
                   tp::EdgeGradX<T>{dp.plan, g.data_ptr<T>(), c.data_ptr<int64_t>(), A.data_ptr<T>(), gx.data_ptr<T>(),
                                    E, static_cast<int>(mul), static_cast<int>(dim1), static_cast<int>(dim_out)});
        }
        if (want_B) {
            launch("node_backward", N * mul,
                   tp::NodeBackward<T>{dp.plan,
                                       g.data_ptr<T>(),
                                       x.data_ptr<T>(),
                                       order.data_ptr<int64_t>(),
                                       ptr.data_ptr<int64_t>(),
                                       v.data_ptr<T>(),
                                       cw.data_ptr<T>(),
                                       s.data_ptr<T>(),
                                       env.data_ptr<T>(),
                                       B.data_ptr<T>(),
                                       G.data_ptr<T>(),
                                       gnn_part.data_ptr<T>(),
                                       gw_part.data_ptr<T>(),
                                       N,
                                       static_cast<int>(mul),
                                       static_cast<int>(dim1),
                                       static_cast<int>(dim2),
                                       static_cast<int>(dim_out),
                                       static_cast<int>(P),
                                       want_G,
                                       want[3]});
        }
        if (want[1]) {
            launch("edge_grad_env", E * mul,
                   tp::EdgeGradEnv<T>{c.data_ptr<int64_t>(), nn.data_ptr<T>(), G.data_ptr<T>(), gy.data_ptr<T>(), E,
                                      static_cast<int>(mul), static_cast<int>(dim2)});
        }
    });
    if (want[2]) gnn = gnn_part.sum(1);
    if (want[3] && P > 0) gw = gw_part.sum(0).t().contiguous();
    return {gx, gy, gnn, gw};
}

}  // namespace tp_device
}  // namespace qallegro
