#pragma once
/// One-dimensional kernel launches shared by the CUDA build and the CPU test build.
///
/// A CUDA kernel body is a functor over plain pointers with a `QALLEGRO_HD void operator()(ThreadIndex)`:
/// nvcc runs it through `run_body<<<grid, block>>>` (one GPU thread per call), and
/// `launch_sequential` runs the very same body on the CPU, block after block and thread after thread,
/// so that the CPU test suite executes the arithmetic and the indexing the GPU executes. A body that
/// needs `__syncthreads` is written as one functor per phase between barriers; launching the phases
/// one after the other over all threads of a block is then what the barrier guarantees.
#include <cstdint>

#include "qallegro/common.h"

namespace qallegro {

/// Threads per block of every 1-D launch of the op kernels (a multiple of the warp size).
constexpr int kBlockThreads = 128;

/// Where one thread of a 1-D launch stands: blockIdx.x, threadIdx.x and blockDim.x.
struct ThreadIndex {
    int64_t block;      ///< blockIdx.x
    int64_t thread;     ///< threadIdx.x
    int64_t block_dim;  ///< blockDim.x
    /// The thread's index in the whole grid.
    QALLEGRO_HD int64_t global() const { return block * block_dim + thread; }
};

/// Blocks needed so that a grid of `block_dim`-thread blocks covers `threads` threads.
QALLEGRO_HD int64_t blocks_for(int64_t threads, int block_dim = kBlockThreads) {
    return (threads + block_dim - 1) / block_dim;
}

/// Runs `body` for every thread of a `grid` x `block_dim` launch, sequentially: how the CPU test
/// build runs a CUDA kernel body. In (block, thread) order, or in the exact reverse order when
/// `reverse`: on a GPU the threads run concurrently, so a body whose result depends on the order
/// (it reads what another thread of the same launch writes, or two threads write one element)
/// is a race, and running both orders is how the tests catch it. Host only.
template <class Body>
inline void launch_sequential(int64_t grid, int block_dim, const Body& body, bool reverse = false) {
    for (int64_t k = 0; k < grid * block_dim; ++k) {
        const int64_t g = reverse ? grid * block_dim - 1 - k : k;
        body(ThreadIndex{g / block_dim, g % block_dim, block_dim});
    }
}

/// The launcher of the CPU test build, with the interface of the CUDA one: `launch(name, threads,
/// body)` runs `body` over `threads` threads in blocks of kBlockThreads (nothing when `threads` is 0;
/// `body` returns early for the indices past `threads` in the last block, as on the GPU).
struct SequentialLauncher {
    bool reverse = false;  ///< run the threads last to first (see launch_sequential)
    template <class Body>
    void operator()(const char* /*name*/, int64_t threads, const Body& body) const {
        if (threads > 0) launch_sequential(blocks_for(threads), kBlockThreads, body, reverse);
    }
};

#if defined(__CUDACC__)
/// The one CUDA kernel: every thread calls the body with its indices.
template <class Body>
__global__ void run_body(const Body body) {
    body(ThreadIndex{static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(threadIdx.x),
                     static_cast<int64_t>(blockDim.x)});
}

/// Launches `body` over `threads` threads on `stream` (nothing when `threads` is 0: an empty grid is
/// a launch error) and returns the launch status.
template <class Body>
inline cudaError_t launch_cuda(int64_t threads, cudaStream_t stream, const Body& body) {
    if (threads <= 0) return cudaSuccess;
    run_body<Body><<<static_cast<unsigned>(blocks_for(threads)), kBlockThreads, 0, stream>>>(body);
    return cudaGetLastError();
}
#endif

}  // namespace qallegro
