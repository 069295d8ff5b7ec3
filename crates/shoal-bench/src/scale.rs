//! `shoal-bench scale`: what a cluster of N real `shoal server` processes costs and how it
//! behaves, as `shoal dev` configures them (`heartbeat_ms = 500`, `sync_start_delay_ms = 2000`,
//! `sync_interval_secs = 600`), each node on its own loopback address (127.0.0.10 + k) so that
//! iptables can count each node's RPC traffic (root).
//!
//! Prints one JSON object: the time to form (processes started to every node seeing every other
//! up with the layout applied), idle RPC bytes per second per node (sent and received, TCP/IP
//! headers included, median and max over nodes), resident memory per node, the time until
//! every other node sees a killed node down and then, restarted, up again, a write and a read
//! through every node, and the catch-up of the restarted node (items written while it was down).

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use shoal_cluster::node::{ClusterStatus, LayoutReport};

use crate::procs::{Chain, NodeSpec, ShoalCluster};

/// The RPC port of every node (each has its own address).
const RPC_PORT: u16 = 3901;

/// Arguments of `shoal-bench scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Replication factor (at most the node count).
    #[arg(long, default_value_t = 3)]
    replication_factor: usize,
    /// Seconds the idle cluster is left alone before its traffic is measured.
    #[arg(long, default_value_t = 30)]
    settle: u64,
    /// Seconds over which idle traffic is measured.
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Items written through node 1 while the killed node is down (its catch-up).
    #[arg(long, default_value_t = 1000)]
    catch_up_items: u32,
    /// Working directory.
    #[arg(long, default_value = "/tmp/shoal-bench-scale")]
    dir: PathBuf,
}

/// The settings `shoal dev` writes for every node.
const DEV_SETTINGS: &str =
    "heartbeat_ms = 500\nsync_start_delay_ms = 2000\nsync_interval_secs = 600\n";

/// Runs the scale benchmark and prints its JSON.
pub fn run(args: &ScaleArgs) -> anyhow::Result<()> {
    let n = args.nodes;
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    let rf = args.replication_factor.min(n);
    let _ = std::fs::remove_dir_all(&args.dir);
    let specs: Vec<NodeSpec> = (0..n)
        .map(|k| NodeSpec {
            ip: format!("127.0.{}.{}", (10 + k) / 250, (10 + k) % 250 + 1),
            rpc_port: RPC_PORT,
            data_dir: args.dir.join(format!("node{}", k + 1)),
        })
        .collect();
    let chain = Chain::install(&format!("SHOAL_SCALE_{}", std::process::id()))?;
    for s in &specs {
        let port = RPC_PORT.to_string();
        // Sent by the node on connections it dialled, then on those it accepted; received.
        chain.append(&["-p", "tcp", "-s", &s.ip, "--dport", &port])?;
        chain.append(&["-p", "tcp", "-s", &s.ip, "--sport", &port])?;
        chain.append(&["-p", "tcp", "-d", &s.ip, "--dport", &port])?;
        chain.append(&["-p", "tcp", "-d", &s.ip, "--sport", &port])?;
    }
    // Built (if need be) before the clock starts: forming is the processes' time only.
    let bin = crate::procs::shoal_binary()?;
    let started = Instant::now();
    eprintln!("starting {n} nodes");
    let mut cluster = ShoalCluster::start_binary(
        bin,
        &args.dir.join("conf"),
        specs,
        rf,
        "scale",
        DEV_SETTINGS,
    )?;
    let token = cluster.admin_token.clone();
    let admin = |k: usize| (cluster.nodes[k].spec.ip.clone(), RPC_PORT + 2000);
    let addrs: Vec<(String, u16)> = (0..n).map(admin).collect();
    wait_for(Duration::from_secs(300), || {
        (0..n).all(|k| {
            status(&addrs[k], &token).is_ok_and(|s| {
                s.layout_version >= 1 && s.nodes.iter().filter(|x| x.up).count() == n
            })
        })
    })
    .context("the cluster did not form")?;
    let form_seconds = started.elapsed().as_secs_f64();
    eprintln!("formed in {form_seconds:.1} s; settling {} s", args.settle);

    std::thread::sleep(Duration::from_secs(args.settle));
    chain.zero()?;
    let frames0: Vec<Option<u64>> = addrs.iter().map(rpc_frame_bytes).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.idle));
    let counts = chain.bytes_by_rule()?;
    let frames1: Vec<Option<u64>> = addrs.iter().map(rpc_frame_bytes).collect();
    let dt = t0.elapsed().as_secs_f64();
    // The nodes' own counters of the frames they sent and received (builds that have them).
    let mut frames_per_node: Vec<f64> = frames0
        .iter()
        .zip(&frames1)
        .filter_map(|(a, b)| Some((b.as_ref()? - a.as_ref()?) as f64 / dt))
        .collect();
    frames_per_node.sort_by(f64::total_cmp);
    let mut per_node: Vec<f64> = counts
        .chunks(4)
        .map(|c| c.iter().sum::<u64>() as f64 / dt)
        .collect();
    per_node.sort_by(f64::total_cmp);
    let mut rss: Vec<f64> = (0..n)
        .filter_map(|k| cluster.nodes[k].pid())
        .filter_map(rss_mib)
        .collect();
    rss.sort_by(f64::total_cmp);
    eprintln!(
        "idle: median {:.0} B/s per node, max {:.0}; RSS median {:.1} MiB",
        median(&per_node),
        per_node.last().copied().unwrap_or(0.0),
        median(&rss)
    );

    // A write through every node, read back through the next one.
    let mut write_read_ok = 0;
    for k in 0..n {
        let value = format!("v{k}");
        let put = cluster.cli(k, &["put", "scale", &format!("through-{k}"), &value]);
        let got = cluster.cli((k + 1) % n, &["get", "scale", &format!("through-{k}")]);
        if put.is_ok() && got.is_ok_and(|g| g.trim() == value) {
            write_read_ok += 1;
        }
    }

    // Kill the last node; every other must see it down, then up once restarted.
    let victim = n - 1;
    let victim_id = cluster.nodes[victim].id.clone();
    let layout: LayoutReport =
        rmp_serde::from_slice(&admin_call(&addrs[0], &token, "admin.layout")?)?;
    let victim_node = layout
        .current
        .roles
        .keys()
        .find(|id| id.to_string() == victim_id)
        .copied()
        .context("the victim is not in the layout")?;
    let held = layout.current.partitions_of(victim_node);
    // A partition key whose partition the victim stores: the catch-up items go there.
    let pk = (0u32..)
        .map(|i| format!("catch-up-{i}"))
        .find(|pk| {
            let key = shoal_table::engine_key(pk, &String::new());
            held.contains(&key[0])
        })
        .expect("some partition key lands on the victim");
    let before_items = status(&addrs[victim], &token)?
        .tables
        .get("kv")
        .copied()
        .unwrap_or(0);
    cluster.kill9(victim);
    let killed = Instant::now();
    let down_seconds = seen_by_all(&addrs, victim, &token, false, Duration::from_secs(120))
        .map(|_| killed.elapsed().as_secs_f64());
    eprintln!("seen down by all in {down_seconds:?} s");
    cluster.cli(
        0,
        &[
            "put",
            &pk,
            "item",
            "x",
            "--copies",
            &args.catch_up_items.to_string(),
        ],
    )?;
    cluster.start_node(victim)?;
    let restarted = Instant::now();
    let up_seconds = seen_by_all(&addrs, victim, &token, true, Duration::from_secs(120))
        .map(|_| restarted.elapsed().as_secs_f64());
    let want = before_items + u64::from(args.catch_up_items);
    let caught_up = wait_for(Duration::from_secs(120), || {
        status(&addrs[victim], &token)
            .is_ok_and(|s| s.tables.get("kv").copied().unwrap_or(0) >= want)
    })
    .map(|_| restarted.elapsed().as_secs_f64());
    let out = json!({
        "nodes": n,
        "replication_factor": rf,
        "settings": DEV_SETTINGS.trim().replace('\n', ", "),
        "form_seconds": form_seconds,
        "idle_seconds": dt,
        "idle_rpc_bytes_per_sec_per_node": {
            "median": median(&per_node),
            "max": per_node.last().copied().unwrap_or(0.0),
            "min": per_node.first().copied().unwrap_or(0.0),
            "counted": "TCP packets to and from the node's RPC port (iptables), both directions, TCP/IP headers included",
        },
        "idle_rpc_frame_bytes_per_sec_per_node": (!frames_per_node.is_empty()).then(|| json!({
            "median": median(&frames_per_node),
            "max": frames_per_node.last().copied().unwrap_or(0.0),
            "counted": "the nodes' shoal_rpc_bytes_sent_total + shoal_rpc_bytes_received_total: frames with their length, no TCP/IP headers",
        })),
        "rss_mib_per_node": {
            "median": median(&rss),
            "max": rss.last().copied().unwrap_or(0.0),
            "total": rss.iter().sum::<f64>(),
        },
        "write_then_read_through_every_node": format!("{write_read_ok} of {n}"),
        "killed_node_seen_down_by_all_seconds": down_seconds.ok(),
        "restarted_node_seen_up_by_all_seconds": up_seconds.ok(),
        "catch_up": {
            "items": args.catch_up_items,
            "seconds_from_restart": caught_up.ok(),
        },
    });
    println!("{out}");
    cluster.shutdown();
    Ok(())
}

/// Waits until every node but `victim` sees it `up` (or down), polling them in turn.
fn seen_by_all(
    addrs: &[(String, u16)],
    victim: usize,
    token: &str,
    up: bool,
    within: Duration,
) -> anyhow::Result<()> {
    let victim_addr = format!("{}:{}", addrs[victim].0, RPC_PORT);
    let mut pending: Vec<usize> = (0..addrs.len()).filter(|&k| k != victim).collect();
    let deadline = Instant::now() + within;
    while !pending.is_empty() {
        pending.retain(|&k| {
            !status(&addrs[k], token)
                .is_ok_and(|s| s.nodes.iter().any(|x| x.addr == victim_addr && x.up == up))
        });
        if Instant::now() > deadline {
            bail!("{} nodes still disagree after {within:?}", pending.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            bail!("not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

fn status(addr: &(String, u16), token: &str) -> anyhow::Result<ClusterStatus> {
    Ok(rmp_serde::from_slice(&admin_call(
        addr,
        token,
        "admin.status",
    )?)?)
}

/// One operator call on a node's admin endpoint (`POST /v1/call/<endpoint>`), its MessagePack
/// reply's bytes.
fn admin_call(addr: &(String, u16), token: &str, endpoint: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect((addr.0.as_str(), addr.1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST /v1/call/{endpoint} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        addr.0
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{endpoint}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(raw[split + 4..].to_vec())
}

/// A node's `shoal_rpc_bytes_sent_total + shoal_rpc_bytes_received_total`, read from its
/// admin endpoint's `/metrics` (`None` for a build without them).
fn rpc_frame_bytes(addr: &(String, u16)) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect((addr.0.as_str(), addr.1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        addr.0
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(value("shoal_rpc_bytes_sent_total ")? + value("shoal_rpc_bytes_received_total ")?)
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[sorted.len() / 2]
}
