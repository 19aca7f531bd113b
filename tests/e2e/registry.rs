//! Every shipped card builds, runs forward and backward, and has the parameters `describe` says.

use candle_core::{DType, Device, ModuleT, Result, Tensor};
use zoo_card::Zoo;
use zoo_models::describe;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::ZooModel;
use zoo_tests::repo_root;

/// Batch-norm running statistics are buffers, not parameters.
fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

#[test]
fn every_card_builds_trains_one_step_and_counts_its_parameters() -> Result<()> {
    let zoo = Zoo::open(repo_root().join("zoo")).expect("zoo");
    let ids = zoo.card_ids();
    assert!(ids.len() >= 16, "{ids:?}");
    for id in ids {
        let card = zoo.resolve(&id).expect("shipped cards resolve");
        let vars = SeededVarMap::new(1);
        let model = ZooModel::new(
            &card,
            vars.var_builder(DType::F32, &Device::Cpu),
            &SeededRng::new(1),
        )?;
        let described: u64 = describe(&card)?.iter().map(|r| r.params).sum();
        let params = vars.sorted_vars();
        let counted: usize = params
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(
            counted as u64, described,
            "{id}: built vs described parameters"
        );

        let size = card.input.size;
        let xs = Tensor::randn(
            0f32,
            1f32,
            (2, card.input.channels, size, size),
            &Device::Cpu,
        )?;
        let logits = model.forward_t(&xs, true)?;
        assert_eq!(logits.dims(), [2, card.classes], "{id}");
        let targets = Tensor::new(&[0u32, 1], &Device::Cpu)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        assert!(loss.to_scalar::<f32>()?.is_finite(), "{id}: loss");
        let grads = loss.backward()?;
        for (name, var) in params.iter().filter(|(n, _)| !is_buffer(n)) {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "{id}: no gradient for {name}");
        }
        // Eval mode is deterministic.
        let a = model.forward_t(&xs, false)?;
        let b = model.forward_t(&xs, false)?;
        assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?, "{id}");
    }
    Ok(())
}
