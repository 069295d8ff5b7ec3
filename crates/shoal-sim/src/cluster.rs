//! Whole-cluster scenarios: five real nodes (the product's `Node`, quorum replication, syncer)
//! in one turmoil simulation, clients writing, reading and deleting through the nodes'
//! client-facing operations, faults injected on a seeded schedule, then a heal and the checks.
//!
//! Over 800 lines on purpose: the scenarios, their fault schedule and the invariant checks
//! share one run's state, and are read together when a seed fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;
use shoal_cluster::kv::{KvItem, KvTable};
use shoal_cluster::layout::{Layout, NodeRole};
use shoal_cluster::node::{
    ClusterStatus, GcConfig, LayoutReport, Node, NodeConfig, SyncerConfig, WallClock,
};
use shoal_net::{CallsOnly, ClusterSecret, NetConfig, Network, NodeId, NodeKey};
use shoal_storage::Store;
use shoal_sync::ids::IdKey;
use shoal_sync::index::{Head, PartitionIndex};
use shoal_table::codec::Versioned;
use shoal_table::{Table, engine_key};

use crate::SimTransport;
use crate::crashable::CrashableEngine;

/// Which faults a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Partitions of random minorities, healed after a while.
    Partitions,
    /// Nodes crashed and restarted.
    Crashes,
    /// Clocks skewed between nodes (up to a second), with partitions.
    ClockSkew,
    /// A layout change (a node's capacity doubles) during the load, with a crash.
    LayoutChange,
    /// All of the above.
    Mixed,
    /// Repeated layout changes (capacities going up and down), crashes among them.
    LayoutChurn,
}

impl Scenario {
    /// Every scenario, for campaigns.
    pub const ALL: [Scenario; 6] = [
        Scenario::Partitions,
        Scenario::Crashes,
        Scenario::ClockSkew,
        Scenario::LayoutChange,
        Scenario::Mixed,
        Scenario::LayoutChurn,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Partitions => "partitions",
            Scenario::Crashes => "crashes",
            Scenario::ClockSkew => "clock-skew",
            Scenario::LayoutChange => "layout-change",
            Scenario::Mixed => "mixed",
            Scenario::LayoutChurn => "layout-churn",
        }
    }

    /// The scenario named `name`.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    fn partitions(self) -> bool {
        matches!(
            self,
            Scenario::Partitions | Scenario::ClockSkew | Scenario::Mixed
        )
    }

    fn crashes(self) -> bool {
        matches!(
            self,
            Scenario::Crashes | Scenario::LayoutChange | Scenario::Mixed | Scenario::LayoutChurn
        )
    }

    fn skew(self) -> bool {
        matches!(self, Scenario::ClockSkew | Scenario::Mixed)
    }

    fn layout_change(self) -> bool {
        matches!(
            self,
            Scenario::LayoutChange | Scenario::Mixed | Scenario::LayoutChurn
        )
    }

    /// How many layout changes a run may make.
    fn layout_changes(self) -> usize {
        match self {
            Scenario::LayoutChurn => 4,
            s if s.layout_change() => 1,
            _ => 0,
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The seed: network delays, the fault schedule, the workload.
    pub seed: u64,
    /// What goes wrong.
    pub scenario: Scenario,
    /// Nodes.
    pub nodes: usize,
    /// Replicas of each partition (quorums follow: a majority of them).
    pub rf: usize,
    /// Seconds of load with faults.
    pub load_secs: u64,
    /// Seconds allowed, after healing, for the replicas to converge.
    pub converge_secs: u64,
}

impl RunConfig {
    /// The standard run of `scenario` for `seed`.
    pub fn new(seed: u64, scenario: Scenario) -> Self {
        RunConfig {
            seed,
            scenario,
            nodes: 5,
            rf: 3,
            load_secs: 20,
            converge_secs: 60,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// Writes (and deletes) acknowledged.
    pub acked: usize,
    /// Writes that failed (no quorum): allowed, they may or may not have landed.
    pub failed_writes: usize,
    /// Reads that returned.
    pub reads: usize,
    /// Faults injected.
    pub faults: usize,
    /// Transactions queued behind a simulated fsync and lost by a crash (never acknowledged).
    pub lost_transactions: usize,
    /// Broken invariants; empty for a pass.
    pub violations: Vec<String>,
    /// Hash of the client-visible history: the same seed must give the same hash.
    pub trace_hash: String,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

const PORT: u16 = 3901;
const KEYS: usize = 12;
const EPOCH_MS: u64 = 1_800_000_000_000;

/// A node's clock: virtual time since the simulation started, plus a fixed skew.
#[derive(Debug)]
struct SimClock {
    skew_ms: i64,
}

impl WallClock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
        (EPOCH_MS as i64 + elapsed + self.skew_ms) as u64
    }
}

fn host(i: usize) -> String {
    format!("n{}", i + 1)
}

fn node_secret(seed: u64, i: usize) -> [u8; 32] {
    *blake3::hash(format!("shoal-sim node {seed} {i}").as_bytes()).as_bytes()
}

fn net_config() -> NetConfig {
    NetConfig {
        call_timeout: Duration::from_secs(4),
        handshake_timeout: Duration::from_secs(2),
        ..NetConfig::default()
    }
}

/// A client's record of one operation. Every field is part of the trace hash (through
/// `Debug`), some only there.
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Op {
    Write {
        key: usize,
        value: Option<String>,
        start: u128,
        end: u128,
        /// The stamp, if acknowledged.
        stamp: Option<(u64, NodeId)>,
    },
    Read {
        key: usize,
        start: u128,
        end: u128,
        value: Option<Option<String>>,
        stamp: Option<(u64, NodeId)>,
    },
}

fn now_ms() -> u128 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis()
}

fn kv_key(key: usize) -> (String, String) {
    (format!("p{}", key % 4), format!("k{key}"))
}

async fn call<R: serde::de::DeserializeOwned>(
    net: &Network<SimTransport>,
    node: NodeId,
    addr: &str,
    endpoint: &str,
    body: Vec<u8>,
) -> Result<R, String> {
    net.add_peer_addr(node, addr.to_string());
    let reply = net
        .call(node, endpoint, body)
        .await
        .map_err(|e| e.to_string())?;
    rmp_serde::from_slice(&reply).map_err(|e| e.to_string())
}

fn enc<V: serde::Serialize>(v: &V) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("requests encode")
}

/// Runs one scenario; never panics on a broken invariant, reports it.
pub fn run(config: &RunConfig) -> Outcome {
    let n = config.nodes;
    let secret = ClusterSecret::from_bytes(*blake3::hash(b"shoal-sim cluster").as_bytes());
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(config.seed)
        .simulation_duration(Duration::from_secs(
            config.load_secs + config.converge_secs + 60,
        ))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(if config.scenario.partitions() {
            40
        } else {
            10
        }))
        .tick_duration(Duration::from_millis(2))
        .build();

    let ids: Vec<NodeId> = (0..n)
        .map(|i| NodeKey::from_secret_bytes(node_secret(config.seed, i)).node_id())
        .collect();
    // Each node's store outlives its crashes: committed writes are durable; transactions queued
    // behind the next (simulated) fsync are lost by a crash, unacknowledged.
    let engines: Vec<Arc<CrashableEngine>> =
        (0..n).map(|_| Arc::new(CrashableEngine::new())).collect();
    let stores: Vec<Store> = engines
        .iter()
        .map(|e| Store::from_engine(e.clone()))
        .collect();
    let skews: Vec<i64> = (0..n)
        .map(|_| {
            if config.scenario.skew() {
                rng.random_range(-1000..=1000)
            } else {
                0
            }
        })
        .collect();
    for i in 0..n {
        let (store, engine, secret, seed, skew) = (
            stores[i].clone(),
            engines[i].clone(),
            secret.clone(),
            config.seed,
            skews[i],
        );
        let rf = config.rf;
        let bootstrap: Vec<String> = (0..n)
            .filter(|j| *j != i)
            .map(|j| format!("{}:{PORT}", host(j)))
            .collect();
        sim.host(host(i), move || {
            let (store, secret, bootstrap) = (store.clone(), secret.clone(), bootstrap.clone());
            // Each node commits on its own period (5 to 13 ms, a slow disk's fsync), so commits
            // interleave and a crash usually finds transactions waiting for one.
            let commits = engine
                .clone()
                .run_commits(Duration::from_millis(5 + 2 * i as u64));
            async move {
                tokio::spawn(commits);
                let node = Node::start(
                    NodeKey::from_secret_bytes(node_secret(seed, i)),
                    secret.clone(),
                    SimTransport,
                    &format!("0.0.0.0:{PORT}"),
                    NodeConfig {
                        public_addr: format!("{}:{PORT}", host(i)),
                        bootstrap,
                        heartbeat: Duration::from_millis(500),
                        down_after: 3,
                        net: net_config(),
                        system_store: Some(store.clone()),
                        inline_storage: true,
                        clock: Some(Arc::new(SimClock { skew_ms: skew })),
                        consistency: Default::default(),
                    },
                    Layout::empty(rf),
                )
                .await?;
                let index =
                    PartitionIndex::open_async(&store, "kv", IdKey::derive(secret.as_bytes()))
                        .await?;
                let kv = Table::<KvTable>::new(store.clone()).with_hook(index.clone());
                node.add_table(Arc::new((kv, index)));
                node.start_syncer(
                    "kv",
                    SyncerConfig {
                        start_delay: Duration::from_secs(2),
                        scan_interval: Duration::from_secs(15),
                        seed: seed ^ i as u64,
                    },
                )?;
                // Tombstones collected during the run, so resurrection would show.
                node.start_gc(
                    "kv",
                    GcConfig {
                        interval: Duration::from_secs(3),
                        min_age: Duration::from_secs(5),
                    },
                )?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    // Form the cluster: wait for every node to see the others, apply a layout.
    let history: Arc<Mutex<Vec<(usize, Op)>>> = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (secret, ids, ready) = (secret.clone(), ids.clone(), ready.clone());
        sim.client("admin", async move {
            let net = Network::new(
                NodeKey::from_secret_bytes([0xad; 32]),
                secret,
                SimTransport,
                net_config(),
                Arc::new(CallsOnly),
            );
            let first = format!("{}:{PORT}", host(0));
            loop {
                if let Ok(s) =
                    call::<ClusterStatus>(&net, ids[0], &first, "admin.status", enc(&())).await
                    && s.nodes.iter().filter(|n| n.up).count() == ids.len()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for (i, id) in ids.iter().enumerate() {
                let role = NodeRole {
                    zone: format!("z{}", i + 1),
                    capacity: Some(1),
                };
                let _: LayoutReport =
                    call(&net, ids[0], &first, "admin.stage", enc(&(*id, Some(role)))).await?;
            }
            let _: LayoutReport = call(&net, ids[0], &first, "admin.apply", enc(&())).await?;
            ready.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
    }
    let mut faults = 0;
    let mut lost_transactions = 0;
    let mut steps = 0u64;
    while !ready.load(std::sync::atomic::Ordering::SeqCst) {
        if let Err(e) = sim.step() {
            return failed(config, format!("cluster formation: {e}"));
        }
        steps += 1;
        if steps > 200_000 {
            return failed(config, "the cluster never formed".into());
        }
    }
    let load_start = sim.elapsed();

    // Clients: each does writes, reads and deletes through random nodes until the load ends.
    let load_until = load_start + Duration::from_secs(config.load_secs);
    for c in 0..3usize {
        let (secret, ids, history) = (secret.clone(), ids.clone(), history.clone());
        let seed = config.seed ^ (0xc1 << c);
        let load_until_ms = load_until.as_millis();
        sim.client(format!("c{c}"), async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let net = Network::new(
                NodeKey::from_secret_bytes([0xc0 + c as u8; 32]),
                secret,
                SimTransport,
                net_config(),
                Arc::new(CallsOnly),
            );
            let mut serial = 0;
            while now_ms() < load_until_ms {
                let target = rng.random_range(0..ids.len());
                let addr = format!("{}:{PORT}", host(target));
                let key = rng.random_range(0..KEYS);
                let (pk, sk) = kv_key(key);
                let start = now_ms();
                let roll = rng.random_range(0..100);
                let op = if !(60..90).contains(&roll) {
                    serial += 1;
                    let value = (roll < 60).then(|| format!("c{c}-{serial}"));
                    let r: Result<(u64, NodeId), String> = call(
                        &net,
                        ids[target],
                        &addr,
                        "kv.put",
                        enc(&(
                            &pk,
                            &sk,
                            value.as_ref().map(|v| ByteBuf::from(v.as_bytes())),
                        )),
                    )
                    .await;
                    Op::Write {
                        key,
                        value,
                        start,
                        end: now_ms(),
                        stamp: r.ok(),
                    }
                } else {
                    let r: Result<Option<(Option<ByteBuf>, u64, NodeId)>, String> =
                        call(&net, ids[target], &addr, "kv.get", enc(&(&pk, &sk))).await;
                    let (value, stamp) = match r {
                        Ok(Some((v, t, node))) => (
                            Some(v.map(|b| String::from_utf8_lossy(&b).into_owned())),
                            Some((t, node)),
                        ),
                        Ok(None) => (Some(None), None),
                        Err(_) => (None, None),
                    };
                    Op::Read {
                        key,
                        start,
                        end: now_ms(),
                        value,
                        stamp,
                    }
                };
                history.lock().push((c, op));
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
            }
            Ok(())
        });
    }

    // The fault schedule, on the controller's clock.
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut next_fault = load_start + Duration::from_millis(rng.random_range(1000..3000));
    let mut layout_changes = 0;
    let mut capacities = vec![1u64; n];
    while sim.elapsed() < load_until {
        if let Err(e) = sim.step() {
            return failed(config, format!("during the load: {e}"));
        }
        if sim.elapsed() < next_fault {
            continue;
        }
        next_fault = sim.elapsed() + Duration::from_millis(rng.random_range(2000..5000));
        // Heal what the last fault did, then maybe break something else.
        for (a, b) in cut.drain(..) {
            sim.repair(host(a), host(b));
        }
        for i in std::mem::take(&mut down) {
            sim.bounce(host(i));
        }
        let choice = rng.random_range(0..3);
        if choice == 0 && config.scenario.partitions() {
            // A random minority (1 or 2 nodes) cut from the rest.
            let size = rng.random_range(1..=2);
            let mut minority = BTreeSet::new();
            while minority.len() < size {
                minority.insert(rng.random_range(0..n));
            }
            for &a in &minority {
                for b in 0..n {
                    if !minority.contains(&b) {
                        sim.partition(host(a), host(b));
                        cut.push((a, b));
                    }
                }
            }
            faults += 1;
        } else if choice == 1 && config.scenario.crashes() {
            let victim = rng.random_range(0..n);
            // The worst moment: while the victim has transactions waiting for their commit
            // (looked for during at most half a second of simulated time).
            let give_up = sim.elapsed() + Duration::from_millis(500);
            while engines[victim].queued() == 0 && sim.elapsed() < give_up {
                if let Err(e) = sim.step() {
                    return failed(config, format!("during the load: {e}"));
                }
            }
            sim.crash(host(victim));
            lost_transactions += engines[victim].crash();
            down.insert(victim);
            faults += 1;
        } else if choice == 2 && layout_changes < config.scenario.layout_changes() {
            layout_changes += 1;
            let (secret, ids) = (secret.clone(), ids.clone());
            let grow = rng.random_range(0..n);
            // Capacities go 1 → 2 → 1: every change moves partitions.
            capacities[grow] = 3 - capacities[grow];
            let capacity = capacities[grow];
            sim.client(format!("layout-change-{layout_changes}"), async move {
                let net = Network::new(
                    NodeKey::from_secret_bytes([0xae; 32]),
                    secret,
                    SimTransport,
                    net_config(),
                    Arc::new(CallsOnly),
                );
                // Through any node that answers.
                for (i, id) in ids.iter().enumerate() {
                    let addr = format!("{}:{PORT}", host(i));
                    let role = NodeRole {
                        zone: format!("z{}", grow + 1),
                        capacity: Some(capacity),
                    };
                    if call::<LayoutReport>(
                        &net,
                        *id,
                        &addr,
                        "admin.stage",
                        enc(&(ids[grow], Some(role))),
                    )
                    .await
                    .is_ok()
                        && call::<LayoutReport>(&net, *id, &addr, "admin.apply", enc(&()))
                            .await
                            .is_ok()
                    {
                        break;
                    }
                }
                Ok(())
            });
            faults += 1;
        }
    }
    // Heal everything.
    for (a, b) in cut.drain(..) {
        sim.repair(host(a), host(b));
    }
    for i in std::mem::take(&mut down) {
        sim.bounce(host(i));
    }

    // Let the clients finish, then wait for the replicas to converge (background sync only).
    let converge_until = sim.elapsed() + Duration::from_secs(config.converge_secs);
    let mut converged = false;
    let mut next_check = sim.elapsed() + Duration::from_secs(3);
    while sim.elapsed() < converge_until {
        if let Err(e) = sim.step() {
            return failed(config, format!("after healing: {e}"));
        }
        if sim.elapsed() >= next_check {
            next_check = sim.elapsed() + Duration::from_secs(2);
            if digests_agree(&stores, &ids, &secret) {
                converged = true;
                break;
            }
        }
    }

    let history = history.lock().clone();
    let mut violations = Vec::new();
    if !converged {
        violations.push(format!(
            "replicas did not converge within {} s of healing: {}",
            config.converge_secs,
            disagreement(&stores, &ids, &secret).unwrap_or_default()
        ));
    }
    check(&history, &stores, &ids, &mut violations);
    let mut trace = blake3::Hasher::new();
    for (c, op) in &history {
        trace.update(format!("{c}:{op:?}\n").as_bytes());
    }
    let acked = history
        .iter()
        .filter(|(_, o)| matches!(o, Op::Write { stamp: Some(_), .. }))
        .count();
    let failed_writes = history
        .iter()
        .filter(|(_, o)| matches!(o, Op::Write { stamp: None, .. }))
        .count();
    let reads = history
        .iter()
        .filter(|(_, o)| matches!(o, Op::Read { value: Some(_), .. }))
        .count();
    Outcome {
        seed: config.seed,
        scenario: config.scenario,
        acked,
        failed_writes,
        reads,
        faults,
        lost_transactions,
        violations,
        trace_hash: trace.finalize().to_hex()[..16].to_string(),
    }
}

fn failed(config: &RunConfig, why: String) -> Outcome {
    Outcome {
        seed: config.seed,
        scenario: config.scenario,
        acked: 0,
        failed_writes: 0,
        reads: 0,
        faults: 0,
        lost_transactions: 0,
        violations: vec![why],
        trace_hash: String::new(),
    }
}

/// The layout the nodes agree on (the newest any holds) and, per node, its local kv table.
fn replicas_of(stores: &[Store]) -> Option<Layout> {
    stores
        .iter()
        .filter_map(|s| Node::<SimTransport>::load_persisted(s).0)
        .max_by_key(|l| l.version)
}

/// Every partition's digest equal on all of its replicas (read from the stores directly).
fn digests_agree(stores: &[Store], ids: &[NodeId], secret: &ClusterSecret) -> bool {
    disagreement(stores, ids, secret).is_none()
}

/// Why the replicas do not agree yet, if they do not.
fn disagreement(stores: &[Store], ids: &[NodeId], secret: &ClusterSecret) -> Option<String> {
    let Some(layout) = replicas_of(stores) else {
        return Some("no layout".into());
    };
    // All nodes must apply the same layout before digests can be compared meaningfully.
    let versions: Vec<Option<u64>> = stores
        .iter()
        .map(|s| Node::<SimTransport>::load_persisted(s).0.map(|l| l.version))
        .collect();
    if versions.iter().any(|v| *v != Some(layout.version)) {
        return Some(format!("layout versions differ: {versions:?}"));
    }
    // Digests computed from the items themselves, read-only: the nodes' own indexes are theirs.
    let key = IdKey::derive(secret.as_bytes());
    let heads: Vec<Vec<Head>> = stores
        .iter()
        .map(|s| {
            let mut heads = vec![Head::default(); 256];
            let items = s
                .scan(
                    "kv",
                    &shoal_storage::KeyRange::all(),
                    shoal_storage::Direction::Forward,
                    usize::MAX,
                )
                .unwrap_or_default();
            for (k, v) in items {
                heads[k[0] as usize].toggle(key.item_id(&k, &v), false);
            }
            heads
        })
        .collect();
    for p in 0..=255u8 {
        let owners: Vec<usize> = layout
            .nodes_of(p)
            .iter()
            .filter_map(|id| ids.iter().position(|i| i == id))
            .collect();
        let first = owners.first().and_then(|o| heads[*o].get(p as usize));
        if owners.iter().any(|o| heads[*o].get(p as usize) != first) {
            let counts: Vec<String> = owners
                .iter()
                .map(|o| {
                    format!(
                        "{}:{}",
                        host(*o),
                        heads[*o].get(p as usize).map_or(0, |h| h.count())
                    )
                })
                .collect();
            return Some(format!(
                "partition {p} differs on its replicas ({})",
                counts.join(" ")
            ));
        }
        // Non-owners must have handed the partition off.
        for (i, h) in heads.iter().enumerate() {
            if !owners.contains(&i) && h.get(p as usize).is_some_and(|h| h.count() > 0) {
                return Some(format!(
                    "{} still holds partition {p}, not its replica",
                    host(i)
                ));
            }
        }
    }
    None
}

type Stamp = (u64, NodeId);

/// The invariants over the clients' history and the final stores.
fn check(history: &[(usize, Op)], stores: &[Store], ids: &[NodeId], violations: &mut Vec<String>) {
    let written: BTreeSet<String> = history
        .iter()
        .filter_map(|(_, o)| match o {
            Op::Write { value: Some(v), .. } => Some(v.clone()),
            _ => None,
        })
        .collect();
    // Per key, acknowledged writes: (end time, stamp).
    let mut acked: BTreeMap<usize, Vec<(u128, Stamp, Option<String>)>> = BTreeMap::new();
    for (_, o) in history {
        if let Op::Write {
            key,
            end,
            stamp: Some(s),
            value,
            ..
        } = o
        {
            acked
                .entry(*key)
                .or_default()
                .push((*end, *s, value.clone()));
        }
    }
    // Deletes that failed (no quorum) may still have landed, with a stamp from their node's
    // clock: up to the clock skew (1 s) either side of their start.
    let mut failed_deletes: BTreeMap<usize, Vec<u128>> = BTreeMap::new();
    for (_, o) in history {
        if let Op::Write {
            key,
            start,
            value: None,
            stamp: None,
            ..
        } = o
        {
            failed_deletes.entry(*key).or_default().push(*start);
        }
    }
    let may_be_deleted_after = |key: usize, stamp_ms: u64, before: u128| {
        let stamp_rel = u128::from(stamp_ms.saturating_sub(EPOCH_MS));
        failed_deletes
            .get(&key)
            .into_iter()
            .flatten()
            .any(|s| *s < before && *s + 2000 >= stamp_rel)
    };
    // Reads: nothing never written; nothing older than a write acknowledged before they began.
    for (c, o) in history {
        let Op::Read {
            key,
            start,
            end,
            value: Some(value),
            stamp,
        } = o
        else {
            continue;
        };
        if let Some(v) = value
            && !written.contains(v)
        {
            violations.push(format!(
                "client {c} read {v:?} for key {key}, never written"
            ));
        }
        let must_see = acked
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(end, _, _)| end < start)
            .max_by_key(|(_, s, _)| *s);
        // A collected tombstone reads as nothing: fine when the write to see was a delete.
        let collected_delete = |w: &(u128, Stamp, Option<String>)| w.2.is_none() && stamp.is_none();
        if let Some(w) = must_see
            && !collected_delete(w)
            && !(stamp.is_none() && may_be_deleted_after(*key, w.1.0, *end))
            && stamp.is_none_or(|s| s < w.1)
        {
            let needed = w.1;
            violations.push(format!(
                "client {c} read key {key} at {start} ms and missed a write acknowledged before (stamp {} ms, {:?}); it read {value:?} stamped {:?}",
                needed.0,
                w.2,
                stamp.map(|s| s.0)
            ));
        }
    }
    // Every acknowledged write (or a later one) is on every replica of its key.
    let Some(layout) = replicas_of(stores) else {
        violations.push("no layout persisted".into());
        return;
    };
    for (key, writes) in &acked {
        let (pk, sk) = kv_key(*key);
        let ek = engine_key(&pk, &sk);
        let (_, newest, newest_value) = writes
            .iter()
            .max_by_key(|(_, s, _)| *s)
            .cloned()
            .expect("non-empty");
        for owner in layout.nodes_of(ek[0]) {
            let Some(i) = ids.iter().position(|id| id == owner) else {
                continue;
            };
            let stored = stores[i]
                .get(<KvTable as shoal_table::Schema>::TABLE_NAME, &ek)
                .ok()
                .flatten()
                .and_then(|b| KvItem::decode(&b).ok());
            let held = stored.as_ref().map(|it| {
                let s = it.value.stamp();
                (s.time, s.node)
            });
            // Absent is right for a delete whose tombstone was collected.
            let collected = held.is_none()
                && (newest_value.is_none() || may_be_deleted_after(*key, newest.0, u128::MAX));
            if !collected && held.is_none_or(|h| h < newest) {
                let last: Vec<String> = writes
                    .iter()
                    .rev()
                    .take(3)
                    .map(|(end, s, v)| format!("{v:?}@{}(acked at {end})", s.0))
                    .collect();
                violations.push(format!(
                    "key {key}: replica {} holds {held:?}, lacks the acknowledged write stamped {} ms (last acked: {})",
                    host(i),
                    newest.0,
                    last.join(", ")
                ));
            }
        }
    }
}
