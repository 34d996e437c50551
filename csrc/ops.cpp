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
