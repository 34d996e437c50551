#pragma once
// Input checks of qallegro::neighbor_list, shared by the CPU op (csrc/cpu/neighbor_list.cpp) and the
// device driver (csrc/cuda/neighbor_list_driver.h, also run on CPU tensors by cuda_emulated.cpp), so
// both reject the same inputs with the same messages. Host-only (ATen).
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

namespace qallegro {
namespace nl {

/// The inputs in the form the kernels read: positions contiguous on their own device; cells (in the
/// positions' dtype), pbc (bool) and ptr (int64) contiguous on the host.
struct CheckedInputs {
    at::Tensor positions, cells, pbc, ptr;
    int64_t n_struct;
};

/// Shapes, dtypes, cutoff and ptr (0 .. N, non-decreasing); throws c10::Error naming the input.
inline CheckedInputs check_neighbor_list_inputs(const at::Tensor& positions_in, double cutoff,
                                                const at::Tensor& cells_in, const at::Tensor& pbc_in,
                                                const at::Tensor& ptr_in) {
    TORCH_CHECK(positions_in.dim() == 2 && positions_in.size(1) == 3, "neighbor_list: positions must be [N, 3], got ",
                positions_in.sizes());
    TORCH_CHECK(positions_in.scalar_type() == at::kFloat || positions_in.scalar_type() == at::kDouble,
                "neighbor_list: positions must be float32 or float64, got ", positions_in.scalar_type());
    TORCH_CHECK(cutoff > 0.0 && std::isfinite(cutoff), "neighbor_list: cutoff must be positive and finite, got ",
                cutoff);
    TORCH_CHECK(ptr_in.dim() == 1 && ptr_in.size(0) >= 1, "neighbor_list: ptr must be [B+1], got ", ptr_in.sizes());
    const int64_t n_struct = ptr_in.size(0) - 1;
    TORCH_CHECK(cells_in.dim() == 3 && cells_in.size(0) == n_struct && cells_in.size(1) == 3 && cells_in.size(2) == 3,
                "neighbor_list: cells must be [B, 3, 3] with B = len(ptr) - 1 = ", n_struct, ", got ",
                cells_in.sizes());
    TORCH_CHECK(pbc_in.dim() == 2 && pbc_in.size(0) == n_struct && pbc_in.size(1) == 3,
                "neighbor_list: pbc must be [B, 3], got ", pbc_in.sizes());
    CheckedInputs in;
    in.n_struct = n_struct;
    in.positions = positions_in.contiguous();
    in.cells = cells_in.to(at::kCPU, in.positions.scalar_type()).contiguous();
    in.pbc = pbc_in.to(at::kCPU, at::kBool).contiguous();
    in.ptr = ptr_in.to(at::kCPU, at::kLong).contiguous();
    const int64_t* p = in.ptr.data_ptr<int64_t>();
    TORCH_CHECK(p[0] == 0 && p[n_struct] == in.positions.size(0), "neighbor_list: ptr must start at 0 and end at N = ",
                in.positions.size(0));
    for (int64_t b = 0; b < n_struct; ++b)
        TORCH_CHECK(p[b + 1] >= p[b], "neighbor_list: ptr must be non-decreasing (structure ", b, ")");
    return in;
}

}  // namespace nl
}  // namespace qallegro
