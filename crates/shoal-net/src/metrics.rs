//! Counters and latency histograms of the calls a node makes, per endpoint and outcome, for the
//! node's Prometheus registry.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The length prefix of every frame on a connection.
const FRAME_LENGTH_BYTES: u64 = 4;

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The RPC metrics of one node. Cheap to clone (families share their values).
#[derive(Clone, Debug)]
pub struct NetMetrics {
    calls: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    served: Family<Labels, Counter>,
    /// Bytes written to and read from node-to-node connections after the handshake: every
    /// frame with its 4-byte length (TCP/IP headers not counted).
    bytes_sent: Counter,
    bytes_received: Counter,
    /// Each endpoint's series, looked up once: a call then costs a map lookup by `&str` and
    /// atomic adds, not label vectors built, hashed and dropped (several allocations per call).
    handles: Arc<RwLock<HashMap<String, Arc<EndpointSeries>>>>,
}

/// The series of one endpoint (handles share their values with the families).
#[derive(Debug)]
struct EndpointSeries {
    ok: Counter,
    timeout: Counter,
    error: Counter,
    latency: Histogram,
    served_ok: Counter,
    served_error: Counter,
}

impl Default for NetMetrics {
    fn default() -> Self {
        NetMetrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            served: Family::default(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            handles: Arc::default(),
        }
    }
}

impl NetMetrics {
    /// Adds the metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shoal_rpc_calls",
            "RPC calls made, by endpoint and outcome (ok, timeout, error)",
            self.calls.clone(),
        );
        registry.register(
            "shoal_rpc_call_seconds",
            "Latency of RPC calls made, by endpoint, replies included",
            self.latency.clone(),
        );
        registry.register(
            "shoal_rpc_served",
            "RPC requests served, by endpoint and outcome (ok, error)",
            self.served.clone(),
        );
        registry.register(
            "shoal_rpc_bytes_sent",
            "Bytes written to node-to-node connections (frames with their length; no TCP/IP headers)",
            self.bytes_sent.clone(),
        );
        registry.register(
            "shoal_rpc_bytes_received",
            "Bytes read from node-to-node connections (frames with their length; no TCP/IP headers)",
            self.bytes_received.clone(),
        );
    }

    /// Bytes written to node-to-node connections so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.get()
    }

    /// Bytes read from node-to-node connections so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.get()
    }

    /// Counts a frame of `len` bytes written (its 4-byte length added here).
    pub(crate) fn frame_sent(&self, len: usize) {
        self.bytes_sent.inc_by(len as u64 + FRAME_LENGTH_BYTES);
    }

    /// Counts a frame of `len` bytes read.
    pub(crate) fn frame_received(&self, len: usize) {
        self.bytes_received.inc_by(len as u64 + FRAME_LENGTH_BYTES);
    }

    fn series(&self, endpoint: &str) -> Arc<EndpointSeries> {
        if let Some(s) = self.handles.read().get(endpoint) {
            return s.clone();
        }
        let labels = |outcome: &str| -> Labels {
            vec![
                ("endpoint".into(), endpoint.into()),
                ("outcome".into(), outcome.into()),
            ]
        };
        // One statement per handle: `get_or_create` returns a guard on the family's lock, which
        // a second `get_or_create` in the same statement would wait for forever.
        let calls = |outcome: &str| {
            let c = self.calls.get_or_create(&labels(outcome));
            c.clone()
        };
        let served = |outcome: &str| {
            let c = self.served.get_or_create(&labels(outcome));
            c.clone()
        };
        let (ok, timeout, error) = (calls("ok"), calls("timeout"), calls("error"));
        let (served_ok, served_error) = (served("ok"), served("error"));
        let latency = {
            let h = self
                .latency
                .get_or_create(&vec![("endpoint".into(), endpoint.into())]);
            h.clone()
        };
        let series = Arc::new(EndpointSeries {
            ok,
            timeout,
            error,
            latency,
            served_ok,
            served_error,
        });
        self.handles
            .write()
            .entry(endpoint.to_string())
            .or_insert(series)
            .clone()
    }

    pub(crate) fn record_call(&self, endpoint: &str, outcome: CallOutcome, seconds: f64) {
        let s = self.series(endpoint);
        match outcome {
            CallOutcome::Ok => s.ok.inc(),
            CallOutcome::Timeout => s.timeout.inc(),
            CallOutcome::Error => s.error.inc(),
        };
        s.latency.observe(seconds);
    }

    pub(crate) fn record_served(&self, endpoint: &str, ok: bool) {
        let s = self.series(endpoint);
        if ok {
            s.served_ok.inc()
        } else {
            s.served_error.inc()
        };
    }
}

/// How a call ended, for `shoal_rpc_calls`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallOutcome {
    Ok,
    Timeout,
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(m: &NetMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn cached_series_count_into_the_registered_families() {
        let m = NetMetrics::default();
        m.record_call("table.read", CallOutcome::Ok, 0.001);
        m.record_call("table.read", CallOutcome::Ok, 0.002);
        m.record_call("table.read", CallOutcome::Timeout, 0.5);
        m.clone().record_served("table.read", false);
        m.frame_sent(100);
        let text = exposition(&m);
        for line in [
            "shoal_rpc_calls_total{endpoint=\"table.read\",outcome=\"ok\"} 2",
            "shoal_rpc_calls_total{endpoint=\"table.read\",outcome=\"timeout\"} 1",
            "shoal_rpc_calls_total{endpoint=\"table.read\",outcome=\"error\"} 0",
            "shoal_rpc_call_seconds_count{endpoint=\"table.read\"} 3",
            "shoal_rpc_served_total{endpoint=\"table.read\",outcome=\"error\"} 1",
            "shoal_rpc_bytes_sent_total 104",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
