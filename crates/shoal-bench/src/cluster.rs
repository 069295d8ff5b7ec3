//! Three-node clusters side by side: Shoal, Garage (K2V, `metadata_fsync` false and true) and
//! etcd, each started here on loopback, driven through its own client API with the same
//! workload: writes and reads of 100-byte values at 1, 16 and 64 concurrent clients; then, for
//! Shoal, catch-up of a node that missed writes and repair of a wiped node (time and bytes).
//!
//! Prepare the peers once with `bench/prepare-peers.sh`.
//!
//! Over 800 lines on purpose: each system's driver and the shared report are kept side by side
//! so that what each peer was asked to do, and with which settings, can be compared in one place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k2v_client::{K2vClient, K2vClientConfig, K2vValue};

use crate::k2v_http::K2vHttp;
use serde_json::json;

use crate::peers::{Etcd, Garage};
use crate::procs::{Chain, NodeSpec, ShoalCluster};

/// Arguments of `shoal-bench cluster`.
#[derive(clap::Args)]
pub struct Args {
    /// Peers to compare with: garage, etcd (comma-separated; none: Shoal alone).
    #[arg(long, value_delimiter = ',', default_value = "garage,etcd")]
    peers: Vec<String>,
    /// Print only JSON lines.
    #[arg(long)]
    json: bool,
    /// Seconds per load figure.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Items written while a node is stopped (catch-up).
    #[arg(long, default_value_t = 10_000)]
    catch_up_items: usize,
    /// Items in the cluster when a node is wiped (repair).
    #[arg(long, default_value_t = 1_000_000)]
    repair_items: usize,
    /// Longest wait for a catch-up or repair figure (Garage's anti-entropy runs every 10 min).
    #[arg(long, default_value_t = 660)]
    cap: u64,
    /// Runs of Garage's catch-up and repair (default: --runs). Its catch-up waits for its
    /// 10-minute anti-entropy pass and its repair takes about a quarter of an hour.
    #[arg(long)]
    peer_sync_runs: Option<usize>,
    /// Load operations to measure: writes, reads (the reads' items are written either way).
    #[arg(long, value_delimiter = ',', default_value = "writes,reads")]
    ops: Vec<String>,
    /// The K2V client of the load scenarios: `lean` (signed HTTP/1.1 requests on one
    /// kept-alive connection per client; about 16 µs of CPU per request) or `k2v-client`
    /// (Garage's client crate; about 40 µs, taken from the same two cores as the servers').
    #[arg(long, default_value = "lean")]
    k2v_client: String,
    /// Only the load scenarios (no catch-up, no repair).
    #[arg(long)]
    skip_sync_scenarios: bool,
    /// Only the catch-up and repair scenarios.
    #[arg(long)]
    skip_load: bool,
    /// Working directory.
    #[arg(long, default_value = "/tmp/shoal-bench-cluster")]
    dir: PathBuf,
}

const VALUE: usize = 100;
const PARTITION_KEYS: usize = 16;

/// One system under test: how to write and read one item.
#[derive(Clone)]
enum Target {
    /// A K2V API (Shoal's or Garage's), one client of each kind per node.
    K2v {
        /// The bench's lean client: the fill always, and the measured operations unless
        /// `by_k2v_client`. Its batches have no client-side deadline (`k2v-client` gives up
        /// after 5 s, less than a durable Garage can take for 500 items).
        lean: Arc<Vec<K2vHttp>>,
        /// Garage's client crate.
        k2v_client: Arc<Vec<K2vClient>>,
        /// The measured operations go through `k2v_client`.
        by_k2v_client: bool,
    },
    Etcd(
        Arc<Vec<String>>,
        hyper::Client<hyper::client::HttpConnector>,
    ),
}

impl Target {
    async fn write(&self, client: usize, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Target::K2v {
                k2v_client: c,
                by_k2v_client: true,
                ..
            } => {
                let (pk, sk) = split(key);
                c[client % c.len()]
                    .insert_item(&pk, sk, value, None)
                    .await?;
                Ok(())
            }
            Target::K2v { lean: h, .. } => {
                let (pk, sk) = split(key);
                h[client % h.len()]
                    .insert(client / h.len(), &pk, sk, &value)
                    .await
            }
            Target::Etcd(urls, http) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let body = json!({"key": b64.encode(key), "value": b64.encode(value)});
                etcd_call(http, &urls[client % urls.len()], "put", body).await?;
                Ok(())
            }
        }
    }

    async fn read(&self, client: usize, key: &str) -> anyhow::Result<()> {
        match self {
            Target::K2v {
                k2v_client: c,
                by_k2v_client: true,
                ..
            } => {
                let (pk, sk) = split(key);
                let v = c[client % c.len()].read_item(&pk, sk).await?;
                if !matches!(v.value.first(), Some(K2vValue::Value(b)) if b.len() == VALUE) {
                    bail!("{key}: unexpected value");
                }
                Ok(())
            }
            Target::K2v { lean: h, .. } => {
                let (pk, sk) = split(key);
                let v = h[client % h.len()].read(client / h.len(), &pk, sk).await?;
                if !matches!(&v, Some(b) if b.len() == VALUE) {
                    bail!("{key}: unexpected value");
                }
                Ok(())
            }
            Target::Etcd(urls, http) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let r = etcd_call(
                    http,
                    &urls[client % urls.len()],
                    "range",
                    json!({"key": b64.encode(key)}),
                )
                .await?;
                if r["kvs"].as_array().is_none_or(|a| a.is_empty()) {
                    bail!("{key}: not found");
                }
                Ok(())
            }
        }
    }

    /// Writes `n` items `key(i)` quickly (batches where the API has them).
    async fn fill(&self, n: usize, key: impl Fn(usize) -> String) -> anyhow::Result<()> {
        // Random values: what the replicas exchange then cannot shrink by compressing values
        // no real workload would repeat; only the items' structure compresses.
        let value = || -> Vec<u8> { (0..VALUE).map(|_| rand::random::<u8>()).collect() };
        match self {
            Target::K2v { lean, .. } => {
                let items: Vec<(String, String, Vec<u8>)> = (0..n)
                    .map(|i| {
                        let k = key(i);
                        let (pk, sk) = split(&k);
                        (pk, sk.to_string(), value())
                    })
                    .collect();
                let mut tasks = tokio::task::JoinSet::new();
                for (j, chunk) in items.chunks(500).enumerate() {
                    let (lean, chunk) = (lean.clone(), chunk.to_vec());
                    tasks.spawn(async move {
                        let node = j % lean.len();
                        lean[node]
                            .insert_batch(j / lean.len(), &chunk)
                            .await
                            .with_context(|| format!("node {}, batch {j}", node + 1))
                    });
                    while tasks.len() >= 8 {
                        tasks.join_next().await.expect("task")??;
                    }
                }
                while let Some(r) = tasks.join_next().await {
                    r??;
                }
                Ok(())
            }
            Target::Etcd(..) => {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..n {
                    let (t, k, v) = (self.clone(), key(i), value());
                    tasks.spawn(async move { t.write(i, &k, v).await });
                    while tasks.len() >= 64 {
                        tasks.join_next().await.expect("task")??;
                    }
                }
                while let Some(r) = tasks.join_next().await {
                    r??;
                }
                Ok(())
            }
        }
    }
}

/// "pN/rest" → ("pN", "rest").
fn split(key: &str) -> (String, &str) {
    match key.split_once('/') {
        Some((pk, sk)) => (pk.to_string(), sk),
        None => ("p0".to_string(), key),
    }
}

async fn etcd_call(
    http: &hyper::Client<hyper::client::HttpConnector>,
    base: &str,
    op: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let req = hyper::Request::post(format!("{base}/v3/kv/{op}"))
        .header("content-type", "application/json")
        .body(hyper::Body::from(body.to_string()))?;
    let res = http.request(req).await?;
    let status = res.status();
    let bytes = hyper::body::to_bytes(res.into_body()).await?;
    if !status.is_success() {
        bail!("etcd {op}: {status} {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Write,
    Read,
}

struct LoadFigures {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: usize,
    /// CPU time of the system's server processes per completed operation, in microseconds.
    server_cpu_us_per_op: f64,
    /// CPU time of this load generator per completed operation, in microseconds.
    client_cpu_us_per_op: f64,
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces; the fields after it are fixed.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // Linux reports in USER_HZ, 100 on every architecture it runs the bench on.
    Duration::from_millis(ticks * 10)
}

/// CPU time of the servers and of this process.
fn cpu_times(servers: &[u32]) -> (Duration, Duration) {
    (
        servers.iter().map(|p| cpu_time(&p.to_string())).sum(),
        cpu_time("self"),
    )
}

async fn load(
    target: &Target,
    op: Op,
    clients: usize,
    seconds: u64,
    run: usize,
    existing: usize,
    servers: &[u32],
) -> LoadFigures {
    let cpu_before = cpu_times(servers);
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let target = target.clone();
        tasks.spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64((run * 1000 + c) as u64);
            let (mut lat, mut errors, mut seq) = (Vec::new(), 0usize, 0usize);
            while Instant::now() < stop {
                seq += 1;
                let t0 = Instant::now();
                let r = match op {
                    Op::Write => {
                        let key = format!("p{}/w{run}-{c}-{seq}", seq % PARTITION_KEYS);
                        let mut value = vec![b'x'; VALUE];
                        rng.fill(&mut value[..8]);
                        target.write(c, &key, value).await
                    }
                    Op::Read => {
                        target
                            .read(c, &item_key(rng.random_range(0..existing)))
                            .await
                    }
                };
                match r {
                    Ok(()) => lat.push(t0.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let started = Instant::now();
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        if let Ok((l, e)) = r {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds as f64);
    let cpu_after = cpu_times(servers);
    let done = all.len().max(1) as f64;
    let per_op =
        |before: Duration, after: Duration| after.saturating_sub(before).as_secs_f64() * 1e6 / done;
    all.sort_unstable();
    let q = |f: f64| {
        if all.is_empty() {
            f64::NAN
        } else {
            all[((all.len() as f64 * f) as usize).min(all.len() - 1)] as f64 / 1000.0
        }
    };
    LoadFigures {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        errors,
        server_cpu_us_per_op: per_op(cpu_before.0, cpu_after.0),
        client_cpu_us_per_op: per_op(cpu_before.1, cpu_after.1),
    }
}

fn item_key(i: usize) -> String {
    format!("p{}/item{i:08}", i % PARTITION_KEYS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the whole comparison.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(op) = args
        .ops
        .iter()
        .find(|o| !["writes", "reads"].contains(&o.as_str()))
    {
        bail!("unknown load operation {op:?}: writes, reads");
    }
    if !["lean", "k2v-client"].contains(&args.k2v_client.as_str()) {
        bail!("unknown K2V client {:?}: lean, k2v-client", args.k2v_client);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let emit = |row: serde_json::Value, rows: &mut Vec<serde_json::Value>| {
        println!("{row}");
        rows.push(row);
    };
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;

    // Shoal: every write is durable (fsync before the acknowledgement).
    {
        let dir = args.dir.join("shoal");
        let specs: Vec<NodeSpec> = (0..3)
            .map(|k| NodeSpec {
                ip: format!("127.0.0.{}", 21 + k),
                rpc_port: 25901,
                data_dir: dir.join(format!("node{}", k + 1)),
            })
            .collect();
        let mut cluster = ShoalCluster::start(&dir, specs, 3, "bench")?;
        let (id, secret, bucket) = cluster.k2v.clone().context("credentials")?;
        let target = k2v_target(
            cluster.nodes.iter().map(|n| n.api_endpoint()).collect(),
            &id,
            &secret,
            &bucket,
            "shoal",
        )?;
        let pids: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
        for row in load_scenarios(
            &rt,
            args,
            "shoal",
            "durable (fsync per group commit)",
            &target,
            &pids,
        )? {
            emit(row, &mut rows);
        }
        if !args.skip_sync_scenarios {
            for row in catch_up_and_repair(
                &rt,
                args,
                args.runs,
                &mut ShoalReplicas(&mut cluster),
                &target,
                Duration::from_secs(args.cap),
            )? {
                emit(row, &mut rows);
            }
        }
        cluster.shutdown();
    }
    for peer in args.peers.iter().filter(|p| !p.is_empty()) {
        match peer.as_str() {
            "garage" => {
                for fsync in [false, true] {
                    let mut g =
                        Garage::start(&args.dir.join(format!("garage-fsync-{fsync}")), fsync)?;
                    let target =
                        k2v_target(g.endpoints(), &g.key_id, &g.secret, "bench", "garage")?;
                    let mode = if fsync {
                        "metadata_fsync = true (durable; compare with Shoal)"
                    } else {
                        "metadata_fsync = false (default; not durable at acknowledgement)"
                    };
                    let name = if fsync { "garage-fsync" } else { "garage" };
                    let pids = g.pids();
                    for row in load_scenarios(&rt, args, name, mode, &target, &pids)? {
                        emit(row, &mut rows);
                    }
                    if !fsync && !args.skip_sync_scenarios {
                        // Catch-up and repair do not depend on fsync: measured once, on the
                        // default configuration.
                        for row in catch_up_and_repair(
                            &rt,
                            args,
                            args.peer_sync_runs.unwrap_or(args.runs),
                            &mut GarageReplicas(&mut g),
                            &target,
                            Duration::from_secs(args.cap),
                        )? {
                            emit(row, &mut rows);
                        }
                    }
                    g.stop();
                }
            }
            "etcd" => {
                let mut e = Etcd::start(&args.dir.join("etcd"))?;
                let target = Target::Etcd(Arc::new(e.endpoints()), hyper::Client::new());
                let pids: Vec<u32> = e.children.iter().map(|c| c.id()).collect();
                for row in load_scenarios(
                    &rt,
                    args,
                    "etcd",
                    "durable (raft log fsync)",
                    &target,
                    &pids,
                )? {
                    emit(row, &mut rows);
                }
                e.stop();
            }
            "none" | "" => {}
            other => bail!("unknown peer {other} (garage, etcd, none)"),
        }
    }
    if !args.json {
        // The same figures as a table, for reading.
        println!(
            "| system | scenario | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors | \
             server CPU µs/op | client CPU µs/op |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows.iter().filter(|r| r["ops_per_sec"].is_number()) {
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} |",
                r["system"].as_str().unwrap_or(""),
                r["scenario"].as_str().unwrap_or(""),
                r["clients"],
                r["ops_per_sec"],
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                r["p999_ms"].as_f64().unwrap_or(f64::NAN),
                r["errors"],
                r["server_cpu_us_per_op"].as_f64().unwrap_or(f64::NAN),
                r["client_cpu_us_per_op"].as_f64().unwrap_or(f64::NAN),
            );
        }
        for r in rows.iter().filter(|r| r["bytes"].is_number()) {
            println!(
                "{} {} of {} items: {:.2} s{}, {:.1} MB on the nodes' RPC ports",
                r["system"].as_str().unwrap_or(""),
                r["scenario"].as_str().unwrap_or(""),
                r["items"],
                r["seconds"].as_f64().unwrap_or(f64::NAN),
                if r["complete"] == false {
                    " (NOT complete: stopped at the cap)"
                } else {
                    ""
                },
                r["bytes"].as_f64().unwrap_or(f64::NAN) / 1e6
            );
        }
    }
    // Ratios Shoal / peer, same scenario and concurrency.
    for r in rows
        .iter()
        .filter(|r| r["system"] == "shoal" && r["ops_per_sec"].is_number())
    {
        for p in rows.iter().filter(|p| {
            p["system"] != "shoal" && p["scenario"] == r["scenario"] && p["clients"] == r["clients"]
        }) {
            let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{}",
                json!({
                    "ratio": format!("shoal/{}", p["system"].as_str().unwrap_or("?")),
                    "scenario": r["scenario"], "clients": r["clients"],
                    "throughput": f(r, "ops_per_sec") / f(p, "ops_per_sec"),
                    "p99": f(r, "p99_ms") / f(p, "p99_ms"),
                    "server_cpu_per_op": f(r, "server_cpu_us_per_op") / f(p, "server_cpu_us_per_op"),
                })
            );
        }
    }
    // Catch-up and repair: time and bytes, Shoal / peer. A peer stopped at the cap took longer
    // and exchanged at least as much: the ratio is then an upper bound.
    for r in rows
        .iter()
        .filter(|r| r["system"] == "shoal" && r["bytes"].is_number())
    {
        for p in rows
            .iter()
            .filter(|p| p["system"] != "shoal" && p["scenario"] == r["scenario"])
        {
            let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{}",
                json!({
                    "ratio": format!("shoal/{}", p["system"].as_str().unwrap_or("?")),
                    "scenario": r["scenario"], "items": r["items"],
                    "seconds": f(r, "seconds") / f(p, "seconds"),
                    "bytes": f(r, "bytes") / f(p, "bytes"),
                    "upper_bound": p["complete"] == false,
                })
            );
        }
    }
    Ok(())
}

fn k2v_target(
    endpoints: Vec<String>,
    id: &str,
    secret: &str,
    bucket: &str,
    region: &str,
) -> anyhow::Result<Target> {
    let lean = endpoints
        .iter()
        .map(|e| K2vHttp::new(e, id, secret, bucket, region, CONNECTIONS_PER_NODE))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let clients = endpoints
        .into_iter()
        .map(|endpoint| {
            K2vClient::new(K2vClientConfig {
                endpoint,
                region: region.into(),
                aws_access_key_id: id.into(),
                aws_secret_access_key: secret.into(),
                bucket: bucket.into(),
                user_agent: None,
            })
            .map_err(|e| anyhow::anyhow!("k2v client: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Target::K2v {
        lean: Arc::new(lean),
        k2v_client: Arc::new(clients),
        by_k2v_client: false,
    })
}

/// Connections the load generator keeps to each node: one per client it sends there.
const CONNECTIONS_PER_NODE: usize = 64;

fn load_scenarios(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    system: &str,
    durability: &str,
    target: &Target,
    servers: &[u32],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    if args.skip_load {
        return Ok(rows);
    }
    let existing = 10_000;
    rt.block_on(target.fill(existing, item_key))
        .with_context(|| format!("{system}: writing the items to read"))?;
    let target = &match target {
        Target::K2v {
            lean, k2v_client, ..
        } => Target::K2v {
            lean: lean.clone(),
            k2v_client: k2v_client.clone(),
            by_k2v_client: args.k2v_client == "k2v-client",
        },
        t => t.clone(),
    };
    let client_name = match target {
        Target::K2v {
            by_k2v_client: false,
            ..
        } => "lean (HTTP/1.1 keep-alive, SigV4)",
        Target::K2v {
            by_k2v_client: true,
            ..
        } => "k2v-client",
        Target::Etcd(..) => "etcd JSON gateway (hyper)",
    };
    for op in [Op::Write, Op::Read] {
        let name = if op == Op::Write { "writes" } else { "reads" };
        if !args.ops.iter().any(|o| o == name) {
            continue;
        }
        for &clients in &args.clients {
            let runs: Vec<LoadFigures> = (0..args.runs)
                .map(|run| {
                    rt.block_on(load(
                        target,
                        op,
                        clients,
                        args.seconds,
                        run,
                        existing,
                        servers,
                    ))
                })
                .collect();
            let m = |f: fn(&LoadFigures) -> f64| median(runs.iter().map(f).collect());
            let row = json!({
                "system": system, "durability": durability,
                "scenario": name,
                "clients": clients, "runs": args.runs, "seconds": args.seconds,
                "client": client_name,
                "value_bytes": VALUE,
                "ops_per_sec": m(|r| r.ops_per_sec).round(),
                "p50_ms": m(|r| r.p50_ms), "p99_ms": m(|r| r.p99_ms), "p999_ms": m(|r| r.p999_ms),
                "errors": runs.iter().map(|r| r.errors).sum::<usize>(),
                "server_cpu_us_per_op": (m(|r| r.server_cpu_us_per_op) * 10.0).round() / 10.0,
                "client_cpu_us_per_op": (m(|r| r.client_cpu_us_per_op) * 10.0).round() / 10.0,
            });
            rows.push(row);
        }
    }
    Ok(rows)
}

/// What catch-up and repair need from a three-node system: stop, start and wipe node 3, count
/// what node 3's own store holds, and write through nodes 1 and 2 only.
trait Replicas {
    fn name(&self) -> &'static str;
    /// The RPC addresses (ip, port) of all three nodes: bytes are counted on them.
    fn rpc_addrs(&self) -> Vec<(String, u16)>;
    fn stop_node3(&mut self) -> anyhow::Result<()>;
    fn start_node3(&mut self) -> anyhow::Result<()>;
    /// Deletes node 3's data but its identity (node 3 stopped).
    fn wipe_node3(&mut self) -> anyhow::Result<()>;
    /// What an operator runs after bringing a wiped node back (nothing, for Shoal).
    fn repair_node3(&mut self) -> anyhow::Result<()>;
    /// What `repair_node3` asks of the system, in words, for the figures' labels.
    fn repair_action(&self) -> &'static str;
    /// Settings of the system's nodes that differ from its defaults.
    fn non_default_settings(&self) -> &'static str;
    /// K2V items in node `k`'s own store.
    fn count(&self, k: usize) -> anyhow::Result<usize>;
    /// A client of nodes 1 and 2 only.
    fn first_two(&self) -> anyhow::Result<Target>;
}

struct ShoalReplicas<'a>(&'a mut ShoalCluster);

impl Replicas for ShoalReplicas<'_> {
    fn name(&self) -> &'static str {
        "shoal"
    }
    fn rpc_addrs(&self) -> Vec<(String, u16)> {
        self.0
            .nodes
            .iter()
            .map(|n| (n.spec.ip.clone(), n.spec.rpc_port))
            .collect()
    }
    fn stop_node3(&mut self) -> anyhow::Result<()> {
        self.0.stop(2);
        Ok(())
    }
    fn start_node3(&mut self) -> anyhow::Result<()> {
        self.0.start_node(2)
    }
    fn wipe_node3(&mut self) -> anyhow::Result<()> {
        self.0.wipe_data(2)
    }
    fn repair_action(&self) -> &'static str {
        "nothing: the restarted node's syncer finds its partitions empty and fills them"
    }
    fn non_default_settings(&self) -> &'static str {
        crate::procs::NON_DEFAULT_SETTINGS
    }
    fn repair_node3(&mut self) -> anyhow::Result<()> {
        // A wiped node comes back empty; its syncer's start-up scan repairs it by itself.
        Ok(())
    }
    fn count(&self, k: usize) -> anyhow::Result<usize> {
        let s: serde_json::Value = serde_json::from_str(&self.0.cli(k, &["status", "--json"])?)?;
        Ok(s["tables"]["k2v"].as_u64().unwrap_or(0) as usize)
    }
    fn first_two(&self) -> anyhow::Result<Target> {
        let (id, secret, bucket) = self.0.k2v.clone().context("credentials")?;
        k2v_target(
            self.0.nodes[..2].iter().map(|n| n.api_endpoint()).collect(),
            &id,
            &secret,
            &bucket,
            "shoal",
        )
    }
}

/// Catch-up (node 3 stopped while items are written through the others) and repair (node 3's
/// data wiped with `repair_items` items in the cluster): seconds from node 3's restart until its
/// own store holds every item, and bytes on the three nodes' RPC ports meanwhile (iptables).
/// A figure not reached within `cap` is reported as such.
fn catch_up_and_repair(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    runs: usize,
    sys: &mut dyn Replicas,
    target: &Target,
    cap: Duration,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    let counter = byte_counter(&sys.rpc_addrs())?;
    let two = sys.first_two()?;
    let name = sys.name();
    let mut catch = Vec::new();
    let mut catch_transfer = Vec::new();
    let mut catch_bytes = Vec::new();
    let mut reached = true;
    let mut held_at_cap = None;
    for run in 0..runs {
        let base = sys.count(0)?;
        sys.stop_node3()?;
        let n = args.catch_up_items;
        rt.block_on(two.fill(n, |i| format!("p{}/catch{run}-{i:08}", i % PARTITION_KEYS)))?;
        let expected = base + n;
        counter.zero()?;
        let t0 = Instant::now();
        sys.start_node3()?;
        let (ok, first) = wait_count_from(sys, base, expected, cap);
        catch.push(t0.elapsed().as_secs_f64());
        catch_transfer.push(first.map_or(f64::NAN, |f| t0.elapsed().as_secs_f64() - f));
        catch_bytes.push(counter.bytes()? as f64);
        eprintln!(
            "{name} catch-up run {run}: {:.2} s, caught up: {ok}",
            t0.elapsed().as_secs_f64()
        );
        if !ok {
            reached = false;
            held_at_cap = Some(sys.count(2).unwrap_or(0).saturating_sub(base));
            // Past the cap once is enough to know.
            break;
        }
    }
    rows.push(json!({
        "system": name, "scenario": "catch-up", "items": args.catch_up_items, "runs": catch.len(),
        "seconds": median(catch.clone()), "bytes": median(catch_bytes.clone()),
        "transfer_seconds": median(catch_transfer.clone()), "all_transfer_seconds": catch_transfer,
        "non_default_settings": sys.non_default_settings(),
        "complete": reached, "cap_seconds": cap.as_secs(), "items_held_at_cap": held_at_cap,
        "all_seconds": catch, "all_bytes": catch_bytes,
    }));
    // Node 3 must be whole before the repair runs start.
    if !reached {
        sys.repair_node3()?;
        wait_count(sys, sys.count(0)?, Duration::from_secs(1800));
    }
    let have = sys.count(0)?;
    if args.repair_items > have {
        rt.block_on(target.fill(args.repair_items - have, |i| {
            format!("p{}/repair{i:08}", i % PARTITION_KEYS)
        }))?;
    }
    let total = args.repair_items.max(have);
    if !wait_count(sys, total, Duration::from_secs(1800)) {
        bail!("{name}: node 3 never held the {total} items before the repair runs");
    }
    let mut rep = Vec::new();
    let mut rep_transfer = Vec::new();
    let mut rep_bytes = Vec::new();
    let mut complete = true;
    let mut held_at_cap = None;
    for run in 0..runs {
        sys.stop_node3()?;
        sys.wipe_node3()?;
        counter.zero()?;
        let t0 = Instant::now();
        sys.start_node3()?;
        sys.repair_node3()?;
        let (ok, first) = wait_count_from(sys, 0, total, cap);
        rep.push(t0.elapsed().as_secs_f64());
        rep_transfer.push(first.map_or(f64::NAN, |f| t0.elapsed().as_secs_f64() - f));
        rep_bytes.push(counter.bytes()? as f64);
        eprintln!(
            "{name} repair run {run}: {:.2} s, whole: {ok}",
            t0.elapsed().as_secs_f64()
        );
        if !ok {
            complete = false;
            held_at_cap = Some(sys.count(2).unwrap_or(0));
            break;
        }
    }
    rows.push(json!({
        "system": name, "scenario": "repair", "items": total, "runs": rep.len(),
        "items_held_at_cap": held_at_cap, "repair_action": sys.repair_action(),
        "transfer_seconds": median(rep_transfer.clone()), "all_transfer_seconds": rep_transfer,
        "non_default_settings": sys.non_default_settings(),
        "seconds": median(rep.clone()), "bytes": median(rep_bytes.clone()),
        "complete": complete, "cap_seconds": cap.as_secs(),
        "all_seconds": rep, "all_bytes": rep_bytes,
    }));
    Ok(rows)
}

/// Waits until node 3 holds `want` items, having held `from`: whether it did within `within`,
/// and when (seconds after the call) it first held more than `from` — the transfer phase is
/// from then until whole.
fn wait_count_from(
    sys: &dyn Replicas,
    from: usize,
    want: usize,
    within: Duration,
) -> (bool, Option<f64>) {
    let started = Instant::now();
    let deadline = started + within;
    let mut first = None;
    loop {
        let have = sys.count(2).unwrap_or(0);
        if first.is_none() && have > from {
            first = Some(started.elapsed().as_secs_f64());
        }
        if have >= want {
            return (true, first);
        }
        if Instant::now() > deadline {
            return (false, first);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until node 3 holds `want` items; false if `within` passed first.
fn wait_count(sys: &dyn Replicas, want: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if sys.count(2).unwrap_or(0) >= want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes of every TCP packet from or to some addresses (iptables counters). Matched on address
/// and port together: another system's port of the same number on another address (Shoal's
/// API port is Garage's RPC port) is not counted.
fn byte_counter(addrs: &[(String, u16)]) -> anyhow::Result<Chain> {
    // Named after this process: two benchmarks may count at once.
    let chain = Chain::install(&format!("SHOAL_BYTES_{}", std::process::id()))?;
    for (ip, port) in addrs {
        let port = port.to_string();
        // Loopback packets pass OUTPUT once: one rule for each direction of a connection.
        chain.append(&["-p", "tcp", "-s", ip, "--sport", &port])?;
        chain.append(&["-p", "tcp", "-d", ip, "--dport", &port])?;
    }
    Ok(chain)
}

struct GarageReplicas<'a>(&'a mut Garage);

impl Replicas for GarageReplicas<'_> {
    fn name(&self) -> &'static str {
        "garage"
    }
    fn rpc_addrs(&self) -> Vec<(String, u16)> {
        (0..3)
            .map(|k| ("127.0.0.1".into(), 26901 + 10 * k))
            .collect()
    }
    fn stop_node3(&mut self) -> anyhow::Result<()> {
        self.0.stop_node(2);
        Ok(())
    }
    fn start_node3(&mut self) -> anyhow::Result<()> {
        self.0.start_node(2)
    }
    fn wipe_node3(&mut self) -> anyhow::Result<()> {
        // The metadata database; the node key and the layout stay.
        let db = self.0.dir.join("node3/meta/db.lmdb");
        std::fs::remove_dir_all(&db).with_context(|| format!("removing {}", db.display()))
    }
    fn repair_action(&self) -> &'static str {
        "garage repair -a --yes tables: in Garage 2.5 this starts full syncs of the bucket, \
         object, version, block_ref and key tables, not of k2v_item; the K2V items come back \
         with Garage's own anti-entropy pass, every 10 minutes"
    }
    fn non_default_settings(&self) -> &'static str {
        "metadata_fsync as the row says, db_engine = lmdb"
    }
    fn repair_node3(&mut self) -> anyhow::Result<()> {
        // Garage does not resync a wiped node before its next anti-entropy pass (10 min):
        // the operator runs a table repair, as its documentation says.
        // Garage's table sync pushes what a node has to the nodes that lack it: the repair
        // must run on every node (`-a`), not only on the empty one.
        self.0
            .cli(2, &["repair", "-a", "--yes", "tables"])
            .map(|_| ())
    }
    fn count(&self, k: usize) -> anyhow::Result<usize> {
        self.0.k2v_items(k)
    }
    fn first_two(&self) -> anyhow::Result<Target> {
        let e = self.0.endpoints();
        k2v_target(
            e[..2].to_vec(),
            &self.0.key_id,
            &self.0.secret,
            "bench",
            "garage",
        )
    }
}
