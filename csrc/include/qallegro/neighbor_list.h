#pragma once
/// Cell-list neighbour-list geometry shared by the CPU and CUDA kernels.
///
/// One structure at a time: a "binning cell" (the lattice, completed to a full basis along
/// non-periodic directions) is cut into bins at least `cutoff` wide in real space; each atom is
/// wrapped into the cell along periodic directions (the integer wrap is remembered) and put in a bin;
/// pairs are searched in the `nsearch` bins around the centre's bin, with periodic images coming from
/// bin indices that fall outside [0, nbins). The edge vector is always computed from the original
/// positions, `r_ij = pos[j] - pos[i] + shift @ cell`, so it is the same number the model recomputes.
#include <cmath>
#include <cstdint>

#include "qallegro/common.h"

namespace qallegro {
namespace nl {

/// Geometry of one structure's cell list (all host-computed, read on the device).
template <typename T>
struct Grid {
    T cell[3][3];      ///< lattice vectors as rows (Å); zero rows for missing directions
    T inv[3][3];       ///< inverse of the completed binning basis: frac = pos @ inv
    T origin[3];       ///< fractional origin of bin 0 along non-periodic directions
    T bin_width[3];    ///< bin width in fractional units
    int32_t nbins[3];  ///< bins per direction (>= 1)
    int32_t nsearch[3];///< bins to search on each side of the centre bin
    bool pbc[3];       ///< periodic directions
};

/// floor division for possibly negative numerators
QALLEGRO_HD int32_t floor_div(int32_t a, int32_t b) {
    int32_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

template <typename T>
QALLEGRO_HD void cross3(const T* a, const T* b, T* out) {
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

template <typename T>
QALLEGRO_HD T dot3(const T* a, const T* b) {
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

/// Inverse of a 3x3 matrix of rows `m` (assumed non-singular), written to `inv`.
template <typename T>
QALLEGRO_HD void invert3(const T m[3][3], T inv[3][3]) {
    T c0[3], c1[3], c2[3];
    cross3(m[1], m[2], c0);
    cross3(m[2], m[0], c1);
    cross3(m[0], m[1], c2);
    const T det = dot3(m[0], c0);
    // inv columns are the cross products / det (since m @ inv = I with m's rows as lattice vectors)
    for (int r = 0; r < 3; ++r) {
        inv[r][0] = c0[r] / det;
        inv[r][1] = c1[r] / det;
        inv[r][2] = c2[r] / det;
    }
}

/// Fractional coordinates `frac = pos @ inv`.
template <typename T>
QALLEGRO_HD void to_fractional(const T inv[3][3], const T* pos, T* frac) {
    for (int k = 0; k < 3; ++k) {
        frac[k] = pos[0] * inv[0][k] + pos[1] * inv[1][k] + pos[2] * inv[2][k];
    }
}

/// Bin of an atom from its fractional coordinates; also the integer wrap `w` that brings it into
/// the periodic cell (`pos + w @ cell` is inside). Returns the flat bin index.
template <typename T>
QALLEGRO_HD int64_t bin_of(const Grid<T>& g, const T* frac, int32_t* wrap, int32_t* bin3) {
    for (int k = 0; k < 3; ++k) {
        T f = frac[k];
        if (g.pbc[k]) {
            const T w = std::floor(f);
            wrap[k] = -static_cast<int32_t>(w);
            f -= w;
        } else {
            wrap[k] = 0;
            f -= g.origin[k];
        }
        int32_t b = static_cast<int32_t>(std::floor(f / g.bin_width[k]));
        b = b < 0 ? 0 : (b >= g.nbins[k] ? g.nbins[k] - 1 : b);
        bin3[k] = b;
    }
    return (static_cast<int64_t>(bin3[0]) * g.nbins[1] + bin3[1]) * g.nbins[2] + bin3[2];
}

/// Total number of bin offsets visited around a centre bin.
template <typename T>
QALLEGRO_HD int64_t num_offsets(const Grid<T>& g) {
    return static_cast<int64_t>(2 * g.nsearch[0] + 1) * (2 * g.nsearch[1] + 1) * (2 * g.nsearch[2] + 1);
}

/// The `o`-th neighbour bin of centre bin `bin3`: its flat index (or -1 when it falls outside a
/// non-periodic direction) and the lattice shift of the image it stands for.
template <typename T>
QALLEGRO_HD int64_t neighbor_bin(const Grid<T>& g, const int32_t* bin3, int64_t o, int32_t* shift) {
    int32_t d[3];
    const int32_t w2 = 2 * g.nsearch[2] + 1, w1 = 2 * g.nsearch[1] + 1;
    d[2] = static_cast<int32_t>(o % w2) - g.nsearch[2];
    d[1] = static_cast<int32_t>((o / w2) % w1) - g.nsearch[1];
    d[0] = static_cast<int32_t>(o / (w2 * w1)) - g.nsearch[0];
    int64_t flat = 0;
    for (int k = 0; k < 3; ++k) {
        int32_t b = bin3[k] + d[k];
        if (g.pbc[k]) {
            shift[k] = floor_div(b, g.nbins[k]);
            b -= shift[k] * g.nbins[k];
        } else {
            if (b < 0 || b >= g.nbins[k]) return -1;
            shift[k] = 0;
        }
        flat = flat * g.nbins[k] + b;
    }
    return flat;
}

/// Translation of a lattice image: `image @ cell` (Å).
template <typename T>
QALLEGRO_HD void image_translation(const Grid<T>& g, const int32_t* image, T* out) {
    for (int k = 0; k < 3; ++k) {
        out[k] = static_cast<T>(image[0]) * g.cell[0][k] + static_cast<T>(image[1]) * g.cell[1][k] +
                 static_cast<T>(image[2]) * g.cell[2][k];
    }
}

/// Position of an atom wrapped into the cell along periodic directions: `pos + wrap @ cell`.
template <typename T>
QALLEGRO_HD void wrapped_position(const Grid<T>& g, const T* pos, const int32_t* wrap, T* out) {
    for (int k = 0; k < 3; ++k) {
        out[k] = pos[k] + static_cast<T>(wrap[0]) * g.cell[0][k] + static_cast<T>(wrap[1]) * g.cell[1][k] +
                 static_cast<T>(wrap[2]) * g.cell[2][k];
    }
}

/// Visits every neighbour of atom `i` and calls `emit(j, shift)` for each pair with |r_ij| < cutoff,
/// where `shift` is the lattice shift of the original (unwrapped) positions:
/// `r_ij = pos[j] - pos[i] + shift @ cell`.
/// `pos_i` and `wrap_i`, `bin3_i`: the centre's wrapped position, wrap and bin; atoms of bin b are
/// `sorted_atoms[bin_start[b] .. bin_start[b+1])` with wrapped positions `sorted_pos` and wraps
/// `sorted_wrap` in the same (bin) order, so the inner loop reads memory contiguously. The
/// visiting order is fixed, so results are deterministic.
template <typename T, typename Emit>
QALLEGRO_HD void for_each_neighbor(const Grid<T>& g, T cutoff2, int64_t i, const T* pos_i, const int32_t* wrap_i,
                                   const int32_t* bin3_i, const int64_t* bin_start, const int64_t* sorted_atoms,
                                   const T* sorted_pos, const int32_t* sorted_wrap, Emit&& emit) {
    const int64_t n_off = num_offsets(g);
    for (int64_t o = 0; o < n_off; ++o) {
        int32_t image[3];
        const int64_t nb = neighbor_bin(g, bin3_i, o, image);
        if (nb < 0) continue;
        T centre[3];  // the centre moved by minus the image translation: r = p_j - (p_i - image @ cell)
        image_translation(g, image, centre);
        for (int k = 0; k < 3; ++k) centre[k] = pos_i[k] - centre[k];
        const bool zero_image = image[0] == 0 && image[1] == 0 && image[2] == 0;
        for (int64_t s = bin_start[nb]; s < bin_start[nb + 1]; ++s) {
            const T dx = sorted_pos[3 * s] - centre[0];
            const T dy = sorted_pos[3 * s + 1] - centre[1];
            const T dz = sorted_pos[3 * s + 2] - centre[2];
            if (dx * dx + dy * dy + dz * dz >= cutoff2) continue;
            const int64_t j = sorted_atoms[s];
            if (j == i && zero_image) continue;
            int32_t shift[3];
            // image shift of the bins, corrected by both atoms' wraps into the cell
            for (int k = 0; k < 3; ++k) shift[k] = image[k] + sorted_wrap[3 * s + k] - wrap_i[k];
            emit(j, shift);
        }
    }
}

/// Completes the lattice to a basis usable for binning: where the cell is singular (a molecule, or a
/// slab/wire given without the non-periodic vectors), non-periodic rows are replaced by unit vectors
/// orthogonal to the periodic ones. Periodic rows are kept as they are (the caller checks that they
/// are independent). Host only.
template <typename T>
inline void binning_basis(const T cell[3][3], const bool pbc[3], T basis[3][3]) {
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) basis[r][c] = cell[r][c];
    T c0[3];
    cross3(cell[1], cell[2], c0);
    T scale = 0;
    for (int r = 0; r < 3; ++r) scale = std::fmax(scale, std::sqrt(dot3(cell[r], cell[r])));
    const T det = dot3(cell[0], c0);
    if (std::fabs(det) > T(1e-10) * scale * scale * scale && scale > 0) return;
    int periodic[3], n_periodic = 0;
    for (int k = 0; k < 3; ++k)
        if (pbc[k]) periodic[n_periodic++] = k;
    T e[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    if (n_periodic == 0) {
        for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) basis[r][c] = e[r][c];
        return;
    }
    // orthonormal directions perpendicular to the periodic rows (Gram-Schmidt on the unit vectors)
    T frame[3][3];
    int n_frame = 0;
    for (int p = 0; p < n_periodic; ++p) {
        T v[3] = {cell[periodic[p]][0], cell[periodic[p]][1], cell[periodic[p]][2]};
        for (int q = 0; q < n_frame; ++q) {
            const T d = dot3(v, frame[q]);
            for (int c = 0; c < 3; ++c) v[c] -= d * frame[q][c];
        }
        const T n = std::sqrt(dot3(v, v));
        for (int c = 0; c < 3; ++c) frame[n_frame][c] = v[c] / n;
        ++n_frame;
    }
    int next = 0;
    for (int k = 0; k < 3; ++k) {
        if (pbc[k]) continue;
        T v[3];
        while (true) {
            for (int c = 0; c < 3; ++c) v[c] = e[next][c];
            ++next;
            for (int q = 0; q < n_frame; ++q) {
                const T d = dot3(v, frame[q]);
                for (int c = 0; c < 3; ++c) v[c] -= d * frame[q][c];
            }
            if (dot3(v, v) > T(0.1)) break;
        }
        const T n = std::sqrt(dot3(v, v));
        for (int c = 0; c < 3; ++c) frame[n_frame][c] = basis[k][c] = v[c] / n;
        ++n_frame;
    }
}

/// Builds the grid of one structure. `frac_min`/`frac_max` are the atoms' fractional extents in
/// the binning basis (used along non-periodic directions only). Host only.
template <typename T>
inline Grid<T> make_grid(const T cell[3][3], const bool pbc[3], T cutoff, const T frac_min[3],
                         const T frac_max[3], int64_t n_atoms) {
    Grid<T> g;
    T basis[3][3];
    binning_basis(cell, pbc, basis);
    invert3(basis, g.inv);
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) g.cell[r][c] = pbc[r] ? cell[r][c] : T(0);
    T spacing[3];
    for (int k = 0; k < 3; ++k) {
        g.pbc[k] = pbc[k];
        T c[3];
        cross3(basis[(k + 1) % 3], basis[(k + 2) % 3], c);
        spacing[k] = std::fabs(dot3(basis[k], c)) / std::sqrt(dot3(c, c));  // distance between planes
    }
    // bins a hair wider than the cutoff, so that one neighbouring bin always suffices when nbins > 1
    const T wide = cutoff * T(1 + 1e-9);
    const double max_bins = static_cast<double>(n_atoms > 8 ? 8 * n_atoms : 64);
    for (int k = 0; k < 3; ++k) {
        const T length = pbc[k] ? spacing[k] : (frac_max[k] - frac_min[k]) * spacing[k];
        double nb = std::floor(static_cast<double>(length / wide));
        g.nbins[k] = static_cast<int32_t>(nb < 1 ? 1 : (nb > max_bins ? max_bins : nb));
    }
    while (static_cast<double>(g.nbins[0]) * g.nbins[1] * g.nbins[2] > max_bins) {
        int k = g.nbins[0] >= g.nbins[1] ? 0 : 1;
        k = g.nbins[k] >= g.nbins[2] ? k : 2;
        g.nbins[k] = (g.nbins[k] + 1) / 2;
    }
    for (int k = 0; k < 3; ++k) {
        if (pbc[k]) {
            g.origin[k] = 0;
            g.bin_width[k] = T(1) / g.nbins[k];
            g.nsearch[k] = static_cast<int32_t>(std::ceil(static_cast<double>(cutoff * g.nbins[k] / spacing[k])));
        } else {
            g.origin[k] = frac_min[k];
            const T extent = frac_max[k] - frac_min[k];
            g.bin_width[k] = g.nbins[k] > 1 ? extent / g.nbins[k] : T(1);
            g.nsearch[k] = g.nbins[k] > 1 ? 1 : 0;
        }
    }
    return g;
}

}  // namespace nl
}  // namespace qallegro
