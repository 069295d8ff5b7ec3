//! The real-process fault campaign: five `shoal server` processes on 127.0.0.11–15, a steady
//! K2V write load, a fault every 10 s (kill -9 and restart, SIGSTOP/SIGCONT, an iptables
//! partition of one node from the others, and one node's data directory on a small tmpfs that
//! fills up), then heal and check, through each node's admin endpoint, that every acknowledged
//! write is on every replica, that nothing was invented, and that replicas' digests agree.
//!
//! Run through `scripts/fault-campaign.sh` (root: iptables and mount).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k2v_client::{K2vClient, K2vClientConfig};

use crate::procs::{Chain, NodeSpec, ShoalCluster};

/// Arguments of `shoal-bench campaign`.
#[derive(clap::Args)]
pub struct Args {
    /// Working directory (configurations, data, logs).
    #[arg(long)]
    dir: PathBuf,
    /// Seconds of load with faults.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Seconds between faults.
    #[arg(long, default_value_t = 10)]
    fault_every: u64,
    /// Seconds allowed to converge after healing.
    #[arg(long, default_value_t = 60)]
    converge_within: u64,
    /// A small tmpfs for node 5's data (mounted by the script); its own directory otherwise.
    #[arg(long)]
    small_disk: Option<PathBuf>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// First RPC port (each node uses the same ports on its own address).
    #[arg(long, default_value_t = 24901)]
    port: u16,
    /// Seed of the fault schedule and the load.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const NODES: usize = 5;
const PARTITION_KEYS: usize = 8;
const CHAIN: &str = "SHOAL_CAMPAIGN";
const BUCKET: &str = "campaign";

fn ip(k: usize) -> String {
    format!("127.0.0.{}", 11 + k)
}

/// One attempted write: (pk, sk) → value; acknowledged or not.
#[derive(Default)]
struct Ledger {
    attempted: BTreeMap<(String, String), Vec<u8>>,
    acked: BTreeSet<(String, String)>,
    failed: usize,
}

/// Runs the campaign and prints its summary line; fails if an invariant broke.
pub fn run(args: &Args) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let specs: Vec<NodeSpec> = (0..NODES)
        .map(|k| NodeSpec {
            ip: ip(k),
            rpc_port: args.port,
            data_dir: match (&args.small_disk, k) {
                (Some(d), 4) => d.join("node5"),
                _ => args.dir.join(format!("node{}", k + 1)),
            },
        })
        .collect();
    let firewall = Firewall::install()?;
    let mut cluster = ShoalCluster::start(&args.dir, specs, 3, BUCKET)?;
    let (key_id, key_secret, _) = cluster.k2v.clone().context("k2v credentials")?;
    eprintln!(
        "campaign: 5 nodes up, layout applied; load and faults for {} s",
        args.seconds
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.api_endpoint()).collect();
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let (ledger, stop, endpoints) = (ledger.clone(), stop.clone(), endpoints.clone());
        let (key_id, key_secret) = (key_id.clone(), key_secret.clone());
        let seed = args.seed * 1000 + w as u64;
        writers.push(rt.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let clients: Vec<K2vClient> = endpoints
                .iter()
                .map(|e| {
                    K2vClient::new(K2vClientConfig {
                        endpoint: e.clone(),
                        region: "shoal".into(),
                        aws_access_key_id: key_id.clone(),
                        aws_secret_access_key: key_secret.clone(),
                        bucket: BUCKET.into(),
                        user_agent: None,
                    })
                    .expect("client")
                })
                .collect();
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let pk = format!("p{}", rng.random_range(0..PARTITION_KEYS));
                let sk = format!("w{w:02}-{seq:08}");
                let value: Vec<u8> = format!("{seed:x}-{seq}-{}", rng.random::<u64>()).into_bytes();
                ledger
                    .lock()
                    .attempted
                    .insert((pk.clone(), sk.clone()), value.clone());
                let client = &clients[rng.random_range(0..clients.len())];
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.insert_item(&pk, &sk, value, None),
                )
                .await;
                let ok = matches!(r, Ok(Ok(())));
                {
                    let mut l = ledger.lock();
                    if ok {
                        l.acked.insert((pk, sk));
                    } else {
                        l.failed += 1;
                    }
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // Faults, one every `fault_every` seconds, each healed before the next.
    let started = Instant::now();
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut round = 0usize;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(
            Duration::from_secs(args.fault_every)
                .min(Duration::from_secs(args.seconds).saturating_sub(started.elapsed())),
        );
        if started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
        // Node 5 (on the small disk) takes its share of faults like the others.
        let victim = rng.random_range(0..NODES);
        let kind = ["kill-9", "sigstop", "partition"][round % 3];
        round += 1;
        *faults.entry(kind).or_default() += 1;
        let hold = Duration::from_millis(rng.random_range(2000..5000));
        let (acked, failed) = {
            let l = ledger.lock();
            (l.acked.len(), l.failed)
        };
        eprintln!(
            "t={:>4.0}s {kind} node {} for {:.1} s (acked so far {acked}, failed {failed})",
            started.elapsed().as_secs_f64(),
            victim + 1,
            hold.as_secs_f64()
        );
        match kind {
            "kill-9" => {
                cluster.kill9(victim);
                std::thread::sleep(hold);
                cluster.start_node(victim)?;
            }
            "sigstop" => {
                cluster.pause(victim);
                std::thread::sleep(hold);
                cluster.resume(victim);
            }
            _ => {
                firewall.isolate(&ip(victim))?;
                std::thread::sleep(hold);
                firewall.heal()?;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    let small_disk_full = args
        .small_disk
        .as_ref()
        .map(|d| disk_usage_percent(d).unwrap_or(0))
        .unwrap_or(0);

    // Heal everything: every node running, no rule, the small disk given room.
    firewall.heal()?;
    for k in 0..NODES {
        cluster.resume(k);
        if !cluster.nodes[k].running() {
            cluster.start_node(k)?;
        }
    }
    let mut disk_note = String::new();
    if let Some(d) = &args.small_disk {
        disk_note = format!(", small disk was {small_disk_full}% full");
        let out = Command::new("mount")
            .args(["-o", "remount,size=512m"])
            .arg(d)
            .output()?;
        if !out.status.success() {
            bail!(
                "growing {}: {}",
                d.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let healed = Instant::now();
    let (attempted, acked, failed) = {
        let l = ledger.lock();
        (l.attempted.clone(), l.acked.clone(), l.failed)
    };
    eprintln!(
        "healed at t={:.0}s: {} attempted, {} acknowledged, {failed} failed{disk_note}; checking",
        started.elapsed().as_secs_f64(),
        attempted.len(),
        acked.len()
    );

    let deadline = healed + Duration::from_secs(args.converge_within);
    let mut last;
    loop {
        last = check(&cluster, &attempted, &acked);
        match &last {
            Ok(c) if c.missing_replicas == 0 && c.divergent == 0 && c.phantom == 0 => break,
            Ok(c) => eprintln!(
                "  +{:.0}s: {} replica copies missing, {} divergent partitions",
                healed.elapsed().as_secs_f64(),
                c.missing_replicas,
                c.divergent
            ),
            Err(e) => eprintln!(
                "  +{:.0}s: check failed: {e:#}",
                healed.elapsed().as_secs_f64()
            ),
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let converge = healed.elapsed().as_secs_f64();
    cluster.shutdown();
    let c = last?;
    let converged = c.missing_replicas == 0 && c.divergent == 0 && c.phantom == 0;
    let faults_text: Vec<String> = faults.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "campaign: {} acknowledged, {} lost, {} phantom, {} divergent partitions, {} ({} faults: {}; {failed} failed writes{disk_note})",
        acked.len(),
        c.lost,
        c.phantom,
        c.divergent,
        if converged {
            format!("converged in {converge:.1} s")
        } else {
            format!(
                "NOT converged in {} s ({} replica copies missing)",
                args.converge_within, c.missing_replicas
            )
        },
        faults.values().sum::<usize>(),
        faults_text.join(", "),
    );
    if c.lost > 0 || c.phantom > 0 || !converged {
        bail!("invariants broken");
    }
    Ok(())
}

/// One node's items under one partition key: sort key → values (hex; `None`: a deletion).
type Holding = BTreeMap<String, Vec<Option<String>>>;

struct Check {
    /// Acknowledged writes on no replica at all.
    lost: usize,
    /// Acknowledged writes absent from some replica (0 once converged).
    missing_replicas: usize,
    /// Items no writer attempted, or with a value no writer wrote for that key.
    phantom: usize,
    /// Partitions whose replicas' digests differ.
    divergent: usize,
}

fn check(
    cluster: &ShoalCluster,
    attempted: &BTreeMap<(String, String), Vec<u8>>,
    acked: &BTreeSet<(String, String)>,
) -> anyhow::Result<Check> {
    let layout: serde_json::Value =
        serde_json::from_str(&cluster.cli(0, &["layout", "show", "--json"])?)?;
    let assignment: Vec<Vec<String>> = serde_json::from_value(layout["assignment"].clone())?;
    let index_of = |id: &str| {
        cluster
            .nodes
            .iter()
            .position(|n| id.starts_with(&n.id) || n.id.starts_with(id))
    };
    // Local contents of each partition key on each node.
    let mut holdings: BTreeMap<(usize, String), (u8, Holding)> = BTreeMap::new();
    for k in 0..cluster.nodes.len() {
        for p in 0..PARTITION_KEYS {
            let pk = format!("p{p}");
            let out = cluster.cli(k, &["local-items", "--bucket", BUCKET, "--pk", &pk])?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            let partition = v["partition"].as_u64().unwrap_or(0) as u8;
            let mut items = BTreeMap::new();
            for item in v["items"].as_array().cloned().unwrap_or_default() {
                let sk = item["sk"].as_str().unwrap_or_default().to_string();
                let values: Vec<Option<String>> = serde_json::from_value(item["values"].clone())?;
                items.insert(sk, values);
            }
            holdings.insert((k, pk), (partition, items));
        }
    }
    let mut c = Check {
        lost: 0,
        missing_replicas: 0,
        phantom: 0,
        divergent: 0,
    };
    for (pk, sk) in acked {
        let partition = holdings[&(0, pk.clone())].0;
        let want = hex::encode(&attempted[&(pk.clone(), sk.clone())]);
        let replicas: Vec<usize> = assignment[partition as usize]
            .iter()
            .filter_map(|id| index_of(id))
            .collect();
        let holding = (0..cluster.nodes.len())
            .filter(|k| {
                holdings[&(*k, pk.clone())]
                    .1
                    .get(sk)
                    .is_some_and(|vals| vals.iter().any(|v| v.as_deref() == Some(want.as_str())))
            })
            .collect::<BTreeSet<_>>();
        if holding.is_empty() {
            c.lost += 1;
        }
        c.missing_replicas += replicas.iter().filter(|r| !holding.contains(r)).count();
    }
    for ((_, pk), (_, items)) in &holdings {
        for (sk, values) in items {
            let Some(written) = attempted.get(&(pk.clone(), sk.clone())) else {
                c.phantom += 1;
                continue;
            };
            let written = hex::encode(written);
            if values
                .iter()
                .any(|v| v.as_deref() != Some(written.as_str()))
            {
                c.phantom += 1;
            }
        }
    }
    // Digests of the whole K2V table, partition by partition, on each partition's replicas.
    let mut digests = Vec::new();
    for k in 0..cluster.nodes.len() {
        let d: Vec<serde_json::Value> =
            serde_json::from_str(&cluster.cli(k, &["digests", "--table", "k2v"])?)?;
        digests.push(d);
    }
    for (p, nodes) in assignment.iter().enumerate() {
        let seen: BTreeSet<String> = nodes
            .iter()
            .filter_map(|id| index_of(id))
            .map(|k| digests[k][p].to_string())
            .collect();
        if seen.len() > 1 {
            c.divergent += 1;
        }
    }
    Ok(c)
}

fn disk_usage_percent(dir: &std::path::Path) -> anyhow::Result<u64> {
    let out = Command::new("df").arg("--output=pcent").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
        .unwrap_or(0))
}

/// Partitions of one node from the others, as rules of the campaign's own chain.
struct Firewall(Chain);

impl Firewall {
    fn install() -> anyhow::Result<Self> {
        Ok(Firewall(Chain::install(CHAIN)?))
    }

    /// Drops every packet between `ip` and the other nodes' addresses (clients on 127.0.0.1
    /// still reach it: a partition of the cluster, not of the clients).
    fn isolate(&self, ip: &str) -> anyhow::Result<()> {
        let others = "127.0.0.11-127.0.0.15";
        self.0.append(&[
            "-s",
            ip,
            "-m",
            "iprange",
            "--dst-range",
            others,
            "!",
            "-d",
            ip,
            "-j",
            "DROP",
        ])?;
        self.0.append(&[
            "-d",
            ip,
            "-m",
            "iprange",
            "--src-range",
            others,
            "!",
            "-s",
            ip,
            "-j",
            "DROP",
        ])
    }

    fn heal(&self) -> anyhow::Result<()> {
        self.0.flush()
    }
}
