// The device QDI simulator (qallegro/qdi_driver.h, qallegro/qdi_kernels.h) run on the CPU by a sequential
// launcher: every block and thread of every launch in order, the reduce kernels' two phases split at the
// GPU's barrier. Selected with QALLEGRO_QDI_SIMULATOR=device-kernels (gate by gate, qdi_driver.h) or
// device-fused (per-upload unitaries and GEMMs, qdi_fused_driver.h; its GEMMs run through ATen on the
// CPU tensors, BLAS instead of cuBLAS); the CPU tests do, so the CUDA kernel bodies and their launch
// sequence are executed and compared with the reference without a GPU. Not a fast path: one thread,
// no vectorisation.
#include <ATen/ATen.h>

#include <vector>

#include <ATen/Parallel.h>

#include "qallegro/qdi_driver.h"
#include "qallegro/qdi_fused_driver.h"

namespace qallegro {
namespace qdi {

namespace {

struct SequentialLaunch {
    template <class Body>
    void map(int64_t grid, const Body& body) {
        for (int64_t block = 0; block < grid; ++block)
            for (int thread = 0; thread < kKernelThreads; ++thread) body(block, thread, kKernelThreads);
    }
    template <class Body>
    void reduce(int64_t grid, const Body& body) {
        using T = typename Body::value_type;
        for (int64_t block = 0; block < grid; ++block) {
            T sum[Body::kValues] = {};
            for (int thread = 0; thread < kKernelThreads; ++thread) {  // phase 1: per-thread partial sums
                T acc[Body::kValues] = {};
                body.partial(block, thread, kKernelThreads, acc);
                for (int e = 0; e < Body::kValues; ++e) sum[e] += acc[e];
            }
            body.finish(block, sum);  // phase 2, after the barrier: thread 0 writes
        }
    }
};

}  // namespace

template <typename T>
void device_kernels_forward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                            at::Tensor& y, at::Tensor& state) {
    if (x.size(0) == 0) return;
    SequentialLaunch launch;
    kernels_forward<T>(prog, launch, mats, x, y, state);
}

template <typename T>
void device_kernels_backward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                             const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx, at::Tensor& gw) {
    if (x.size(0) == 0) return;
    SequentialLaunch launch;
    at::Tensor gw_ps = at::zeros({x.size(0), prog.n_weights}, x.options());
    gx.zero_();  // the block terms accumulate
    kernels_backward<T>(prog, launch, mats, x, gy, state, gx, gw_ps);
    gw.copy_(gw_ps.sum(0).view(gw.sizes()));
}

template <typename T>
void device_kernels_double_backward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                                    const at::Tensor& tx, const at::Tensor& gy, at::Tensor& jvp, at::Tensor& gx,
                                    at::Tensor& gw) {
    if (x.size(0) == 0) return;
    SequentialLaunch launch;
    at::Tensor gw_ps = at::zeros({x.size(0), prog.n_weights}, x.options());
    kernels_double_backward<T>(prog, launch, mats, x, tx, gy, jvp, gx, gw_ps);
    gw.copy_(gw_ps.sum(0).view(gw.sizes()));
}

template <typename T>
void device_fused_forward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                          at::Tensor& y, at::Tensor& state) {
    SequentialLaunch launch;
    // inside one (one-task) parallel region BLAS runs single-threaded, as in the CPU fused driver: the
    // results do not depend on the thread count
    at::parallel_for(0, 1, 1, [&](int64_t, int64_t) { fused_kernels_forward<T>(prog, launch, mats, x, y, state); });
}

template <typename T>
void device_fused_backward(const Program& prog, const std::vector<StepMats<T>>& mats, const at::Tensor& x,
                           const at::Tensor& gy, const at::Tensor& state, at::Tensor& gx, at::Tensor& gw) {
    SequentialLaunch launch;
    at::parallel_for(0, 1, 1,
                     [&](int64_t, int64_t) { fused_kernels_backward<T>(prog, launch, mats, x, gy, state, gx, gw); });
}

#define QDI_INSTANTIATE(T)                                                                                     \
    template void device_kernels_forward<T>(const Program&, const std::vector<StepMats<T>>&, const at::Tensor&, \
                                            at::Tensor&, at::Tensor&);                                         \
    template void device_kernels_backward<T>(const Program&, const std::vector<StepMats<T>>&, const at::Tensor&, \
                                             const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);    \
    template void device_kernels_double_backward<T>(const Program&, const std::vector<StepMats<T>>&,             \
                                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,     \
                                                    at::Tensor&, at::Tensor&, at::Tensor&);    \
    template void device_fused_forward<T>(const Program&, const std::vector<StepMats<T>>&, const at::Tensor&,   \
                                          at::Tensor&, at::Tensor&);                                           \
    template void device_fused_backward<T>(const Program&, const std::vector<StepMats<T>>&, const at::Tensor&,  \
                                           const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
QDI_INSTANTIATE(float)
QDI_INSTANTIATE(double)
#undef QDI_INSTANTIATE

}  // namespace qdi
}  // namespace qallegro
