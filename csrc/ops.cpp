// Every qallegro op schema, in one place. Implementations register themselves per device in
// csrc/cpu/<op>.cpp (CPU) and csrc/cuda/<op>.cu (CUDA). Autograd of the differentiable ops (qdi,
// allegro_tp and their backward ops) is registered in C++ for the Autograd key, device-agnostic, in
// csrc/cpu/<op>_autograd.cpp, so C++ hosts (LAMMPS) and TorchScript differentiate through them;
// fake (meta) kernels are registered from Python in python/qallegro/ops/.
#include <torch/library.h>

TORCH_LIBRARY(qallegro, m) {
    // ---- neighbor_list ------------------------------------------------------------------------
    // Batched full neighbour list (both directions, no self pair at zero shift, r < cutoff).
    // positions [N,3]; cells [B,3,3] (rows are lattice vectors); pbc [B,3] bool; ptr [B+1] int64.
    // Returns edge_index [2,E] int64 (global atom indices, grouped by centre i ascending) and
    // cell_shifts [E,3] (integer-valued, positions' dtype): r_ij = pos[j] - pos[i] + shift @ cell.
    m.def("neighbor_list(Tensor positions, float cutoff, Tensor cells, Tensor pbc, Tensor ptr) -> (Tensor, Tensor)");

    // ---- allegro_tp (issue 4) -----------------------------------------------------------------
    // Allegro layer tensor product (python/qallegro/ops/allegro_tp.py has the contract):
    // tensor_features [E,mul,dim1], env_edge [E,mul,dim2], edge_center [E] int64, node_norm [N],
    // weights [mul,P], cg_indices [K,4] int64 rows (path,i,j,k), cg_values [K] -> [E,mul,dim_out].
    // Fused: env scatter (per centre), gather and CG contraction without an [E,mul,dim2] gather.
    m.def("allegro_tp(Tensor tensor_features, Tensor env_edge, Tensor edge_center, Tensor node_norm, Tensor weights, Tensor cg_indices, Tensor cg_values, int dim_out) -> Tensor");
    // Vector-Jacobian product: (d tensor_features, d env_edge, d node_norm, d weights [mul,P]) of
    // sum(grad_out * allegro_tp(...)); outputs whose output_mask entry is false are returned as zeros.
    // Its own backward is written with allegro_tp and allegro_tp_backward calls (the op is linear
    // in each differentiable input), so derivatives of every order exist.
    m.def("allegro_tp_backward(Tensor grad_out, Tensor tensor_features, Tensor env_edge, Tensor edge_center, Tensor node_norm, Tensor weights, Tensor cg_indices, Tensor cg_values, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");

    // ---- the CUDA code run on the CPU, for tests only ---------------------------------------
    // Same schemas as neighbor_list / allegro_tp / allegro_tp_backward, on CPU tensors: the CUDA
    // ops' host code and kernel bodies run with a sequential launcher (csrc/cpu/cuda_emulated.cpp),
    // threads first to last, or last to first when reverse_threads (a result that changes is a race).
    m.def("_neighbor_list_cuda_emulated(Tensor positions, float cutoff, Tensor cells, Tensor pbc, Tensor ptr, bool reverse_threads=False) -> (Tensor, Tensor)");
    m.def("_allegro_tp_cuda_emulated(Tensor tensor_features, Tensor env_edge, Tensor edge_center, Tensor node_norm, Tensor weights, Tensor cg_indices, Tensor cg_values, int dim_out, bool reverse_threads=False) -> Tensor");
    m.def("_allegro_tp_backward_cuda_emulated(Tensor grad_out, Tensor tensor_features, Tensor env_edge, Tensor edge_center, Tensor node_norm, Tensor weights, Tensor cg_indices, Tensor cg_values, bool[4] output_mask, bool reverse_threads=False) -> (Tensor, Tensor, Tensor, Tensor)");

    // ---- qdi (issue 5) ------------------------------------------------------------------------
    // Batched QDI circuits (csrc/include/qallegro/qdi_program.h): inputs [B, F] (angles, rad),
    // weights [uploads, depth, n_qubits, K] (K = 3 "strong", 1 "basic"), F = uploads * n_qubits.
    // Returns the Pauli expectations [B, M] and the final states [B, 2^n] (complex), which the
    // adjoint backward starts from. rotation/measure: "X"|"Y"|"Z"; entangling: "strong"|"basic";
    // measurement_mode: "none"|"even"|"single".
    m.def("qdi(Tensor inputs, Tensor weights, str rotation, str entangling, str measure, str measurement_mode) -> (Tensor, Tensor)");
    // Adjoint-method vector-Jacobian product: (grad_inputs [B, F], grad_weights like weights).
    // `state` must be qdi's second output for the same inputs/weights (it is a cache, not an input).
    m.def("qdi_backward(Tensor grad_output, Tensor state, Tensor inputs, Tensor weights, str rotation, str entangling, str measure, str measurement_mode) -> (Tensor, Tensor)");
    // Derivative of qdi_backward along (grad_grad_inputs, grad_grad_weights), by tangent-propagated
    // forward and adjoint sweeps: returns (grad of grad_output = J v [B, M], Hessian-vector products
    // of sum(grad_output * y) for inputs [B, F] and weights). Exact; makes forces trainable.
    m.def("qdi_double_backward(Tensor? grad_grad_inputs, Tensor? grad_grad_weights, Tensor grad_output, Tensor inputs, Tensor weights, str rotation, str entangling, str measure, str measurement_mode) -> (Tensor, Tensor, Tensor)");
}
