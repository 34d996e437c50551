#pragma once
/// Host side of the fused QDI simulator (math: qallegro/qdi_fused.h), shared by the CPU driver
/// (csrc/cpu/qdi_fused.cpp) and the device driver (qallegro/qdi_fused_driver.h): the unitaries V_u
/// and the weight gradients from C_u = sum_b phi_ub lam_ub^+, both computed over the 2^n basis states
/// on the host (their cost does not grow with the batch). Needs ATen; tensors here are CPU tensors.
/// Header-only so that the CUDA translation unit gets its own copy (qdi.cu is also linked on its own,
/// with --no-undefined, as a link check), and with internal linkage: csrc/cpu is compiled with OpenMP,
/// where at::parallel_for spreads the basis states over threads, nvcc without it, where it runs
/// serially; with external linkage the two differing instances would share one name and the linker
/// could keep the serial one for the CPU op too.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <type_traits>
#include <vector>

#include "qallegro/qdi_fused.h"

namespace qallegro {
namespace qdi {
namespace {

/// Complex CPU dtype whose real part is T.
template <typename T>
at::TensorOptions host_complex_options() {
    return at::TensorOptions().dtype(std::is_same<T, float>::value ? at::kComplexFloat : at::kComplexDouble);
}

/// V_u^T for every upload, complex CPU tensors [dim, dim]: row r is V_u e_r, the basis state r run
/// through the upload's variational part. A batch of row states times V_u^T is V_u applied to each.
template <typename T>
std::vector<at::Tensor> upload_unitaries(const Program& prog, const Chains& chains,
                                         const std::vector<StepMats<T>>& mats, const std::vector<Segment>& segs) {
    const int64_t dim = prog.dim();
    std::vector<at::Tensor> out;
    for (const Segment& seg : segs) {
        at::Tensor vt = at::zeros({dim, dim}, host_complex_options<T>());
        T* p = reinterpret_cast<T*>(vt.data_ptr());
        at::parallel_for(0, dim, 64, [&](int64_t r0, int64_t r1) {
            std::vector<T> tmp(2 * dim);
            for (int64_t r = r0; r < r1; ++r) {
                p[2 * (r * dim + r)] = T(1);
                apply_variational(prog, chains, mats, seg.first, seg.end, p + 2 * r * dim, tmp.data());
            }
        });
        out.push_back(vt);
    }
    return out;
}

/// Adds the weight gradients of upload `seg` to gw [P] (host): vt = V_u^T (upload_unitaries), c =
/// Phi^+ Lam [dim, dim] summed over the batch, Phi the states right after V_u and Lam their cotangents.
/// The adjoint method runs over the basis states: state r is V_u e_r and its cotangent mu_r the row r
/// of V^T C (the cotangents of the states before V_u); the per-step cross matrices are summed over r
/// in order, so the result does not depend on the thread count.
template <typename T>
void matrix_weight_gradients(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                             const Segment& seg, const at::Tensor& vt, const at::Tensor& c, T* gw) {
    const int64_t dim = prog.dim();
    const at::Tensor mu = at::mm(vt, c).contiguous();
    const at::Tensor phi = vt.clone();
    const int32_t n_steps = seg.end - seg.first;
    std::vector<T> cross(size_t(dim) * n_steps * 8, T(0));
    T *vp = reinterpret_cast<T*>(phi.data_ptr()), *mp = reinterpret_cast<T*>(mu.data_ptr());
    at::parallel_for(0, dim, 64, [&](int64_t r0, int64_t r1) {
        std::vector<T> tmp(2 * dim);
        for (int64_t r = r0; r < r1; ++r)
            variational_adjoint(prog, chains, mats, seg.first, seg.end, vp + 2 * r * dim, mp + 2 * r * dim,
                                tmp.data(), cross.data() + size_t(r) * n_steps * 8);
    });
    for (int32_t i = seg.first; i < seg.end; ++i) {
        if (prog.steps[i].chain >= 0) continue;
        T acc[8] = {};
        for (int64_t r = 0; r < dim; ++r)
            for (int e = 0; e < 8; ++e) acc[e] += cross[(size_t(r) * n_steps + (i - seg.first)) * 8 + e];
        block_weight_terms(mats[i], mat2_zero<T>(), cross_to_mat2(acc), false, prog.n_inputs, gw);
    }
}

}  // namespace
}  // namespace qdi
}  // namespace qallegro
