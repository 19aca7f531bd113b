//! Checks of the training recipe.

use super::Checker;
use crate::error::ErrorKind;
use crate::span::DocPath;
use crate::spec::{Augment, Optimizer, Recipe, Schedule};
use crate::wire::{
    OptimizerKind, ScheduleKind, WireAugment, WireOptimizer, WireRecipe, WireSchedule,
};

pub(super) fn recipe(ck: &mut Checker, w: WireRecipe, path: &DocPath) -> Option<Recipe> {
    let dataset = ck.required(w.dataset, &path.key("dataset"), "dataset: cifar10");
    let epochs = ck.count(w.epochs, &path.key("epochs"), "epochs: 30");
    let batch = ck.count(w.batch, &path.key("batch"), "batch: 128");
    let op = path.key("optimizer");
    let optimizer = ck
        .required(
            w.optimizer,
            &op,
            "optimizer: {type: sgd, lr: 0.05, momentum: 0.9}",
        )
        .and_then(|o| optimizer(ck, o, &op));
    let schedule = schedule(ck, w.schedule, &path.key("schedule"), epochs);
    let augment = augment(ck, w.augment, &path.key("augment"));
    let label_smoothing = w.label_smoothing.unwrap_or(0.0);
    let mut ok = ck.in_range(
        label_smoothing,
        &path.key("label_smoothing"),
        0.0,
        1.0,
        false,
    );
    if let Some(c) = w.clip_grad_norm {
        ok &= ck.in_range(
            c,
            &path.key("clip_grad_norm"),
            f64::MIN_POSITIVE,
            f64::MAX,
            true,
        );
    }
    if !ok {
        return None;
    }
    Some(Recipe {
        dataset: dataset?,
        epochs: epochs?,
        batch: batch?,
        optimizer: optimizer?,
        schedule: schedule?,
        augment: augment?,
        label_smoothing,
        clip_grad_norm: w.clip_grad_norm,
        seed: w.seed.unwrap_or(0),
    })
}

fn optimizer(ck: &mut Checker, w: WireOptimizer, path: &DocPath) -> Option<Optimizer> {
    let kind = ck.required(w.kind, &path.key("type"), "type: sgd")?;
    let lr = ck.required(w.lr, &path.key("lr"), "lr: 0.01")?;
    let mut ok = ck.in_range(lr, &path.key("lr"), f64::MIN_POSITIVE, f64::MAX, true);
    let weight_decay_path = path.key("weight_decay");
    match kind {
        OptimizerKind::Sgd => {
            ck.unused(&w.betas, &path.key("betas"), "applies to adamw only");
            ck.unused(&w.eps, &path.key("eps"), "applies to adamw only");
            let momentum = w.momentum.unwrap_or(0.0);
            let nesterov = w.nesterov.unwrap_or(false);
            let weight_decay = w.weight_decay.unwrap_or(0.0);
            ok &= ck.in_range(momentum, &path.key("momentum"), 0.0, 1.0, false);
            ok &= ck.in_range(weight_decay, &weight_decay_path, 0.0, f64::MAX, true);
            if nesterov && momentum == 0.0 {
                ck.push(
                    ErrorKind::Invalid,
                    &path.key("nesterov"),
                    "Nesterov momentum needs momentum > 0".into(),
                    "set `momentum: 0.9`",
                );
                ok = false;
            }
            ok.then_some(Optimizer::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            })
        }
        OptimizerKind::Adamw => {
            ck.unused(
                &w.momentum,
                &path.key("momentum"),
                "applies to sgd only (adamw uses `betas`)",
            );
            ck.unused(&w.nesterov, &path.key("nesterov"), "applies to sgd only");
            let weight_decay = w.weight_decay.unwrap_or(0.01);
            let betas = w.betas.unwrap_or((0.9, 0.999));
            let eps = w.eps.unwrap_or(1e-8);
            ok &= ck.in_range(weight_decay, &weight_decay_path, 0.0, f64::MAX, true);
            ok &= ck.in_range(betas.0, &path.key("betas"), 0.0, 1.0, false);
            ok &= ck.in_range(betas.1, &path.key("betas"), 0.0, 1.0, false);
            ok &= ck.in_range(eps, &path.key("eps"), f64::MIN_POSITIVE, 1.0, true);
            ok.then_some(Optimizer::Adamw {
                lr,
                weight_decay,
                betas,
                eps,
            })
        }
    }
}

fn schedule(
    ck: &mut Checker,
    w: Option<WireSchedule>,
    path: &DocPath,
    epochs: Option<usize>,
) -> Option<Schedule> {
    let Some(w) = w else {
        return Some(Schedule::Constant { warmup_epochs: 0 });
    };
    let kind = ck.required(w.kind, &path.key("type"), "type: cosine")?;
    let warmup_epochs = w.warmup_epochs.unwrap_or(0);
    if let Some(epochs) = epochs.filter(|e| warmup_epochs >= *e) {
        let msg =
            format!("warm-up of {warmup_epochs} epochs leaves nothing of the {epochs} epochs");
        ck.push(
            ErrorKind::Invalid,
            &path.key("warmup_epochs"),
            msg,
            "shorten the warm-up",
        );
        return None;
    }
    match kind {
        ScheduleKind::Constant | ScheduleKind::Cosine => {
            ck.unused(&w.every, &path.key("every"), "applies to `type: step` only");
            ck.unused(&w.gamma, &path.key("gamma"), "applies to `type: step` only");
            Some(match kind {
                ScheduleKind::Cosine => Schedule::Cosine { warmup_epochs },
                _ => Schedule::Constant { warmup_epochs },
            })
        }
        ScheduleKind::Step => {
            let every = ck.count(w.every, &path.key("every"), "every: 10")?;
            let gamma = ck.required(w.gamma, &path.key("gamma"), "gamma: 0.1")?;
            ck.in_range(gamma, &path.key("gamma"), f64::MIN_POSITIVE, 1.0, true)
                .then_some(Schedule::Step {
                    every,
                    gamma,
                    warmup_epochs,
                })
        }
    }
}

fn augment(ck: &mut Checker, w: Option<WireAugment>, path: &DocPath) -> Option<Augment> {
    let Some(w) = w else {
        return Some(Augment::default());
    };
    let mut ok = true;
    if let Some(s) = w.random_resized_crop {
        ok &= ck.in_range(
            s,
            &path.key("random_resized_crop"),
            f64::MIN_POSITIVE,
            1.0,
            true,
        );
        if w.pad_crop.is_some() {
            ck.push(
                ErrorKind::Invalid,
                &path.key("pad_crop"),
                "`pad_crop` and `random_resized_crop` both crop".into(),
                "keep one of them",
            );
            ok = false;
        }
    }
    if let Some(l) = w.lighting {
        ok &= ck.in_range(l, &path.key("lighting"), 0.0, f64::MAX, true);
    }
    ok.then_some(Augment {
        pad_crop: w.pad_crop,
        hflip: w.hflip.unwrap_or(false),
        random_resized_crop: w.random_resized_crop,
        lighting: w.lighting,
    })
}
