//! The shared vocabulary: words every layer uses and that depend on nothing in this
//! crate. What a grant can allow ([`Action`]), the limits AWS sets ([`limits`]) and
//! how durations are written in config and rules files ([`duration`]), how much of a
//! caller's input a message may quote ([`text`]), calendar time in UTC ([`utc`]), how
//! often a repeated warning may be logged ([`throttle`]), what wrappers of a
//! connection's socket share ([`io`]), and how the files the operator names are read
//! ([`files`]).
//!
//! Nothing here imports another module of the crate; everything else may import it.

mod action;
pub mod duration;
pub mod files;
pub mod io;
pub mod limits;
pub mod text;
pub mod throttle;
pub mod toml_errors;
pub mod utc;

pub use action::Action;

/// `n` as a span field that trace backends compare as a number: signed, because
/// tracing-opentelemetry exports an unsigned field as text.
pub fn span_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The gRPC status codes by name (`FAILED_PRECONDITION`), in code order: how the
/// protocol, the README and other clients name them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `code` by its name in [`GRPC_CODES`]; tonic's `Display` gives a sentence instead.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    GRPC_CODES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_named_as_the_protocol_names_them() {
        assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            grpc_code_name(tonic::Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
        assert_eq!(
            grpc_code_name(tonic::Code::Unauthenticated),
            "UNAUTHENTICATED"
        );
    }
}
