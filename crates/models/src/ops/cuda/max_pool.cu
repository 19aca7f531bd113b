// Max-pooling whose windows may overlap (kernel > stride) over a contiguous (B, C, H, W) tensor,
// the CUDA twin of ops/max_pool.rs. The forward runs one thread per output element; the backward
// one thread per input element, which adds the output gradients of the windows whose argmax it
// is (a gather: no atomics, deterministic, and in the CPU kernel's order). A window's argmax is
// its first maximum in row-major order, a later NaN replacing it, as on the CPU and in PyTorch.
#include "common.cuh"

// Index within the h x w plane of the maximum of output window (oi, oj).
template <typename T>
__device__ __forceinline__ i64 window_argmax(const T *plane, i64 h, i64 w, i64 oi, i64 oj, i64 k,
                                             i64 s, i64 p) {
  typedef typename Acc<T>::type A;
  i64 i0 = oi * s - p, j0 = oj * s - p;
  const i64 i1 = min(i0 + k, h), j1 = min(j0 + k, w);
  i0 = max(i0, (i64)0);
  j0 = max(j0, (i64)0);
  A best = -INFINITY;
  i64 best_idx = i0 * w + j0;
  for (i64 i = i0; i < i1; ++i) {
    for (i64 j = j0; j < j1; ++j) {
      const A v = load(plane + i * w + j);
      if (v > best || isnan(v)) {
        best = v;
        best_idx = i * w + j;
      }
    }
  }
  return best_idx;
}

// y (B, C, ho, wo) from x (B, C, h, w); n = B * C * ho * wo.
template <typename T>
__device__ void max_pool_fwd(const T *x, T *y, i64 n, i64 h, i64 w, i64 ho, i64 wo, i64 k, i64 s,
                             i64 p) {
  GRID_STRIDE(idx, n) {
    const i64 plane = idx / (ho * wo), r = idx % (ho * wo);
    const T *src = x + plane * h * w;
    y[idx] = src[window_argmax(src, h, w, r / wo, r % wo, k, s, p)];
  }
}

// dx (B, C, h, w) from x and the output gradient g (B, C, ho, wo); n = B * C * h * w.
template <typename T>
__device__ void max_pool_bwd(const T *x, const T *g, T *dx, i64 n, i64 h, i64 w, i64 ho, i64 wo,
                             i64 k, i64 s, i64 p) {
  typedef typename Acc<T>::type A;
  GRID_STRIDE(idx, n) {
    const i64 plane = idx / (h * w), r = idx % (h * w), i = r / w, j = r % w;
    const T *src = x + plane * h * w;
    const T *grad = g + plane * ho * wo;
    // The windows holding (i, j): o * s - p <= i < o * s - p + k.
    const i64 oi_lo = i + p - k + 1 <= 0 ? 0 : (i + p - k + 1 + s - 1) / s;
    const i64 oj_lo = j + p - k + 1 <= 0 ? 0 : (j + p - k + 1 + s - 1) / s;
    const i64 oi_hi = min((i + p) / s, ho - 1), oj_hi = min((j + p) / s, wo - 1);
    A acc = 0;
    for (i64 oi = oi_lo; oi <= oi_hi; ++oi) {
      for (i64 oj = oj_lo; oj <= oj_hi; ++oj) {
        if (window_argmax(src, h, w, oi, oj, k, s, p) == r) {
          acc += load(grad + oi * wo + oj);
        }
      }
    }
    store(dx + idx, acc);
  }
}

#define ZOO_MAX_POOL(T, SUFFIX)                                                                 \
  extern "C" __global__ void max_pool_fwd_##SUFFIX(const T *x, T *y, i64 n, i64 h, i64 w,       \
                                                   i64 ho, i64 wo, i64 k, i64 s, i64 p) {      \
    max_pool_fwd<T>(x, y, n, h, w, ho, wo, k, s, p);                                            \
  }                                                                                             \
  extern "C" __global__ void max_pool_bwd_##SUFFIX(const T *x, const T *g, T *dx, i64 n, i64 h, \
                                                   i64 w, i64 ho, i64 wo, i64 k, i64 s,        \
                                                   i64 p) {                                     \
    max_pool_bwd<T>(x, g, dx, n, h, w, ho, wo, k, s, p);                                        \
  }

ZOO_MAX_POOL(float, f32)
ZOO_MAX_POOL(double, f64)
ZOO_MAX_POOL(__half, f16)
ZOO_MAX_POOL(__nv_bfloat16, bf16)
