//! The counters of a table's background syncer and tombstone collector, as `shoal sync status`
//! and the metrics show them.

use serde::{Deserialize, Serialize};

/// Counters of a table's background syncer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncerStats {
    /// Partitions waiting.
    pub queued: u64,
    /// Partition syncs completed.
    pub synced: u64,
    /// Partitions offloaded.
    pub offloaded: u64,
    /// Failed partition syncs or offloads.
    pub errors: u64,
    /// Items received by this node's sessions.
    pub items_received: u64,
    /// Items sent by this node's sessions.
    pub items_sent: u64,
    /// Partitions being synced or offloaded right now.
    pub in_progress: u64,
    /// Full scans done (each queues every partition this node stores or must offload).
    pub full_scans: u64,
    /// Sync metadata and items bytes this node's sessions sent.
    pub bytes_sent: u64,
    /// Sync bytes this node's sessions received.
    pub bytes_received: u64,
    /// Bytes this node's sessions put on the wire both ways, with the framing that carries
    /// them (`SyncStep`, RPC envelope, Noise frames; not TCP/IP headers).
    #[serde(default)]
    pub wire_bytes: u64,
    /// Sync sessions this node started.
    pub sessions: u64,
    /// Thread CPU time, in microseconds, of this node's sync work (sessions it started or
    /// answered, offloads, work-list scans) off the async workers.
    #[serde(default)]
    pub cpu_us: u64,
    /// Tombstones collected (removed from every replica) by this node.
    #[serde(default)]
    pub tombstones_collected: u64,
    /// Partitions queued because a replica missed one of their writes while it counted as up
    /// (a dropped connection, a refusing disk): synced now rather than at the next full scan.
    #[serde(default)]
    pub missed_writes: u64,
    /// Panics caught in the syncer's work (each fails its partition, or restarts the syncer
    /// after a backoff): a bug to report, not a reason to stop syncing.
    #[serde(default)]
    pub panics: u64,
    /// Panics caught in the tombstone collector's passes (the next pass runs after a backoff).
    #[serde(default)]
    pub gc_panics: u64,
    /// Partitions completed over the last minute, per second.
    #[serde(default)]
    pub rate_per_sec: f64,
    /// Seconds until the queue is empty at that rate, if there is a queue and a rate.
    #[serde(default)]
    pub eta_secs: Option<u64>,
}
