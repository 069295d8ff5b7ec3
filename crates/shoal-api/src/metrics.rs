//! The node's Prometheus registry: RPC calls (from the network), API requests, and, read at
//! each scrape, the syncers' progress, table sizes, the store's size and the membership.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_cluster::node::Node;
use shoal_net::Transport;
use shoal_storage::Store;

type Labels = Vec<(String, String)>;

/// A syncer figure: metric name, help, and how to read it from the stats.
type StatField = (
    &'static str,
    &'static str,
    fn(&shoal_cluster::node::SyncerStats) -> u64,
);

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The series one request updates: its (operation, status) counter and its operation's
/// latency histogram (both handles share their values with the families).
type RequestSeries = (Counter, Histogram);

/// K2V requests by operation and status, and their latency by operation.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// The families' series by (operation, status), looked up without building label strings:
    /// a request's accounting is then a read lock and two atomic updates.
    handles: Arc<parking_lot::RwLock<HashMap<(&'static str, u16), RequestSeries>>>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            handles: Default::default(),
        }
    }
}

impl ApiMetrics {
    /// Records one request.
    pub fn record(&self, operation: &'static str, status: u16, seconds: f64) {
        let known = self
            .handles
            .read()
            .get(&(operation, status))
            .map(|(count, latency)| {
                count.inc();
                latency.observe(seconds);
            });
        if known.is_some() {
            return;
        }
        // One statement per handle: `get_or_create` holds its family's lock until the end of
        // the statement.
        let count = {
            let c = self.requests.get_or_create(&vec![
                ("operation".into(), operation.into()),
                ("status".into(), status.to_string()),
            ]);
            c.clone()
        };
        let latency = {
            let h = self
                .latency
                .get_or_create(&vec![("operation".into(), operation.into())]);
            h.clone()
        };
        count.inc();
        latency.observe(seconds);
        self.handles
            .write()
            .insert((operation, status), (count, latency));
    }
}

/// Values read from the node at each scrape.
struct NodeCollector<T: Transport> {
    node: Node<T>,
    store: Store,
}

impl<T: Transport> std::fmt::Debug for NodeCollector<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn family<V: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            // No `{}` after the name: some parsers refuse an empty label set.
            value.encode(metric)?;
            return Ok(());
        }
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl<T: Transport> Collector for NodeCollector<T> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = {
            let mut s: Vec<_> = self.node.syncer_stats().into_iter().collect();
            s.sort_by(|a, b| a.0.cmp(&b.0));
            s
        };
        let table = |t: &str| vec![("table".to_string(), t.to_string())];
        let gauges: [StatField; 2] = [
            (
                "shoal_sync_partitions_queued",
                "Partitions waiting in the table's sync work list",
                |s| s.queued,
            ),
            (
                "shoal_sync_partitions_in_progress",
                "Partitions being synced or offloaded",
                |s| s.in_progress,
            ),
        ];
        for (name, help, f) in gauges {
            let rows = stats
                .iter()
                .map(|(t, s)| (table(t), ConstGauge::new(f(s) as i64)))
                .collect();
            family(&mut encoder, name, help, MetricType::Gauge, rows)?;
        }
        let counters: [StatField; 14] = [
            (
                "shoal_sync_partitions_synced",
                "Partition syncs completed",
                |s| s.synced,
            ),
            (
                "shoal_sync_partitions_offloaded",
                "Partitions handed to their new owners and removed here",
                |s| s.offloaded,
            ),
            (
                "shoal_sync_errors",
                "Failed partition syncs or offloads",
                |s| s.errors,
            ),
            (
                "shoal_sync_sessions",
                "Sync sessions started by this node",
                |s| s.sessions,
            ),
            ("shoal_sync_full_scans", "Full anti-entropy scans", |s| {
                s.full_scans
            }),
            (
                "shoal_sync_missed_writes",
                "Partitions queued because a live replica missed one of their writes",
                |s| s.missed_writes,
            ),
            (
                "shoal_sync_items_sent",
                "Items sent by sync sessions",
                |s| s.items_sent,
            ),
            (
                "shoal_sync_items_received",
                "Items received by sync sessions",
                |s| s.items_received,
            ),
            (
                "shoal_sync_bytes_sent",
                "Bytes sent by sync sessions",
                |s| s.bytes_sent,
            ),
            (
                "shoal_sync_bytes_received",
                "Bytes received by sync sessions",
                |s| s.bytes_received,
            ),
            (
                "shoal_sync_cpu_microseconds",
                "Thread CPU time of this node's sync work off the async workers (sessions started or answered, offloads)",
                |s| s.cpu_us,
            ),
            (
                "shoal_sync_wire_bytes",
                "Bytes on the wire of this node's sync sessions, both ways, with their SyncStep, RPC and Noise framing",
                |s| s.wire_bytes,
            ),
            (
                "shoal_sync_panics",
                "Panics caught in the syncer's work (the partition is retried, or the syncer restarts)",
                |s| s.panics,
            ),
            (
                "shoal_gc_panics",
                "Panics caught in tombstone collection passes (the next pass runs after a backoff)",
                |s| s.gc_panics,
            ),
        ];
        for (name, help, f) in counters {
            let rows = stats
                .iter()
                .map(|(t, s)| (table(t), ConstCounter::new(f(s))))
                .collect();
            family(&mut encoder, name, help, MetricType::Counter, rows)?;
        }
        let sizes = self
            .node
            .table_sizes()
            .into_iter()
            .map(|(t, n)| (table(&t), ConstGauge::new(n as i64)))
            .collect();
        family(
            &mut encoder,
            "shoal_table_items",
            "Items stored on this node (tombstones included)",
            MetricType::Gauge,
            sizes,
        )?;
        let bytes = self.store.approximate_size().unwrap_or(0);
        family(
            &mut encoder,
            "shoal_store_bytes",
            "Size of the node's store file",
            MetricType::Gauge,
            vec![(Vec::new(), ConstGauge::new(bytes as i64))],
        )?;
        let status = self.node.status();
        let up = status.nodes.iter().filter(|n| n.up).count() as i64;
        let down = status.nodes.len() as i64 - up;
        family(
            &mut encoder,
            "shoal_cluster_nodes",
            "Nodes this node knows, by state",
            MetricType::Gauge,
            vec![
                (vec![("state".into(), "up".into())], ConstGauge::new(up)),
                (vec![("state".into(), "down".into())], ConstGauge::new(down)),
            ],
        )?;
        family(
            &mut encoder,
            "shoal_layout_version",
            "Version of the layout this node applies",
            MetricType::Gauge,
            vec![(Vec::new(), ConstGauge::new(status.layout_version as i64))],
        )?;
        Ok(())
    }
}

/// The node's registry: everything above, under one roof.
pub fn registry<T: Transport>(node: &Node<T>, store: &Store, api: &ApiMetrics) -> Arc<Registry> {
    let mut registry = Registry::default();
    node.net_metrics().register(&mut registry);
    registry.register(
        "shoal_api_requests",
        "K2V API requests, by operation and status",
        api.requests.clone(),
    );
    registry.register(
        "shoal_api_request_seconds",
        "K2V API request latency, by operation",
        api.latency.clone(),
    );
    registry.register_collector(Box::new(NodeCollector {
        node: node.clone(),
        store: store.clone(),
    }));
    Arc::new(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_requests_count_in_the_families_once_each() {
        let m = ApiMetrics::default();
        for _ in 0..3 {
            m.record("ReadItem", 200, 0.001);
        }
        m.record("ReadItem", 404, 0.002);
        m.record("InsertItem", 204, 0.004);
        let mut registry = Registry::default();
        registry.register("api_requests", "requests", m.requests.clone());
        registry.register("api_latency", "latency", m.latency.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let value = |series: &str| -> f64 {
            out.lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("{series} missing from\n{out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(
            value(r#"api_requests_total{operation="ReadItem",status="200"}"#),
            3.0
        );
        assert_eq!(
            value(r#"api_requests_total{operation="ReadItem",status="404"}"#),
            1.0
        );
        assert_eq!(
            value(r#"api_requests_total{operation="InsertItem",status="204"}"#),
            1.0
        );
        assert_eq!(value(r#"api_latency_count{operation="ReadItem"}"#), 4.0);
        assert!((value(r#"api_latency_sum{operation="ReadItem"}"#) - 0.005).abs() < 1e-9);
    }
}
