// Local response normalisation across channels over a contiguous (B, C, H, W) tensor, the CUDA
// twin of ops/lrn.rs, one thread per element. With s_c = k + alpha * sum_{c' in window(c)} a_c'^2
// (window(c) = c - size/2 ..= c + (size-1)/2, clipped), b_c = a_c * s_c^-beta, and
// dL/da_j = g_j s_j^-beta - 2 alpha beta a_j sum_{c : j in window(c)} g_c a_c s_c^(-beta-1),
// where j in window(c) iff c in j - (size-1)/2 ..= j + size/2. The backward recomputes each s_c it
// needs (size sums of size squares per element) instead of keeping a buffer between passes.
#include "common.cuh"

// s at channel ch of image b, position pos (of hw) for C channels.
template <typename T>
__device__ __forceinline__ typename Acc<T>::type lrn_s(const T *x, i64 b, i64 ch, i64 c, i64 hw,
                                                       i64 pos, i64 size, double alpha, double k) {
  typedef typename Acc<T>::type A;
  const i64 lo = max(ch - size / 2, (i64)0), hi = min(ch + (size - 1) / 2 + 1, c);
  A sum = 0;
  for (i64 cc = lo; cc < hi; ++cc) {
    const A a = load(x + (b * c + cc) * hw + pos);
    sum += a * a;
  }
  return (A)k + (A)alpha * sum;
}

// s^-beta, with the CPU kernel's square-root form for beta = 0.75.
template <typename A> __device__ __forceinline__ A pow_neg_beta(A s, double beta, int fast) {
  if (fast) {
    const A r = sqrt(s);
    return (A)1 / (r * sqrt(r));
  }
  return pow(s, -(A)beta);
}

template <typename T>
__device__ void lrn_fwd(const T *x, T *y, i64 n, i64 c, i64 hw, i64 size, double alpha,
                        double beta, double k, int fast) {
  typedef typename Acc<T>::type A;
  GRID_STRIDE(idx, n) {
    const i64 b = idx / (c * hw), ch = idx / hw % c, pos = idx % hw;
    const A s = lrn_s(x, b, ch, c, hw, pos, size, alpha, k);
    store(y + idx, load(x + idx) * pow_neg_beta(s, beta, fast));
  }
}

template <typename T>
__device__ void lrn_bwd(const T *x, const T *g, T *dx, i64 n, i64 c, i64 hw, i64 size,
                        double alpha, double beta, double k, int fast) {
  typedef typename Acc<T>::type A;
  GRID_STRIDE(idx, n) {
    const i64 b = idx / (c * hw), j = idx / hw % c, pos = idx % hw;
    // sum over the channels whose window holds j of t_c = g_c a_c s_c^(-beta-1).
    const i64 lo = max(j - (size - 1) / 2, (i64)0), hi = min(j + size / 2 + 1, c);
    A sum_t = 0;
    for (i64 cc = lo; cc < hi; ++cc) {
      const i64 at = (b * c + cc) * hw + pos;
      const A s = lrn_s(x, b, cc, c, hw, pos, size, alpha, k);
      sum_t += load(g + at) * load(x + at) * pow_neg_beta(s, beta, fast) / s;
    }
    const A s = lrn_s(x, b, j, c, hw, pos, size, alpha, k);
    const A coef = (A)(2.0 * alpha * beta);
    store(dx + idx, load(g + idx) * pow_neg_beta(s, beta, fast) - coef * load(x + idx) * sum_t);
  }
}

#define ZOO_LRN(T, SUFFIX)                                                                      \
  extern "C" __global__ void lrn_fwd_##SUFFIX(const T *x, T *y, i64 n, i64 c, i64 hw, i64 size, \
                                              double alpha, double beta, double k, int fast) {  \
    lrn_fwd<T>(x, y, n, c, hw, size, alpha, beta, k, fast);                                     \
  }                                                                                             \
  extern "C" __global__ void lrn_bwd_##SUFFIX(const T *x, const T *g, T *dx, i64 n, i64 c,      \
                                              i64 hw, i64 size, double alpha, double beta,      \
                                              double k, int fast) {                             \
    lrn_bwd<T>(x, g, dx, n, c, hw, size, alpha, beta, k, fast);                                 \
  }

ZOO_LRN(float, f32)
ZOO_LRN(double, f64)
ZOO_LRN(__half, f16)
ZOO_LRN(__nv_bfloat16, bf16)
