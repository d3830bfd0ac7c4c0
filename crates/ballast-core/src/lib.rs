//! Ballast's core: everything that decides, with no HTTP framework — configuration, wire formats, the
//! canonical model, provider adapters and stream observation. `ballast-server` wires it to sockets.
//!
//! The modules that read bytes from clients and providers (`client_error`, `envelope`, `observe`,
//! `sse`, `translate`, and the detectors in `signal`) are linted against indexing, slicing and
//! unchecked arithmetic: no number, length or index taken from outside bytes may panic, overflow or
//! size an allocation.

pub mod api;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod capability;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod client_error;
pub mod config;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod continuation;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod envelope;
pub mod model;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod observe;
pub mod policy;
pub mod provider;
pub mod quality;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod ratelimit;
pub mod record;
pub mod rollout;
pub mod script;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod signal;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod sse;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod trace;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod translate;
