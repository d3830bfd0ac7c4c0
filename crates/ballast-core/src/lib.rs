//! Ballast's core: everything that decides, with no HTTP framework — configuration, wire formats, the
//! canonical model, provider adapters and stream observation. `ballast-server` wires it to sockets.

pub mod api;
pub mod client_error;
pub mod config;
pub mod envelope;
pub mod model;
pub mod observe;
pub mod policy;
pub mod provider;
pub mod sse;
pub mod translate;
