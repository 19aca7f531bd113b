//! Tests of the attention catalogue: shapes, parameter counts against the variables actually
//! created, identities, multi-scale fusion, gradients and errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use zoo_card::{AttentionKind, AttentionModule, Fusion, FusionMode};

use super::multiscale::{avg_pool, upsample_nearest};
use super::se::timm_rd_channels;
use super::{build_attention, SpatialAttn};
use crate::init::SeededVarMap;

const C: usize = 16;

fn spec(kind: AttentionKind) -> AttentionModule {
    AttentionModule {
        kind,
        reduction: 4,
        divisor: 1,
        kernel: 3,
        strength: 1.0,
        fusion: None,
    }
}

fn fused(kind: AttentionKind, scales: &[usize], mode: FusionMode) -> AttentionModule {
    AttentionModule {
        fusion: Some(Fusion {
            scales: scales.to_vec(),
            mode,
        }),
        ..spec(kind)
    }
}

/// Every kind, plus the fused variants of the spatial ones.
fn all_specs() -> Vec<AttentionModule> {
    let mut specs: Vec<_> = AttentionKind::ALL.iter().map(|&k| spec(k)).collect();
    specs.push(fused(AttentionKind::Spatial, &[1, 2, 4], FusionMode::Sum));
    specs.push(fused(
        AttentionKind::Spatial,
        &[1, 2, 4],
        FusionMode::Learned,
    ));
    specs.push(fused(AttentionKind::Cbam, &[1, 2], FusionMode::Learned));
    specs.push(fused(AttentionKind::Cbam, &[2, 4], FusionMode::Sum));
    specs
}

fn vb(map: &SeededVarMap) -> VarBuilder<'static> {
    map.var_builder(DType::F32, &Device::Cpu)
}

fn input(c: usize, h: usize, w: usize, seed: f64) -> Result<Tensor> {
    let n = 2 * c * h * w;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 0.7 + seed).sin() * 2.0) as f32)
        .collect();
    Tensor::from_vec(v, (2, c, h, w), &Device::Cpu)
}

fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

fn trainable(map: &SeededVarMap) -> Vec<(String, Var)> {
    map.sorted_vars()
        .into_iter()
        .filter(|(n, _)| !is_buffer(n))
        .collect()
}

fn set(map: &SeededVarMap, name: &str, value: &Tensor) -> Result<()> {
    match map.sorted_vars().into_iter().find(|(n, _)| n == name) {
        Some((_, var)) => var.set(value),
        None => candle_core::bail!("no variable `{name}`"),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

#[test]
fn se_params_follow_the_formula() -> Result<()> {
    for (c, r) in [
        (64, 16),
        (192, 16),
        (384, 16),
        (256, 16),
        (16, 4),
        (100, 8),
        (3, 16),
    ] {
        let s = AttentionModule {
            reduction: r,
            ..spec(AttentionKind::Se)
        };
        let map = SeededVarMap::new(0);
        let m = build_attention(&s, c, vb(&map))?;
        let rd = s.reduced_channels(c);
        let expected = (2 * c * rd + rd + c) as u64;
        assert_eq!(m.cost(c, 5, 5).params, expected, "C={c} r={r}");
        let created: usize = trainable(&map).iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(created as u64, expected, "C={c} r={r}");
    }
    Ok(())
}

#[test]
fn alexnet_se_overhead_is_41160() -> Result<()> {
    let s = AttentionModule {
        reduction: 16,
        ..spec(AttentionKind::Se)
    };
    let mut total = 0;
    for c in [64, 192, 384, 256, 256] {
        total += build_attention(&s, c, vb(&SeededVarMap::new(0)))?
            .cost(c, 13, 13)
            .params;
    }
    assert_eq!(total, 41_160);
    Ok(())
}

#[test]
fn reduced_width_matches_timm_round_limit_zero() {
    // Values printed by timm's make_divisible(c * (1 / r), d, round_limit=0.).
    for (c, r, d, want) in [
        (176, 16, 8, 8),
        (64, 16, 8, 8),
        (24, 3, 8, 8),
        (36, 24, 1, 2),
        (100, 8, 1, 13),
        (3, 16, 1, 1),
        (200, 16, 8, 16),
    ] {
        assert_eq!(timm_rd_channels(c, r, d), want, "C={c} r={r} d={d}");
    }
}

#[test]
fn cost_params_equal_created_variables() -> Result<()> {
    for s in all_specs() {
        let map = SeededVarMap::new(1);
        let m = build_attention(&s, C, vb(&map))?;
        let created: usize = trainable(&map).iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(m.cost(C, 9, 9).params, created as u64, "{s:?}");
    }
    Ok(())
}

#[test]
fn parameter_names_follow_timm() -> Result<()> {
    let names = |s: &AttentionModule| -> Result<Vec<String>> {
        let map = SeededVarMap::new(0);
        build_attention(s, C, vb(&map))?;
        Ok(map.sorted_vars().into_iter().map(|(n, _)| n).collect())
    };
    let bn = |p: &str| {
        ["bias", "running_mean", "running_var", "weight"]
            .map(|s| format!("{p}.{s}"))
            .to_vec()
    };
    assert_eq!(
        names(&spec(AttentionKind::Se))?,
        ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    );
    assert_eq!(names(&spec(AttentionKind::Eca))?, ["conv.weight"]);
    let mut want = bn("conv.bn");
    want.push("conv.conv.weight".into());
    assert_eq!(names(&spec(AttentionKind::Spatial))?, want);
    let mut want = vec![
        "channel.fc1.weight".to_string(),
        "channel.fc2.weight".into(),
    ];
    want.extend(bn("spatial.conv.bn"));
    want.push("spatial.conv.conv.weight".into());
    want.push("spatial.fusion.weight".into());
    assert_eq!(
        names(&fused(AttentionKind::Cbam, &[1, 2], FusionMode::Learned))?,
        want
    );
    let mut want = vec![];
    for p in ["g", "norm", "p", "t", "z"] {
        if p == "norm" {
            want.extend(bn("norm"));
        } else {
            want.extend([format!("{p}.bias"), format!("{p}.weight")]);
        }
    }
    assert_eq!(names(&spec(AttentionKind::Nonlocal))?, want);
    Ok(())
}

#[test]
fn forward_keeps_shape_in_eval_and_train() -> Result<()> {
    for s in all_specs() {
        let m = build_attention(&s, C, vb(&SeededVarMap::new(2)))?;
        for (h, w) in [(9, 9), (7, 5)] {
            let xs = input(C, h, w, 0.3)?;
            for train in [false, true] {
                let ys = m.forward_t(&xs, train)?;
                assert_eq!(ys.dims(), xs.dims(), "{s:?} {h}x{w} train={train}");
                let finite = ys
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .all(|v| v.is_finite());
                assert!(finite, "{s:?} {h}x{w} train={train}");
            }
        }
    }
    Ok(())
}

#[test]
fn gates_change_the_input_at_full_strength() -> Result<()> {
    for s in all_specs()
        .into_iter()
        .filter(|s| s.kind != AttentionKind::Nonlocal)
    {
        let m = build_attention(&s, C, vb(&SeededVarMap::new(3)))?;
        let xs = input(C, 7, 5, 0.1)?;
        assert!(
            max_abs_diff(&m.forward_t(&xs, false)?, &xs)? > 1e-3,
            "{s:?}"
        );
    }
    Ok(())
}

#[test]
fn strength_zero_is_the_identity() -> Result<()> {
    for s in all_specs() {
        let s = AttentionModule { strength: 0.0, ..s };
        let map = SeededVarMap::new(4);
        let m = build_attention(&s, C, vb(&map))?;
        if s.kind == AttentionKind::Nonlocal {
            // Make the residual branch non-zero, so the identity is due to the strength.
            set(
                &map,
                "norm.weight",
                &Tensor::ones(C, DType::F32, &Device::Cpu)?,
            )?;
        }
        let xs = input(C, 9, 9, 0.2)?;
        for train in [false, true] {
            let ys = m.forward_t(&xs, train)?;
            assert_eq!(max_abs_diff(&ys, &xs)?, 0.0, "{s:?} train={train}");
        }
    }
    Ok(())
}

#[test]
fn nonlocal_starts_as_identity_and_strength_scales_the_branch() -> Result<()> {
    let map = SeededVarMap::new(5);
    let m = build_attention(&spec(AttentionKind::Nonlocal), C, vb(&map))?;
    let xs = input(C, 7, 5, 0.4)?;
    assert_eq!(max_abs_diff(&m.forward_t(&xs, false)?, &xs)?, 0.0);
    set(
        &map,
        "norm.weight",
        &Tensor::ones(C, DType::F32, &Device::Cpu)?,
    )?;
    let full = (m.forward_t(&xs, false)? - &xs)?;
    assert!(full.abs()?.max_all()?.to_scalar::<f32>()? > 1e-3);
    let half_spec = AttentionModule {
        strength: 0.5,
        ..spec(AttentionKind::Nonlocal)
    };
    let half = build_attention(&half_spec, C, vb(&map))?;
    let half = (half.forward_t(&xs, false)? - &xs)?;
    assert!(max_abs_diff(&(full * 0.5)?, &half)? < 1e-5);
    Ok(())
}

#[test]
fn eca_with_identity_kernel_gates_by_sigmoid_of_the_mean() -> Result<()> {
    let map = SeededVarMap::new(6);
    let m = build_attention(&spec(AttentionKind::Eca), C, vb(&map))?;
    let w = Tensor::new(&[[[0f32, 1., 0.]]], &Device::Cpu)?;
    set(&map, "conv.weight", &w)?;
    let xs = input(C, 7, 5, 0.5)?;
    let gate = candle_nn::ops::sigmoid(&xs.mean_keepdim(3)?.mean_keepdim(2)?)?;
    let want = xs.broadcast_mul(&gate)?;
    assert!(max_abs_diff(&m.forward_t(&xs, false)?, &want)? < 1e-6);
    Ok(())
}

#[test]
fn se_matches_a_hand_computation() -> Result<()> {
    // C=4, r=4 -> rd=1; fc1 sums the channel means, fc2 scales by (1, -1, 2, 0) plus bias.
    let s = AttentionModule {
        reduction: 4,
        ..spec(AttentionKind::Se)
    };
    let map = SeededVarMap::new(7);
    let m = build_attention(&s, 4, vb(&map))?;
    let dev = Device::Cpu;
    set(
        &map,
        "fc1.weight",
        &Tensor::ones((1, 4, 1, 1), DType::F32, &dev)?,
    )?;
    set(&map, "fc1.bias", &Tensor::new(&[0.5f32], &dev)?)?;
    let w2 = Tensor::new(&[1f32, -1., 2., 0.], &dev)?.reshape((4, 1, 1, 1))?;
    set(&map, "fc2.weight", &w2)?;
    set(&map, "fc2.bias", &Tensor::new(&[0f32, 0., 0., 1.], &dev)?)?;
    let xs = input(4, 3, 3, 0.9)?;
    let means: Vec<Vec<f32>> = xs.mean((2, 3))?.to_vec2()?;
    let ys = m.forward_t(&xs, false)?;
    for (b, row) in means.iter().enumerate() {
        let hidden = (row.iter().sum::<f32>() + 0.5).max(0.0);
        let logits = [hidden, -hidden, 2.0 * hidden, 1.0];
        for (c, z) in logits.iter().enumerate() {
            let gate = 1.0 / (1.0 + (-z).exp());
            let want = (xs.get(b)?.get(c)? * gate as f64)?;
            assert!(
                max_abs_diff(&ys.get(b)?.get(c)?, &want)? < 1e-5,
                "b={b} c={c}"
            );
        }
    }
    Ok(())
}

#[test]
fn one_scale_fusion_equals_the_plain_map() -> Result<()> {
    for kind in [AttentionKind::Spatial, AttentionKind::Cbam] {
        for mode in [FusionMode::Sum, FusionMode::Learned] {
            let map = SeededVarMap::new(8);
            let plain = build_attention(&spec(kind), C, vb(&map))?;
            let multi = build_attention(&fused(kind, &[1], mode), C, vb(&map))?;
            for (h, w) in [(9, 9), (7, 5)] {
                let xs = input(C, h, w, 0.6)?;
                // Eval first: training updates the shared running statistics.
                for train in [false, true] {
                    let a = plain.forward_t(&xs, train)?;
                    let b = multi.forward_t(&xs, train)?;
                    assert!(
                        max_abs_diff(&a, &b)? < 1e-6,
                        "{kind:?} {mode:?} train={train}"
                    );
                }
            }
            // Learned weighting multiplies the map once even for a single scale.
            let extra = if mode == FusionMode::Learned { 81 } else { 0 };
            assert_eq!(plain.cost(C, 9, 9).macs + extra, multi.cost(C, 9, 9).macs);
        }
    }
    Ok(())
}

#[test]
fn learned_fusion_starts_as_the_mean() -> Result<()> {
    let map = SeededVarMap::new(9);
    let sum = build_attention(
        &fused(AttentionKind::Spatial, &[1, 2, 4], FusionMode::Sum),
        C,
        vb(&map),
    )?;
    let learned = fused(AttentionKind::Spatial, &[1, 2, 4], FusionMode::Learned);
    let learned = build_attention(&learned, C, vb(&map))?;
    let xs = input(C, 9, 9, 0.7)?;
    let (a, b) = (sum.forward_t(&xs, false)?, learned.forward_t(&xs, false)?);
    assert!(max_abs_diff(&a, &b)? < 1e-6);
    // And the scales matter: a single full-resolution map differs.
    let plain = build_attention(&spec(AttentionKind::Spatial), C, vb(&map))?;
    assert!(max_abs_diff(&plain.forward_t(&xs, false)?, &a)? > 1e-4);
    Ok(())
}

#[test]
fn fused_logits_match_a_manual_per_scale_computation() -> Result<()> {
    // Eval mode with fresh statistics: batch norm is `x / sqrt(1 + eps)`, per position.
    let s = fused(AttentionKind::Spatial, &[1, 3], FusionMode::Sum);
    let map = SeededVarMap::new(10);
    let m = SpatialAttn::new(&s, vb(&map))?;
    let weight = map
        .sorted_vars()
        .into_iter()
        .find(|(n, _)| n == "conv.conv.weight")
        .map(|(_, v)| v.as_tensor().clone());
    let Some(weight) = weight else {
        candle_core::bail!("no conv weight")
    };
    let xs = input(C, 7, 8, 0.8)?;
    let desc = Tensor::cat(&[xs.mean_keepdim(1)?, xs.max_keepdim(1)?], 1)?;
    let bn = 1.0 / (1.0f64 + 1e-5).sqrt();
    let full = (desc.conv2d(&weight, 1, 1, 1, 1)? * bn)?;
    let coarse = (desc.avg_pool2d(3)?.conv2d(&weight, 1, 1, 1, 1)? * bn)?;
    let coarse = coarse.upsample_nearest2d(7, 8)?;
    let want = candle_nn::ops::sigmoid(&((full + coarse)? * 0.5)?)?;
    assert!(max_abs_diff(&m.gate(&xs, false)?, &want)? < 1e-5);
    Ok(())
}

#[test]
fn pooling_and_upsampling_match_candle() -> Result<()> {
    let xs = input(3, 7, 5, 1.0)?;
    for s in [1, 2, 3, 5] {
        let pooled = avg_pool(&xs, s)?;
        assert!(max_abs_diff(&pooled, &xs.avg_pool2d(s)?)? < 1e-6, "s={s}");
        let up = upsample_nearest(&pooled, 7, 5)?;
        let want = pooled.upsample_nearest2d(7, 5)?;
        assert_eq!(max_abs_diff(&up, &want)?, 0.0, "s={s}");
    }
    assert!(avg_pool(&xs, 6).is_err());
    Ok(())
}

#[test]
fn backward_reaches_every_trainable_parameter() -> Result<()> {
    for s in all_specs() {
        let map = SeededVarMap::new(11);
        let m = build_attention(&s, C, vb(&map))?;
        if s.kind == AttentionKind::Nonlocal {
            // timm zero-initialises norm.weight, which blocks the gradient of t, p, g and z.
            set(
                &map,
                "norm.weight",
                &Tensor::ones(C, DType::F32, &Device::Cpu)?,
            )?;
        }
        let xs = input(C, 7, 5, 1.1)?;
        let target = input(C, 7, 5, 2.3)?;
        let loss = (m.forward_t(&xs, true)? * target)?.sum_all()?;
        let grads = loss.backward()?;
        for (name, var) in trainable(&map) {
            let Some(g) = grads.get(var.as_tensor()) else {
                panic!("{s:?}: no gradient for `{name}`")
            };
            let norm = g.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{s:?}: gradient of `{name}` is {norm}"
            );
        }
        for (name, var) in map.sorted_vars().into_iter().filter(|(n, _)| is_buffer(n)) {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "buffer `{name}` got a gradient"
            );
        }
    }
    Ok(())
}

#[test]
fn invalid_configurations_are_errors() -> Result<()> {
    let build = |s: &AttentionModule| build_attention(s, C, vb(&SeededVarMap::new(0)));
    for kind in [
        AttentionKind::Eca,
        AttentionKind::Spatial,
        AttentionKind::Cbam,
    ] {
        for kernel in [0, 2, 4] {
            assert!(
                build(&AttentionModule {
                    kernel,
                    ..spec(kind)
                })
                .is_err(),
                "{kind:?} k={kernel}"
            );
        }
    }
    for kind in [
        AttentionKind::Se,
        AttentionKind::Eca,
        AttentionKind::Nonlocal,
    ] {
        assert!(
            build(&fused(kind, &[1, 2], FusionMode::Sum)).is_err(),
            "fusion on {kind:?}"
        );
    }
    for kind in AttentionKind::ALL {
        assert!(build(&AttentionModule {
            reduction: 0,
            ..spec(kind)
        })
        .is_err());
        assert!(build(&AttentionModule {
            strength: f64::NAN,
            ..spec(kind)
        })
        .is_err());
        assert!(build_attention(&spec(kind), 0, vb(&SeededVarMap::new(0))).is_err());
        // A wrong input: channels (where the module has a width) or rank.
        let m = build(&spec(kind))?;
        assert!(m
            .forward_t(&Tensor::zeros((2, C, 5), DType::F32, &Device::Cpu)?, false)
            .is_err());
        if kind != AttentionKind::Spatial {
            assert!(
                m.forward_t(&input(C + 1, 5, 5, 0.0)?, false).is_err(),
                "{kind:?}"
            );
        }
    }
    for kind in [AttentionKind::Spatial, AttentionKind::Cbam] {
        assert!(build(&fused(kind, &[1, 0], FusionMode::Sum)).is_err());
        assert!(build(&fused(kind, &[], FusionMode::Learned)).is_err());
        let m = build(&fused(kind, &[1, 6], FusionMode::Learned))?;
        assert!(m.forward_t(&input(C, 9, 9, 0.0)?, false).is_ok());
        assert!(
            m.forward_t(&input(C, 7, 5, 0.0)?, false).is_err(),
            "scale 6 on 7x5"
        );
        assert!(
            m.forward_t(&input(C, 7, 5, 0.0)?, true).is_err(),
            "scale 6 on 7x5"
        );
    }
    Ok(())
}

#[test]
fn macs_follow_the_documented_convention() -> Result<()> {
    let (c, h, w) = (64usize, 55usize, 55usize);
    let hw = (h * w) as u64;
    let chw = c as u64 * hw;
    let s = AttentionModule {
        reduction: 16,
        ..spec(AttentionKind::Se)
    };
    let se = build_attention(&s, c, vb(&SeededVarMap::new(0)))?;
    assert_eq!(se.cost(c, h, w).macs, chw + 2 * 64 * 4 + chw);
    let s = AttentionModule {
        kernel: 7,
        ..spec(AttentionKind::Spatial)
    };
    let sp = build_attention(&s, c, vb(&SeededVarMap::new(0)))?;
    assert_eq!(
        sp.cost(c, h, w),
        crate::Cost {
            params: 2 * 49 + 2,
            macs: 2 * chw + 98 * hw + chw
        }
    );
    let eca = build_attention(&spec(AttentionKind::Eca), c, vb(&SeededVarMap::new(0)))?;
    assert_eq!(eca.cost(c, h, w).macs, chw + 3 * c as u64 + chw);
    // Non-local, r=4: C'=16; projections 4 * 64*16*HW, matmuls 2 * HW*HW*16.
    let nl = build_attention(&spec(AttentionKind::Nonlocal), c, vb(&SeededVarMap::new(0)))?;
    assert_eq!(nl.cost(c, h, w).macs, 4 * 64 * 16 * hw + 2 * hw * hw * 16);
    assert_eq!(
        nl.cost(c, h, w).params,
        3 * (64 * 16 + 16) + 16 * 64 + 64 + 2 * 64
    );
    // Multi-scale [1, 2], k=3 on 9x9: pool 2*8*8, convs 18*81 + 18*16, fusion 2*81.
    let ms = build_attention(
        &fused(AttentionKind::Spatial, &[1, 2], FusionMode::Sum),
        C,
        vb(&SeededVarMap::new(0)),
    )?;
    let chw = (C * 81) as u64;
    assert_eq!(
        ms.cost(C, 9, 9).macs,
        2 * chw + 2 * 64 + 18 * 81 + 18 * 16 + 2 * 81 + chw
    );
    Ok(())
}

/// The fused batch norm updates its running statistics as PyTorch does (momentum 0.1, unbiased
/// variance), computed here from the input with stock ops, and then normalises with them.
#[test]
fn batch_norm_running_statistics_follow_pytorch() -> Result<()> {
    use super::gate::BatchNorm2d;
    use candle_nn::Init;
    let map = SeededVarMap::new(11);
    let bn = BatchNorm2d::new(C, Init::Const(1.), vb(&map))?;
    let xs = (input(C, 5, 3, 0.3)? * 2.0)?.affine(1.0, 0.7)?;
    let per_channel = xs.transpose(0, 1)?.flatten_from(1)?;
    let mean = per_channel.mean(1)?;
    let n = per_channel.dim(1)? as f64;
    let var = (per_channel
        .broadcast_sub(&mean.unsqueeze(1)?)?
        .sqr()?
        .sum(1)?
        / (n - 1.0))?;
    let mut want_mean = Tensor::zeros(C, DType::F32, &Device::Cpu)?;
    let mut want_var = Tensor::ones(C, DType::F32, &Device::Cpu)?;
    for _ in 0..2 {
        bn.forward_t(&xs, true)?;
        want_mean = ((want_mean * 0.9)? + (&mean * 0.1)?)?;
        want_var = ((want_var * 0.9)? + (&var * 0.1)?)?;
    }
    let var_of = |name: &str| match map.sorted_vars().into_iter().find(|(n, _)| n == name) {
        Some((_, v)) => Ok(v.as_tensor().clone()),
        None => candle_core::bail!("no variable `{name}`"),
    };
    assert!(max_abs_diff(&var_of("running_mean")?, &want_mean)? < 1e-6);
    assert!(max_abs_diff(&var_of("running_var")?, &want_var)? < 1e-5);
    // Evaluation normalises with exactly those.
    let ys = bn.forward_t(&xs, false)?;
    let want = xs
        .broadcast_sub(&want_mean.reshape((1, C, 1, 1))?)?
        .broadcast_div(&(want_var.reshape((1, C, 1, 1))? + 1e-5)?.sqrt()?)?;
    assert!(max_abs_diff(&ys, &want)? < 1e-5);
    Ok(())
}
