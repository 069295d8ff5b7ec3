//! Membership in a cluster larger than the full-probe limit: each node probes a few peers per
//! period, yet every node sees a killed node down, and back up after its restart, within a few
//! periods; and an idle node's traffic does not grow with the cluster.

use std::time::Duration;

use shoal_cluster::kv::KvTable;
use shoal_cluster::node::FULL_PROBE_MAX_PEERS;
use shoal_net::ClusterSecret;
use shoal_testkit::cluster::{TestNode, TestNodeConfig};

type Node = TestNode<KvTable>;

async fn wait_until(what: &str, within: Duration, f: impl FnMut() -> bool) {
    shoal_testkit::wait_until_async(what, within, f).await
}

fn up_count(n: &Node) -> usize {
    n.node.peers().iter().filter(|p| p.up).count()
}

/// More nodes than the full-probe limit, found through the first one's address, every one
/// seeing every other up; and that address.
async fn large_cluster(secret: &ClusterSecret) -> (Vec<Node>, Vec<String>) {
    let size = FULL_PROBE_MAX_PEERS + 4;
    let first = Node::start(secret, TestNodeConfig::default()).await;
    let seed = vec![first.node.public_addr()];
    let mut nodes = vec![first];
    for _ in 1..size {
        let config = TestNodeConfig {
            bootstrap: seed.clone(),
            ..TestNodeConfig::default()
        };
        nodes.push(Node::start(secret, config).await);
    }
    wait_until(
        "every node sees every other up",
        Duration::from_secs(20),
        || nodes.iter().all(|n| up_count(n) == size - 1),
    )
    .await;
    (nodes, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_cluster_sees_a_node_go_down_and_come_back() {
    let secret = ClusterSecret::from_bytes([77; 32]);
    let (mut nodes, seed) = large_cluster(&secret).await;
    let size = nodes.len();

    // Idle: a node's heartbeats are a few per period, whatever the cluster's size (each of
    // the 100 ms periods probes one peer; answering others' probes is about as many).
    let sent_before = nodes[0].node.net_metrics().bytes_sent();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = nodes[0].node.net_metrics().bytes_sent() - sent_before;
    // Probing every peer each period (the small-cluster mode) would send about 10 pings and
    // 10 answers per 100 ms here, each over 100 bytes: 40 KB in 2 s.
    assert!(sent < 15_000, "node 1 sent {sent} bytes in 2 s while idle");

    // The last node dies: every other sees it down within a few periods.
    let victim = nodes.pop().unwrap();
    let victim_id = victim.node.id();
    let (dir, store) = (victim.dir, victim.store);
    victim.node.shutdown();
    drop((victim.node, victim.table, victim.replicated));
    let down = |n: &Node| n.node.peers().iter().any(|p| p.id == victim_id && !p.up);
    wait_until(
        "every node sees the victim down",
        Duration::from_secs(10),
        || nodes.iter().all(down),
    )
    .await;

    // It restarts (same key, same store): every other sees it up again.
    let back = Node::start_in(
        dir,
        Some(store),
        &secret,
        TestNodeConfig {
            bootstrap: seed.clone(),
            ..TestNodeConfig::default()
        },
    )
    .await;
    assert_eq!(back.node.id(), victim_id);
    let up = |n: &Node| n.node.peers().iter().any(|p| p.id == victim_id && p.up);
    wait_until(
        "every node sees the victim up again",
        Duration::from_secs(10),
        || nodes.iter().all(up),
    )
    .await;
    wait_until(
        "the victim sees every node up",
        Duration::from_secs(10),
        || up_count(&back) == size - 1,
    )
    .await;
}

/// A fully replicated table in the same kind of cluster: a node that was down while writes
/// reached the others pulls them at restart, each partition from a few peers rather than from
/// every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_cluster_fills_a_returning_node_with_few_sessions() {
    use shoal_cluster::kv::KvItem;
    use shoal_cluster::node::SyncerConfig;
    use shoal_cluster::tables::TableOptions;
    use shoal_cluster::worklist::Replication;
    use shoal_table::Schema;

    struct System;
    impl Schema for System {
        const TABLE_NAME: &'static str = "sys";
        type PartitionKey = String;
        type SortKey = String;
        type Entry = KvItem;
    }
    let options = || TableOptions {
        replication: Replication::Full,
        syncer: Some(SyncerConfig {
            start_delay: Duration::from_millis(200),
            ..SyncerConfig::default()
        }),
        gc: None,
        ..TableOptions::default()
    };

    let secret = ClusterSecret::from_bytes([78; 32]);
    let (mut nodes, seed) = large_cluster(&secret).await;
    // A layout, so that the system table's quorums are those of the cluster.
    let roles = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let role = shoal_cluster::layout::NodeRole {
                zone: format!("z{i}"),
                capacity: Some(1),
            };
            (n.node.id(), role)
        })
        .collect();
    let (layout, _) = shoal_cluster::layout::Layout::empty(3)
        .apply(roles)
        .unwrap();
    nodes[0].node.set_layout(layout).await;
    wait_until("the layout arrives", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.node.layout().version == 1)
    })
    .await;
    let mut tables = Vec::new();
    for n in &nodes {
        tables.push(
            n.node
                .open_table::<System>(&n.store, options())
                .await
                .unwrap(),
        );
    }

    // The last node goes away; writes reach a quorum of the others.
    let victim = nodes.pop().unwrap();
    drop(tables.pop());
    let (dir, store) = (victim.dir, victim.store);
    victim.node.shutdown();
    drop((victim.node, victim.table, victim.replicated));
    let items: Vec<KvItem> = (0..60)
        .map(|i| {
            KvItem::new(
                &format!("key{i}"),
                "",
                Some(vec![i as u8]),
                1,
                nodes[0].node.id(),
            )
        })
        .collect();
    for it in &items {
        tables[0].insert(it).await.unwrap();
    }

    // It comes back and pulls what it missed.
    let back = Node::start_in(
        dir,
        Some(store),
        &secret,
        TestNodeConfig {
            bootstrap: seed.clone(),
            ..TestNodeConfig::default()
        },
    )
    .await;
    let sys = back
        .node
        .open_table::<System>(&back.store, options())
        .await
        .unwrap();
    let local = sys.local().clone();
    wait_until(
        "the returning node holds every item",
        Duration::from_secs(30),
        || tokio::task::block_in_place(|| local.len().unwrap()) == 60,
    )
    .await;
    // Each partition synced from a few peers (2 per pass), not from all 10: however many
    // passes ran (the full scan, peers seen coming up), sessions per partition synced stay
    // near 2.
    wait_until(
        "the returning node's syncer is idle",
        Duration::from_secs(60),
        || {
            let s = &back.node.syncer_stats()["sys"];
            s.queued == 0 && s.in_progress == 0
        },
    )
    .await;
    let stats = back.node.syncer_stats()["sys"].clone();
    assert!(
        stats.synced >= 256,
        "{} partitions synced: the first pass did not run",
        stats.synced
    );
    assert!(
        stats.sessions <= 3 * stats.synced,
        "{} sessions for {} partitions synced: every partition synced with every peer?",
        stats.sessions,
        stats.synced
    );
}
