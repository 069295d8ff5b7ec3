//! Tombstone collection: a tombstone is removed only once every replica holds it, so
//! anti-entropy never brings a deleted value back: not after a replica missed the delete, nor
//! when a node was down for the whole delete-and-collect cycle.

use std::time::Duration;

use shoal_cluster::kv::{KvItem, KvTable};
use shoal_cluster::layout::{Layout, NodeRole};
use shoal_cluster::replication::Replicated;
use shoal_net::{ClusterSecret, TcpTransport};
use shoal_storage::Store;
use shoal_table::{Table, engine_key};
use shoal_testkit::cluster::TestNodeConfig;

type TestNode = shoal_testkit::cluster::TestNode<KvTable>;

/// A node on `dir` (its key) and `store` (opened there if `None`) listening on `bind`, its
/// layout kept in its store.
async fn start_in(
    dir: tempfile::TempDir,
    store: Option<Store>,
    secret: &ClusterSecret,
    bootstrap: Vec<String>,
    bind: &str,
) -> TestNode {
    let config = TestNodeConfig {
        bootstrap,
        bind: bind.to_string(),
        call_timeout: Some(Duration::from_secs(2)),
        persist_state: true,
        ..TestNodeConfig::default()
    };
    TestNode::start_in(dir, store, secret, config).await
}

async fn wait_until(what: &str, f: impl FnMut() -> bool) {
    shoal_testkit::wait_until_async(what, Duration::from_secs(10), f).await
}

async fn cluster(secret: &ClusterSecret, rf: usize) -> Vec<TestNode> {
    let a = start_in(
        tempfile::tempdir().unwrap(),
        None,
        secret,
        vec![],
        "127.0.0.1:0",
    )
    .await;
    let seed = vec![a.node.public_addr()];
    let b = start_in(
        tempfile::tempdir().unwrap(),
        None,
        secret,
        seed.clone(),
        "127.0.0.1:0",
    )
    .await;
    let c = start_in(
        tempfile::tempdir().unwrap(),
        None,
        secret,
        seed,
        "127.0.0.1:0",
    )
    .await;
    let nodes = vec![a, b, c];
    for n in &nodes {
        wait_until("peers up", || {
            n.node.peers().iter().filter(|p| p.up).count() == 2
        })
        .await;
    }
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
    nodes[0].node.set_layout(layout).await;
    for n in &nodes {
        wait_until("layout everywhere", || n.node.layout().version == 1).await;
    }
    nodes
}

/// Every node syncs every partition with every other node it shares it with.
async fn anti_entropy(nodes: &[&TestNode]) {
    for n in nodes {
        for p in 0..=255u8 {
            for peer in n.node.sync_nodes("kv", p) {
                if peer != n.node.id() {
                    let _ = n.node.sync_with(peer, "kv", p).await;
                }
            }
        }
    }
}

async fn collect(nodes: &[&TestNode]) -> u64 {
    let mut n = 0;
    for node in nodes {
        n += node.node.collect_now("kv").await.unwrap();
    }
    n
}

fn stored_bytes(t: &Table<KvTable>) -> u64 {
    t.scan_raw(&shoal_storage::KeyRange::all(), usize::MAX)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_the_delete_holds_collection_back_and_nothing_comes_back() {
    let secret = ClusterSecret::from_bytes([5; 32]);
    let mut nodes = cluster(&secret, 3).await;
    let rep = Replicated::<KvTable, TcpTransport>::new(nodes[0].node.clone());
    let me = nodes[0].node.id();
    for i in 0..200 {
        let item = KvItem::new("gc", &format!("k{i:03}"), Some(vec![7; 100]), 10, me);
        rep.insert(&item).await.unwrap();
    }
    anti_entropy(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| (n.table.len().unwrap(), stored_bytes(&n.table)))
        .collect();

    // Node C goes away; the 200 items are deleted at quorum without it.
    let c = nodes.pop().unwrap();
    let c_addr = c.node.public_addr();
    c.node.shutdown();
    for i in 0..200 {
        let tomb = KvItem::new("gc", &format!("k{i:03}"), None, 20, me);
        rep.insert(&tomb).await.unwrap();
    }
    assert_eq!(
        collect(&[&nodes[0], &nodes[1]]).await,
        0,
        "C is a replica and unreachable: nothing may be collected"
    );

    // C comes back (same key, same store) still holding the deleted values.
    let c = start_in(
        c.dir,
        Some(c.store),
        &secret,
        vec![nodes[0].node.public_addr()],
        &c_addr,
    )
    .await;
    nodes.push(c);
    for n in &nodes {
        wait_until("peers up again", || {
            n.node.peers().iter().filter(|p| p.up).count() == 2
        })
        .await;
    }
    let all: Vec<&TestNode> = nodes.iter().collect();
    assert_eq!(
        collect(&all).await,
        0,
        "C still holds the values: nothing collected"
    );
    anti_entropy(&all).await;
    let collected = collect(&all).await;
    assert_eq!(collected, 200);
    let after: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| (n.table.len().unwrap(), stored_bytes(&n.table)))
        .collect();
    eprintln!(
        "items and bytes per node before the delete: {before:?}; after collection: {after:?}"
    );
    for (n, (items, bytes)) in after.iter().enumerate() {
        assert_eq!(*items, 0, "node {n} still holds items");
        assert_eq!(*bytes, 0);
    }
    // Anti-entropy again: nothing comes back anywhere.
    anti_entropy(&all).await;
    for n in &nodes {
        assert_eq!(n.table.len().unwrap(), 0);
        let got = Replicated::<KvTable, TcpTransport>::new(n.node.clone())
            .get(&"gc".to_string(), &"k007".to_string())
            .await
            .unwrap();
        assert!(got.is_none(), "a deleted value came back: {got:?}");
    }
    for n in &nodes {
        n.node.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_for_the_whole_cycle_rejoins_without_resurrecting() {
    let secret = ClusterSecret::from_bytes([6; 32]);
    // Two replicas per partition over three nodes: C is not a replica of every partition.
    let mut nodes = cluster(&secret, 2).await;
    let c_id = nodes[2].node.id();
    let layout = nodes[0].node.layout();
    // Partition keys whose partition C does not store (the partition comes from the
    // partition key's hash).
    let keys: Vec<String> = (0..400)
        .map(|i| format!("gc{i:03}"))
        .filter(|pk| {
            !layout
                .nodes_of(engine_key(pk, &"x".to_string())[0])
                .contains(&c_id)
        })
        .take(50)
        .collect();
    assert_eq!(keys.len(), 50);
    let rep = Replicated::<KvTable, TcpTransport>::new(nodes[0].node.clone());
    let me = nodes[0].node.id();
    for pk in &keys {
        rep.insert(&KvItem::new(pk, "x", Some(vec![1; 50]), 10, me))
            .await
            .unwrap();
    }
    // C has reported holding nothing outside its partitions (the condition for collecting
    // without asking it) before it goes down, before the delete, until after the collection.
    for n in &nodes[..2] {
        wait_until("C's offload reported", || {
            n.node
                .history()
                .offloaded
                .get(&c_id)
                .is_some_and(|v| *v >= 1)
        })
        .await;
    }
    let c = nodes.pop().unwrap();
    let c_addr = c.node.public_addr();
    c.node.shutdown();
    for pk in &keys {
        rep.insert(&KvItem::new(pk, "x", None, 20, me))
            .await
            .unwrap();
    }
    let got = collect(&[&nodes[0], &nodes[1]]).await;
    assert_eq!(got, 50);
    let c = start_in(
        c.dir,
        Some(c.store),
        &secret,
        vec![nodes[0].node.public_addr()],
        &c_addr,
    )
    .await;
    nodes.push(c);
    for n in &nodes {
        wait_until("peers up again", || {
            n.node.peers().iter().filter(|p| p.up).count() == 2
        })
        .await;
    }
    let all: Vec<&TestNode> = nodes.iter().collect();
    anti_entropy(&all).await;
    for n in &nodes {
        for pk in &keys {
            let k = engine_key(pk, &"x".to_string());
            assert_eq!(n.table.get_raw(&k).unwrap(), None, "{pk} came back");
        }
    }
    for n in &nodes {
        n.node.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_and_died_holds_collection_back_until_it_is_forgotten() {
    let secret = ClusterSecret::from_bytes([7; 32]);
    let mut nodes = cluster(&secret, 2).await;
    let (a_id, c_id) = (nodes[0].node.id(), nodes[2].node.id());
    let rep = Replicated::<KvTable, TcpTransport>::new(nodes[0].node.clone());
    for i in 0..100 {
        let item = KvItem::new(&format!("f{i:03}"), "x", Some(vec![3; 50]), 10, a_id);
        rep.insert(&item).await.unwrap();
    }
    let on_c = nodes[2].table.len().unwrap();
    assert!(on_c > 0, "C holds some of the values");

    // C's disk dies, and the operator removes it from the layout: it never hands anything
    // off.
    let c = nodes.pop().unwrap();
    c.node.shutdown();
    let mut roles = nodes[0].node.layout().roles.clone();
    roles.remove(&c_id);
    let (v2, _) = nodes[0].node.layout().apply(roles).unwrap();
    nodes[0].node.set_layout(v2).await;
    for n in &nodes {
        wait_until("version 2 on A and B", || n.node.layout().version == 2).await;
    }
    let quick = shoal_cluster::node::SyncerConfig {
        start_delay: Duration::ZERO,
        ..Default::default()
    };
    for n in &nodes {
        n.node.start_syncer("kv", quick.clone()).unwrap();
    }
    for n in &nodes {
        wait_until("the change completes without C", || {
            !n.node.history().in_transition()
        })
        .await;
    }
    for i in 0..100 {
        let tomb = KvItem::new(&format!("f{i:03}"), "x", None, 20, a_id);
        rep.insert(&tomb).await.unwrap();
    }
    let ab = [&nodes[0], &nodes[1]];
    assert_eq!(
        collect(&ab).await,
        0,
        "C left without reporting its offload: it may still hold the values"
    );
    assert_eq!(nodes[1].node.history().departed.get(&c_id), Some(&2));

    // The operator forgets C on A once A counts it down; heartbeats tell B.
    wait_until("A counts C down", || {
        nodes[0].node.peers().iter().any(|p| p.id == c_id && !p.up)
    })
    .await;
    let err = nodes[0].node.forget(a_id).await.unwrap_err();
    assert!(err.to_string().contains("still has a role"), "{err}");
    nodes[0].node.forget(c_id).await.unwrap();
    wait_until("B hears that C was forgotten", || {
        let h = nodes[1].node.history();
        h.forgotten.contains(&c_id) && h.departed.is_empty()
    })
    .await;
    assert_eq!(collect(&ab).await, 100);
    for n in &nodes {
        assert_eq!(n.table.len().unwrap(), 0);
    }

    // C's disk was not dead after all: it comes back with the old values, which it tries to
    // hand off. Refused: nothing deleted comes back.
    let c = start_in(
        c.dir,
        Some(c.store),
        &secret,
        vec![nodes[0].node.public_addr()],
        "127.0.0.1:0",
    )
    .await;
    assert_eq!(c.table.len().unwrap(), on_c);
    wait_until("C hears from A", || {
        c.node.peers().iter().any(|p| p.id == a_id && p.up)
    })
    .await;
    let held: std::collections::BTreeSet<u8> = (0..100)
        .map(|i| engine_key(&format!("f{i:03}"), &"x".to_string()))
        .filter(|k| c.table.get_raw(k).unwrap().is_some())
        .map(|k| k[0])
        .collect();
    assert!(!held.is_empty());
    for p in held {
        let e = c.node.push_to(a_id, "kv", p).await.unwrap_err();
        assert!(e.to_string().contains("forgotten"), "{e}");
    }
    for n in &nodes {
        assert_eq!(n.table.len().unwrap(), 0, "a deleted value came back");
        n.node.shutdown();
    }
    c.node.shutdown();
}
