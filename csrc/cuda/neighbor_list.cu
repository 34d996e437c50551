// CUDA kernel of qallegro::neighbor_list: launch and indexing only; the geometry is
// qallegro/neighbor_list.h, shared with the CPU kernel. One thread per centre atom; two passes
// (count, then fill at prefix-sum offsets), so the output is grouped by centre atom in order and
// deterministic, exactly as on the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "qallegro/neighbor_list.h"

namespace qallegro {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void bin_atoms_kernel(nl::Grid<T> g, const T* __restrict__ positions, int64_t n, int32_t* wrap,
                                 int32_t* bins3, int64_t* bin, T* wrapped) {
    const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (a >= n) return;
    T frac[3];
    nl::to_fractional(g.inv, positions + 3 * a, frac);
    bin[a] = nl::bin_of(g, frac, wrap + 3 * a, bins3 + 3 * a);
    nl::wrapped_position(g, positions + 3 * a, wrap + 3 * a, wrapped + 3 * a);
}

template <typename T>
__global__ void count_kernel(nl::Grid<T> g, T cutoff2, const T* __restrict__ wrapped, int64_t n,
                             const int32_t* wrap, const int32_t* bins3, const int64_t* bin_start,
                             const int64_t* sorted, const T* sorted_pos, const int32_t* sorted_wrap,
                             int64_t* counts) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int64_t c = 0;
    nl::for_each_neighbor(g, cutoff2, i, wrapped + 3 * i, wrap + 3 * i, bins3 + 3 * i, bin_start, sorted, sorted_pos,
                          sorted_wrap, [&](int64_t, const int32_t*) { ++c; });
    counts[i] = c;
}

template <typename T>
__global__ void fill_kernel(nl::Grid<T> g, T cutoff2, const T* __restrict__ wrapped, int64_t n, int64_t offset,
                            const int32_t* wrap, const int32_t* bins3, const int64_t* bin_start,
                            const int64_t* sorted, const T* sorted_pos, const int32_t* sorted_wrap,
                            const int64_t* starts, int64_t* centers, int64_t* neighbors, T* shifts) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int64_t e = starts[i];
    nl::for_each_neighbor(g, cutoff2, i, wrapped + 3 * i, wrap + 3 * i, bins3 + 3 * i, bin_start, sorted, sorted_pos,
                          sorted_wrap, [&](int64_t j, const int32_t* s) {
                              centers[e] = i + offset;
                              neighbors[e] = j + offset;
                              for (int k = 0; k < 3; ++k) shifts[3 * e + k] = static_cast<T>(s[k]);
                              ++e;
                          });
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename T>
void structure_neighbors_cuda(const at::Tensor& pos, int64_t offset, const at::Tensor& cell_cpu,
                              const at::Tensor& pbc_cpu, T cutoff, std::vector<at::Tensor>& centers,
                              std::vector<at::Tensor>& neighbors, std::vector<at::Tensor>& shifts) {
    const int64_t n = pos.size(0);
    if (n == 0) return;
    T cell[3][3], basis[3][3], inv[3][3];
    bool pbc[3];
    for (int r = 0; r < 3; ++r) {
        pbc[r] = pbc_cpu[r].item<bool>();
        for (int c = 0; c < 3; ++c) cell[r][c] = cell_cpu[r][c].item<T>();
    }
    nl::binning_basis(cell, pbc, basis);
    nl::invert3(basis, inv);
    // fractional extents (one small device-to-host copy per structure: the grid size depends on it)
    at::Tensor inv_t = at::empty({3, 3}, cell_cpu.options());
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) inv_t[r][c] = inv[r][c];
    const at::Tensor frac = at::matmul(pos, inv_t.to(pos.device()));
    const at::Tensor extent = at::stack({std::get<0>(frac.min(0)), std::get<0>(frac.max(0))}).cpu();
    T fmin[3], fmax[3];
    for (int k = 0; k < 3; ++k) {
        fmin[k] = extent[0][k].item<T>();
        fmax[k] = extent[1][k].item<T>();
    }
    const nl::Grid<T> g = nl::make_grid(cell, pbc, cutoff, fmin, fmax, n);
    const int64_t n_bins = static_cast<int64_t>(g.nbins[0]) * g.nbins[1] * g.nbins[2];

    auto opts = pos.options();
    at::Tensor wrap = at::empty({n, 3}, opts.dtype(at::kInt));
    at::Tensor bins3 = at::empty({n, 3}, opts.dtype(at::kInt));
    at::Tensor bin = at::empty({n}, opts.dtype(at::kLong));
    at::Tensor wrapped = at::empty({n, 3}, opts);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    bin_atoms_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(g, pos.data_ptr<T>(), n, wrap.data_ptr<int32_t>(),
                                                               bins3.data_ptr<int32_t>(), bin.data_ptr<int64_t>(),
                                                               wrapped.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // counting sort by bin: stable argsort keeps atoms in index order inside a bin, as on the CPU
    const at::Tensor sorted = at::argsort(bin, /*stable=*/true);
    const at::Tensor counts_per_bin = at::bincount(bin, {}, n_bins);
    const at::Tensor bin_start = at::cat({at::zeros({1}, opts.dtype(at::kLong)), at::cumsum(counts_per_bin, 0)});
    const at::Tensor sorted_pos = wrapped.index_select(0, sorted).contiguous();
    const at::Tensor sorted_wrap = wrap.index_select(0, sorted).contiguous();

    const T cutoff2 = cutoff * cutoff;
    at::Tensor counts = at::empty({n}, opts.dtype(at::kLong));
    count_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
        g, cutoff2, wrapped.data_ptr<T>(), n, wrap.data_ptr<int32_t>(), bins3.data_ptr<int32_t>(),
        bin_start.data_ptr<int64_t>(), sorted.data_ptr<int64_t>(), sorted_pos.data_ptr<T>(),
        sorted_wrap.data_ptr<int32_t>(), counts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor ends = at::cumsum(counts, 0);
    const int64_t n_edges = ends[n - 1].item<int64_t>();
    const at::Tensor starts = ends - counts;
    at::Tensor c = at::empty({n_edges}, opts.dtype(at::kLong));
    at::Tensor nb = at::empty({n_edges}, opts.dtype(at::kLong));
    at::Tensor s = at::empty({n_edges, 3}, opts);
    if (n_edges > 0) {
        fill_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
            g, cutoff2, wrapped.data_ptr<T>(), n, offset, wrap.data_ptr<int32_t>(), bins3.data_ptr<int32_t>(),
            bin_start.data_ptr<int64_t>(), sorted.data_ptr<int64_t>(), sorted_pos.data_ptr<T>(),
            sorted_wrap.data_ptr<int32_t>(), starts.data_ptr<int64_t>(),
            c.data_ptr<int64_t>(), nb.data_ptr<int64_t>(), s.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    centers.push_back(c);
    neighbors.push_back(nb);
    shifts.push_back(s);
}

std::tuple<at::Tensor, at::Tensor> neighbor_list_cuda(const at::Tensor& positions_in, double cutoff,
                                                      const at::Tensor& cells_in, const at::Tensor& pbc_in,
                                                      const at::Tensor& ptr_in) {
    TORCH_CHECK(positions_in.dim() == 2 && positions_in.size(1) == 3,
                "neighbor_list: positions must be [N, 3], got ", positions_in.sizes());
    TORCH_CHECK(positions_in.scalar_type() == at::kFloat || positions_in.scalar_type() == at::kDouble,
                "neighbor_list: positions must be float32 or float64, got ", positions_in.scalar_type());
    TORCH_CHECK(cutoff > 0.0, "neighbor_list: cutoff must be positive, got ", cutoff);
    const int64_t n_struct = ptr_in.size(0) - 1;
    TORCH_CHECK(cells_in.dim() == 3 && cells_in.size(0) == n_struct, "neighbor_list: cells must be [B, 3, 3]");
    TORCH_CHECK(pbc_in.dim() == 2 && pbc_in.size(0) == n_struct, "neighbor_list: pbc must be [B, 3]");
    const c10::cuda::CUDAGuard guard(positions_in.device());
    const at::Tensor positions = positions_in.contiguous();
    const at::Tensor cells = cells_in.to(at::kCPU, positions.scalar_type()).contiguous();
    const at::Tensor pbc = pbc_in.to(at::kCPU, at::kBool).contiguous();
    const at::Tensor ptr = ptr_in.to(at::kCPU, at::kLong).contiguous();
    TORCH_CHECK(ptr[0].item<int64_t>() == 0 && ptr[n_struct].item<int64_t>() == positions.size(0),
                "neighbor_list: ptr must start at 0 and end at N");

    std::vector<at::Tensor> centers, neighbors, shifts;
    AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "neighbor_list_cuda", [&] {
        for (int64_t b = 0; b < n_struct; ++b) {
            const int64_t lo = ptr[b].item<int64_t>(), hi = ptr[b + 1].item<int64_t>();
            structure_neighbors_cuda<scalar_t>(positions.slice(0, lo, hi), lo, cells[b], pbc[b],
                                               static_cast<scalar_t>(cutoff), centers, neighbors, shifts);
        }
    });
    auto opts = positions.options();
    if (centers.empty()) {
        return {at::empty({2, 0}, opts.dtype(at::kLong)), at::empty({0, 3}, opts)};
    }
    return {at::stack({at::cat(centers), at::cat(neighbors)}), at::cat(shifts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CUDA, m) { m.impl("neighbor_list", &neighbor_list_cuda); }

}  // namespace qallegro
