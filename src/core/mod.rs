//! The shared vocabulary: words every layer uses and that depend on nothing in this
//! crate. What a grant can allow ([`Action`]), the limits AWS sets ([`limits`]) and
//! how durations are written in config and rules files ([`duration`]), how much of a
//! caller's input a message may quote ([`text`]), calendar time in UTC ([`utc`]), how
//! often a repeated warning may be logged ([`throttle`]), and what wrappers of a
//! connection's socket share ([`io`]).
//!
//! Nothing here imports another module of the crate; everything else may import it.

mod action;
pub mod duration;
pub mod io;
pub mod limits;
pub mod text;
pub mod throttle;
pub mod utc;

pub use action::Action;
