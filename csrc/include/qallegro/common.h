#pragma once
/// Shared macros for the device-agnostic math headers: every function in csrc/include/qallegro is
/// compiled by g++ for the CPU kernels and by nvcc for the CUDA kernels, so the arithmetic is one.
#if defined(__CUDACC__)
#define QALLEGRO_HD __host__ __device__ __forceinline__
#else
#define QALLEGRO_HD inline
#endif
