//! Strided matrix products on slices, through the `gemm` crate (the kernels Candle's CPU
//! `matmul` runs).
//!
//! The convolution calls these instead of `Tensor::matmul` so that it can keep its column
//! matrices between chunks instead of allocating and zeroing a fresh one per chunk (a sixth of
//! AlexNet's first layer went to `memset`), accumulate the weight gradient in place, write a
//! product straight into the output, and read a transposed weight without copying it.
//! [`Mat`] checks a view against its slice once, so the one `unsafe` call below cannot read or
//! write out of bounds.
#![allow(unsafe_code)]

use candle_core::{bail, Result};

use super::Real;

mod bf16;
pub(crate) use bf16::{
    available as bf16_available, matmul_bf16, window_product, window_tile_is_fastest, Windows,
    WINDOW_TILE,
};

/// Products with fewer multiply-adds than this run on the calling thread only.
const PARALLEL_MIN: usize = 1 << 18;

/// A read-only `rows x cols` view of a slice with element `(i, j)` at `i * rs + j * cs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A view, or an error when its last element lies outside `data`.
    pub(crate) fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self> {
        let fits = rows == 0
            || cols == 0
            || (rows - 1)
                .checked_mul(rs)
                .zip((cols - 1).checked_mul(cs))
                .and_then(|(r, c)| r.checked_add(c))
                .is_some_and(|last| last < data.len());
        if !fits {
            bail!(
                "matmul: a {rows}x{cols} view with strides ({rs}, {cs}) does not fit {} elements",
                data.len()
            )
        }
        Ok(Self {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// The first `rows * cols` elements of `data` as a row-major matrix.
    pub(crate) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// How a product multiplies its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Products {
    /// In the operands' own dtype.
    #[default]
    Exact,
    /// `f32` operands rounded to `bf16`, their products summed in `f32`: what the mixed-precision
    /// mode's `bf16` operands get from autocast, on the CPU's `bf16` dot-product instructions
    /// ([`matmul_bf16`]). `f64` operands multiply exactly.
    Bf16,
}

/// A matrix product with [`matmul`]'s arguments.
pub(crate) type ProductFn<T> =
    fn(Mat<'_, T>, Mat<'_, T>, &mut [T], usize, bool, bool) -> Result<()>;

impl Products {
    /// The product for `T` operands: [`matmul`], or `T`'s `bf16` one.
    pub(crate) fn of<T: Real>(self) -> ProductFn<T> {
        match self {
            Self::Exact => matmul,
            Self::Bf16 => T::BF16_PRODUCT,
        }
    }
}

/// `(m, n, k)` of `A (m x k) x B (k x n)` into the row-major `m x n` matrix with row stride
/// `c_rs` at the start of `c`, or the error that says why the shapes do not fit.
fn check_product<T>(
    a: &Mat<'_, T>,
    b: &Mat<'_, T>,
    c: &[T],
    c_rs: usize,
) -> Result<(usize, usize, usize)> {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if b.rows != k {
        bail!("matmul: A is {m}x{k} but B is {}x{n}", b.rows)
    }
    if m > 0 && n > 0 && (c_rs < n || (m - 1) * c_rs + n > c.len()) {
        bail!(
            "matmul: {} elements cannot hold a {m}x{n} result with row stride {c_rs}",
            c.len()
        )
    }
    Ok((m, n, k))
}

/// `C = A x B`, or `C += A x B` with `accumulate`, where `C` is the row-major `(A.rows, B.cols)`
/// matrix with row stride `c_rs` (at least `B.cols`) at the start of `c`. With `parallel`, a
/// large product is split between rayon's threads; without, it runs on the calling thread.
pub(crate) fn matmul<T: Real>(
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    c: &mut [T],
    c_rs: usize,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (m, n, k) = check_product(&a, &b, c, c_rs)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(c_rs)
                .take(m)
                .for_each(|row| row[..n].fill(T::ZERO));
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k >= PARALLEL_MIN {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let stride = |s: usize| isize::try_from(s).map_err(candle_core::Error::wrap);
    // SAFETY: `Mat::new` checked that every element of A and B lies in its slice, and the check
    // above that every element of the m x n result lies in `c`, which is borrowed mutably for
    // the whole call. `T` is f32 or f64 (the `Real` types), which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            stride(c_rs)?,
            accumulate,
            a.data.as_ptr(),
            stride(a.cs)?,
            stride(a.rs)?,
            b.data.as_ptr(),
            stride(b.cs)?,
            stride(b.rs)?,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop in f64 over `round(x)` of each operand: an independent
    /// reference.
    fn reference(a: Mat<'_, f32>, b: Mat<'_, f32>, round: impl Fn(f32) -> f64) -> Vec<f64> {
        let mut c = vec![0.0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| {
                        round(a.data[i * a.rs + p * a.cs]) * round(b.data[p * b.rs + j * b.cs])
                    })
                    .sum();
            }
        }
        c
    }

    pub(super) fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    /// `product` against [`reference`] (operands rounded by `round`) for each `(m, n, k)`, the
    /// operands made by `operands(m, len, seed)`, both plain and transposed, into a block of a
    /// wider, pre-filled C, with and without `accumulate` and `parallel`: only the order of the
    /// f32 sums may differ.
    pub(super) fn check(
        product: ProductFn<f32>,
        shapes: &[(usize, usize, usize)],
        operands: impl Fn(usize, usize, usize) -> Vec<f32>,
        round: impl Fn(f32) -> f64 + Copy,
    ) -> Result<()> {
        for &(m, n, k) in shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (ad, bd) = (operands(m, m * k, 1), operands(m, k * n, 2));
                let a = if ta {
                    Mat::row_major(&ad, k, m)?.t()
                } else {
                    Mat::row_major(&ad, m, k)?
                };
                let b = if tb {
                    Mat::row_major(&bd, n, k)?.t()
                } else {
                    Mat::row_major(&bd, k, n)?
                };
                let want = reference(a, b, round);
                // C is a block of a wider matrix, pre-filled so accumulation and the untouched
                // columns show.
                let c_rs = n + 3;
                let start = values(m * c_rs, 3);
                for (accumulate, parallel) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let mut c = start.clone();
                    product(a, b, &mut c, c_rs, accumulate, parallel)?;
                    for i in 0..m {
                        for j in 0..c_rs {
                            let (got, before) = (c[i * c_rs + j], start[i * c_rs + j]);
                            let expect = match (j < n, accumulate) {
                                (false, _) => f64::from(before),
                                (true, false) => want[i * n + j],
                                (true, true) => f64::from(before) + want[i * n + j],
                            };
                            let tol = 1e-5 * (k as f64).sqrt().max(1.0) * (1.0 + expect.abs());
                            assert!(
                                (f64::from(got) - expect).abs() <= tol,
                                "{m}x{n}x{k} ta={ta} tb={tb} acc={accumulate} par={parallel}: \
                                 C[{i},{j}] = {got}, want {expect}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn strided_and_accumulated_products_match_the_triple_loop() -> Result<()> {
        let shapes = [
            (1, 1, 1),
            (13, 33, 7),
            (100, 515, 600),
            (64, 363, 300),
            (5, 9, 0),
        ];
        check(matmul, &shapes, |_, len, seed| values(len, seed), f64::from)
    }

    #[test]
    fn views_that_overrun_and_shapes_that_do_not_chain_are_errors() -> Result<()> {
        let d = values(12, 4);
        assert!(Mat::new(&d, 4, 4, 4, 1).is_err());
        let a = Mat::row_major(&d, 3, 4)?;
        let mut c = vec![0.0; 16];
        assert!(matmul(a, a, &mut c, 4, false, true).is_err());
        let b = Mat::row_major(&d, 4, 3)?;
        assert!(matmul(a, b, &mut c[..8], 3, false, true).is_err());
        assert!(matmul(a, b, &mut c, 2, false, true).is_err());
        matmul(a, b, &mut c, 3, false, true)
    }
}
