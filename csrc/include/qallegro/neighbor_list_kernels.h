#pragma once
/// Kernel bodies of the CUDA neighbour list (csrc/cuda/neighbor_list.cu), one thread per atom, as
/// functors of the thread index over plain pointers (see qallegro/launch.h): nvcc launches them on
/// the GPU, and the CPU test build (`qallegro::_neighbor_list_cuda_emulated`) runs the same bodies
/// with the sequential launcher. Two passes over the pairs (count, then fill at prefix-sum offsets)
/// give every centre its own output slice, so the output is grouped by centre atom in index order,
/// without atomics, and deterministic.
#include <cstdint>

#include "qallegro/launch.h"
#include "qallegro/neighbor_list.h"

namespace qallegro {
namespace nl {

/// Pass 0, per atom a: its bin, its integer wrap into the periodic cell and its wrapped position.
template <typename T>
struct BinAtoms {
    Grid<T> g;
    const T* positions;  ///< [n][3] (Å)
    int64_t n;           ///< atoms of the structure
    int32_t* wrap;       ///< [n][3] out: `positions + wrap @ cell` is inside the cell
    int32_t* bins3;      ///< [n][3] out: bin along each direction
    int64_t* bin;        ///< [n] out: flat bin index
    T* wrapped;          ///< [n][3] out: wrapped position
    QALLEGRO_HD void operator()(ThreadIndex t) const {
        const int64_t a = t.global();
        if (a >= n) return;
        T frac[3];
        to_fractional(g.inv, positions + 3 * a, frac);
        bin[a] = bin_of(g, frac, wrap + 3 * a, bins3 + 3 * a);
        wrapped_position(g, positions + 3 * a, wrap + 3 * a, wrapped + 3 * a);
    }
};

/// The cell list of one structure as the pair passes read it: per-atom data in atom order, and the
/// atoms sorted by bin (`sorted[bin_start[b] .. bin_start[b+1])` are bin b's atoms, in index order).
template <typename T>
struct CellList {
    Grid<T> g;
    T cutoff2;                   ///< squared cutoff (Å²)
    int64_t n;                   ///< atoms of the structure
    const T* wrapped;            ///< [n][3] wrapped positions, atom order
    const int32_t* wrap;         ///< [n][3] wraps, atom order
    const int32_t* bins3;        ///< [n][3] bins, atom order
    const int64_t* bin_start;    ///< [bins + 1]
    const int64_t* sorted;       ///< [n] atom of each bin-order slot
    const T* sorted_pos;         ///< [n][3] wrapped positions, bin order
    const int32_t* sorted_wrap;  ///< [n][3] wraps, bin order

    /// Calls emit(j, shift) for each neighbour j of atom i, in the fixed order of for_each_neighbor.
    template <class Emit>
    QALLEGRO_HD void visit(int64_t i, Emit&& emit) const {
        for_each_neighbor(g, cutoff2, i, wrapped + 3 * i, wrap + 3 * i, bins3 + 3 * i, bin_start, sorted, sorted_pos,
                          sorted_wrap, emit);
    }
};

/// Pass 1, per centre atom i: the number of its pairs.
template <typename T>
struct CountNeighbors {
    CellList<T> cells;
    int64_t* counts;  ///< [n] out
    QALLEGRO_HD void operator()(ThreadIndex t) const {
        const int64_t i = t.global();
        if (i >= cells.n) return;
        int64_t c = 0;
        cells.visit(i, [&](int64_t, const int32_t*) { ++c; });
        counts[i] = c;
    }
};

/// Pass 2, per centre atom i: its pairs written from `starts[i]` on (the exclusive prefix sum of
/// pass 1's counts), in the same visiting order as pass 1 counted them.
template <typename T>
struct FillNeighbors {
    CellList<T> cells;
    int64_t offset;         ///< index of the structure's first atom in the batch
    const int64_t* starts;  ///< [n] first output row of each centre
    int64_t* centers;       ///< [E] out: global index of i
    int64_t* neighbors;     ///< [E] out: global index of j
    T* shifts;              ///< [E][3] out: r_ij = pos[j] - pos[i] + shift @ cell
    QALLEGRO_HD void operator()(ThreadIndex t) const {
        const int64_t i = t.global();
        if (i >= cells.n) return;
        int64_t e = starts[i];
        cells.visit(i, [&](int64_t j, const int32_t* s) {
            centers[e] = i + offset;
            neighbors[e] = j + offset;
            for (int k = 0; k < 3; ++k) shifts[3 * e + k] = static_cast<T>(s[k]);
            ++e;
        });
    }
};

}  // namespace nl
}  // namespace qallegro
