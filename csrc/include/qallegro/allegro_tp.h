#pragma once
/// Device-agnostic arithmetic of qallegro::allegro_tp (Allegro's per-layer tensor product, issue 4).
///
/// Notation (python/qallegro/ops/allegro_tp.py has the contract): for centre atom n with edges e,
///   s[n,u,j]   = sum_e env_edge[e,u,j]                      (raw neighbour sum)
///   env[n,u,j] = node_norm[n] * s[n,u,j]                     (environment embedding)
///   out[e,u,k] = sum_t c_t w[u,p_t] x[e,u,i_t] env[n,u,j_t]  over CG table rows t = (p, i, j, k, c).
/// The kernels never gather env onto edges. They contract it once per *node* into
///   A[n,u,m] = sum_{t : pair(t) = m} c_t w[u,p_t] env[n,u,j_t]
/// over the distinct (i, k) pairs m of the table, so each edge only costs one sparse matrix-vector
/// product out[e,u,k_m] += A[n,u,m] x[e,u,i_m] (M pairs instead of K table rows, and the env
/// scatter + gather disappear). The backward reuses the same split:
///   B[n,u,m]     = sum_e x[e,u,i_m] g[e,u,k_m]                (per-node outer-product sums)
///   gx[e,u,i_m] += A[n,u,m] g[e,u,k_m]
///   G[n,u,j_t]  += c_t w[u,p_t] B[n,u,pair(t)]                (= dL/d env)
///   gw[u,p_t]   += c_t env[n,u,j_t] B[n,u,pair(t)]
///   d env_edge[e] = node_norm[n] G[n],  d node_norm[n] = sum_{u,j} G[n,u,j] s[n,u,j].
/// Every function loops over channels u in [u_begin, u_end): the CPU kernel passes the whole range
/// on channel-contiguous buffers (the loop vectorises), the CUDA kernel one channel per thread.
/// kChannels > 0 fixes u_end at compile time (CPU instantiations for common multiplicities, so the
/// channel loops have constant trip counts); 0 = runtime u_end.
#include <cstdint>
#include <vector>

#include "qallegro/common.h"

namespace qallegro {
namespace tp {

/// A CG table reduced to what the kernels need (host or device pointers, int32 indices).
/// Pairs m are the distinct (i, k) of the table sorted by (k, i); entries t are the table rows.
struct Plan {
    int num_pairs;          ///< M
    const int* pair_i;      ///< [M] index into tensor_features' last axis
    const int* pair_k;      ///< [M] index into the output's last axis
    int num_entries;        ///< K
    const int* entry_pair;  ///< [K] pair m of row t
    const int* entry_j;     ///< [K] index into env_edge's last axis
    const int* entry_path;  ///< [K] path p of row t
};

/// Host-side storage of a Plan (both devices build it on the host from the [K, 4] table).
struct PlanData {
    std::vector<int> pair_i, pair_k, entry_pair, entry_j, entry_path;
    Plan view() const {
        return {static_cast<int>(pair_i.size()), pair_i.data(), pair_k.data(), static_cast<int>(entry_pair.size()),
                entry_pair.data(), entry_j.data(), entry_path.data()};
    }
};

/// Builds the plan of a CG table given as K rows (path, i, j, k) of int64 (row-major [K, 4]).
/// Returns -1, or the first row outside (num_paths, dim1, dim2, dim_out) (plan then incomplete).
inline int64_t build_plan(const int64_t* rows, int64_t K, int64_t num_paths, int64_t dim1, int64_t dim2,
                          int64_t dim_out, PlanData& plan) {
    std::vector<int> pair_of(static_cast<size_t>(dim_out * dim1), -1);  // key k * dim1 + i
    for (int64_t t = 0; t < K; ++t) {
        const int64_t* r = rows + 4 * t;
        if (r[0] < 0 || r[0] >= num_paths || r[1] < 0 || r[1] >= dim1 || r[2] < 0 || r[2] >= dim2 || r[3] < 0 ||
            r[3] >= dim_out)
            return t;
        pair_of[r[3] * dim1 + r[1]] = 0;
    }
    // pairs sorted by (k, i): consecutive pairs write the same output row
    for (int64_t key = 0; key < dim_out * dim1; ++key) {
        if (pair_of[key] < 0) continue;
        pair_of[key] = static_cast<int>(plan.pair_i.size());
        plan.pair_i.push_back(static_cast<int>(key % dim1));
        plan.pair_k.push_back(static_cast<int>(key / dim1));
    }
    for (int64_t t = 0; t < K; ++t) {
        const int64_t* r = rows + 4 * t;
        plan.entry_pair.push_back(pair_of[r[3] * dim1 + r[1]]);
        plan.entry_j.push_back(static_cast<int>(r[2]));
        plan.entry_path.push_back(static_cast<int>(r[0]));
    }
    return -1;
}

/// End of the channel loop: the compile-time count when given, else the runtime one.
template <int kChannels>
QALLEGRO_HD int channel_end(int u_end) {
    return kChannels > 0 ? kChannels : u_end;
}

/// Row-major [rows][channels] view with unit channel stride (CPU scratch, CUDA node scratch):
/// element (r, u) is data[r * row_stride + u].
template <typename T>
struct ChannelRows {
    T* data;
    int64_t row_stride;
    QALLEGRO_HD T& operator()(int64_t r, int64_t u) const { return data[r * row_stride + u]; }
};

/// General strided view: element (r, u) is data[r * row_stride + u * channel_stride]; used by the
/// CUDA kernel on the op's own [E, mul, dim] tensors (row = irrep component, channel = u).
template <typename T>
struct Strided {
    T* data;
    int64_t row_stride;
    int64_t channel_stride;
    QALLEGRO_HD T& operator()(int64_t r, int64_t u) const { return data[r * row_stride + u * channel_stride]; }
};

/// cw[t][u] = c_t * w[u, p_t] for row t of the table and channels [u_begin, u_end): the table with
/// each channel's weights folded in, computed once per call. coeff: [K]; w: [mul][num_paths].
template <typename T, class CWV>
QALLEGRO_HD void weighted_table_row(const Plan& plan, const T* coeff, const T* w, int num_paths, int t, CWV cw,
                                    int u_begin, int u_end) {
    const T c = coeff[t];
    const int p = plan.entry_path[t];
    for (int u = u_begin; u < u_end; ++u) cw(t, u) = c * w[static_cast<int64_t>(u) * num_paths + p];
}

/// Neighbour sum of one node: s[j][u] = sum_e env_edge[e][u][j] over its edges
/// e = order[pos], pos in [begin, end) (order == nullptr: e = pos, edges already grouped), for
/// channels [u_begin, u_end). env_edge: the op's [E][mul][dim2]; s: [dim2][mul] view, zeroed here.
template <typename T, class SV>
QALLEGRO_HD void neighbor_sum(const T* env_edge, const int64_t* order, int64_t begin, int64_t end, int64_t mul,
                              int64_t dim2, SV s, int u_begin, int u_end) {
    for (int64_t j = 0; j < dim2; ++j)
        for (int64_t u = u_begin; u < u_end; ++u) s(j, u) = T(0);
    for (int64_t pos = begin; pos < end; ++pos) {
        const T* ye = env_edge + (order == nullptr ? pos : order[pos]) * mul * dim2;
        for (int64_t u = u_begin; u < u_end; ++u)
            for (int64_t j = 0; j < dim2; ++j) s(j, u) += ye[u * dim2 + j];
    }
}

/// dst[r][u] = factor * src[r][u] for rows [0, rows) and channels [u_begin, u_end) (dst may be src):
/// the node_norm scaling, env = node_norm[n] * s and d env_edge = node_norm[n] * G.
template <typename T, class SRC, class DST>
QALLEGRO_HD void scale_rows(T factor, SRC src, DST dst, int rows, int u_begin, int u_end) {
    for (int r = 0; r < rows; ++r)
        for (int u = u_begin; u < u_end; ++u) dst(r, u) = factor * src(r, u);
}

/// sum_{r, u} a[r][u] b[r][u] over rows [0, rows) and channels [u_begin, u_end), summed in (r, u)
/// order: d node_norm[n] = <G, s>.
template <typename T, class AV, class BV>
QALLEGRO_HD T channel_dot(AV a, BV b, int rows, int u_begin, int u_end) {
    T acc = T(0);
    for (int r = 0; r < rows; ++r)
        for (int u = u_begin; u < u_end; ++u) acc += a(r, u) * b(r, u);
    return acc;
}

/// A[m][u] = sum_{t: pair(t)=m} cw[t][u] * env[j_t][u]; cw[t][u] = c_t * w[u, p_t] (pre-multiplied
/// once per call). A: [M][mul], env: [dim2][mul].
template <typename T, int kChannels = 0, class CW, class EV, class AV>
QALLEGRO_HD void node_matrix(const Plan& plan, CW cw, EV env, AV A, int u_begin, int u_end) {
    const int u_stop = channel_end<kChannels>(u_end);
    for (int m = 0; m < plan.num_pairs; ++m)
        for (int u = u_begin; u < u_stop; ++u) A(m, u) = T(0);
    for (int t = 0; t < plan.num_entries; ++t) {
        const int m = plan.entry_pair[t], j = plan.entry_j[t];
        for (int u = u_begin; u < u_stop; ++u) A(m, u) += cw(t, u) * env(j, u);
    }
}

/// One edge's output: out[k][u] = sum_{m: k_m = k} A[m][u] * x[i_m][u] (out: [dim_out][mul],
/// zeroed here; rows no pair reaches stay zero).
template <typename T, int kChannels = 0, class AV, class XV, class OV>
QALLEGRO_HD void edge_forward(const Plan& plan, AV A, XV x, OV out, int dim_out, int u_begin, int u_end) {
    const int u_stop = channel_end<kChannels>(u_end);
    for (int k = 0; k < dim_out; ++k)
        for (int u = u_begin; u < u_stop; ++u) out(k, u) = T(0);
    for (int m = 0; m < plan.num_pairs; ++m) {
        const int i = plan.pair_i[m], k = plan.pair_k[m];
        for (int u = u_begin; u < u_stop; ++u) out(k, u) += A(m, u) * x(i, u);
    }
}

/// One edge's share of the backward: gx[i][u] = sum_{m: i_m = i} A[m][u] g[k_m][u] (zeroed here,
/// when want_gx) and B[m][u] += x[i_m][u] g[k_m][u] (accumulated over the node's edges, when want_B).
template <typename T, int kChannels = 0, class AV, class XV, class GV, class GXV, class BV>
QALLEGRO_HD void edge_backward(const Plan& plan, AV A, XV x, GV g, GXV gx, BV B, int dim1, bool want_gx, bool want_B,
                               int u_begin, int u_end) {
    const int u_stop = channel_end<kChannels>(u_end);
    if (want_gx) {
        for (int i = 0; i < dim1; ++i)
            for (int u = u_begin; u < u_stop; ++u) gx(i, u) = T(0);
        for (int m = 0; m < plan.num_pairs; ++m) {
            const int i = plan.pair_i[m], k = plan.pair_k[m];
            for (int u = u_begin; u < u_stop; ++u) gx(i, u) += A(m, u) * g(k, u);
        }
    }
    if (want_B) {
        for (int m = 0; m < plan.num_pairs; ++m) {
            const int i = plan.pair_i[m], k = plan.pair_k[m];
            for (int u = u_begin; u < u_stop; ++u) B(m, u) += x(i, u) * g(k, u);
        }
    }
}

/// Node-level backward from B [M][mul]: G[j][u] = dL/d env[j][u] (zeroed here, when want_G) and
/// gw[p][u] += c_t env[j_t][u] B[pair(t)][u] (accumulated, when want_gw).
template <typename T, int kChannels = 0, class CW, class EV, class BV, class GV, class WV>
QALLEGRO_HD void node_backward(const Plan& plan, const T* coeff, CW cw, EV env, BV B, GV G, WV gw, int dim2,
                               bool want_G, bool want_gw, int u_begin, int u_end) {
    const int u_stop = channel_end<kChannels>(u_end);
    if (want_G) {
        for (int j = 0; j < dim2; ++j)
            for (int u = u_begin; u < u_stop; ++u) G(j, u) = T(0);
        for (int t = 0; t < plan.num_entries; ++t) {
            const int m = plan.entry_pair[t], j = plan.entry_j[t];
            for (int u = u_begin; u < u_stop; ++u) G(j, u) += cw(t, u) * B(m, u);
        }
    }
    if (want_gw) {
        for (int t = 0; t < plan.num_entries; ++t) {
            const int m = plan.entry_pair[t], j = plan.entry_j[t], p = plan.entry_path[t];
            const T c = coeff[t];
            for (int u = u_begin; u < u_stop; ++u) gw(p, u) += c * env(j, u) * B(m, u);
        }
    }
}

}  // namespace tp
}  // namespace qallegro
