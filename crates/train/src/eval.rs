//! Evaluation: top-1 / top-5 accuracy, loss, per-class accuracy and the confusion matrix.

use std::time::Instant;

use candle_core::{DType, ModuleT, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Fraction of images whose highest logit is the label.
    pub top1: f64,
    /// Fraction of images whose label is among the 5 highest logits (all classes when fewer).
    pub top5: f64,
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    /// Top-1 accuracy per class (NaN for a class with no image).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[label][prediction]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Images evaluated.
    pub images: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Runs `model` in evaluation mode over `batches` of `(images, labels)` for a `classes`-way
/// classifier.
///
/// Ties between logits go to the lower class index (as `argmax`), for top-1 and top-5 alike, so
/// the two always agree. Fails on labels outside `0..classes` or logits of the wrong width.
pub fn evaluate<M, I>(model: &M, batches: I, classes: usize) -> Result<EvalReport>
where
    M: ModuleT + ?Sized,
    I: IntoIterator<Item = candle_core::Result<(Tensor, Tensor)>>,
{
    let start = Instant::now();
    let k = classes.min(5);
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut images, mut top1, mut top5) = (0u64, 0u64, 0u64);
    let mut loss_sum = 0.0f64;
    for batch in batches {
        let (xs, ys) = batch?;
        let logits = model.forward_t(&xs, false)?;
        let (b, c) = logits.dims2()?;
        if c != classes {
            return Err(TrainError::Invalid(format!(
                "the model produced {c} logits per image, expected {classes} classes"
            )));
        }
        // On the host in f64: top-k and the confusion matrix are bookkeeping, not tensor work.
        let rows = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let labels = ys.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        if labels.len() != b {
            return Err(TrainError::Invalid(format!(
                "a batch has {b} images but {} labels",
                labels.len()
            )));
        }
        for (row, &label) in rows.iter().zip(&labels) {
            let y = label as usize;
            if y >= classes {
                return Err(TrainError::Invalid(format!(
                    "label {label} is out of range for {classes} classes"
                )));
            }
            let target = row[y];
            // Rank of the label: classes strictly ahead of it (ties to the lower index).
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > target || (v == target && j < y))
                .count();
            let pred = argmax(row);
            confusion[y][pred] += 1;
            top1 += u64::from(rank == 0);
            top5 += u64::from(rank < k);
            let max = row[pred];
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            loss_sum += lse - target;
        }
        images += b as u64;
    }
    let n = images.max(1) as f64;
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let total: u64 = row.iter().sum();
            if total == 0 {
                f64::NAN
            } else {
                row[i] as f64 / total as f64
            }
        })
        .collect();
    Ok(EvalReport {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        loss: loss_sum / n,
        per_class_accuracy,
        confusion,
        images,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Index of the first maximum.
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Returns its input as logits.
    struct Identity;
    impl ModuleT for Identity {
        fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
            Ok(xs.clone())
        }
    }

    #[test]
    fn top1_top5_confusion_and_loss() -> Result<()> {
        let dev = Device::Cpu;
        // 6 classes; image 0 right, image 1 label ranked 2nd, image 2 label ranked last.
        let logits = Tensor::new(
            &[
                [5.0f32, 1.0, 0.0, 0.0, 0.0, 0.0],
                [1.0, 3.0, 2.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            ],
            &dev,
        )?;
        let labels = Tensor::new(&[0u32, 2, 0], &dev)?;
        let r = evaluate(&Identity, [Ok((logits, labels))], 6)?;
        assert_eq!(r.images, 3);
        assert!((r.top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.top5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.confusion[0], vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(r.confusion[2], vec![0, 1, 0, 0, 0, 0]);
        assert!((r.per_class_accuracy[0] - 0.5).abs() < 1e-12);
        assert_eq!(r.per_class_accuracy[2], 0.0);
        assert!(r.per_class_accuracy[1].is_nan());
        let ce = |row: [f64; 6], y: usize| row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[y];
        let want = (ce([5., 1., 0., 0., 0., 0.], 0)
            + ce([1., 3., 2., 0., 0., 0.], 2)
            + ce([0., 1., 2., 3., 4., 5.], 0))
            / 3.0;
        assert!((r.loss - want).abs() < 1e-6, "{} vs {want}", r.loss);
        Ok(())
    }

    #[test]
    fn out_of_range_label_is_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1.0f32, 0.0]], &dev)?;
        let labels = Tensor::new(&[2u32], &dev)?;
        let err = evaluate(&Identity, [Ok((logits, labels))], 2).err();
        assert!(err.is_some_and(|e| e.to_string().contains("label 2 is out of range")));
        Ok(())
    }
}
