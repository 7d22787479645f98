//! The shared vocabulary: words every layer uses and that depend on nothing in this
//! crate. What a grant can allow ([`Action`]), the limits AWS sets ([`limits`]) and
//! how durations are written in config and rules files ([`duration`]).
//!
//! Nothing here imports another module of the crate; everything else may import it.

mod action;
pub mod duration;
pub mod limits;

pub use action::Action;
