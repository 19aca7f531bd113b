//! zoo-card: YAML model cards — schema, `extends` composition, validation with located errors.
//!
//! Data flows one way: `zoo/x.yaml` -> [`Zoo::open`] (YAML + positions) -> [`Zoo::resolve`]
//! (`extends` merged, schema checked) -> [`Card`] (validated domain types). This crate knows
//! nothing of Candle.
#![warn(missing_docs)]

mod error;
mod span;
mod spec;
mod validate;
mod wire;
mod zoo;

pub use error::{CardError, CardErrors, ErrorKind};
pub use span::{DocPath, LineCol, Seg, Span, SpanIndex};
pub use spec::*;
pub use validate::HEAD_SITE;
pub use zoo::Zoo;
