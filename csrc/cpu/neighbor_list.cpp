// CPU kernel of qallegro::neighbor_list: a cell list per structure, atoms processed in parallel in
// fixed chunks (so the output order does not depend on the number of threads).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <array>
#include <vector>

#include "qallegro/neighbor_list.h"

namespace qallegro {
namespace {

struct Edge {
    int64_t i, j;
    int32_t shift[3];
};
using EdgeChunk = std::vector<Edge>;

template <typename T>
void structure_neighbors(const T* positions, int64_t n, int64_t offset, const T* cell_ptr, const bool* pbc_ptr,
                         T cutoff, std::vector<EdgeChunk>& chunks) {
    if (n == 0) return;
    T cell[3][3];
    bool pbc[3];
    for (int r = 0; r < 3; ++r) {
        pbc[r] = pbc_ptr[r];
        for (int c = 0; c < 3; ++c) cell[r][c] = cell_ptr[3 * r + c];
    }
    // fractional extents in the binning basis (needed along non-periodic directions)
    T basis[3][3], inv[3][3];
    nl::binning_basis(cell, pbc, basis);
    nl::invert3(basis, inv);
    std::vector<T> frac(3 * n);
    T fmin[3] = {0, 0, 0}, fmax[3] = {0, 0, 0};
    for (int64_t a = 0; a < n; ++a) {
        nl::to_fractional(inv, positions + 3 * a, frac.data() + 3 * a);
        for (int k = 0; k < 3; ++k) {
            const T f = frac[3 * a + k];
            fmin[k] = a == 0 ? f : std::min(fmin[k], f);
            fmax[k] = a == 0 ? f : std::max(fmax[k], f);
        }
    }
    const nl::Grid<T> g = nl::make_grid(cell, pbc, cutoff, fmin, fmax, n);

    // counting sort of atoms into bins; wrapped positions and wraps are stored in bin order
    const int64_t n_bins = static_cast<int64_t>(g.nbins[0]) * g.nbins[1] * g.nbins[2];
    std::vector<int32_t> wrap(3 * n), bins3(3 * n), sorted_wrap(3 * n);
    std::vector<int64_t> bin(n), bin_start(n_bins + 1, 0), sorted(n);
    std::vector<T> wrapped(3 * n), sorted_pos(3 * n);
    for (int64_t a = 0; a < n; ++a) {
        bin[a] = nl::bin_of(g, frac.data() + 3 * a, wrap.data() + 3 * a, bins3.data() + 3 * a);
        nl::wrapped_position(g, positions + 3 * a, wrap.data() + 3 * a, wrapped.data() + 3 * a);
        ++bin_start[bin[a] + 1];
    }
    for (int64_t b = 0; b < n_bins; ++b) bin_start[b + 1] += bin_start[b];
    {
        std::vector<int64_t> fill(bin_start.begin(), bin_start.end() - 1);
        for (int64_t a = 0; a < n; ++a) {
            const int64_t s = fill[bin[a]]++;
            sorted[s] = a;
            for (int k = 0; k < 3; ++k) {
                sorted_pos[3 * s + k] = wrapped[3 * a + k];
                sorted_wrap[3 * s + k] = wrap[3 * a + k];
            }
        }
    }

    const T cutoff2 = cutoff * cutoff;
    // fixed chunking of centre atoms: deterministic output whatever the thread count
    const int64_t n_chunks = std::min<int64_t>(n, 256);
    const size_t first = chunks.size();
    chunks.resize(first + n_chunks);
    at::parallel_for(0, n_chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
            EdgeChunk& out = chunks[first + c];
            const int64_t lo = c * n / n_chunks, hi = (c + 1) * n / n_chunks;
            out.reserve(static_cast<size_t>(hi - lo) * 48);
            for (int64_t i = lo; i < hi; ++i) {
                nl::for_each_neighbor(g, cutoff2, i, wrapped.data() + 3 * i, wrap.data() + 3 * i,
                                      bins3.data() + 3 * i, bin_start.data(), sorted.data(), sorted_pos.data(),
                                      sorted_wrap.data(), [&](int64_t j, const int32_t* shift) {
                                          out.push_back({i + offset, j + offset, {shift[0], shift[1], shift[2]}});
                                      });
            }
        }
    });
}

std::tuple<at::Tensor, at::Tensor> neighbor_list_cpu(const at::Tensor& positions_in, double cutoff,
                                                     const at::Tensor& cells_in, const at::Tensor& pbc_in,
                                                     const at::Tensor& ptr_in) {
    TORCH_CHECK(positions_in.dim() == 2 && positions_in.size(1) == 3, "neighbor_list: positions must be [N, 3], got ",
                positions_in.sizes());
    TORCH_CHECK(positions_in.scalar_type() == at::kFloat || positions_in.scalar_type() == at::kDouble,
                "neighbor_list: positions must be float32 or float64, got ", positions_in.scalar_type());
    TORCH_CHECK(cutoff > 0.0 && std::isfinite(cutoff), "neighbor_list: cutoff must be positive and finite, got ",
                cutoff);
    TORCH_CHECK(ptr_in.dim() == 1 && ptr_in.size(0) >= 1, "neighbor_list: ptr must be [B+1]");
    const int64_t n_struct = ptr_in.size(0) - 1;
    TORCH_CHECK(cells_in.dim() == 3 && cells_in.size(0) == n_struct && cells_in.size(1) == 3 && cells_in.size(2) == 3,
                "neighbor_list: cells must be [B, 3, 3] with B = len(ptr) - 1 = ", n_struct, ", got ",
                cells_in.sizes());
    TORCH_CHECK(pbc_in.dim() == 2 && pbc_in.size(0) == n_struct && pbc_in.size(1) == 3,
                "neighbor_list: pbc must be [B, 3], got ", pbc_in.sizes());
    TORCH_CHECK(positions_in.device().is_cpu() && cells_in.device().is_cpu() && pbc_in.device().is_cpu() &&
                    ptr_in.device().is_cpu(),
                "neighbor_list (CPU): all inputs must be on the CPU");

    const at::Tensor positions = positions_in.contiguous();
    const at::Tensor cells = cells_in.to(positions.scalar_type()).contiguous();
    const at::Tensor pbc = pbc_in.to(at::kBool).contiguous();
    const at::Tensor ptr = ptr_in.to(at::kLong).contiguous();
    const int64_t* p = ptr.data_ptr<int64_t>();
    TORCH_CHECK(p[0] == 0 && p[n_struct] == positions.size(0),
                "neighbor_list: ptr must start at 0 and end at N = ", positions.size(0));
    for (int64_t b = 0; b < n_struct; ++b)
        TORCH_CHECK(p[b + 1] >= p[b], "neighbor_list: ptr must be non-decreasing (structure ", b, ")");

    std::vector<EdgeChunk> chunks;
    AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "neighbor_list_cpu", [&] {
        const scalar_t* pos = positions.data_ptr<scalar_t>();
        for (int64_t b = 0; b < n_struct; ++b) {
            structure_neighbors<scalar_t>(pos + 3 * p[b], p[b + 1] - p[b], p[b],
                                          cells.data_ptr<scalar_t>() + 9 * b, pbc.data_ptr<bool>() + 3 * b,
                                          static_cast<scalar_t>(cutoff), chunks);
        }
    });

    std::vector<int64_t> start(chunks.size() + 1, 0);
    for (size_t c = 0; c < chunks.size(); ++c) start[c + 1] = start[c] + static_cast<int64_t>(chunks[c].size());
    const int64_t n_edges = start.back();
    at::Tensor edge_index = at::empty({2, n_edges}, positions.options().dtype(at::kLong));
    at::Tensor shifts = at::empty({n_edges, 3}, positions.options());
    int64_t* ei = edge_index.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "neighbor_list_cpu_copy", [&] {
        scalar_t* sh = shifts.data_ptr<scalar_t>();
        at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
            for (int64_t c = begin; c < end; ++c) {
                int64_t e = start[c];
                for (const Edge& edge : chunks[c]) {
                    ei[e] = edge.i;
                    ei[n_edges + e] = edge.j;
                    for (int k = 0; k < 3; ++k) sh[3 * e + k] = static_cast<scalar_t>(edge.shift[k]);
                    ++e;
                }
            }
        });
    });
    return {edge_index, shifts};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CPU, m) { m.impl("neighbor_list", &neighbor_list_cpu); }

}  // namespace qallegro
