//! Counters and latency histograms of the calls a node makes, per endpoint and outcome, for the
//! node's Prometheus registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

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
}

impl Default for NetMetrics {
    fn default() -> Self {
        NetMetrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            served: Family::default(),
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
    }

    pub(crate) fn record_call(&self, endpoint: &str, outcome: &str, seconds: f64) {
        self.calls
            .get_or_create(&vec![
                ("endpoint".into(), endpoint.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("endpoint".into(), endpoint.into())])
            .observe(seconds);
    }

    pub(crate) fn record_served(&self, endpoint: &str, ok: bool) {
        self.served
            .get_or_create(&vec![
                ("endpoint".into(), endpoint.into()),
                ("outcome".into(), if ok { "ok" } else { "error" }.into()),
            ])
            .inc();
    }
}
