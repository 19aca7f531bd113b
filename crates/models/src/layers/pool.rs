//! Adaptive average pooling (torchvision AlexNet's `avgpool`), built from differentiable ops.
//!
//! Candle's `avg_pool2d` backward is only right when the kernel divides the map, so the general
//! case here averages each output cell's window (PyTorch's start/end rule) with `narrow` + `mean`.

use candle_core::{Result, Tensor, D};

/// Adaptive average pooling to `out x out`.
///
/// # Shapes
/// `xs`: `(B, C, H, W)` -> `(B, C, out, out)`.
pub fn adaptive_avg_pool2d(xs: &Tensor, out: usize) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    if h == out && w == out {
        return Ok(xs.clone());
    }
    if h % out == 0 && w % out == 0 {
        let (kh, kw) = (h / out, w / out);
        return xs
            .reshape((b, c, out, kh, out, kw))?
            .mean(D::Minus1)?
            .mean(3);
    }
    let rows = (0..out)
        .map(|i| {
            let (h0, h1) = window(i, h, out);
            let row = xs.narrow(2, h0, h1 - h0)?.mean_keepdim(2)?;
            let cells = (0..out)
                .map(|j| {
                    let (w0, w1) = window(j, w, out);
                    row.narrow(3, w0, w1 - w0)?.mean_keepdim(3)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&cells, 3)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 2)
}

/// PyTorch's adaptive window: `[floor(i * n / out), ceil((i + 1) * n / out))`.
fn window(i: usize, n: usize, out: usize) -> (usize, usize) {
    (i * n / out, ((i + 1) * n).div_ceil(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computed_windows() -> Result<()> {
        // 1x1x3x3 = 0..9 pooled to 2x2: windows rows/cols [0,2) and [1,3).
        let xs = Tensor::arange(0f32, 9., &Device::Cpu)?.reshape((1, 1, 3, 3))?;
        let ys = adaptive_avg_pool2d(&xs, 2)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // top-left: mean(0,1,3,4) = 2; top-right: mean(1,2,4,5) = 3; 5; 6.
        assert_eq!(ys, vec![2., 3., 5., 6.]);
        let even = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let ys = adaptive_avg_pool2d(&even, 2)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(ys, vec![2.5, 4.5, 10.5, 12.5]);
        Ok(())
    }
}
