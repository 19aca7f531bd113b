//! Numerical parity with independent definitions: PyTorch's ops, timm's attention modules and
//! torchvision's AlexNet, through fixtures written by `scripts/reference/make_fixtures.py`.

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Result, Tensor, Var};
use serde_json::Value;
use zoo_card::{AttentionKind, AttentionModule, Zoo};
use zoo_models::attention::build_attention;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::weights::CheckedTensors;
use zoo_models::{ops, ZooModel};
use zoo_tests::{fixture, formula_tensor, formula_weights, max_rel_diff, repo_root};

/// The tolerance the project promises; f64 runs agree far more closely.
const REL_TOL: f64 = 1e-4;

fn load_fixture(stem: &str) -> (HashMap<String, Tensor>, Value) {
    let tensors =
        candle_core::safetensors::load(fixture(&format!("{stem}.safetensors")), &Device::Cpu)
            .unwrap_or_else(|e| {
                panic!("fixture {stem}: {e} (regenerate with scripts/reference/setup.sh)")
            });
    let meta = std::fs::read_to_string(fixture(&format!("{stem}.json"))).expect("fixture json");
    (
        tensors,
        serde_json::from_str(&meta).expect("fixture json parses"),
    )
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().expect("an integer") as usize
}

/// Runs `op` on each fixture case; checks the output and the gradient of `sum(out * weight)`.
fn check_op_cases(stem: &str, op: impl Fn(&Tensor, &Value) -> Result<Tensor>) -> Result<()> {
    let (t, meta) = load_fixture(stem);
    let cases = meta["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3);
    for (i, case) in cases.iter().enumerate() {
        let x = Var::from_tensor(&t[&format!("input_{i}")])?;
        let y = op(x.as_tensor(), case)?;
        let diff = max_rel_diff(&y, &t[&format!("output_{i}")])?;
        assert!(
            diff < 1e-10,
            "{stem} case {i} {case}: output differs by {diff}"
        );
        let grads = y.mul(&t[&format!("weight_{i}")])?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("a gradient for the input");
        let diff = max_rel_diff(g, &t[&format!("grad_{i}")])?;
        assert!(
            diff < 1e-10,
            "{stem} case {i} {case}: gradient differs by {diff}"
        );
    }
    Ok(())
}

#[test]
fn max_pool_matches_pytorch_forward_and_backward() -> Result<()> {
    check_op_cases("ops/max_pool", |x, c| {
        ops::max_pool2d(
            x,
            usize_of(&c["kernel"]),
            usize_of(&c["stride"]),
            usize_of(&c["padding"]),
        )
    })
}

#[test]
fn lrn_matches_pytorch_forward_and_backward() -> Result<()> {
    check_op_cases("ops/lrn", |x, c| {
        let size = usize_of(&c["size"]);
        let f = |k: &str| c[k].as_f64().expect("a number");
        // PyTorch divides alpha by the window size.
        ops::lrn(x, size, f("alpha") / size as f64, f("beta"), f("k"))
    })
}

fn module_spec(v: &Value) -> AttentionModule {
    let kind = match v["type"].as_str().expect("type") {
        "se" => AttentionKind::Se,
        "cbam" => AttentionKind::Cbam,
        "spatial" => AttentionKind::Spatial,
        "eca" => AttentionKind::Eca,
        "nonlocal" => AttentionKind::Nonlocal,
        other => panic!("unknown kind {other}"),
    };
    let get = |k: &str, default: usize| v[k].as_u64().map_or(default, |n| n as usize);
    AttentionModule {
        kind,
        reduction: get("reduction", 16),
        divisor: get("divisor", 1),
        kernel: get("kernel", 7),
        strength: 1.0,
        fusion: None,
    }
}

/// timm's `SEModule`, `CbamModule`, `SpatialAttn`, `EcaModule` and `NonLocalAttn` (eval mode,
/// random weights and batch-norm statistics) against ours, loaded from timm's own state dict.
#[test]
fn attention_modules_match_timm() -> Result<()> {
    for stem in ["se", "cbam", "spatial", "eca", "nonlocal"] {
        let (mut t, meta) = load_fixture(&format!("attention/{stem}"));
        let input = t.remove("input").expect("input");
        let expected = t.remove("output").expect("output");
        let weights = CheckedTensors::from_map(stem, t);
        let spec = module_spec(&meta["module"]);
        let module = build_attention(
            &spec,
            usize_of(&meta["channels"]),
            weights.var_builder(DType::F64, &Device::Cpu),
        )?;
        assert_eq!(
            weights.unused(),
            Vec::<String>::new(),
            "{stem}: timm tensors we ignore"
        );
        let ys = module.forward_t(&input, false)?;
        let diff = max_rel_diff(&ys, &expected)?;
        assert!(diff < REL_TOL, "{stem}: differs from timm by {diff}");
        // And the module is not the identity on this input (the comparison has teeth).
        assert!(
            max_rel_diff(&input, &expected)? > 1e-3,
            "{stem}: fixture is trivial"
        );
    }
    Ok(())
}

/// torchvision's AlexNet with formula weights (61M values not committed) against ours.
#[test]
fn alexnet_logits_match_torchvision() -> Result<()> {
    let card = Zoo::open(repo_root().join("zoo"))
        .expect("zoo")
        .resolve("alexnet")
        .expect("alexnet");
    // The names and shapes the card asks for (torchvision's, by the card's layout).
    let probe = SeededVarMap::new(0);
    ZooModel::new(
        &card,
        probe.var_builder(DType::F32, &Device::Cpu),
        &SeededRng::new(0),
    )?;
    let shapes: Vec<(String, Vec<usize>)> = probe
        .sorted_vars()
        .into_iter()
        .map(|(n, v)| (n, v.dims().to_vec()))
        .collect();
    drop(probe);
    assert!(shapes.iter().any(|(n, _)| n == "features.0.weight"));
    assert!(shapes.iter().any(|(n, _)| n == "classifier.6.bias"));
    let (t, _) = load_fixture("alexnet/logits");
    let expected = &t["logits"];
    let input = formula_tensor("input", &[1, 3, 224, 224], 1.0, DType::F32)?;
    let weights = CheckedTensors::from_map("formula", formula_weights(&shapes, DType::F32)?);
    let model = ZooModel::new(
        &card,
        weights.var_builder(DType::F32, &Device::Cpu),
        &SeededRng::new(0),
    )?;
    let logits = model.forward_t(&input, false)?;
    let diff = max_rel_diff(&logits, expected)?;
    assert!(
        diff < REL_TOL,
        "alexnet logits differ from torchvision's by {diff}"
    );
    Ok(())
}
