//! Readers for the places a dataset can come from.

pub mod cifar_bin;
pub mod folder;
