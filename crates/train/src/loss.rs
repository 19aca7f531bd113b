//! Label-smoothed cross-entropy and global gradient-norm clipping, as PyTorch defines them.

use candle_core::backprop::GradStore;
use candle_core::{bail, DType, Result, Tensor, Var, D};

/// Mean cross-entropy of `logits` `(B, C)` against `labels` `(B)` (u32) with label smoothing
/// `eps`, as `torch.nn.functional.cross_entropy(..., label_smoothing=eps)`:
///
/// ```text
/// loss = mean over the batch of  (1 - eps) * (-log p[y])  +  eps * mean over classes of (-log p[c])
/// ```
///
/// (the cross-entropy against the target `(1 - eps) * onehot(y) + eps / C`). Differentiable.
/// Labels outside `0..C` are an error rather than a silent out-of-bounds gather.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let (batch, classes) = logits.dims2()?;
    if labels.dims() != [batch] {
        bail!(
            "labels have shape {:?}, expected ({batch}) to match logits {:?}",
            labels.dims(),
            logits.dims()
        )
    }
    if !(0.0..1.0).contains(&eps) {
        bail!("label smoothing must be in [0, 1), got {eps}")
    }
    if batch == 0 {
        bail!("cross-entropy of an empty batch")
    }
    let labels = labels.to_dtype(DType::U32)?;
    let max = labels.max(0)?.to_scalar::<u32>()?;
    if max as usize >= classes {
        bail!("label {max} is out of range for {classes} classes")
    }
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = log_p.gather(&labels.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let smooth = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    nll.affine(1.0 - eps, 0.0)? + smooth.affine(eps, 0.0)?
}

/// Clips the gradients of `vars` in `grads` to a global L2 norm of at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`: with `norm = sqrt(sum over all grads of |g|^2)`, every
/// gradient is multiplied by `max_norm / (norm + 1e-6)` when that factor is below one.
///
/// Returns the norm before clipping (computed in f64). Variables without a gradient are skipped.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sum_sq: Option<Tensor> = None;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            let s = g.to_dtype(DType::F64)?.sqr()?.sum_all()?;
            sum_sq = Some(match sum_sq {
                None => s,
                Some(acc) => (acc + s)?,
            });
        }
    }
    // One host sync for the whole norm instead of one per variable.
    let norm = match sum_sq {
        None => return Ok(0.0),
        Some(s) => s.to_scalar::<f64>()?.sqrt(),
    };
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), g.affine(coef, 0.0)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits() -> Result<(Tensor, Tensor)> {
        let logits = Tensor::new(&[[2.0f64, 0.5, -1.0], [0.1, 0.2, 0.3]], &Device::Cpu)?;
        let labels = Tensor::new(&[0u32, 2], &Device::Cpu)?;
        Ok((logits, labels))
    }

    /// Hand value: with `lse(x) = log sum exp x`, `-log p[c] = lse - x[c]`.
    fn hand(eps: f64) -> f64 {
        let rows = [([2.0f64, 0.5, -1.0], 0usize), ([0.1, 0.2, 0.3], 2)];
        let mut total = 0.0;
        for (x, y) in rows {
            let lse = x.iter().map(|v| v.exp()).sum::<f64>().ln();
            let nll = lse - x[y];
            let mean = x.iter().map(|v| lse - v).sum::<f64>() / 3.0;
            total += (1.0 - eps) * nll + eps * mean;
        }
        total / 2.0
    }

    #[test]
    fn label_smoothed_cross_entropy_matches_hand_and_torch() -> Result<()> {
        let (x, y) = logits()?;
        let got = cross_entropy(&x, &y, 0.1)?.to_scalar::<f64>()?;
        assert!((got - hand(0.1)).abs() < 1e-12, "{got} vs {}", hand(0.1));
        // torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1), float64,
        // logits/labels as above (.venv-ref, torch 2.x).
        assert!((got - 0.7016270724432006).abs() < 1e-12);
        let plain = cross_entropy(&x, &y, 0.0)?.to_scalar::<f64>()?;
        assert!((plain - 0.6216270724432006).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn bad_labels_are_errors() -> Result<()> {
        let (x, _) = logits()?;
        let y = Tensor::new(&[0u32, 3], &Device::Cpu)?;
        let err = cross_entropy(&x, &y, 0.0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("label 3 is out of range for 3 classes")));
        let y = Tensor::new(&[0u32], &Device::Cpu)?;
        assert!(cross_entropy(&x, &y, 0.0).is_err());
        Ok(())
    }

    #[test]
    fn clip_scales_only_above_the_threshold() -> Result<()> {
        let a = Var::new(&[0.0f64, 0.0], &Device::Cpu)?;
        let b = Var::new(&[0.0f64], &Device::Cpu)?;
        // loss = 3 a0 + 4 b0 -> grads (3, 0) and (4): global norm 5.
        let ga = Tensor::new(&[3.0f64, 0.0], &Device::Cpu)?;
        let gb = Tensor::new(&[4.0f64], &Device::Cpu)?;
        let loss = ((a.as_tensor() * &ga)?.sum_all()? + (b.as_tensor() * &gb)?.sum_all()?)?;
        let vars = [a.clone(), b.clone()];

        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, &vars, 10.0)?;
        assert!((norm - 5.0).abs() < 1e-12);
        let ga_after = grads
            .get(a.as_tensor())
            .map(|g| g.to_vec1::<f64>())
            .transpose()?;
        assert_eq!(ga_after, Some(vec![3.0, 0.0]));

        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, &vars, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-12);
        let get = |v: &Var| {
            grads
                .get(v.as_tensor())
                .map(|g| g.to_vec1::<f64>())
                .transpose()
        };
        // torch.nn.utils.clip_grad_norm_([a, b], 1.0) with these grads (float64):
        // a.grad = [0.599999880000024, 0.0], b.grad = [0.799999840000032].
        let (ga, gb) = (get(&a)?.unwrap_or_default(), get(&b)?.unwrap_or_default());
        assert!((ga[0] - 0.599999880000024).abs() < 1e-15 && ga[1] == 0.0);
        assert!((gb[0] - 0.799999840000032).abs() < 1e-15);
        // And by hand: 1 / (5 + 1e-6) times the gradient.
        assert!((gb[0] - 4.0 / (5.0 + 1e-6)).abs() < 1e-15);
        Ok(())
    }
}
