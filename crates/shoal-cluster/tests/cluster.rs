//! Nodes on loopback TCP with on-disk stores: they find each other from one bootstrap address,
//! replicate the layout, mark a dead peer down, refuse a node with another secret, and sync a
//! partition over RPC.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_cluster::layout::{Layout, NodeRole};
use shoal_cluster::node::Node;
use shoal_net::{ClusterSecret, TcpTransport};
use shoal_storage::Store;
use shoal_sync::ids::IdKey;
use shoal_sync::index::{PartitionIndex, partition_of};
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Lww, NodeId, Stamp};
use shoal_table::{Entry, Schema, Table, engine_key};
use shoal_testkit::cluster::TestNodeConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kv {
    pk: String,
    sk: String,
    v: Lww<String>,
}
shoal_table::crdt_struct!(Kv { v });
impl Versioned for Kv {
    const VERSION_MARKER: &'static [u8] = b"Tkv1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}
impl Entry<String, String> for Kv {
    fn partition_key(&self) -> &String {
        &self.pk
    }
    fn sort_key(&self) -> &String {
        &self.sk
    }
    fn is_tombstone(&self) -> bool {
        false
    }
}
struct KvTable;
impl Schema for KvTable {
    const TABLE_NAME: &'static str = "kv";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = Kv;
}

type TestNode = shoal_testkit::cluster::TestNode<KvTable>;

async fn start(secret: &ClusterSecret, bootstrap: Vec<String>) -> TestNode {
    start_in(tempfile::tempdir().unwrap(), None, secret, bootstrap, 3).await
}

/// A node on `dir` (its key) and `store` (opened there if `None`), marking a peer down after
/// `down_after` missed heartbeats.
async fn start_in(
    dir: tempfile::TempDir,
    store: Option<Store>,
    secret: &ClusterSecret,
    bootstrap: Vec<String>,
    down_after: u32,
) -> TestNode {
    let config = TestNodeConfig {
        bootstrap,
        down_after,
        ..TestNodeConfig::default()
    };
    TestNode::start_in(dir, store, secret, config).await
}

async fn wait_until(what: &str, f: impl FnMut() -> bool) {
    shoal_testkit::wait_until_async(what, Duration::from_secs(5), f).await
}

fn up_peers(n: &Node<TcpTransport>) -> usize {
    n.peers().iter().filter(|p| p.up).count()
}

/// Three nodes that found each other through A's address alone.
async fn three_nodes(secret: &ClusterSecret) -> (TestNode, TestNode, TestNode) {
    three_nodes_marking_down_after(secret, 3).await
}

/// Three nodes that found each other through A's address alone, each marking a peer down after
/// `down_after` missed heartbeats.
async fn three_nodes_marking_down_after(
    secret: &ClusterSecret,
    down_after: u32,
) -> (TestNode, TestNode, TestNode) {
    let fresh = || tempfile::tempdir().unwrap();
    let a = start_in(fresh(), None, secret, vec![], down_after).await;
    let seed = vec![a.node.public_addr()];
    let b = start_in(fresh(), None, secret, seed.clone(), down_after).await;
    let c = start_in(fresh(), None, secret, seed, down_after).await;
    for n in [&a, &b, &c] {
        wait_until("all peers are up", || up_peers(&n.node) == 2).await;
    }
    (a, b, c)
}

/// Applies, on the first node, a layout of `rf` replicas with one zone per node, and waits until
/// every node has it.
async fn apply_layout(nodes: [&TestNode; 3], rf: usize) -> Layout {
    let roles = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.node.id(),
                NodeRole {
                    zone: format!("z{i}"),
                    capacity: Some(1),
                },
            )
        })
        .collect();
    let (layout, _) = Layout::empty(rf).apply(roles).unwrap();
    nodes[0].node.set_layout(layout.clone()).await;
    for n in nodes {
        wait_until("the layout arrives", || n.node.layout().version == 1).await;
    }
    layout
}

/// Three nodes with a layout of `rf` replicas over three zones.
async fn formed_cluster(
    secret: &ClusterSecret,
    rf: usize,
) -> (TestNode, TestNode, TestNode, Layout) {
    let (a, b, c) = three_nodes(secret).await;
    let layout = apply_layout([&a, &b, &c], rf).await;
    (a, b, c, layout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_form_a_cluster_replicate_the_layout_and_sync() {
    let secret = ClusterSecret::from_bytes([42; 32]);
    // Everyone learns everyone from one bootstrap address.
    let (a, b, c) = three_nodes(&secret).await;
    let seed = vec![a.node.public_addr()];

    // A node with another secret never joins, and is refused.
    let stranger = start(&ClusterSecret::from_bytes([7; 32]), seed.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up_peers(&stranger.node), 0);
    assert!(a.node.peers().iter().all(|p| p.id != stranger.node.id()));
    assert!(a.node.refused_handshakes() >= 1);
    stranger.node.shutdown();

    // A layout applied on one node reaches the others.
    let layout = apply_layout([&a, &b, &c], 3).await;
    for n in [&b, &c] {
        assert_eq!(n.node.layout(), layout);
    }

    // Writes on A only; one session initiated by B brings them over (and B's own to A).
    let pk = "bucket".to_string();
    let item = |sk: &str, t: u64, node: u8| Kv {
        pk: pk.clone(),
        sk: sk.into(),
        v: Lww::new(Stamp::new(t, NodeId([node; 32])), format!("{sk}@{t}")),
    };
    a.table
        .insert_many_async((0..500).map(|i| item(&format!("k{i:04}"), 1, 1)).collect())
        .await
        .unwrap();
    b.table
        .insert_async(&item("only-on-b", 2, 2))
        .await
        .unwrap();
    let p = partition_of(&engine_key(&pk, &String::new()));
    let t = b.node.sync_with(a.node.id(), "kv", p).await.unwrap();
    assert!(t.bytes_a_to_b > 0 && t.bytes_b_to_a > 0);
    let dump = |t: &Table<KvTable>| {
        t.scan_raw(&shoal_storage::KeyRange::all(), usize::MAX)
            .unwrap()
    };
    assert!(dump(&a.table) == dump(&b.table), "A and B converged");
    assert_eq!(dump(&a.table).len(), 501);
    // In sync now: a second session exchanges one small round trip.
    let t = b.node.sync_with(a.node.id(), "kv", p).await.unwrap();
    assert!(t.bytes_a_to_b + t.bytes_b_to_a < 64, "{t:?}");

    // A node that dies is marked down by the others.
    c.node.shutdown();
    wait_until("C is marked down", || {
        a.node.peers().iter().any(|p| p.id == c.node.id() && !p.up)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_reads_repairs_and_refuses_without_quorum() {
    use shoal_cluster::replication::{QuorumError, Replicated};
    let secret = ClusterSecret::from_bytes([9; 32]);
    let (a, b, c, _) = formed_cluster(&secret, 3).await;
    let via_a = Replicated::<KvTable, _>::new(a.node.clone());
    let via_b = Replicated::<KvTable, _>::new(b.node.clone());
    let (pk, sk) = ("p".to_string(), "k".to_string());
    let kv = |t: u64, v: &str| Kv {
        pk: pk.clone(),
        sk: sk.clone(),
        v: Lww::new(Stamp::new(t, NodeId([1; 32])), v.to_string()),
    };
    // Write through A, read through B.
    via_a.insert(&kv(1, "one")).await.unwrap();
    let got = via_b.get(&pk, &sk).await.unwrap().unwrap();
    assert_eq!(got.v.get(), "one");

    // A newer version on A's and C's disks, not B's: a quorum read through B (its own copy
    // and one of the others) returns it and repairs B.
    a.table.insert_async(&kv(2, "two")).await.unwrap();
    c.table.insert_async(&kv(2, "two")).await.unwrap();
    assert_eq!(via_b.get(&pk, &sk).await.unwrap().unwrap().v.get(), "two");
    for n in [&b] {
        let t = n.table.clone();
        let (pk, sk) = (pk.clone(), sk.clone());
        wait_until("read repair reaches the stale replica", move || {
            // The replica may not have had even the first write yet (a quorum of two
            // acknowledged it): nothing there is "not yet", not a failure.
            tokio::task::block_in_place(|| {
                t.get(&pk, &sk)
                    .unwrap()
                    .is_some_and(|kv| kv.v.get() == "two")
            })
        })
        .await;
    }

    // A batch through A, in one message per replica: every entry reads back through B.
    let batch: Vec<Kv> = (0..50)
        .map(|i| Kv {
            pk: format!("batch{i}"),
            sk: "s".into(),
            v: Lww::new(Stamp::new(1, NodeId([1; 32])), format!("b{i}")),
        })
        .collect();
    via_a.insert_many(&batch).await.unwrap();
    for e in &batch {
        let got = via_b.get(&e.pk, &e.sk).await.unwrap().unwrap();
        assert_eq!(got.v.get(), e.v.get());
    }

    // One node down: writes still reach a quorum. Two down: refused, clearly.
    c.node.shutdown();
    via_a.insert(&kv(3, "three")).await.unwrap();
    b.node.shutdown();
    let err = via_a.insert(&kv(4, "four")).await.unwrap_err();
    // Two refusals make the quorum impossible: the call fails at once, whether or not the
    // local write has finished.
    assert!(
        matches!(err, QuorumError::Write { acks, needed: 2, .. } if acks < 2),
        "{err}"
    );
    let err = via_a.insert_many(&batch).await.unwrap_err();
    assert!(
        matches!(err, QuorumError::Write { acks, needed: 2, .. } if acks < 2),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_syncers_spread_items_to_their_owners_and_offload_the_rest() {
    use shoal_cluster::node::SyncerConfig;
    let secret = ClusterSecret::from_bytes([5; 32]);
    // Two replicas of each partition over three nodes: every node stores about 2/3 of them.
    let (a, b, c, layout) = formed_cluster(&secret, 2).await;
    // 300 items written on A alone, in every partition (some A does not store).
    let items: Vec<Kv> = (0..300)
        .map(|i| Kv {
            pk: format!("pk{i}"),
            sk: "s".into(),
            v: Lww::new(Stamp::new(1, NodeId([1; 32])), format!("v{i}")),
        })
        .collect();
    a.table.insert_many_async(items.clone()).await.unwrap();
    let config = SyncerConfig {
        start_delay: Duration::from_millis(100),
        ..SyncerConfig::default()
    };
    for n in [&a, &b, &c] {
        n.node.start_syncer("kv", config.clone()).unwrap();
    }
    let nodes = [&a, &b, &c];
    let placed = || {
        nodes.iter().all(|n| {
            let held = tokio::task::block_in_place(|| {
                n.table
                    .scan_raw(&shoal_storage::KeyRange::all(), usize::MAX)
                    .unwrap()
            });
            let keys: std::collections::BTreeSet<Vec<u8>> =
                held.into_iter().map(|(k, _)| k).collect();
            items.iter().all(|it| {
                let key = engine_key(&it.pk, &it.sk);
                let owner = layout.nodes_of(key[0]).contains(&n.node.id());
                keys.contains(&key) == owner
            })
        })
    };
    for _ in 0..200 {
        if placed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        placed(),
        "every item on exactly its owners, nothing left elsewhere"
    );
    let stats = a.node.syncer_stats();
    assert!(stats["kv"].offloaded > 0, "{stats:?}");
}

struct SysTable;
impl Schema for SysTable {
    const TABLE_NAME: &'static str = "sys";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = Kv;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_replicated_table_reaches_every_node() {
    use shoal_cluster::node::SyncerConfig;
    let secret = ClusterSecret::from_bytes([3; 32]);
    // Two replicas per partition for sharded tables; the system table is on all three nodes.
    let (a, b, c, _) = formed_cluster(&secret, 2).await;
    let mut sys = Vec::new();
    for n in [&a, &b, &c] {
        let index =
            PartitionIndex::open_async(n.table.store(), "sys", IdKey::derive(secret.as_bytes()))
                .await
                .unwrap();
        let t = Table::<SysTable>::new(n.table.store().clone()).with_hook(index.clone());
        n.node.add_full_table(Arc::new((t.clone(), index)));
        sys.push(t);
    }
    let items: Vec<Kv> = (0..60)
        .map(|i| Kv {
            pk: format!("key{i}"),
            sk: String::new(),
            v: Lww::new(Stamp::new(1, NodeId([1; 32])), format!("v{i}")),
        })
        .collect();
    sys[0].insert_many_async(items).await.unwrap();
    let config = SyncerConfig {
        start_delay: Duration::from_millis(100),
        ..SyncerConfig::default()
    };
    for n in [&a, &b, &c] {
        n.node.start_syncer("sys", config.clone()).unwrap();
    }
    for t in &sys[1..] {
        let t = t.clone();
        wait_until("every node holds every system item", move || {
            tokio::task::block_in_place(|| t.len().unwrap()) == 60
        })
        .await;
    }
    assert_eq!(a.node.nodes_for("sys", 0).len(), 3);
    assert_eq!(a.node.nodes_for("kv", 0).len(), 2);
}

fn items(prefix: &str, n: usize) -> Vec<Kv> {
    (0..n)
        .map(|i| Kv {
            pk: format!("{prefix}{i}"),
            sk: "s".into(),
            v: Lww::new(Stamp::new(1, NodeId([1; 32])), format!("v{i}")),
        })
        .collect()
}

fn holds_all(t: &Table<KvTable>, items: &[Kv]) -> bool {
    tokio::task::block_in_place(|| {
        items
            .iter()
            .all(|it| t.get(&it.pk, &it.sk).unwrap().is_some())
    })
}

/// Syncers that only their events can wake: no full scan within the test.
fn event_driven() -> shoal_cluster::node::SyncerConfig {
    shoal_cluster::node::SyncerConfig {
        start_delay: Duration::from_secs(3600),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_unseen_catches_up_at_once() {
    let secret = ClusterSecret::from_bytes([21; 32]);
    // No one is ever marked down here, and A and B run no syncer: C catches up by itself.
    let (a, b, c) = three_nodes_marking_down_after(&secret, 1_000_000).await;
    let seed = vec![a.node.public_addr()];
    apply_layout([&a, &b, &c], 3).await;

    // C stops; A and B take writes it misses; C comes back (same key, same store) before
    // anyone marks it down, its first full scan an hour away.
    let (dir, store) = (c.dir, c.store);
    c.node.shutdown();
    drop((c.node, c.table, c.replicated));
    let missed = items("missed", 200);
    a.table.insert_many_async(missed.clone()).await.unwrap();
    b.table.insert_many_async(missed.clone()).await.unwrap();
    let c = start_in(dir, Some(store), &secret, seed, 1_000_000).await;
    assert!(!holds_all(&c.table, &missed));
    wait_until("C hears from its peers", || up_peers(&c.node) == 2).await;
    c.node.start_syncer("kv", event_driven()).unwrap();
    let t = c.table.clone();
    wait_until("C pulls what it missed", move || holds_all(&t, &missed)).await;
    assert!(
        a.node.peers().iter().all(|p| p.up),
        "C was never marked down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syncer_starts_with_what_it_shares_with_peers_already_up() {
    let secret = ClusterSecret::from_bytes([22; 32]);
    let (a, b, c, _) = formed_cluster(&secret, 3).await;
    // Items on A alone; no syncer on A or B, and C's first full scan an hour away.
    let only_on_a = items("a", 100);
    a.table.insert_many_async(only_on_a.clone()).await.unwrap();
    c.node.start_syncer("kv", event_driven()).unwrap();
    let t = c.table.clone();
    wait_until("C pulls from the peers it found up", move || {
        holds_all(&t, &only_on_a)
    })
    .await;
    assert!(!holds_all(&b.table, &items("a", 100)), "B ran no syncer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_a_live_replica_missed_is_synced_at_once() {
    use futures::StreamExt;
    use shoal_cluster::replication::Replicated;
    let secret = ClusterSecret::from_bytes([23; 32]);
    // No one is ever marked down, so no peer coming back queues anything, and A's first full
    // scan is an hour away: only the missed writes themselves can get C synced.
    let (a, b, c) = three_nodes_marking_down_after(&secret, 1_000_000).await;
    apply_layout([&a, &b, &c], 3).await;
    a.node.start_syncer("kv", event_driven()).unwrap();
    let idle = |n: &Node<TcpTransport>| {
        n.syncer_stats()
            .get("kv")
            .is_some_and(|s| s.queued == 0 && s.in_progress == 0)
    };
    wait_until("A's syncer has done its start-up work", || idle(&a.node)).await;
    let missed = |n: &Node<TcpTransport>| n.syncer_stats().get("kv").map_or(0, |s| s.missed_writes);

    // Writes through A while A keeps dropping its connection to C: the writes to C queued or
    // in flight at each cut fail (A and B still make the quorum).
    let via_a = Replicated::<KvTable, _>::new(a.node.clone());
    let mut written = Vec::new();
    for round in 0..20 {
        let batch = items(&format!("cut{round}-"), 300);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cutter = {
            let (node, c_id, stop) = (a.node.clone(), c.node.id(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    node.disconnect(c_id);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        futures::stream::iter(batch.clone())
            .for_each_concurrent(32, |kv| {
                let via_a = &via_a;
                async move { via_a.insert(&kv).await.unwrap() }
            })
            .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        cutter.await.unwrap();
        written.extend(batch);
        if missed(&a.node) > 0 {
            break;
        }
        // The failed writes' partitions are queued once all their writes have answered.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if missed(&a.node) > 0 {
            break;
        }
    }
    assert!(
        missed(&a.node) > 0,
        "some write to C failed and queued its partition"
    );
    let t = c.table.clone();
    let mut whole = false;
    for _ in 0..300 {
        let (t, written) = (t.clone(), written.clone());
        whole = tokio::task::spawn_blocking(move || holds_all(&t, &written))
            .await
            .unwrap();
        if whole {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lacking = written
        .iter()
        .filter(|it| c.table.get(&it.pk, &it.sk).unwrap().is_none())
        .count();
    assert!(
        whole,
        "C holds every write it missed, without a full scan: {lacking} of {} still missing; A's syncer: {:?}",
        written.len(),
        a.node.syncer_stats()["kv"]
    );
    assert!(
        a.node.peers().iter().all(|p| p.up),
        "C was never marked down"
    );
    let scans = a.node.syncer_stats()["kv"].full_scans;
    assert_eq!(scans, 0, "no full scan ran");
    drop(b);
}

/// A table whose storage panics on demand: the first `has_data` calls, the first `replica`
/// calls and the first `tombstones` calls, as a bug in the storage layer would.
struct Panicky {
    inner: Arc<dyn shoal_cluster::node::SyncTable>,
    has_data: std::sync::atomic::AtomicU32,
    replica: std::sync::atomic::AtomicU32,
    tombstones: std::sync::atomic::AtomicU32,
    tombstone_calls: std::sync::atomic::AtomicU32,
}

fn maybe_panic(left: &std::sync::atomic::AtomicU32, what: &str) {
    use std::sync::atomic::Ordering::SeqCst;
    if left
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        panic!("injected panic in {what}");
    }
}

impl shoal_cluster::node::SyncTable for Panicky {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn replica(&self, p: u8) -> Box<dyn shoal_sync::session::Replica + Send> {
        maybe_panic(&self.replica, "replica");
        self.inner.replica(p)
    }
    fn merge_encoded(
        &self,
        items: Vec<Vec<u8>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<usize, shoal_table::TableError>> + Send>,
    > {
        self.inner.merge_encoded(items)
    }
    fn get_encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, shoal_table::TableError> {
        self.inner.get_encoded(key)
    }
    fn has_data(&self, p: u8) -> Result<bool, shoal_table::TableError> {
        maybe_panic(&self.has_data, "has_data");
        self.inner.has_data(p)
    }
    fn scan_partition(&self, p: u8) -> Result<shoal_storage::Entries, shoal_table::TableError> {
        self.inner.scan_partition(p)
    }
    fn delete_if_unchanged(
        &self,
        items: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<usize, shoal_table::TableError> {
        self.inner.delete_if_unchanged(items)
    }
    fn item_count(&self) -> Result<u64, shoal_table::TableError> {
        self.inner.item_count()
    }
    fn tombstones(
        &self,
        p: u8,
        limit: usize,
    ) -> Result<shoal_storage::Entries, shoal_table::TableError> {
        self.tombstone_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        maybe_panic(&self.tombstones, "tombstones");
        self.inner.tombstones(p, limit)
    }
    fn scan_range(
        &self,
        range: &shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, shoal_table::TableError> {
        self.inner.scan_range(range, reverse, limit)
    }
    fn checkpoint(&self) -> Result<(), shoal_table::TableError> {
        self.inner.checkpoint()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_syncer_and_the_collector_survive_panics_in_their_work() {
    use shoal_cluster::node::{GcConfig, SyncerConfig};
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    let secret = ClusterSecret::from_bytes([33; 32]);
    // Two replicas over three nodes: A's full scan asks whether it holds data in the
    // partitions it does not store (to offload them).
    let (a, b, c, layout) = formed_cluster(&secret, 2).await;
    // A's table panics in its first full scan (the whole syncer goes down), then in the first
    // three partition sessions (each fails its partition); the collector's, in its first pass.
    let panicky = Arc::new(Panicky {
        inner: a.node.table("kv").unwrap(),
        has_data: AtomicU32::new(1),
        replica: AtomicU32::new(3),
        tombstones: AtomicU32::new(0),
        tombstone_calls: AtomicU32::new(0),
    });
    a.node.add_table(panicky.clone());
    let items: Vec<Kv> = (0..200)
        .map(|i| Kv {
            pk: format!("pk{i}"),
            sk: "s".into(),
            v: Lww::new(Stamp::new(1, NodeId([1; 32])), format!("v{i}")),
        })
        .collect();
    a.table.insert_many_async(items).await.unwrap();
    // Only A syncs: it pushes what B and C lack.
    a.node
        .start_syncer(
            "kv",
            SyncerConfig {
                start_delay: Duration::from_millis(100),
                ..SyncerConfig::default()
            },
        )
        .unwrap();
    // The collector of a partition is its first replica: wrap that node's table too.
    let collector = [&a, &b, &c]
        .into_iter()
        .find(|n| layout.nodes_of(0)[0] == n.node.id())
        .unwrap();
    let collected = Arc::new(Panicky {
        inner: collector.node.table("kv").unwrap(),
        has_data: AtomicU32::new(0),
        replica: AtomicU32::new(0),
        tombstones: AtomicU32::new(1),
        tombstone_calls: AtomicU32::new(0),
    });
    collector.node.add_table(collected.clone());
    collector
        .node
        .start_gc(
            "kv",
            GcConfig {
                interval: Duration::from_millis(100),
                min_age: Duration::ZERO,
            },
        )
        .unwrap();
    // Every item ends on its two replicas, and only there (A offloads the others).
    let expected = |n: &TestNode| {
        (0..200)
            .filter(|i| {
                let p = partition_of(&engine_key(&format!("pk{i}"), &"s".to_string()));
                layout.nodes_of(p).contains(&n.node.id())
            })
            .count() as u64
    };
    let counts = || [&a, &b, &c].map(|n| n.table.len().unwrap());
    let want = [&a, &b, &c].map(expected);
    for _ in 0..400 {
        if counts() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(), want);
    let stats = a.node.syncer_stats()["kv"].clone();
    // One restart of the whole syncer, three failed partitions: each caught and counted.
    assert_eq!(stats.panics, 4, "{stats:?}");
    assert!(stats.errors >= 3, "{stats:?}");
    // The collector's next passes run after its panicked one.
    // (Collection waits for the layout change to settle: every node synced version 1.)
    for _ in 0..600 {
        if collected.tombstone_calls.load(SeqCst) > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(collected.tombstone_calls.load(SeqCst) > 1);
    assert_eq!(collector.node.syncer_stats()["kv"].gc_panics, 1);
    // And the syncer still answers events: a repair brings a new item over.
    let late = Kv {
        pk: "late".into(),
        sk: "s".into(),
        v: Lww::new(Stamp::new(2, NodeId([1; 32])), "late".into()),
    };
    a.table.insert_async(&late).await.unwrap();
    a.node.request_repair(Some("kv")).unwrap();
    let owners = layout.nodes_of(partition_of(&engine_key(
        &"late".to_string(),
        &"s".to_string(),
    )));
    for n in [&b, &c]
        .into_iter()
        .filter(|n| owners.contains(&n.node.id()))
    {
        wait_until("the repair brings the new item to its replicas", || {
            tokio::task::block_in_place(|| n.table.get(&"late".to_string(), &"s".to_string()))
                .unwrap()
                .is_some()
        })
        .await;
    }
}
