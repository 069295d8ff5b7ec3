//! `shoal-bench overload`: more writes than a node can commit, sent through one node of a
//! three-node cluster of real processes, as a user loading data would: InsertBatch requests of
//! 1,000 items from 4, 16 and 64 concurrent clients. What must hold: every answer is a 2xx or a
//! 503 (pushed back, with `Retry-After`, which the client honours), no live node is declared
//! down by its peers, and the throughput reached is printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::k2v_http::K2vHttp;
use crate::procs::{NodeSpec, ShoalCluster};

#[derive(clap::Args)]
pub struct Args {
    /// Items loaded at each concurrency.
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Items per InsertBatch request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Concurrent clients, one load per value.
    #[arg(long, value_delimiter = ',', default_value = "4,16,64")]
    clients: Vec<usize>,
    /// Where the cluster keeps its data.
    #[arg(long, default_value = "/tmp/shoal-bench-overload")]
    dir: PathBuf,
}

/// What one load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    items: AtomicU64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let specs: Vec<NodeSpec> = (0..3)
        .map(|k| NodeSpec {
            ip: "127.0.0.1".into(),
            rpc_port: 26901 + k as u16,
            data_dir: args.dir.join(format!("node{}", k + 1)),
        })
        .collect();
    let cluster = ShoalCluster::start(&args.dir, specs, 3, "load")?;
    let (key, secret, bucket) = cluster.k2v.clone().context("K2V credentials")?;
    eprintln!(
        "cluster of 3 nodes up (settings other than the defaults: {})",
        crate::procs::NON_DEFAULT_SETTINGS
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut failures = Vec::new();
    for &clients in &args.clients {
        let down_before = peer_down_lines(&cluster)?;
        let client = Arc::new(K2vHttp::new(
            &cluster.nodes[0].api_endpoint(),
            &key,
            &secret,
            &bucket,
            "shoal",
            clients,
        )?);
        let tally = Arc::new(Tally::default());
        let batches = args.items.div_ceil(args.batch);
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for slot in 0..clients {
                let (client, tally, next) = (client.clone(), tally.clone(), next.clone());
                let (batch, value_bytes, items) = (args.batch, args.value_bytes, args.items);
                tasks.push(tokio::spawn(async move {
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if b >= batches {
                            return;
                        }
                        let body: Vec<(String, String, Vec<u8>)> = (b * batch
                            ..((b + 1) * batch).min(items))
                            .map(|i| {
                                (
                                    format!("c{clients}-pk{}", i % 10_000),
                                    format!("sk{i:09}"),
                                    vec![b'v'; value_bytes],
                                )
                            })
                            .collect();
                        // Pushed back: wait as told, then send the same batch again.
                        loop {
                            // 0: the request failed before any answer (connection refused).
                            let status: u16 = client
                                .insert_batch_status(slot, &body)
                                .await
                                .unwrap_or_default();
                            match status {
                                200..=299 => {
                                    tally.ok.fetch_add(1, Ordering::Relaxed);
                                    tally.items.fetch_add(body.len() as u64, Ordering::Relaxed);
                                    break;
                                }
                                503 => {
                                    tally.unavailable.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                                _ => {
                                    tally.other.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        let secs = started.elapsed().as_secs_f64();
        let down = peer_down_lines(&cluster)? - down_before;
        let items = tally.items.load(Ordering::Relaxed);
        let other = tally.other.load(Ordering::Relaxed);
        println!(
            "{}",
            serde_json::json!({
                "bench": "overload",
                "nodes": 3,
                "replication_factor": 3,
                "clients": clients,
                "batch_items": args.batch,
                "value_bytes": args.value_bytes,
                "items": items,
                "seconds": (secs * 100.0).round() / 100.0,
                "items_per_sec": (items as f64 / secs).round(),
                "answers_2xx": tally.ok.load(Ordering::Relaxed),
                "answers_503": tally.unavailable.load(Ordering::Relaxed),
                "answers_other": other,
                "peer_down_events": down,
                "non_default_settings": crate::procs::NON_DEFAULT_SETTINGS,
            })
        );
        if other > 0 || down > 0 {
            failures.push(format!(
                "{clients} clients: {other} answers other than 2xx or 503, {down} peer-down events"
            ));
        }
    }
    if failures.is_empty() {
        eprintln!("every answer 2xx or 503, no live node declared down");
        Ok(())
    } else {
        anyhow::bail!("{}", failures.join("; "))
    }
}

/// "peer down" lines in every node's log so far.
fn peer_down_lines(cluster: &ShoalCluster) -> anyhow::Result<u64> {
    let mut n = 0;
    for node in &cluster.nodes {
        let log = std::fs::read_to_string(node.config.with_extension("log")).unwrap_or_default();
        n += log.lines().filter(|l| l.contains("peer down")).count() as u64;
    }
    Ok(n)
}
