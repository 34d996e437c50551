// CPU kernels of qallegro::allegro_tp and qallegro::allegro_tp_backward (issue 4).
//
// Edges are processed grouped by centre atom (a CSR built here by counting sort; the input order
// is not assumed), one node per step of at::parallel_for: the node's environment embedding and its
// contraction with the weighted CG table (A, see csrc/include/qallegro/allegro_tp.h) live in small
// per-thread buffers in [component][channel] layout, so the channel loops of the shared header
// vectorise and nothing of size [E, mul, dim2] is ever allocated. Per-node sums (env, B) need no
// atomics because a node is owned by one thread; the weight gradient is summed per fixed chunk of
// nodes and reduced in chunk order, so results do not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <tuple>
#include <vector>

#include "qallegro/allegro_tp.h"

namespace qallegro {
namespace {

using HostPlan = tp::PlanData;

HostPlan make_plan(const at::Tensor& cg_indices, int64_t num_paths, int64_t dim1, int64_t dim2, int64_t dim_out) {
    const at::Tensor idx = cg_indices.contiguous();
    HostPlan plan;
    const int64_t bad = tp::build_plan(idx.data_ptr<int64_t>(), idx.size(0), num_paths, dim1, dim2, dim_out, plan);
    TORCH_CHECK(bad < 0, "allegro_tp: cg_indices row ", bad, " = ", idx[bad < 0 ? 0 : bad],
                " is outside (num_paths=", num_paths, ", dim1=", dim1, ", dim2=", dim2, ", dim_out=", dim_out, ")");
    return plan;
}

// Edges grouped by centre: edges of node n are order[ptr[n] .. ptr[n+1]) (order empty = identity,
// when the input is already grouped, as the neighbour list makes it).
struct Csr {
    std::vector<int64_t> ptr, order;
    int64_t edge(int64_t pos) const { return order.empty() ? pos : order[pos]; }
};

Csr make_csr(const int64_t* center, int64_t num_edges, int64_t num_nodes) {
    Csr csr;
    csr.ptr.assign(num_nodes + 1, 0);
    bool sorted = true;
    for (int64_t e = 0; e < num_edges; ++e) {
        const int64_t n = center[e];
        TORCH_CHECK(n >= 0 && n < num_nodes, "allegro_tp: edge_center[", e, "] = ", n, " is outside [0, N=", num_nodes,
                    ") (N = node_norm.size(0))");
        sorted = sorted && (e == 0 || center[e - 1] <= n);
        ++csr.ptr[n + 1];
    }
    for (int64_t n = 0; n < num_nodes; ++n) csr.ptr[n + 1] += csr.ptr[n];
    if (!sorted) {
        csr.order.resize(num_edges);
        std::vector<int64_t> fill(csr.ptr.begin(), csr.ptr.end() - 1);
        for (int64_t e = 0; e < num_edges; ++e) csr.order[fill[center[e]]++] = e;
    }
    return csr;
}

// cw[t][u] = c_t * w[u, p_t]: the table with each channel's weights folded in, [K][mul].
template <typename T>
std::vector<T> weighted_table(const tp::Plan& plan, const T* coeff, const T* w, int64_t mul, int64_t num_paths) {
    std::vector<T> cw(static_cast<size_t>(plan.num_entries * mul));
    for (int t = 0; t < plan.num_entries; ++t)
        tp::weighted_table_row(plan, coeff, w, static_cast<int>(num_paths), t, tp::ChannelRows<T>{cw.data(), mul}, 0,
                               static_cast<int>(mul));
    return cw;
}

// s[j][u] = sum of the node's env_edge rows ([mul][dim2] each, transposed on the fly).
template <typename T>
void node_sum(const Csr& csr, int64_t n, const T* y, int mul, int64_t dim2, T* s) {
    tp::neighbor_sum(y, csr.order.empty() ? nullptr : csr.order.data(), csr.ptr[n], csr.ptr[n + 1], mul, dim2,
                     tp::ChannelRows<T>{s, mul}, 0, mul);
}

// [mul][dim] <-> [dim][mul] copies of one edge's rows (MUL > 0: compile-time channel count).
template <typename T, int MUL>
void transpose_in(const T* src, int64_t mul, int64_t dim, T* dst) {
    const int64_t m = MUL > 0 ? MUL : mul;
    for (int64_t u = 0; u < m; ++u)
        for (int64_t i = 0; i < dim; ++i) dst[i * m + u] = src[u * dim + i];
}

template <typename T, int MUL>
void transpose_out(const T* src, int64_t mul, int64_t dim, T* dst) {
    const int64_t m = MUL > 0 ? MUL : mul;
    for (int64_t u = 0; u < m; ++u)
        for (int64_t i = 0; i < dim; ++i) dst[u * dim + i] = src[i * m + u];
}

struct Sizes {
    int64_t num_edges, num_nodes, mul, dim1, dim2, dim_out, num_paths;
};

// One forward call: run<MUL>(begin, end) processes nodes [begin, end).
template <typename T>
struct ForwardJob {
    Sizes z;
    tp::Plan plan;
    const Csr* csr;
    const T *x, *y, *nn, *cw;
    T* out;

    template <int MUL>
    void run(int64_t begin, int64_t end) const {
        const int mul = MUL > 0 ? MUL : static_cast<int>(z.mul);
        std::vector<T> env(z.dim2 * mul), A(plan.num_pairs * mul), xt(z.dim1 * mul), ot(z.dim_out * mul);
        const tp::ChannelRows<const T> cwv{cw, mul}, xv{xt.data(), mul}, avc{A.data(), mul};
        const tp::ChannelRows<T> ev{env.data(), mul}, av{A.data(), mul}, ov{ot.data(), mul};
        for (int64_t n = begin; n < end; ++n) {
            if (csr->ptr[n] == csr->ptr[n + 1]) continue;
            node_sum(*csr, n, y, mul, z.dim2, env.data());
            tp::scale_rows(nn[n], ev, ev, static_cast<int>(z.dim2), 0, mul);
            tp::node_matrix<T, MUL>(plan, cwv, ev, av, 0, mul);
            for (int64_t pos = csr->ptr[n]; pos < csr->ptr[n + 1]; ++pos) {
                const int64_t e = csr->edge(pos);
                transpose_in<T, MUL>(x + e * mul * z.dim1, mul, z.dim1, xt.data());
                tp::edge_forward<T, MUL>(plan, avc, xv, ov, static_cast<int>(z.dim_out), 0, mul);
                transpose_out<T, MUL>(ot.data(), mul, z.dim_out, out + e * mul * z.dim_out);
            }
        }
    }
};

// One backward call: run<MUL>(begin, end) processes node chunks [begin, end) (chunk c owns the
// nodes [c N / C, (c+1) N / C) and its weight-gradient partial).
template <typename T>
struct BackwardJob {
    Sizes z;
    tp::Plan plan;
    const Csr* csr;
    const T *g, *x, *y, *nn, *cw, *coeff;
    std::array<bool, 4> want;
    int64_t num_chunks;
    T *gx, *gy, *gnn, *gw_chunk;

    template <int MUL>
    void run(int64_t cbegin, int64_t cend) const {
        const int mul = MUL > 0 ? MUL : static_cast<int>(z.mul);
        const bool want_G = want[1] || want[2], want_B = want_G || want[3];
        std::vector<T> s(z.dim2 * mul), env(z.dim2 * mul), A(plan.num_pairs * mul), B(plan.num_pairs * mul),
            G(z.dim2 * mul), xt(z.dim1 * mul), gt(z.dim_out * mul), gxt(z.dim1 * mul);
        const tp::ChannelRows<const T> cwv{cw, mul}, xv{xt.data(), mul}, gv{gt.data(), mul}, avc{A.data(), mul},
            evc{env.data(), mul}, bvc{B.data(), mul};
        const tp::ChannelRows<T> av{A.data(), mul}, bv{B.data(), mul}, Gv{G.data(), mul}, gxv{gxt.data(), mul},
            sv{s.data(), mul}, ev{env.data(), mul};
        const int dim2 = static_cast<int>(z.dim2);
        for (int64_t c = cbegin; c < cend; ++c) {
            const tp::ChannelRows<T> gwv{want[3] ? gw_chunk + c * z.num_paths * mul : nullptr, mul};
            for (int64_t n = c * z.num_nodes / num_chunks; n < (c + 1) * z.num_nodes / num_chunks; ++n) {
                if (csr->ptr[n] == csr->ptr[n + 1]) continue;
                node_sum(*csr, n, y, mul, z.dim2, s.data());
                tp::scale_rows(nn[n], sv, ev, dim2, 0, mul);
                if (want[0]) tp::node_matrix<T, MUL>(plan, cwv, evc, av, 0, mul);
                if (want_B) std::fill(B.begin(), B.end(), T(0));
                for (int64_t pos = csr->ptr[n]; pos < csr->ptr[n + 1]; ++pos) {
                    const int64_t e = csr->edge(pos);
                    transpose_in<T, MUL>(g + e * mul * z.dim_out, mul, z.dim_out, gt.data());
                    if (want_B) transpose_in<T, MUL>(x + e * mul * z.dim1, mul, z.dim1, xt.data());
                    tp::edge_backward<T, MUL>(plan, avc, xv, gv, gxv, bv, static_cast<int>(z.dim1), want[0], want_B, 0,
                                              mul);
                    if (want[0]) transpose_out<T, MUL>(gxt.data(), mul, z.dim1, gx + e * mul * z.dim1);
                }
                if (!want_B) continue;
                tp::node_backward<T, MUL>(plan, coeff, cwv, evc, bvc, Gv, gwv, static_cast<int>(z.dim2), want_G, want[3],
                                          0, mul);
                if (want[2]) gnn[n] = tp::channel_dot<T>(Gv, sv, dim2, 0, mul);  // d node_norm[n] = <G, s>
                if (want[1]) {  // d env_edge[e] = node_norm[n] * G, the same for every edge of n
                    tp::scale_rows(nn[n], Gv, Gv, dim2, 0, mul);
                    for (int64_t pos = csr->ptr[n]; pos < csr->ptr[n + 1]; ++pos)
                        transpose_out<T, MUL>(G.data(), mul, z.dim2, gy + csr->edge(pos) * mul * z.dim2);
                }
            }
        }
    }
};

// Instruction-set dispatch: the jobs are compiled twice, for the baseline x86-64 target and (with
// everything they call inlined, `flatten`) for AVX2+FMA, chosen at run time (QALLEGRO_CPU_BASELINE=1
// forces the baseline, for comparisons). Other compilers/targets get the baseline only. The jobs
// also take a compile-time channel count, but fixed-count instantiations (8, 16, ...) measured up
// to 2x slower in the backward with GCC 12, so only the runtime count (0) is instantiated.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QALLEGRO_HAVE_AVX2_CLONE 1
template <class Job, int MUL>
__attribute__((target("avx2,fma"), flatten)) void run_avx2(const Job& job, int64_t begin, int64_t end) {
    job.template run<MUL>(begin, end);
}
#endif

template <class Job, int MUL>
void run_baseline(const Job& job, int64_t begin, int64_t end) {
    job.template run<MUL>(begin, end);
}

template <class Job>
void (*pick_kernel())(const Job&, int64_t, int64_t) {
#ifdef QALLEGRO_HAVE_AVX2_CLONE
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                             std::getenv("QALLEGRO_CPU_BASELINE") == nullptr;
    if (avx2) return &run_avx2<Job, 0>;
#endif
    return &run_baseline<Job, 0>;
}

template <typename T>
void forward_impl(const Sizes& z, const HostPlan& hp, const Csr& csr, const T* x, const T* y, const T* nn, const T* w,
                  const T* coeff, T* out) {
    const tp::Plan plan = hp.view();
    const std::vector<T> cw = weighted_table(plan, coeff, w, z.mul, z.num_paths);
    const ForwardJob<T> job{z, plan, &csr, x, y, nn, cw.data(), out};
    const auto kernel = pick_kernel<ForwardJob<T>>();
    at::parallel_for(0, z.num_nodes, 16, [&](int64_t begin, int64_t end) { kernel(job, begin, end); });
}

template <typename T>
void backward_impl(const Sizes& z, const HostPlan& hp, const Csr& csr, const T* g, const T* x, const T* y, const T* nn,
                   const T* w, const T* coeff, std::array<bool, 4> want, T* gx, T* gy, T* gnn, T* gw) {
    const tp::Plan plan = hp.view();
    const std::vector<T> cw = weighted_table(plan, coeff, w, z.mul, z.num_paths);
    // fixed chunks of nodes (not threads): the weight-gradient sum order is reproducible
    const int64_t num_chunks = std::min<int64_t>(z.num_nodes, 64);
    std::vector<T> gw_chunk(want[3] ? num_chunks * z.num_paths * z.mul : 0, T(0));
    const BackwardJob<T> job{z, plan, &csr, g, x, y, nn, cw.data(), coeff, want, num_chunks, gx, gy, gnn,
                             gw_chunk.data()};
    const auto kernel = pick_kernel<BackwardJob<T>>();
    at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) { kernel(job, begin, end); });
    if (want[3]) {
        for (int64_t c = 0; c < num_chunks; ++c)
            for (int64_t p = 0; p < z.num_paths; ++p)
                for (int64_t u = 0; u < z.mul; ++u)
                    gw[u * z.num_paths + p] += gw_chunk[(c * z.num_paths + p) * z.mul + u];
    }
}

Sizes check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& center, const at::Tensor& nn,
                   const at::Tensor& w, const at::Tensor& cg_indices, const at::Tensor& cg_values, int64_t dim_out) {
    TORCH_CHECK(x.dim() == 3, "allegro_tp: tensor_features must be [E, mul, dim1], got ", x.sizes());
    const int64_t E = x.size(0), mul = x.size(1);
    TORCH_CHECK(y.dim() == 3 && y.size(0) == E && y.size(1) == mul, "allegro_tp: env_edge must be [E=", E,
                ", mul=", mul, ", dim2], got ", y.sizes());
    TORCH_CHECK(center.dim() == 1 && center.size(0) == E && center.scalar_type() == at::kLong,
                "allegro_tp: edge_center must be [E=", E, "] int64, got ", center.sizes(), " ", center.scalar_type());
    TORCH_CHECK(nn.dim() == 1, "allegro_tp: node_norm must be [N], got ", nn.sizes());
    TORCH_CHECK(w.dim() == 2 && w.size(0) == mul, "allegro_tp: weights must be [mul=", mul, ", num_paths], got ",
                w.sizes());
    TORCH_CHECK(cg_indices.dim() == 2 && cg_indices.size(1) == 4 && cg_indices.scalar_type() == at::kLong,
                "allegro_tp: cg_indices must be [K, 4] int64, got ", cg_indices.sizes(), " ", cg_indices.scalar_type());
    TORCH_CHECK(cg_values.dim() == 1 && cg_values.size(0) == cg_indices.size(0), "allegro_tp: cg_values must be [K=",
                cg_indices.size(0), "], got ", cg_values.sizes());
    TORCH_CHECK(dim_out >= 0, "allegro_tp: dim_out must be >= 0, got ", dim_out);
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                "allegro_tp: tensor_features must be float32 or float64, got ", x.scalar_type());
    const std::pair<const char*, const at::Tensor*> same[] = {
        {"env_edge", &y}, {"node_norm", &nn}, {"weights", &w}, {"cg_values", &cg_values}};
    for (const auto& [name, t] : same)
        TORCH_CHECK(t->scalar_type() == x.scalar_type(), "allegro_tp: ", name, " is ", t->scalar_type(),
                    " but tensor_features is ", x.scalar_type());
    return {E, nn.size(0), mul, x.size(2), y.size(2), dim_out, w.size(1)};
}

at::Tensor allegro_tp_cpu(const at::Tensor& tensor_features, const at::Tensor& env_edge, const at::Tensor& edge_center,
                          const at::Tensor& node_norm, const at::Tensor& weights, const at::Tensor& cg_indices,
                          const at::Tensor& cg_values, int64_t dim_out) {
    const Sizes z =
        check_inputs(tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out);
    for (const at::Tensor* t : {&tensor_features, &env_edge, &edge_center, &node_norm, &weights, &cg_indices, &cg_values})
        TORCH_CHECK(t->device().is_cpu(), "allegro_tp_cpu: all inputs must be on the CPU");
    // every edge's row is written (its centre has at least this edge)
    at::Tensor out = at::empty({z.num_edges, z.mul, dim_out}, tensor_features.options());
    if (z.num_edges == 0 || z.mul == 0) return out;
    const at::Tensor x = tensor_features.contiguous(), y = env_edge.contiguous(), c = edge_center.contiguous(),
                     nn = node_norm.contiguous(), w = weights.contiguous(), v = cg_values.contiguous();
    const HostPlan plan = make_plan(cg_indices, z.num_paths, z.dim1, z.dim2, dim_out);
    const Csr csr = make_csr(c.data_ptr<int64_t>(), z.num_edges, z.num_nodes);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_tp_cpu", [&] {
        forward_impl<scalar_t>(z, plan, csr, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), nn.data_ptr<scalar_t>(),
                               w.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    });
    return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allegro_tp_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& tensor_features, const at::Tensor& env_edge,
    const at::Tensor& edge_center, const at::Tensor& node_norm, const at::Tensor& weights,
    const at::Tensor& cg_indices, const at::Tensor& cg_values, std::array<bool, 4> output_mask) {
    TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(0) == tensor_features.size(0) &&
                    grad_out.size(1) == tensor_features.size(1),
                "allegro_tp_backward: grad_out must be [E, mul, dim_out], got ", grad_out.sizes());
    const int64_t dim_out = grad_out.size(2);
    const Sizes z =
        check_inputs(tensor_features, env_edge, edge_center, node_norm, weights, cg_indices, cg_values, dim_out);
    TORCH_CHECK(grad_out.scalar_type() == tensor_features.scalar_type(), "allegro_tp_backward: grad_out is ",
                grad_out.scalar_type(), " but tensor_features is ", tensor_features.scalar_type());
    for (const at::Tensor* t :
         {&grad_out, &tensor_features, &env_edge, &edge_center, &node_norm, &weights, &cg_indices, &cg_values})
        TORCH_CHECK(t->device().is_cpu(), "allegro_tp_backward_cpu: all inputs must be on the CPU");
    // gradients the kernel writes for every edge need no zero fill; masked-out ones stay zero
    const auto alloc = [](const at::Tensor& like, bool written) {
        return written ? at::empty(like.sizes(), like.options()) : at::zeros(like.sizes(), like.options());
    };
    at::Tensor gx = alloc(tensor_features, output_mask[0]);
    at::Tensor gy = alloc(env_edge, output_mask[1]);
    at::Tensor gnn = at::zeros_like(node_norm, at::MemoryFormat::Contiguous);
    at::Tensor gw = at::zeros({z.mul, z.num_paths}, weights.options());
    if (z.num_edges == 0 || z.mul == 0) return {gx, gy, gnn, gw};
    const at::Tensor g = grad_out.contiguous(), x = tensor_features.contiguous(), y = env_edge.contiguous(),
                     c = edge_center.contiguous(), nn = node_norm.contiguous(), w = weights.contiguous(),
                     v = cg_values.contiguous();
    const HostPlan plan = make_plan(cg_indices, z.num_paths, z.dim1, z.dim2, dim_out);
    const Csr csr = make_csr(c.data_ptr<int64_t>(), z.num_edges, z.num_nodes);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_tp_backward_cpu", [&] {
        backward_impl<scalar_t>(z, plan, csr, g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                nn.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), output_mask,
                                gx.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gnn.data_ptr<scalar_t>(),
                                gw.data_ptr<scalar_t>());
    });
    return {gx, gy, gnn, gw};
}

}  // namespace
}  // namespace qallegro

TORCH_LIBRARY_IMPL(qallegro, CPU, m) {
    m.impl("allegro_tp", &qallegro::allegro_tp_cpu);
    m.impl("allegro_tp_backward", &qallegro::allegro_tp_backward_cpu);
}
