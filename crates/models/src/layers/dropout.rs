//! Dropout with seeded masks (candle-nn's draws from Candle's unseedable CPU generator).

use candle_core::{ModuleT, Result, Tensor};
use rand::Rng;

use crate::init::SeededRng;

/// Inverted dropout: in training, zeroes each element with probability `p` and scales the
/// rest by `1 / (1 - p)`; in evaluation, the identity.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: SeededRng,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1)`, drawing masks from `rng`.
    pub fn new(p: f64, rng: SeededRng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}")
        }
        Ok(Dropout { p, rng })
    }
}

impl ModuleT for Dropout {
    /// # Shapes
    /// any -> same shape.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        let mut rng = self.rng.next_stream();
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if rng.random::<f64>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs.mul(&mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn drops_the_expected_fraction_and_keeps_the_mean() -> Result<()> {
        let xs = Tensor::ones((100, 100), DType::F32, &Device::Cpu)?;
        let d = Dropout::new(0.3, SeededRng::new(3))?;
        let ys = d.forward_t(&xs, true)?;
        let zeros = ys
            .eq(0f32)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()?;
        assert!((zeros - 0.3).abs() < 0.02, "dropped {zeros}");
        let mean = ys.mean_all()?.to_scalar::<f32>()?;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        // Reproducible per seed; each call draws a new mask.
        let again = Dropout::new(0.3, SeededRng::new(3))?.forward_t(&xs, true)?;
        assert_eq!(ys.to_vec2::<f32>()?, again.to_vec2::<f32>()?);
        assert_ne!(
            ys.to_vec2::<f32>()?,
            d.forward_t(&xs, true)?.to_vec2::<f32>()?
        );
        assert_eq!(
            d.forward_t(&xs, false)?.to_vec2::<f32>()?,
            xs.to_vec2::<f32>()?
        );
        assert!(Dropout::new(1.0, SeededRng::new(0)).is_err());
        Ok(())
    }
}
