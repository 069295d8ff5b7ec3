//! Shoal's client surface: a K2V-compatible HTTP API (Garage's K2V specification), requests
//! authenticated with AWS SigV4 against access keys, and buckets that grant keys access.
//!
//! Layering: this crate sits on the cluster node (`shoal-cluster`): K2V items are a sharded
//! table replicated with quorums, keys and buckets are fully replicated system tables, and the
//! API's node-to-node calls (ReadIndex counts) are endpoints added to the node's RPC. The
//! causality model ([`causality`]) and the signature check ([`sigv4`]) are pure modules.

pub mod admin;
mod cache;
pub mod causality;
pub mod counters;
pub mod endpoints;
mod http;
pub mod metrics;
pub mod model;
mod range;
pub mod service;
pub mod sigv4;

pub use http::serve as serve_http;
pub use service::{Api, ApiConfig, ApiError};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
