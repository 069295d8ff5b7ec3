//! `shoal-bench syncload`: what the syncer costs a node under steady load. A three-node
//! cluster of real processes at Shoal's default settings takes a fixed rate of durable writes
//! (InsertItem through node 1) while, every `--partition-every` seconds, node 2 or node 3 in
//! turn is cut off from the others for `--partition-seconds` (iptables DROP of every packet to
//! or from its loopback address: the process keeps running), so that every partition written
//! meanwhile differs when it returns and the syncers repair it. Printed per node: its process
//! CPU (from `/proc`), its sync work's thread CPU (`shoal_sync_cpu_microseconds`), the share,
//! and the sessions run. Needs root (iptables).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::k2v_http::K2vHttp;
use crate::procs::{Chain, NodeSpec, ShoalCluster};

#[derive(clap::Args)]
pub struct Args {
    /// Durable writes per second, through node 1.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of load measured.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Seconds between two partitions.
    #[arg(long, default_value_t = 30)]
    partition_every: u64,
    /// Seconds a node stays cut off.
    #[arg(long, default_value_t = 5)]
    partition_seconds: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Where the cluster keeps its data.
    #[arg(long, default_value = "/tmp/shoal-bench-syncload")]
    dir: PathBuf,
    /// Print one JSON object (otherwise readable lines).
    #[arg(long)]
    json: bool,
}

/// One node's CPU over the measured window.
#[derive(Serialize, Debug)]
struct NodeCpu {
    node: usize,
    process_cpu_s: f64,
    process_cpu_share_of_one_core: f64,
    sync_cpu_s: f64,
    sync_share_of_process: f64,
    sessions: u64,
    items_received: u64,
}

#[derive(Serialize, Debug)]
struct Report {
    rate_asked: u64,
    writes_ok: u64,
    write_errors: u64,
    writes_per_s: f64,
    seconds: f64,
    partitions: u64,
    settings: &'static str,
    nodes: Vec<NodeCpu>,
    max_sync_share: f64,
}

const CHAIN: &str = "SHOAL_SYNCLOAD";

pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let specs: Vec<NodeSpec> = (0..3)
        .map(|k| NodeSpec {
            ip: format!("127.0.0.{}", k + 1),
            rpc_port: 27101 + k as u16,
            data_dir: args.dir.join(format!("node{}", k + 1)),
        })
        .collect();
    let chain = Chain::install(CHAIN)?;
    let cluster = ShoalCluster::start_with(&args.dir, specs, 3, "load", "")?;
    let (key, secret, bucket) = cluster.k2v.clone().context("K2V credentials")?;
    eprintln!("cluster of 3 nodes up, every setting at its default");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let writers = 32usize;
    let client = Arc::new(K2vHttp::new(
        &cluster.nodes[0].api_endpoint(),
        &key,
        &secret,
        &bucket,
        "shoal",
        writers,
    )?);
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The load runs in its own tasks for the whole window; partitions are driven from here.
    let load = {
        let (ok, errors, stop) = (ok.clone(), errors.clone(), stop.clone());
        let (rate, value_bytes) = (args.rate, args.value_bytes);
        rt.spawn(async move {
            let mut tasks = Vec::new();
            for w in 0..writers {
                let (client, ok, errors, stop) =
                    (client.clone(), ok.clone(), errors.clone(), stop.clone());
                let period = Duration::from_secs_f64(writers as f64 / rate as f64);
                tasks.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let value = vec![b'v'; value_bytes];
                    for i in 0u64.. {
                        tick.tick().await;
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let pk = format!("pk{}", (i * writers as u64 + w as u64) % 5000);
                        let sk = format!("w{w}-{i}");
                        match client.insert(w, &pk, &sk, &value).await {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    // Ten seconds of load before the window opens.
    std::thread::sleep(Duration::from_secs(10));
    let before: Vec<(f64, Sync)> = (0..3)
        .map(|k| Ok((process_cpu(&cluster, k)?, sync_metrics(&cluster, k)?)))
        .collect::<anyhow::Result<_>>()?;
    let (ok0, err0) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    let started = Instant::now();
    let mut partitions = 0u64;
    let mut next_partition = started + Duration::from_secs(args.partition_every);
    while started.elapsed() < Duration::from_secs(args.seconds) {
        if Instant::now() >= next_partition {
            let victim = 1 + (partitions % 2) as usize;
            let ip = format!("127.0.0.{}", victim + 1);
            chain.append(&["-s", &ip, "-j", "DROP"])?;
            chain.append(&["-d", &ip, "-j", "DROP"])?;
            eprintln!(
                "{:>4.0} s: node {} cut off for {} s",
                started.elapsed().as_secs_f64(),
                victim + 1,
                args.partition_seconds
            );
            std::thread::sleep(Duration::from_secs(args.partition_seconds));
            chain.flush()?;
            partitions += 1;
            next_partition += Duration::from_secs(args.partition_every);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    let after: Vec<(f64, Sync)> = (0..3)
        .map(|k| Ok((process_cpu(&cluster, k)?, sync_metrics(&cluster, k)?)))
        .collect::<anyhow::Result<_>>()?;
    let (ok1, err1) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let _ = rt.block_on(load);
    let nodes: Vec<NodeCpu> = (0..3)
        .map(|k| {
            let process = after[k].0 - before[k].0;
            let sync = (after[k].1.cpu_us - before[k].1.cpu_us) / 1e6;
            NodeCpu {
                node: k + 1,
                process_cpu_s: process,
                process_cpu_share_of_one_core: process / seconds,
                sync_cpu_s: sync,
                sync_share_of_process: if process > 0.0 { sync / process } else { 0.0 },
                sessions: (after[k].1.sessions - before[k].1.sessions) as u64,
                items_received: (after[k].1.items_received - before[k].1.items_received) as u64,
            }
        })
        .collect();
    let report = Report {
        rate_asked: args.rate,
        writes_ok: ok1 - ok0,
        write_errors: err1 - err0,
        writes_per_s: (ok1 - ok0) as f64 / seconds,
        seconds,
        partitions,
        settings: "all Shoal defaults",
        max_sync_share: nodes
            .iter()
            .map(|n| n.sync_share_of_process)
            .fold(0.0, f64::max),
        nodes,
    };
    drop(chain);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{:.0} durable writes/s asked through node 1, {:.0} done ({} errors) over {:.0} s, {} partitions",
            report.rate_asked,
            report.writes_per_s,
            report.write_errors,
            report.seconds,
            report.partitions
        );
        for n in &report.nodes {
            println!(
                "node {}: process {:.1} s CPU ({:.0}% of a core), sync work {:.2} s = {:.2}% of the process, {} sessions, {} items received",
                n.node,
                n.process_cpu_s,
                100.0 * n.process_cpu_share_of_one_core,
                n.sync_cpu_s,
                100.0 * n.sync_share_of_process,
                n.sessions,
                n.items_received
            );
        }
    }
    Ok(())
}

/// Seconds of CPU (user + system) the node's process has used.
fn process_cpu(cluster: &ShoalCluster, k: usize) -> anyhow::Result<f64> {
    let pid = cluster.nodes[k].pid().context("node not running")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks()?)
}

fn clock_ticks() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// A node's sync counters summed over its tables.
#[derive(Default, Clone, Copy)]
struct Sync {
    cpu_us: f64,
    sessions: f64,
    items_received: f64,
}

fn sync_metrics(cluster: &ShoalCluster, k: usize) -> anyhow::Result<Sync> {
    let spec = &cluster.nodes[k].spec;
    let addr = format!("{}:{}", spec.ip, spec.rpc_port + 2000);
    let mut s = std::net::TcpStream::connect(&addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut out = Sync::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        let metric = name.split('{').next().unwrap_or("");
        match metric.trim_end_matches("_total") {
            "shoal_sync_cpu_microseconds" => out.cpu_us += v,
            "shoal_sync_sessions" => out.sessions += v,
            "shoal_sync_items_received" => out.items_received += v,
            _ => {}
        }
    }
    Ok(out)
}
