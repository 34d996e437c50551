#pragma once
// Host side of the CUDA neighbour list: input checks, grid set-up, the sort of atoms by bin (ATen),
// the three kernel launches and the assembly of the output. It is templated on the launcher, so
// that csrc/cuda/neighbor_list.cu runs it with `<<<>>>` on CUDA tensors and
// csrc/cpu/cuda_emulated.cpp runs the very same code, kernel bodies included, on CPU tensors with
// the sequential launcher (qallegro::_neighbor_list_cuda_emulated, for the CPU test suite).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "qallegro/neighbor_list_check.h"
#include "qallegro/neighbor_list_kernels.h"

namespace qallegro {
namespace nl_device {

// Pairs of one structure (atoms pos = positions[offset : offset + n]) appended to the outputs.
template <typename T, class Launch>
void structure_neighbors(const Launch& launch, const at::Tensor& pos, int64_t offset, const T* cell_ptr,
                         const bool* pbc_ptr, T cutoff, std::vector<at::Tensor>& centers,
                         std::vector<at::Tensor>& neighbors, std::vector<at::Tensor>& shifts) {
    const int64_t n = pos.size(0);
    if (n == 0) return;
    TORCH_CHECK(n < (int64_t(1) << 31), "neighbor_list: at most 2^31 - 1 atoms per structure, got ", n);
    T cell[3][3], basis[3][3], inv[3][3];
    bool pbc[3];
    for (int r = 0; r < 3; ++r) {
        pbc[r] = pbc_ptr[r];
        for (int c = 0; c < 3; ++c) cell[r][c] = cell_ptr[3 * r + c];
    }
    nl::binning_basis(cell, pbc, basis);
    nl::invert3(basis, inv);
    // fractional extents (one small device-to-host copy per structure: the grid size depends on it)
    at::Tensor inv_t = at::empty({3, 3}, pos.options().device(at::kCPU));
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) inv_t.data_ptr<T>()[3 * r + c] = inv[r][c];
    const at::Tensor frac = at::matmul(pos, inv_t.to(pos.device()));
    const at::Tensor extent = at::stack({std::get<0>(frac.min(0)), std::get<0>(frac.max(0))}).cpu().contiguous();
    const T* ext = extent.data_ptr<T>();
    const T fmin[3] = {ext[0], ext[1], ext[2]}, fmax[3] = {ext[3], ext[4], ext[5]};
    const nl::Grid<T> g = nl::make_grid(cell, pbc, cutoff, fmin, fmax, n);
    const int64_t n_bins = static_cast<int64_t>(g.nbins[0]) * g.nbins[1] * g.nbins[2];

    const auto opts = pos.options();
    at::Tensor wrap = at::empty({n, 3}, opts.dtype(at::kInt));
    at::Tensor bins3 = at::empty({n, 3}, opts.dtype(at::kInt));
    at::Tensor bin = at::empty({n}, opts.dtype(at::kLong));
    at::Tensor wrapped = at::empty({n, 3}, opts);
    launch("bin_atoms", n,
           nl::BinAtoms<T>{g, pos.data_ptr<T>(), n, wrap.data_ptr<int32_t>(), bins3.data_ptr<int32_t>(),
                           bin.data_ptr<int64_t>(), wrapped.data_ptr<T>()});
    // counting sort by bin: a stable argsort keeps atoms in index order inside a bin, as on the CPU
    const at::Tensor sorted = at::argsort(bin, /*stable=*/true);
    const at::Tensor counts_per_bin = at::bincount(bin, {}, n_bins);
    const at::Tensor bin_start = at::cat({at::zeros({1}, opts.dtype(at::kLong)), at::cumsum(counts_per_bin, 0)});
    const at::Tensor sorted_pos = wrapped.index_select(0, sorted).contiguous();
    const at::Tensor sorted_wrap = wrap.index_select(0, sorted).contiguous();
    const nl::CellList<T> cells{g,
                                cutoff * cutoff,
                                n,
                                wrapped.data_ptr<T>(),
                                wrap.data_ptr<int32_t>(),
                                bins3.data_ptr<int32_t>(),
                                bin_start.data_ptr<int64_t>(),
                                sorted.data_ptr<int64_t>(),
                                sorted_pos.data_ptr<T>(),
                                sorted_wrap.data_ptr<int32_t>()};

    at::Tensor counts = at::empty({n}, opts.dtype(at::kLong));
    launch("count_neighbors", n, nl::CountNeighbors<T>{cells, counts.data_ptr<int64_t>()});
    const at::Tensor ends = at::cumsum(counts, 0);
    const int64_t n_edges = ends[n - 1].item<int64_t>();
    const at::Tensor starts = ends - counts;
    at::Tensor c = at::empty({n_edges}, opts.dtype(at::kLong));
    at::Tensor nb = at::empty({n_edges}, opts.dtype(at::kLong));
    at::Tensor s = at::empty({n_edges, 3}, opts);
    if (n_edges > 0) {
        launch("fill_neighbors", n,
               nl::FillNeighbors<T>{cells, offset, starts.data_ptr<int64_t>(), c.data_ptr<int64_t>(),
                                    nb.data_ptr<int64_t>(), s.data_ptr<T>()});
    }
    centers.push_back(c);
    neighbors.push_back(nb);
    shifts.push_back(s);
}

// qallegro::neighbor_list on the launcher's device (the caller checks that positions are there and
// makes that device current). cells, pbc and ptr may be on either device: they are read on the host.
template <class Launch>
std::tuple<at::Tensor, at::Tensor> neighbor_list(const Launch& launch, const at::Tensor& positions_in, double cutoff,
                                                 const at::Tensor& cells_in, const at::Tensor& pbc_in,
                                                 const at::Tensor& ptr_in) {
    const nl::CheckedInputs in = nl::check_neighbor_list_inputs(positions_in, cutoff, cells_in, pbc_in, ptr_in);
    const at::Tensor& positions = in.positions;
    const at::Tensor& cells = in.cells;
    const at::Tensor& pbc = in.pbc;
    const int64_t n_struct = in.n_struct;
    const int64_t* p = in.ptr.data_ptr<int64_t>();

    std::vector<at::Tensor> centers, neighbors, shifts;
    AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "neighbor_list_device", [&] {
        for (int64_t b = 0; b < n_struct; ++b) {
            structure_neighbors<scalar_t>(launch, positions.slice(0, p[b], p[b + 1]), p[b],
                                          cells.data_ptr<scalar_t>() + 9 * b, pbc.data_ptr<bool>() + 3 * b,
                                          static_cast<scalar_t>(cutoff), centers, neighbors, shifts);
        }
    });
    const auto opts = positions.options();
    if (centers.empty()) return {at::empty({2, 0}, opts.dtype(at::kLong)), at::empty({0, 3}, opts)};
    return {at::stack({at::cat(centers), at::cat(neighbors)}), at::cat(shifts)};
}

}  // namespace nl_device
}  // namespace qallegro
