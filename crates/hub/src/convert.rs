//! Renaming a weights file between parameter layouts (torchvision's `features.N` /
//! `classifier.N`, zoo's `backbone.convK` / `head.fcK`).
//!
//! The builder asks for a card's parameters in the same order whatever the layout, so the
//! mapping is the two name lists side by side: no hand-written table to drift from the model.
//! Of the shipped cards only those without `layout: torchvision` (e.g. `alexnet-2012`) name
//! their parameters differently from torchvision.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use zoo_card::{Card, ParamLayout};

use crate::error::{Error, Result};
use crate::verify;

/// `(name in from, name in card's layout)` for every parameter of `card`.
pub fn rename_map(card: &Card, from: ParamLayout) -> Result<Vec<(String, String)>> {
    let src = verify::expected_params(card, from)?;
    let dst = verify::expected_params(card, card.layout)?;
    Ok(src
        .into_iter()
        .zip(dst)
        .map(|(s, d)| (s.name, d.name))
        .collect())
}

/// Loads `path` (in `from` layout) onto the CPU with the card's own names, after checking its
/// header against the card.
pub fn load_as_card(
    card: &Card,
    path: &Path,
    from: ParamLayout,
) -> Result<HashMap<String, Tensor>> {
    verify::require(
        card,
        from,
        path,
        format!(
            "this is not a {} file for card `{}`; `zoo show {}` lists the parameters it expects",
            layout_name(from),
            card.name,
            card.name
        ),
    )?;
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut out = HashMap::with_capacity(tensors.len());
    for (src, dst) in rename_map(card, from)? {
        if let Some(t) = tensors.remove(&src) {
            out.insert(dst, t);
        }
    }
    Ok(out)
}

/// Writes `input` (in `from` layout) to `output` under the card's names; returns how many
/// tensors were renamed.
pub fn convert_file(card: &Card, input: &Path, output: &Path, from: ParamLayout) -> Result<usize> {
    let tensors = load_as_card(card, input, from)?;
    let renamed = rename_map(card, from)?
        .iter()
        .filter(|(s, d)| s != d)
        .count();
    crate::write_atomic(output, |tmp| {
        candle_core::safetensors::save(&tensors, tmp).map_err(Error::from)
    })?;
    Ok(renamed)
}

/// The name cards use for a layout.
pub fn layout_name(layout: ParamLayout) -> &'static str {
    match layout {
        ParamLayout::Zoo => "zoo",
        ParamLayout::Torchvision => "torchvision",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_names_map_to_the_cards_own() {
        let zoo = zoo_card::Zoo::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../../zoo")).unwrap();
        let card = zoo.resolve("alexnet-2012").unwrap();
        let map = rename_map(&card, ParamLayout::Torchvision).unwrap();
        assert_eq!(map.len(), 16);
        let get = |src: &str| map.iter().find(|(s, _)| s == src).map(|(_, d)| d.as_str());
        // conv1 is features.0; its LRN (2) and pool (3) come before conv2 at features.4.
        assert_eq!(get("features.0.weight"), Some("backbone.conv1.conv.weight"));
        assert_eq!(get("features.4.bias"), Some("backbone.conv2.conv.bias"));
        assert_eq!(get("classifier.1.weight"), Some("head.fc1.weight"));
        assert_eq!(get("classifier.6.bias"), Some("head.out.bias"));
        // alexnet already uses torchvision's names: nothing to rename.
        let alexnet = zoo.resolve("alexnet").unwrap();
        let same = rename_map(&alexnet, ParamLayout::Torchvision).unwrap();
        assert!(same.iter().all(|(s, d)| s == d));
    }
}
