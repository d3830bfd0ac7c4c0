//! Hostile-input tests for everything in `ballast-core` that reads bytes from a client or a provider:
//! the request envelope, the SSE parser, the request/answer/stream decoders (and the encoders they
//! feed), the observers and the upstream error reader.
//!
//! - `regress`: one plain test per defect found (a huge tool-call index, overflowing usage sums, …)
//!   and 100 000-deep JSON in every decoder on a small stack.
//! - `props`: property tests (proptest, stable Rust) over arbitrary bytes and structure-aware,
//!   near-valid inputs built from realistic templates of each wire format (`wire`), with hostile
//!   numbers, huge strings, deep nesting, invalid UTF-8 and wrong types substituted, streams split at
//!   random places and at every byte. Properties: no panic; output bounded by a multiple of the
//!   input; a translated stream is well-formed SSE of the target format; chunking changes nothing.
//!
//! Case counts come from the environment so CI stays fast and `scripts/fuzz.sh` can run millions:
//! `BALLAST_FUZZ_CASES` (per property, default 256), `BALLAST_FUZZ_SECONDS` (an overall time budget,
//! shared between the properties), `BALLAST_FUZZ_TRACE` (a directory: each property writes the case
//! it is running there, so a crash that kills the process — an abort on a failed allocation — still
//! leaves its input behind). A failing case is shrunk, printed (bytes as hex too) and its seed saved
//! under `tests/fuzz/regressions/`, where later runs replay it first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test: a panic is a failure report"
)]

mod props;
mod regress;
mod runner;
mod wire;
