//! Per-iteration learning rate.
//!
//! With `S` steps per epoch, `E` epochs, `W = warmup_epochs * S` warm-up steps, 0-based epoch
//! `e`, 0-based step `s` within it and global step `t = e * S + s`:
//!
//! ```text
//! warm-up (t < W):   lr(t) = base * (t + 1) / W            (base / W at t = 0, base at t = W - 1)
//! constant:          lr(t) = base
//! cosine:            lr(t) = base * (1 + cos(pi * (t - W) / (E * S - W))) / 2
//!                    (base at t = W, tending to 0 at the end of the last epoch)
//! step:              lr(t) = base * gamma ^ floor(e / every)
//!                    (counted from epoch 0, as torch's StepLR; warm-up overrides early epochs)
//! ```
//!
//! The formula depends only on `(e, s, S)`, so a resumed run recomputes exactly the value an
//! uninterrupted run would have used.

use zoo_card::Schedule;

/// The learning rate of a recipe as a function of position in training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate (the optimiser's `lr`).
    pub base: f64,
    /// Shape of the schedule.
    pub schedule: Schedule,
    /// Total epochs of the run.
    pub epochs: usize,
}

impl LrSchedule {
    /// The schedule of `base` under `schedule` over `epochs` epochs.
    pub fn new(base: f64, schedule: Schedule, epochs: usize) -> Self {
        LrSchedule {
            base,
            schedule,
            epochs,
        }
    }

    /// Learning rate at 0-based `epoch`, 0-based `step` of `steps_per_epoch`.
    pub fn lr(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
        let per = steps_per_epoch.max(1) as f64;
        let t = epoch as f64 * per + step as f64;
        let warmup_epochs = match self.schedule {
            Schedule::Constant { warmup_epochs }
            | Schedule::Cosine { warmup_epochs }
            | Schedule::Step { warmup_epochs, .. } => warmup_epochs,
        };
        let w = warmup_epochs as f64 * per;
        if t < w {
            return self.base * (t + 1.0) / w;
        }
        match self.schedule {
            Schedule::Constant { .. } => self.base,
            Schedule::Cosine { .. } => {
                let total = self.epochs as f64 * per;
                let span = total - w;
                if span <= 0.0 {
                    return self.base;
                }
                // Steps past the planned end (a longer epoch than announced) stay at the floor.
                let progress = ((t - w) / span).clamp(0.0, 1.0);
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Step { every, gamma, .. } => {
                let decays = epoch / every.max(1);
                self.base * gamma.powi(i32::try_from(decays).unwrap_or(i32::MAX))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn warmup_is_linear_per_iteration() {
        let s = LrSchedule::new(0.1, Schedule::Constant { warmup_epochs: 2 }, 10);
        // 4 steps per epoch: 8 warm-up steps, lr = 0.1 * (t + 1) / 8.
        assert!(close(s.lr(0, 0, 4), 0.1 / 8.0));
        assert!(close(s.lr(0, 3, 4), 0.1 * 4.0 / 8.0));
        assert!(close(s.lr(1, 3, 4), 0.1));
        assert!(close(s.lr(2, 0, 4), 0.1));
        assert!(close(s.lr(9, 3, 4), 0.1));
    }

    #[test]
    fn cosine_after_warmup() {
        let s = LrSchedule::new(0.2, Schedule::Cosine { warmup_epochs: 1 }, 5);
        // 10 steps per epoch: W = 10, span = 40.
        assert!(close(s.lr(0, 9, 10), 0.2));
        assert!(close(s.lr(1, 0, 10), 0.2));
        // Halfway (t - W = 20): cos(pi / 2) = 0 -> base / 2.
        assert!(close(s.lr(3, 0, 10), 0.1));
        // t - W = 10: (1 + cos(pi / 4)) / 2.
        let want = 0.2 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!(close(s.lr(2, 0, 10), want));
        // Last step: t - W = 39.
        let last = 0.2 * 0.5 * (1.0 + (std::f64::consts::PI * 39.0 / 40.0).cos());
        assert!(close(s.lr(4, 9, 10), last));
        assert!(s.lr(4, 9, 10) < 0.001);
    }

    #[test]
    fn cosine_without_warmup_starts_at_base() {
        let s = LrSchedule::new(1.0, Schedule::Cosine { warmup_epochs: 0 }, 2);
        assert!(close(s.lr(0, 0, 2), 1.0));
        assert!(close(s.lr(1, 0, 2), 0.5));
    }

    #[test]
    fn step_decay_counts_from_epoch_zero() {
        let s = LrSchedule::new(
            0.1,
            Schedule::Step {
                every: 3,
                gamma: 0.5,
                warmup_epochs: 1,
            },
            10,
        );
        assert!(close(s.lr(0, 0, 2), 0.05));
        assert!(close(s.lr(1, 0, 2), 0.1));
        assert!(close(s.lr(2, 1, 2), 0.1));
        assert!(close(s.lr(3, 0, 2), 0.05));
        assert!(close(s.lr(6, 0, 2), 0.025));
        assert!(close(s.lr(9, 1, 2), 0.0125));
    }
}
