// Shared by zoo's kernels: element loads and stores through an accumulation type (float for
// f32, f16 and bf16; double for f64) and a grid-stride loop over contiguous elements.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

typedef long long i64;

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float load(const float *p) { return *p; }
__device__ __forceinline__ double load(const double *p) { return *p; }
__device__ __forceinline__ float load(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store(float *p, float v) { *p = v; }
__device__ __forceinline__ void store(double *p, double v) { *p = v; }
__device__ __forceinline__ void store(__half *p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }

// for (i64 IDX = ...; IDX < N; ...): every element of [0, N) once, whatever the grid size.
#define GRID_STRIDE(IDX, N)                                                                     \
  for (i64 IDX = (i64)blockIdx.x * blockDim.x + threadIdx.x; IDX < (N);                      \
       IDX += (i64)blockDim.x * gridDim.x)
