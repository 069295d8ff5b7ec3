//! `shoal-bench sync`: the cost of reconciling two real on-disk replicas of one partition, for
//! Shoal's protocol, the seed's, and negentropy's, through byte-counting in-process channels.
//!
//! Replicas hold about N items of one partition key (so one ring partition); the difference is
//! `d` items (a count, or a percentage of N):
//! - `one-sided`: B lacks `d` items A holds;
//! - `two-sided`: B lacks `ceil(d/2)` items A holds, A lacks `floor(d/2)` items B holds;
//! - `modified`: `d` items hold different versions on A and B (2d differing ids).
//!
//! Bytes are counted as they travel: `item_bytes` is the item payload as sent (compressed when
//! it went compressed), `meta_bytes` every other byte (a count below zero stops the bench).
//! `lb_bytes` is the information-theoretic minimum of metadata for 256-bit ids:
//! ceil(Σ over sides dᵢ·log₂(e·2²⁵⁶/dᵢ) / 8), dᵢ = ids side i lacks; `lb64_bytes` the same for
//! the 64-bit keyed ids Shoal's protocol actually reconciles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use shoal_storage::Store;
use shoal_sync::driver::{Leg, sync_pair_recorded};
use shoal_sync::ids::IdKey;
use shoal_sync::index::{Partition, PartitionIndex, partition_of};
use shoal_sync::replica::TableReplica;
use shoal_sync::session::Replica;
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Lww, NodeId, Stamp};
use shoal_table::{Entry, Schema, Table, engine_key};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BenchItem {
    pk: String,
    sk: Vec<u8>,
    value: Lww<Vec<u8>>,
}
shoal_table::crdt_struct!(BenchItem { value });

impl Versioned for BenchItem {
    const VERSION_MARKER: &'static [u8] = b"Bi1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, Vec<u8>> for BenchItem {
    fn partition_key(&self) -> &String {
        &self.pk
    }
    fn sort_key(&self) -> &Vec<u8> {
        &self.sk
    }
    fn is_tombstone(&self) -> bool {
        false
    }
}

pub(crate) struct Bench;
impl Schema for Bench {
    const TABLE_NAME: &'static str = "bench";
    type PartitionKey = String;
    type SortKey = Vec<u8>;
    type Entry = BenchItem;
}

const PK: &str = "bench-partition";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    OneSided,
    TwoSided,
    Modified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    Shoal,
    Seed,
    Negentropy,
}

#[derive(clap::Args)]
pub struct Args {
    /// Items per replica (comma-separated list to run several).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    n: Vec<u64>,
    /// Differences: a count or a percentage of n such as `1%` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    d: Vec<String>,
    /// Kind of difference (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "one-sided")]
    diff: Vec<DiffKind>,
    /// Bytes of each item's value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seed of the generated data (the first one, with `--seeds`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Data seeds per cell: every cell runs on seeds `seed..seed+seeds` (a new base replica and
    /// a new choice of differing items for each), one row per seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Seeds on which the baselines (the seed's protocol, negentropy) run too, the first ones
    /// (default: all): they are slow at 10⁶ items and their figures do not depend on Shoal.
    #[arg(long)]
    baseline_seeds: Option<u64>,
    /// The published matrix: n ∈ {10⁴, 10⁵, 10⁶} × d ∈ {0, 1, 10, 100, 1000, 1%, 10%} × every
    /// kind of difference (overrides `--n`, `--d` and `--diff`).
    #[arg(long)]
    matrix: bool,
    /// Strategies to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "shoal,seed,negentropy")]
    strategies: Vec<Strategy>,
    /// Print one JSON object per line (otherwise a readable line).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    strategy: &'static str,
    seed: u64,
    n: u64,
    d: u64,
    diff: DiffKind,
    bytes_a_to_b: u64,
    bytes_b_to_a: u64,
    /// Bytes a cluster would carry for the session, both ways: the messages in their
    /// `SyncStep`s, RPC envelopes and Noise frames (Shoal's strategy only).
    wire_bytes: u64,
    meta_bytes: u64,
    item_bytes: u64,
    round_trips: u64,
    overfetched_items: u64,
    lb_bytes: u64,
    lb64_bytes: u64,
    converged: bool,
    cpu_ms_a: f64,
    cpu_ms_b: f64,
    /// What each side read from storage (Shoal's strategy only).
    reads_a: Reads,
    reads_b: Reads,
    wall_ms: f64,
}

/// Storage reads of one side of a session.
#[derive(Serialize, Default, Clone, Copy)]
struct Reads {
    /// Ids listed from the id tree.
    ids_listed: u64,
    /// Point reads of the id tree.
    id_lookups: u64,
    /// Items read from the table.
    items_read: u64,
}

impl From<shoal_sync::replica::ReadStats> for Reads {
    fn from(r: shoal_sync::replica::ReadStats) -> Self {
        Reads {
            ids_listed: r.ids_listed,
            id_lookups: r.id_lookups,
            items_read: r.items_read,
        }
    }
}

fn cpu_clock() -> Duration {
    cpu_time::ThreadTime::now().as_duration()
}

struct Node {
    table: Table<Bench>,
    index: std::sync::Arc<PartitionIndex>,
}

fn open(path: &Path) -> anyhow::Result<Node> {
    let store = Store::open(path).with_context(|| format!("opening {}", path.display()))?;
    let index = PartitionIndex::open(&store, Bench::TABLE_NAME, IdKey::insecure_default())?;
    let table = Table::<Bench>::new(store).with_hook(index.clone());
    Ok(Node { table, index })
}

pub(crate) fn bench_item(pk: &str, sk: Vec<u8>, value: Vec<u8>) -> BenchItem {
    BenchItem {
        pk: pk.into(),
        sk,
        value: Lww::new(Stamp::new(1, NodeId([1; 32])), value),
    }
}

fn item(sk: Vec<u8>, value: Vec<u8>, time: u64, node: u8) -> BenchItem {
    BenchItem {
        pk: PK.into(),
        sk,
        value: Lww::new(Stamp::new(time, NodeId([node; 32])), value),
    }
}

fn sort_keys(n: u64, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<[u8; 16]>().to_vec()).collect()
}

fn build_base(path: &Path, keys: &[Vec<u8>], value_size: usize, seed: u64) -> anyhow::Result<()> {
    let node = open(path)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabc);
    for chunk in keys.chunks(5000) {
        let batch = chunk
            .iter()
            .map(|k| {
                let mut v = vec![0u8; value_size];
                rng.fill(&mut v[..]);
                item(k.clone(), v, 1, 1)
            })
            .collect();
        node.table.insert_many(batch)?;
    }
    Ok(())
}

fn remove(node: &Node, keys: &[Vec<u8>]) -> anyhow::Result<()> {
    for chunk in keys.chunks(5000) {
        let mut batch = Vec::with_capacity(chunk.len());
        for sk in chunk {
            let k = engine_key(&PK.to_string(), sk);
            let v = node
                .table
                .get_raw(&k)?
                .context("item to remove is missing")?;
            batch.push((k, v));
        }
        node.table.delete_many_if_equal(batch)?;
    }
    Ok(())
}

fn parse_d(s: &str, n: u64) -> anyhow::Result<u64> {
    match s.strip_suffix('%') {
        Some(p) => Ok((p.parse::<f64>()? / 100.0 * n as f64).round() as u64),
        None => Ok(s.parse()?),
    }
}

/// Lower bound in bytes for 256-bit ids: ceil(Σ dᵢ·log₂(e·2²⁵⁶/dᵢ) / 8).
fn lower_bound(lacks: [u64; 2]) -> u64 {
    lower_bound_for(lacks, 256.0)
}

/// The same bound for ids of `id_bits` bits.
fn lower_bound_for(lacks: [u64; 2], id_bits: f64) -> u64 {
    let bits: f64 = lacks
        .iter()
        .filter(|&&d| d > 0)
        .map(|&d| d as f64 * (std::f64::consts::E.log2() + id_bits - (d as f64).log2()))
        .sum();
    (bits / 8.0).ceil() as u64
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (ns, ds, kinds) = if args.matrix {
        (
            vec![10_000, 100_000, 1_000_000],
            ["0", "1", "10", "100", "1000", "1%", "10%"]
                .map(String::from)
                .to_vec(),
            vec![DiffKind::OneSided, DiffKind::TwoSided, DiffKind::Modified],
        )
    } else {
        (args.n.clone(), args.d.clone(), args.diff.clone())
    };
    for &n in &ns {
        for seed in args.seed..args.seed + args.seeds.max(1) {
            let keys = sort_keys(n, seed);
            let base = work.path().join(format!("base-{n}.redb"));
            let t = Instant::now();
            build_base(&base, &keys, args.value_size, seed)?;
            eprintln!(
                "built base replica of {n} items (seed {seed}) in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            for d_spec in &ds {
                let d = parse_d(d_spec, n)?.min(n);
                for &kind in &kinds {
                    let (a_path, b_path, lacks) =
                        prepare_cell(work.path(), &base, &keys, n, d, kind, args, seed)?;
                    let baselines = seed < args.seed + args.baseline_seeds.unwrap_or(u64::MAX);
                    for &strategy in &args.strategies {
                        if !baselines && !matches!(strategy, Strategy::Shoal) {
                            continue;
                        }
                        let mut row = run_strategy(
                            work.path(),
                            &a_path,
                            &b_path,
                            strategy,
                            n,
                            d,
                            kind,
                            lacks,
                        )?;
                        row.seed = seed;
                        print_row(&row, args.json)?;
                    }
                    std::fs::remove_file(&a_path)?;
                    std::fs::remove_file(&b_path)?;
                }
            }
            std::fs::remove_file(&base)?;
        }
    }
    Ok(())
}

fn print_row(row: &Row, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(row)?);
    } else {
        println!(
            "{:<10} n={:<8} d={:<6} {:<9} seed {:<3} meta {:>10} B ({:>6.2}x LB)  items {:>10} B  wire {:>10} B  rt {:>3}  overfetch {}  converged {}  cpu {:.1}/{:.1} ms  wall {:.0} ms",
            row.strategy,
            row.n,
            row.d,
            format!("{:?}", row.diff),
            row.seed,
            row.meta_bytes,
            if row.lb_bytes > 0 {
                row.meta_bytes as f64 / row.lb_bytes as f64
            } else {
                0.0
            },
            row.item_bytes,
            row.wire_bytes,
            row.round_trips,
            row.overfetched_items,
            row.converged,
            row.cpu_ms_a,
            row.cpu_ms_b,
            row.wall_ms
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn prepare_cell(
    dir: &Path,
    base: &Path,
    keys: &[Vec<u8>],
    n: u64,
    d: u64,
    kind: DiffKind,
    args: &Args,
    seed: u64,
) -> anyhow::Result<(PathBuf, PathBuf, [u64; 2])> {
    let (a_path, b_path) = (dir.join("cell-a.redb"), dir.join("cell-b.redb"));
    std::fs::copy(base, &a_path)?;
    std::fs::copy(base, &b_path)?;
    let (a, b) = (open(&a_path)?, open(&b_path)?);
    // The differing items: a seeded choice among the keys.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ d ^ (n << 8));
    let mut chosen: Vec<usize> =
        rand::seq::index::sample(&mut rng, n as usize, d as usize).into_vec();
    chosen.sort_unstable();
    let pick = |r: std::ops::Range<usize>| -> Vec<Vec<u8>> {
        chosen[r].iter().map(|&i| keys[i].clone()).collect()
    };
    let d = d as usize;
    let lacks = match kind {
        DiffKind::OneSided => {
            remove(&b, &pick(0..d))?;
            [0, d as u64]
        }
        DiffKind::TwoSided => {
            let half = d.div_ceil(2);
            remove(&b, &pick(0..half))?;
            remove(&a, &pick(half..d))?;
            [(d - half) as u64, half as u64]
        }
        DiffKind::Modified => {
            for chunk in pick(0..d).chunks(5000) {
                let batch = chunk
                    .iter()
                    .map(|k| {
                        let mut v = vec![0u8; args.value_size];
                        rng.fill(&mut v[..]);
                        item(k.clone(), v, 2, 2)
                    })
                    .collect();
                b.table.insert_many(batch)?;
            }
            [d as u64, d as u64]
        }
    };
    Ok((a_path, b_path, lacks))
}

/// What a cluster would carry for a session with these legs (as a session of its K2V item table,
/// `k2v`): each initiator leg is one `sync`
/// call, answered by the responder's next leg (an empty reply when it had nothing to say).
fn cluster_wire_bytes(legs: &[Leg], p: Partition) -> u64 {
    let mut total = 0;
    let mut i = 0;
    while i < legs.len() {
        let request: &[usize] = if legs[i].from_initiator {
            i += 1;
            &legs[i - 1].messages
        } else {
            &[]
        };
        let reply: &[usize] = match legs.get(i) {
            Some(l) if !l.from_initiator => {
                i += 1;
                &l.messages
            }
            _ => &[],
        };
        total += shoal_cluster::node::sync_call_wire_bytes("k2v", p, request, reply);
    }
    total
}

fn partition() -> Partition {
    partition_of(&engine_key(&PK.to_string(), &Vec::<u8>::new()))
}

/// Compares both replicas' partition item by item.
fn converged(a: &dyn Replica, b: &dyn Replica) -> anyhow::Result<bool> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let pa = a.items_after(after.as_deref(), 4096)?;
        let pb = b.items_after(after.as_deref(), 4096)?;
        if pa != pb {
            return Ok(false);
        }
        match pa.last() {
            Some((k, _)) if pa.len() == 4096 => after = Some(k.clone()),
            _ => return Ok(true),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_strategy(
    dir: &Path,
    a_cell: &Path,
    b_cell: &Path,
    strategy: Strategy,
    n: u64,
    d: u64,
    kind: DiffKind,
    lacks: [u64; 2],
) -> anyhow::Result<Row> {
    let (a_path, b_path) = (dir.join("run-a.redb"), dir.join("run-b.redb"));
    std::fs::copy(a_cell, &a_path)?;
    std::fs::copy(b_cell, &b_path)?;
    let (a, b) = (open(&a_path)?, open(&b_path)?);
    let p = partition();
    let ra = TableReplica::new(a.table.clone(), a.index.clone(), p);
    let rb = TableReplica::new(b.table.clone(), b.index.clone(), p);
    let start = Instant::now();
    let mut row = Row {
        strategy: "",
        seed: 0,
        n,
        d,
        diff: kind,
        bytes_a_to_b: 0,
        bytes_b_to_a: 0,
        wire_bytes: 0,
        meta_bytes: 0,
        item_bytes: 0,
        round_trips: 0,
        overfetched_items: 0,
        lb_bytes: lower_bound(lacks),
        lb64_bytes: lower_bound_for(lacks, 64.0),
        converged: false,
        cpu_ms_a: 0.0,
        cpu_ms_b: 0.0,
        reads_a: Reads::default(),
        reads_b: Reads::default(),
        wall_ms: 0.0,
    };
    match strategy {
        Strategy::Shoal => {
            let mut legs = Vec::new();
            let t = sync_pair_recorded(&ra, &rb, &cpu_clock, &mut legs)?;
            row.wire_bytes = cluster_wire_bytes(&legs, p);
            row.wall_ms = start.elapsed().as_secs_f64() * 1e3;
            row.strategy = "shoal";
            row.bytes_a_to_b = t.bytes_a_to_b;
            row.bytes_b_to_a = t.bytes_b_to_a;
            row.item_bytes = t.item_bytes;
            row.round_trips = t.round_trips();
            row.overfetched_items = t.a.items_identical + t.b.items_identical;
            row.cpu_ms_a = t.time_a.as_secs_f64() * 1e3;
            row.cpu_ms_b = t.time_b.as_secs_f64() * 1e3;
            row.reads_a = ra.reads().into();
            row.reads_b = rb.reads().into();
            row.converged = converged(&ra, &rb)? && ra.head()? == rb.head()?;
        }
        Strategy::Seed => {
            let cpu = cpu_clock();
            let t = shoal_sync::seed::seed_sync_both_ways(&ra, &rb, p)?;
            row.wall_ms = start.elapsed().as_secs_f64() * 1e3;
            row.strategy = "seed";
            row.bytes_a_to_b = t.bytes_a_to_b;
            row.bytes_b_to_a = t.bytes_b_to_a;
            row.item_bytes = t.item_bytes;
            row.round_trips = t.round_trips;
            row.overfetched_items = t.identical_items;
            // Both sides run interleaved in one thread: the total is reported under side A.
            row.cpu_ms_a = (cpu_clock() - cpu).as_secs_f64() * 1e3;
            row.converged = converged(&ra, &rb)?;
        }
        Strategy::Negentropy => {
            let t = crate::negentropy_baseline::reconcile(&ra, &rb, &cpu_clock)?;
            row.wall_ms = start.elapsed().as_secs_f64() * 1e3;
            row.strategy = "negentropy";
            row.bytes_a_to_b = t.bytes_a_to_b;
            row.bytes_b_to_a = t.bytes_b_to_a;
            row.item_bytes = t.item_bytes;
            row.round_trips = t.round_trips;
            row.overfetched_items = t.identical_items;
            row.cpu_ms_a = t.time_a.as_secs_f64() * 1e3;
            row.cpu_ms_b = t.time_b.as_secs_f64() * 1e3;
            row.converged = converged(&ra, &rb)?;
        }
    }
    row.meta_bytes = (row.bytes_a_to_b + row.bytes_b_to_a)
        .checked_sub(row.item_bytes)
        .with_context(|| {
            format!(
                "{}: {} item bytes counted out of {} carried: a counting bug",
                row.strategy,
                row.item_bytes,
                row.bytes_a_to_b + row.bytes_b_to_a
            )
        })?;
    drop((ra, rb, a, b));
    std::fs::remove_file(&a_path)?;
    std::fs::remove_file(&b_path)?;
    Ok(row)
}
