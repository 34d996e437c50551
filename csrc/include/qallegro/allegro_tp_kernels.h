#pragma once
/// Kernel bodies of the CUDA allegro_tp and allegro_tp_backward (csrc/cuda/allegro_tp.cu), as
/// functors of the thread index over plain pointers (see qallegro/launch.h): nvcc launches them on
/// the GPU, and the CPU test build (`qallegro::_allegro_tp_cuda_emulated`, ...) runs the same bodies
/// with the sequential launcher. The arithmetic is qallegro/allegro_tp.h, the same the CPU kernel runs.
///
/// One thread per (node, channel) for the node stages, which walk the node's edges through a CSR
/// (edges of node n are order[ptr[n] .. ptr[n+1])), and one per (edge, channel) for the edge stages.
/// Node scratch is [N][rows][mul], channel fastest, so that a warp reads consecutive channels; the
/// op's own tensors are [E][mul][dim]. Every thread owns what it writes: no atomics, deterministic.
#include <cstdint>

#include "qallegro/allegro_tp.h"
#include "qallegro/launch.h"

namespace qallegro {
namespace tp {

/// The (row, channel) thread of a launch over `rows * mul` threads; false past the end.
QALLEGRO_HD bool row_channel(ThreadIndex ti, int64_t rows, int mul, int64_t* row, int* u) {
    const int64_t tid = ti.global();
    if (tid >= rows * mul) return false;
    *row = tid / mul;
    *u = static_cast<int>(tid % mul);
    return true;
}

/// cw[t][u] = c_t w[u, p_t], one thread per (table row t, channel u); cw: [K][mul].
template <typename T>
struct WeightedTable {
    Plan plan;
    const T* coeff;  ///< [K] CG coefficients
    const T* w;      ///< [mul][num_paths]
    int mul, num_paths;
    T* cw;  ///< [K][mul] out
    QALLEGRO_HD void operator()(ThreadIndex ti) const {
        int64_t t;
        int u;
        if (!row_channel(ti, plan.num_entries, mul, &t, &u)) return;
        weighted_table_row(plan, coeff, w, num_paths, static_cast<int>(t), ChannelRows<T>{cw, mul}, u, u + 1);
    }
};

/// Per (node, channel): s = neighbour sum, env = node_norm * s, and A (when A != nullptr).
template <typename T>
struct NodeStage {
    Plan plan;
    const T* y;                     ///< env_edge [E][mul][dim2]
    const int64_t *order, *ptr;     ///< CSR of the edges by centre
    const T *node_norm, *cw;        ///< [N], [K][mul]
    T *s, *env, *A;                 ///< out: [N][dim2][mul] twice, [N][M][mul] (A may be nullptr)
    int64_t num_nodes;
    int mul, dim2;
    QALLEGRO_HD void operator()(ThreadIndex ti) const {
        int64_t n;
        int u;
        if (!row_channel(ti, num_nodes, mul, &n, &u)) return;
        const ChannelRows<T> sn{s + n * dim2 * mul, mul}, en{env + n * dim2 * mul, mul};
        neighbor_sum(y, order, ptr[n], ptr[n + 1], mul, dim2, sn, u, u + 1);
        scale_rows(node_norm[n], sn, en, dim2, u, u + 1);
        if (A == nullptr) return;
        node_matrix<T>(plan, ChannelRows<const T>{cw, mul}, ChannelRows<const T>{en.data, mul},
                       ChannelRows<T>{A + n * plan.num_pairs * mul, mul}, u, u + 1);
    }
};

/// Per (edge, channel): out[e][u][:] from the centre's A and the edge's tensor features.
template <typename T>
struct EdgeForward {
    Plan plan;
    const T* x;            ///< tensor_features [E][mul][dim1]
    const int64_t* center; ///< [E]
    const T* A;            ///< [N][M][mul]
    T* out;                ///< [E][mul][dim_out] out
    int64_t num_edges;
    int mul, dim1, dim_out;
    QALLEGRO_HD void operator()(ThreadIndex ti) const {
        int64_t e;
        int u;
        if (!row_channel(ti, num_edges, mul, &e, &u)) return;
        // views of the [E, mul, dim] tensors in which channel u sits at index u
        edge_forward<T>(plan, ChannelRows<const T>{A + center[e] * plan.num_pairs * mul, mul},
                        Strided<const T>{x + e * mul * dim1, 1, dim1}, Strided<T>{out + e * mul * dim_out, 1, dim_out},
                        dim_out, u, u + 1);
    }
};

/// Per (edge, channel): d tensor_features[e][u][:] = A-weighted grad_out.
template <typename T>
struct EdgeGradX {
    Plan plan;
    const T* g;            ///< grad_out [E][mul][dim_out]
    const int64_t* center; ///< [E]
    const T* A;            ///< [N][M][mul]
    T* gx;                 ///< [E][mul][dim1] out
    int64_t num_edges;
    int mul, dim1, dim_out;
    QALLEGRO_HD void operator()(ThreadIndex ti) const {
        int64_t e;
        int u;
        if (!row_channel(ti, num_edges, mul, &e, &u)) return;
        const Strided<const T> gv{g + e * mul * dim_out, 1, dim_out};
        edge_backward<T>(plan, ChannelRows<const T>{A + center[e] * plan.num_pairs * mul, mul}, gv, gv,
                         Strided<T>{gx + e * mul * dim1, 1, dim1}, ChannelRows<T>{nullptr, mul}, dim1, true, false, u,
                         u + 1);
    }
};

/// Per (node, channel): B over the node's edges, then G = dL/d env (when want_G) with the
/// node_norm partial sum_j G s, and this node's weight-gradient partial (when want_gw).
template <typename T>
struct NodeBackward {
    Plan plan;
    const T *g, *x;                    ///< grad_out [E][mul][dim_out], tensor_features [E][mul][dim1]
    const int64_t *order, *ptr;        ///< CSR of the edges by centre
    const T *coeff, *cw, *s, *env;     ///< [K], [K][mul], [N][dim2][mul] twice
    T *B, *G;                          ///< out: [N][M][mul], [N][dim2][mul]
    T *gnn_part, *gw_part;             ///< out: [N][mul], [N][num_paths][mul]
    int64_t num_nodes;
    int mul, dim1, dim2, dim_out, num_paths;
    bool want_G, want_gw;
    QALLEGRO_HD void operator()(ThreadIndex ti) const {
        int64_t n;
        int u;
        if (!row_channel(ti, num_nodes, mul, &n, &u)) return;
        const ChannelRows<T> bn{B + n * plan.num_pairs * mul, mul};
        for (int m = 0; m < plan.num_pairs; ++m) bn(m, u) = T(0);
        for (int64_t pos = ptr[n]; pos < ptr[n + 1]; ++pos) {
            const int64_t e = order[pos];
            edge_backward<T>(plan, ChannelRows<const T>{nullptr, mul}, Strided<const T>{x + e * mul * dim1, 1, dim1},
                             Strided<const T>{g + e * mul * dim_out, 1, dim_out}, ChannelRows<T>{nullptr, mul}, bn,
                             dim1, false, true, u, u + 1);
        }
        const ChannelRows<T> Gn{G + n * dim2 * mul, mul}, gwn{gw_part + n * num_paths * mul, mul};
        if (want_gw)
            for (int p = 0; p < num_paths; ++p) gwn(p, u) = T(0);
        node_backward<T>(plan, coeff, ChannelRows<const T>{cw, mul}, ChannelRows<const T>{env + n * dim2 * mul, mul},
                         ChannelRows<const T>{bn.data, mul}, Gn, gwn, dim2, want_G, want_gw, u, u + 1);
        if (want_G)
            gnn_part[n * mul + u] = channel_dot<T>(Gn, ChannelRows<const T>{s + n * dim2 * mul, mul}, dim2, u, u + 1);
    }
};

/// Per (edge, channel): d env_edge[e][u][:] = node_norm[n] G[n][:][u] for the edge's centre n.
template <typename T>
struct EdgeGradEnv {
    const int64_t* center;  ///< [E]
    const T *node_norm, *G; ///< [N], [N][dim2][mul]
    T* gy;                  ///< [E][mul][dim2] out
    int64_t num_edges;
    int mul, dim2;
    QALLEGRO_HD void operator()(ThreadIndex ti) const {
        int64_t e;
        int u;
        if (!row_channel(ti, num_edges, mul, &e, &u)) return;
        const int64_t n = center[e];
        scale_rows(node_norm[n], ChannelRows<const T>{G + n * dim2 * mul, mul},
                   Strided<T>{gy + e * mul * dim2, 1, dim2}, dim2, u, u + 1);
    }
};

}  // namespace tp
}  // namespace qallegro
