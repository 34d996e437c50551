// CPU kernels of the QDI layer: batched state-vector simulation with exact first (adjoint method) and
// second (tangent-propagated adjoint) derivatives. Gate arithmetic: qallegro/qdi_gates.h; the lane
// engine (groups of samples simulated side by side in SIMD lanes): qallegro/qdi_lanes.h.
//
// The lane engine is compiled twice, for baseline x86-64 and for AVX2+FMA, and chosen at run time,
// so the wheel stays portable while machines that have AVX2 get 4-wide double arithmetic.
// Groups are spread over threads with at::parallel_for; weight gradients are summed per group and
// reduced in group order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <cstring>
#include <memory>
#include <vector>

#include "qallegro/qdi_check.h"
#include "qallegro/qdi_fused.h"
#include "qallegro/qdi_program.h"

namespace qallegro {
namespace qdi {
// the fused simulator (csrc/cpu/qdi_fused.cpp)
template <typename T>
void fused_forward(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                   const at::Tensor& x, at::Tensor& y, at::Tensor& state);
template <typename T>
void fused_backward(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats,
                    const at::Tensor& x, const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx,
                    at::Tensor& gw);
// the CUDA kernels' bodies and launch sequence on a sequential CPU launcher (csrc/cpu/qdi_kernels_cpu.cpp)
template <typename T>
void device_kernels_forward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                            at::Tensor& y, at::Tensor& state);
template <typename T>
void device_kernels_backward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                             const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx, at::Tensor& gw);
template <typename T>
void device_kernels_double_backward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                                    const at::Tensor& tx, const at::Tensor& gy, at::Tensor& jvp, at::Tensor& gx,
                                    at::Tensor& gw);
// the fused device driver (qallegro/qdi_fused_driver.h) on the same launcher
template <typename T>
void device_fused_forward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                          at::Tensor& y, at::Tensor& state);
template <typename T>
void device_fused_backward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                           const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx, at::Tensor& gw);
}  // namespace qdi
}  // namespace qallegro

// Lane vectors are passed by value only between always-inlined functions: no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace qdi_lanes_generic {
#include "qallegro/qdi_lanes.h"
}  // namespace qdi_lanes_generic

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QALLEGRO_QDI_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace qdi_lanes_avx2 {
#include "qallegro/qdi_lanes.h"
}  // namespace qdi_lanes_avx2
#pragma GCC pop_options
#endif

namespace {
using namespace qallegro::qdi;

bool use_avx2() {
#ifdef QALLEGRO_QDI_AVX2
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
#else
    return false;
#endif
}

// Lanes per group: one 256-bit register's worth of samples (4 doubles or 8 floats) while the
// group's few states fit in L2; one sample per group for large registers. (Two registers' worth
// measured slower: the 2x2 matrices and cross accumulators then spill out of the 16 AVX2 registers.)
constexpr int kLaneQubitLimit = 14;

enum class Pass { kForward, kBackward, kDoubleBackward };

enum class Simulator { kGates, kFused, kDeviceKernels, kDeviceFused };

// Which simulator runs a pass: QALLEGRO_QDI_SIMULATOR=fused|gates forces one (the tests and the benchmark
// compare both); =device-kernels and =device-fused run the CUDA op's gate-by-gate and fused drivers with
// their kernel bodies on a sequential CPU launcher (tests only); otherwise the cheaper of fused and
// gate-by-gate by the cost model of qallegro/qdi_fused.h (prefer_fused, the CUDA op's rule too). Second
// derivatives have no fused form and run gate by gate.
Simulator choose(const Program& prog, int64_t batch, Pass pass) {
    const char* env = std::getenv("QALLEGRO_QDI_SIMULATOR");
    const std::string choice = env ? env : "auto";
    TORCH_CHECK(choice == "auto" || choice == "fused" || choice == "gates" || choice == "device-kernels" ||
                    choice == "device-fused",
                "QALLEGRO_QDI_SIMULATOR must be 'auto', 'fused', 'gates', 'device-kernels' or 'device-fused', got '",
                choice, "'");
    if (choice == "device-kernels") return Simulator::kDeviceKernels;
    if (choice == "device-fused")
        return pass == Pass::kDoubleBackward ? Simulator::kDeviceKernels : Simulator::kDeviceFused;
    if (pass == Pass::kDoubleBackward || prog.n_qubits > kMaxFusedQubits || batch == 0 || choice == "gates")
        return Simulator::kGates;
    if (choice == "fused") return Simulator::kFused;
    return prefer_fused(prog, batch) ? Simulator::kFused : Simulator::kGates;
}

// Runs a pass over the batch on all threads with the best lane engine for this CPU.
template <typename T>
void run(const Program& prog, Pass pass, Job<T> job) {
    constexpr int kLanes = 32 / sizeof(T);
    const int L = prog.n_qubits <= kLaneQubitLimit ? kLanes : 1;
    const int64_t groups = (job.batch + L - 1) / L;
    std::vector<T> gw_parts;
    if (pass != Pass::kForward) {
        gw_parts.assign(groups * prog.n_weights, T(0));
        job.gw_parts = gw_parts.data();
    }
    const bool avx2 = use_avx2();
    at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
#define QDI_RUN(NS, LANES)                                                                                   \
    if (pass == Pass::kForward)                                                                              \
        NS::run_forward<T, LANES>(job, g0, g1);                                                             \
    else                                                                                                     \
        NS::run_backward<T, LANES>(job, g0, g1, pass == Pass::kDoubleBackward);
#ifdef QALLEGRO_QDI_AVX2
        if (avx2) {
            if (L == kLanes) { QDI_RUN(qdi_lanes_avx2, kLanes) } else { QDI_RUN(qdi_lanes_avx2, 1) }
            return;
        }
#endif
        (void)avx2;
        if (L == kLanes) { QDI_RUN(qdi_lanes_generic, kLanes) } else { QDI_RUN(qdi_lanes_generic, 1) }
#undef QDI_RUN
    });
    if (pass != Pass::kForward) {  // deterministic reduction of the weight gradients, in group order
        for (int64_t g = 0; g < groups; ++g)
            for (int p = 0; p < prog.n_weights; ++p) job.gw[p] += gw_parts[g * prog.n_weights + p];
    }
}

// theta with the weights at n_inputs.. (what prepare_steps reads); inputs' entries unused
template <typename T>
std::vector<T> weight_theta(const Program& prog, const at::Tensor& w) {
    std::vector<T> theta(prog.n_params(), T(0));
    std::copy(w.data_ptr<T>(), w.data_ptr<T>() + prog.n_weights, theta.begin() + prog.n_inputs);
    return theta;
}

template <typename T>
Job<T> make_job(const Program& prog, const Chains& chains, const std::vector<StepMats<T>>& mats, const at::Tensor& x) {
    Job<T> job{};
    job.prog = &prog;
    job.chains = &chains;
    job.mats = &mats;
    job.batch = x.size(0);
    job.x = x.data_ptr<T>();
    return job;
}

std::tuple<at::Tensor, at::Tensor> qdi_cpu(const at::Tensor& inputs, const at::Tensor& weights,
                                           c10::string_view rotation, c10::string_view entangling,
                                           c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    const at::Tensor x = inputs.contiguous(), w = weights.contiguous();
    at::Tensor y = at::empty({x.size(0), int64_t(prog.measured.size())}, x.options());
    const auto ctype = x.scalar_type() == at::kFloat ? at::kComplexFloat : at::kComplexDouble;
    at::Tensor state = at::empty({x.size(0), prog.dim()}, x.options().dtype(ctype));
    const Chains chains(prog);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_cpu", [&] {
        const auto theta = weight_theta<scalar_t>(prog, w);
        const auto mats = prepare_steps<scalar_t>(prog, theta.data(), nullptr);
        const Simulator sim = choose(prog, x.size(0), Pass::kForward);
        if (sim == Simulator::kFused) return fused_forward<scalar_t>(prog, chains, mats, x, y, state);
        if (sim == Simulator::kDeviceKernels) return device_kernels_forward<scalar_t>(prog, mats, x, y, state);
        if (sim == Simulator::kDeviceFused) return device_fused_forward<scalar_t>(prog, mats, x, y, state);
        Job<scalar_t> job = make_job(prog, chains, mats, x);
        job.y = y.data_ptr<scalar_t>();
        job.state_out = reinterpret_cast<scalar_t*>(state.data_ptr());
        run(prog, Pass::kForward, job);
    });
    return {y, state};
}

std::tuple<at::Tensor, at::Tensor> qdi_backward_cpu(const at::Tensor& grad_output, const at::Tensor& state,
                                                    const at::Tensor& inputs, const at::Tensor& weights,
                                                    c10::string_view rotation, c10::string_view entangling,
                                                    c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    check_like(grad_output, "grad_output", {inputs.size(0), int64_t(prog.measured.size())}, inputs);
    check_state(state, inputs, prog);
    const at::Tensor x = inputs.contiguous(), w = weights.contiguous(), gy = grad_output.contiguous();
    const at::Tensor st = state.contiguous();
    at::Tensor gx = at::empty_like(x), gw = at::zeros_like(w);
    const Chains chains(prog);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_backward_cpu", [&] {
        const auto theta = weight_theta<scalar_t>(prog, w);
        const auto mats = prepare_steps<scalar_t>(prog, theta.data(), nullptr);
        const Simulator sim = choose(prog, x.size(0), Pass::kBackward);
        if (sim == Simulator::kFused) return fused_backward<scalar_t>(prog, chains, mats, x, gy, st, gx, gw);
        if (sim == Simulator::kDeviceKernels)
            return device_kernels_backward<scalar_t>(prog, mats, x, gy, st, gx, gw);
        if (sim == Simulator::kDeviceFused) return device_fused_backward<scalar_t>(prog, mats, x, gy, st, gx, gw);
        Job<scalar_t> job = make_job(prog, chains, mats, x);
        job.gy = gy.data_ptr<scalar_t>();
        job.state_in = reinterpret_cast<const scalar_t*>(st.data_ptr());
        job.gx = gx.data_ptr<scalar_t>();
        job.gw = gw.data_ptr<scalar_t>();
        run(prog, Pass::kBackward, job);
    });
    return {gx, gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> qdi_double_backward_cpu(
    const c10::optional<at::Tensor>& grad_grad_inputs, const c10::optional<at::Tensor>& grad_grad_weights,
    const at::Tensor& grad_output, const at::Tensor& inputs, const at::Tensor& weights, c10::string_view rotation,
    c10::string_view entangling, c10::string_view measure, c10::string_view measurement_mode) {
    const Program prog = checked_program(inputs, weights, std::string(rotation), std::string(entangling),
                                         std::string(measure), std::string(measurement_mode));
    check_like(grad_output, "grad_output", {inputs.size(0), int64_t(prog.measured.size())}, inputs);
    const at::Tensor x = inputs.contiguous(), w = weights.contiguous(), gy = grad_output.contiguous();
    at::Tensor tx, tw;
    if (grad_grad_inputs.has_value() && grad_grad_inputs->defined()) {
        check_like(*grad_grad_inputs, "grad_grad_inputs", x.sizes(), x);
        tx = grad_grad_inputs->contiguous();
    }
    if (grad_grad_weights.has_value() && grad_grad_weights->defined()) {
        check_like(*grad_grad_weights, "grad_grad_weights", w.sizes(), x);
        tw = grad_grad_weights->contiguous();
    }
    at::Tensor jvp = at::zeros_like(gy), gx = at::zeros_like(x), gw = at::zeros_like(w);
    if (!tx.defined() && !tw.defined()) return {jvp, gx, gw};
    const Chains chains(prog);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qdi_double_backward_cpu", [&] {
        const auto theta = weight_theta<scalar_t>(prog, w);
        std::vector<scalar_t> tangent(prog.n_params(), scalar_t(0));
        if (tw.defined())
            std::copy(tw.data_ptr<scalar_t>(), tw.data_ptr<scalar_t>() + prog.n_weights, tangent.begin() + prog.n_inputs);
        const auto mats = prepare_steps<scalar_t>(prog, theta.data(), tangent.data());
        if (choose(prog, x.size(0), Pass::kDoubleBackward) == Simulator::kDeviceKernels)
            return device_kernels_double_backward<scalar_t>(prog, mats, x, tx, gy, jvp, gx, gw);
        Job<scalar_t> job = make_job(prog, chains, mats, x);
        job.tx = tx.defined() ? tx.data_ptr<scalar_t>() : nullptr;
        job.gy = gy.data_ptr<scalar_t>();
        job.gx = gx.data_ptr<scalar_t>();
        job.gw = gw.data_ptr<scalar_t>();
        job.jvp = jvp.data_ptr<scalar_t>();
        run(prog, Pass::kDoubleBackward, job);
    });
    return {jvp, gx, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, CPU, m) {
    m.impl("qdi", &qdi_cpu);
    m.impl("qdi_backward", &qdi_backward_cpu);
    m.impl("qdi_double_backward", &qdi_double_backward_cpu);
}
