// Every qallegro op schema, in one place. Implementations register themselves per device in
// csrc/cpu/<op>.cpp (CPU) and csrc/cuda/<op>.cu (CUDA); autograd and fake (meta) kernels are
// registered from Python in python/qallegro/ops/.
#include <torch/library.h>

TORCH_LIBRARY(qallegro, m) {
    // ---- neighbor_list ------------------------------------------------------------------------
    // Batched full neighbour list (both directions, no self pair at zero shift, r < cutoff).
    // positions [N,3]; cells [B,3,3] (rows are lattice vectors); pbc [B,3] bool; ptr [B+1] int64.
    // Returns edge_index [2,E] int64 (global atom indices, grouped by centre i ascending) and
    // cell_shifts [E,3] (integer-valued, positions' dtype): r_ij = pos[j] - pos[i] + shift @ cell.
    m.def("neighbor_list(Tensor positions, float cutoff, Tensor cells, Tensor pbc, Tensor ptr) -> (Tensor, Tensor)");

    // ---- allegro_tp (issue 4) -----------------------------------------------------------------

    // ---- qdi (issue 5) ------------------------------------------------------------------------
}
