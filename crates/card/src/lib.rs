//! zoo-card: YAML model cards.
#![warn(missing_docs)]

mod spec;

pub use spec::*;
