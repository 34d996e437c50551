#pragma once
/// Argument checks shared by the CPU and CUDA faces of the qdi ops: shapes, dtypes and names, each
/// error naming the argument at fault. Host-only, needs ATen (included by the .cpp/.cu drivers only).
#include <ATen/ATen.h>

#include <string>

#include "qallegro/qdi_program.h"

namespace qallegro {
namespace qdi {

/// Validates inputs [B, F] and weights [U, depth, n, K] and builds the circuit program.
inline Program checked_program(const at::Tensor& inputs, const at::Tensor& weights, const std::string& rotation,
                               const std::string& entangling, const std::string& measure,
                               const std::string& measurement_mode) {
    const int32_t rot = parse_axis(rotation), ent = parse_entangling(entangling);
    const int32_t pauli = parse_axis(measure), mode = parse_mode(measurement_mode);
    TORCH_CHECK(rot >= 0, "qdi: rotation must be 'X', 'Y' or 'Z', got '", rotation, "'");
    TORCH_CHECK(ent >= 0, "qdi: entangling must be 'strong' or 'basic', got '", entangling, "'");
    TORCH_CHECK(pauli >= 0, "qdi: measure must be 'X', 'Y' or 'Z', got '", measure, "'");
    TORCH_CHECK(mode >= 0, "qdi: measurement_mode must be 'none', 'even' or 'single', got '",
                measurement_mode, "'");
    TORCH_CHECK(inputs.dim() == 2, "qdi: inputs must be [batch, in_features], got ", inputs.sizes());
    TORCH_CHECK(weights.dim() == 4, "qdi: weights must be [uploads, depth, n_qubits, params_per_gate], got ",
                weights.sizes());
    TORCH_CHECK(inputs.scalar_type() == at::kFloat || inputs.scalar_type() == at::kDouble,
                "qdi: inputs must be float32 or float64, got ", inputs.scalar_type());
    TORCH_CHECK(weights.scalar_type() == inputs.scalar_type(), "qdi: weights dtype ", weights.scalar_type(),
                " differs from inputs dtype ", inputs.scalar_type());
    TORCH_CHECK(weights.device() == inputs.device(), "qdi: weights on ", weights.device(), " but inputs on ",
                inputs.device());
    const int64_t uploads = weights.size(0), depth = weights.size(1), n = weights.size(2);
    TORCH_CHECK(n >= 1 && n <= kMaxQubits, "qdi: n_qubits (weights.size(2)) must be in 1..", kMaxQubits,
                ", got ", n);
    TORCH_CHECK(uploads >= 1 && depth >= 1, "qdi: weights needs >= 1 upload and depth >= 1, got ",
                weights.sizes());
    const int64_t K = ent == kStrong ? 3 : 1;
    TORCH_CHECK(weights.size(3) == K, "qdi: entangling '", entangling, "' needs ", K,
                " parameters per gate (weights.size(3)), got ", weights.size(3));
    TORCH_CHECK(inputs.size(1) == uploads * n, "qdi: inputs.size(1) = ", inputs.size(1),
                " must equal uploads * n_qubits = ", uploads, " * ", n);
    return build_program(int32_t(n), int32_t(uploads), int32_t(depth), rot, ent, pauli, mode);
}

/// Checks a saved final state [B, 2^n] against the circuit and inputs.
inline void check_state(const at::Tensor& state, const at::Tensor& inputs, const Program& prog) {
    const auto ctype = inputs.scalar_type() == at::kFloat ? at::kComplexFloat : at::kComplexDouble;
    TORCH_CHECK(state.dim() == 2 && state.size(0) == inputs.size(0) && state.size(1) == prog.dim(),
                "qdi_backward: state must be [batch, 2^n_qubits] = [", inputs.size(0), ", ", prog.dim(),
                "], got ", state.sizes());
    TORCH_CHECK(state.scalar_type() == ctype, "qdi_backward: state must be ", ctype, ", got ",
                state.scalar_type());
}

/// Checks a per-output cotangent / per-input tangent against its expected shape.
inline void check_like(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::Tensor& inputs) {
    TORCH_CHECK(t.sizes() == shape, "qdi: ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == inputs.scalar_type(), "qdi: ", name, " dtype ", t.scalar_type(),
                " differs from inputs dtype ", inputs.scalar_type());
    TORCH_CHECK(t.device() == inputs.device(), "qdi: ", name, " on ", t.device(), " but inputs on ",
                inputs.device());
}

}  // namespace qdi
}  // namespace qallegro
