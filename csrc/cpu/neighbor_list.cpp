// CPU kernel of qallegro::neighbor_list: a cell list per structure, centre bins searched in parallel
// in fixed chunks (so the output order does not depend on the number of threads), then the pairs
// written straight into the output tensors, grouped by centre atom.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "qallegro/neighbor_list.h"
#include "qallegro/neighbor_list_check.h"

namespace qallegro {
namespace {

// One candidate pair found by the search: the neighbour's index in bin order and the slot of its
// bin's image shift in the chunk's stencil table (8 bytes, so the search writes little memory).
struct Entry {
    int32_t s;
    int32_t slot;
};

// The pairs found for the centre bins of one chunk, and the image shifts their slots refer to.
struct Chunk {
    std::vector<Entry> entries;
    std::vector<int32_t> images;  // 3 per slot
};

// A neighbour bin of a centre bin: its atoms, the translation that moves the centre to the image
// the bin stands for, and whether that translation is zero (then the centre itself is excluded).
template <typename T>
struct StencilBin {
    int64_t lo, hi;
    T translation[3];
    int32_t slot;
    bool zero_image;
};

// Search result of one structure, kept until the output tensors (sized by all structures) exist.
template <typename T>
struct StructureSearch {
    int64_t n = 0, offset = 0;
    std::vector<int32_t> wrap, sorted_wrap;
    std::vector<int64_t> sorted;
    std::vector<Chunk> chunks;
    std::vector<int64_t> count, first;  // per centre atom: pairs, and where they start in its chunk
    std::vector<int32_t> chunk_of;      // per centre atom
};

// Runs task(t) for t in [0, n_tasks) on torch's intra-op threads, each thread taking the next task
// from a shared counter: a thread slowed down (a busy core, a dense region) does not hold the others
// back as a static split would. Which thread runs a task never changes what the task computes.
template <typename F>
void dynamic_for(int64_t n_tasks, const F& task) {
    std::atomic<int64_t> next{0};
    const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_tasks);
    at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
        for (int64_t w = begin; w < end; ++w) {
            for (int64_t t = next++; t < n_tasks; t = next++) task(t);
        }
    });
}

// Cell list of one structure, then the pair search. Centres are visited bin by bin (atoms of one
// bin share their 27-or-more neighbour bins, and neighbouring centres touch the same memory), in
// fixed chunks of bins, so the pairs of each centre come out in the same order whatever the number
// of threads. The inner loop is branch-free: every candidate is written, and the write position
// advances only for pairs within the cutoff.
template <typename T>
void search_structure(const T* positions, int64_t n, int64_t offset, const T* cell_ptr, const bool* pbc_ptr,
                      T cutoff, StructureSearch<T>& out) {
    out.n = n;
    out.offset = offset;
    if (n == 0) return;
    TORCH_CHECK(n < (int64_t(1) << 31), "neighbor_list: at most 2^31 - 1 atoms per structure, got ", n);
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
    out.wrap.resize(3 * n);
    out.sorted_wrap.resize(3 * n);
    out.sorted.resize(n);
    std::vector<int32_t> bins3(3 * n);
    std::vector<int64_t> bin(n), bin_start(n_bins + 1, 0);
    std::vector<T> sorted_pos(3 * n);
    int32_t* wrap = out.wrap.data();
    for (int64_t a = 0; a < n; ++a) {
        bin[a] = nl::bin_of(g, frac.data() + 3 * a, wrap + 3 * a, bins3.data() + 3 * a);
        ++bin_start[bin[a] + 1];
    }
    for (int64_t b = 0; b < n_bins; ++b) bin_start[b + 1] += bin_start[b];
    {
        std::vector<int64_t> fill(bin_start.begin(), bin_start.end() - 1);
        for (int64_t a = 0; a < n; ++a) {
            const int64_t s = fill[bin[a]]++;
            out.sorted[s] = a;
            nl::wrapped_position(g, positions + 3 * a, wrap + 3 * a, sorted_pos.data() + 3 * s);
            for (int k = 0; k < 3; ++k) out.sorted_wrap[3 * s + k] = wrap[3 * a + k];
        }
    }

    const T cutoff2 = cutoff * cutoff;
    const int64_t n_off = nl::num_offsets(g);
    const int64_t n_chunks = std::min<int64_t>(n_bins, 512);
    out.chunks.resize(n_chunks);
    out.count.resize(n);
    out.first.resize(n);
    out.chunk_of.resize(n);
    const int64_t* sorted = out.sorted.data();
    dynamic_for(n_chunks, [&](int64_t c) {
        std::vector<StencilBin<T>> stencil;
        stencil.reserve(static_cast<size_t>(n_off));
        {
            Chunk& chunk = out.chunks[c];
            std::vector<Entry>& entries = chunk.entries;
            const int64_t b_lo = c * n_bins / n_chunks, b_hi = (c + 1) * n_bins / n_chunks;
            entries.resize(static_cast<size_t>(std::max<int64_t>(bin_start[b_hi] - bin_start[b_lo], 1)) * 64);
            int64_t k = 0;
            for (int64_t b = b_lo; b < b_hi; ++b) {
                if (bin_start[b] == bin_start[b + 1]) continue;
                // the stencil of this centre bin, shared by its atoms
                const int32_t* bin3 = bins3.data() + 3 * sorted[bin_start[b]];
                stencil.clear();
                int64_t reach = 0;
                for (int64_t o = 0; o < n_off; ++o) {
                    int32_t image[3];
                    const int64_t nb = nl::neighbor_bin(g, bin3, o, image);
                    if (nb < 0 || bin_start[nb] == bin_start[nb + 1]) continue;
                    StencilBin<T> sb;
                    sb.lo = bin_start[nb];
                    sb.hi = bin_start[nb + 1];
                    nl::image_translation(g, image, sb.translation);
                    sb.zero_image = image[0] == 0 && image[1] == 0 && image[2] == 0;
                    sb.slot = static_cast<int32_t>(chunk.images.size() / 3);
                    chunk.images.insert(chunk.images.end(), image, image + 3);
                    reach += sb.hi - sb.lo;
                    stencil.push_back(sb);
                }
                for (int64_t sc = bin_start[b]; sc < bin_start[b + 1]; ++sc) {
                    if (static_cast<int64_t>(entries.size()) < k + reach)
                        entries.resize(std::max<size_t>(2 * entries.size(), static_cast<size_t>(k + reach)));
                    Entry* buf = entries.data();
                    const int64_t i = sorted[sc], k0 = k;
                    const T* p = sorted_pos.data() + 3 * sc;
                    for (const StencilBin<T>& sb : stencil) {
                        const T cx = p[0] - sb.translation[0], cy = p[1] - sb.translation[1],
                                cz = p[2] - sb.translation[2];
                        const int64_t self = sb.zero_image ? sc : -1;
                        const T* q = sorted_pos.data() + 3 * sb.lo;
                        for (int64_t s = sb.lo; s < sb.hi; ++s, q += 3) {
                            const T dx = q[0] - cx, dy = q[1] - cy, dz = q[2] - cz;
                            buf[k] = Entry{static_cast<int32_t>(s), sb.slot};
                            k += static_cast<int64_t>((dx * dx + dy * dy + dz * dz < cutoff2) & (s != self));
                        }
                    }
                    out.count[i] = k - k0;
                    out.first[i] = k0;
                    out.chunk_of[i] = static_cast<int32_t>(c);
                }
            }
            entries.resize(static_cast<size_t>(k));
            entries.shrink_to_fit();
        }
    });
}

// Writes the pairs of one structure, grouped by centre in index order, from edge `e0` on.
template <typename T>
void write_structure(const StructureSearch<T>& st, int64_t e0, int64_t n_edges, int64_t* ei, T* shifts) {
    const int64_t n = st.n;
    if (n == 0) return;
    std::vector<int64_t> at(n + 1);
    at[0] = e0;
    for (int64_t i = 0; i < n; ++i) at[i + 1] = at[i] + st.count[i];
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            const Chunk& chunk = st.chunks[st.chunk_of[i]];
            const Entry* en = chunk.entries.data() + st.first[i];
            const int32_t* wi = st.wrap.data() + 3 * i;
            for (int64_t e = at[i]; e < at[i + 1]; ++e, ++en) {
                const int32_t* image = chunk.images.data() + 3 * en->slot;
                const int32_t* wj = st.sorted_wrap.data() + 3 * en->s;
                ei[e] = i + st.offset;
                ei[n_edges + e] = st.sorted[en->s] + st.offset;
                // image shift of the bins, corrected by both atoms' wraps into the cell
                for (int d = 0; d < 3; ++d) shifts[3 * e + d] = static_cast<T>(image[d] + wj[d] - wi[d]);
            }
        }
    });
}

std::tuple<at::Tensor, at::Tensor> neighbor_list_cpu(const at::Tensor& positions_in, double cutoff,
                                                     const at::Tensor& cells_in, const at::Tensor& pbc_in,
                                                     const at::Tensor& ptr_in) {
    TORCH_CHECK(positions_in.device().is_cpu() && cells_in.device().is_cpu() && pbc_in.device().is_cpu() &&
                    ptr_in.device().is_cpu(),
                "neighbor_list (CPU): all inputs must be on the CPU");
    const nl::CheckedInputs in = nl::check_neighbor_list_inputs(positions_in, cutoff, cells_in, pbc_in, ptr_in);
    const at::Tensor& positions = in.positions;
    const at::Tensor& cells = in.cells;
    const at::Tensor& pbc = in.pbc;
    const int64_t n_struct = in.n_struct;
    const int64_t* p = in.ptr.data_ptr<int64_t>();

    at::Tensor edge_index, shifts;
    AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "neighbor_list_cpu", [&] {
        const scalar_t* pos = positions.data_ptr<scalar_t>();
        std::vector<StructureSearch<scalar_t>> found(n_struct);
        int64_t n_edges = 0;
        std::vector<int64_t> e0(n_struct);
        for (int64_t b = 0; b < n_struct; ++b) {
            search_structure<scalar_t>(pos + 3 * p[b], p[b + 1] - p[b], p[b], cells.data_ptr<scalar_t>() + 9 * b,
                                       pbc.data_ptr<bool>() + 3 * b, static_cast<scalar_t>(cutoff), found[b]);
            e0[b] = n_edges;
            for (const int64_t c : found[b].count) n_edges += c;
        }
        edge_index = at::empty({2, n_edges}, positions.options().dtype(at::kLong));
        shifts = at::empty({n_edges, 3}, positions.options());
        for (int64_t b = 0; b < n_struct; ++b) {
            write_structure<scalar_t>(found[b], e0[b], n_edges, edge_index.data_ptr<int64_t>(),
                                      shifts.data_ptr<scalar_t>());
        }
    });
    return {edge_index, shifts};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CPU, m) { m.impl("neighbor_list", &neighbor_list_cpu); }

}  // namespace qallegro
