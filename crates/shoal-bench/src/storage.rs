//! `shoal-bench storage`: durable small writes per second with 1..N concurrent writers, with
//! group commit and, for comparison, with one commit per transaction.

use crate::load::{quantile, run_writers};

use serde::Serialize;
use shoal_storage::{Durability, RedbOptions, Store};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: crate::load::LoadArgs,
    /// Also measure without group commit (one fsync per transaction).
    #[arg(long)]
    compare_ungrouped: bool,
    /// Acknowledge before fsync (NOT durable), to see the cost of durability.
    #[arg(long)]
    relaxed: bool,
}

#[derive(Serialize)]
struct Figures {
    bench: &'static str,
    durable: bool,
    group_commit: bool,
    writers: usize,
    seconds: f64,
    writes: u64,
    writes_per_sec: f64,
    commits: u64,
    avg_group: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let modes: &[bool] = if args.compare_ungrouped {
        &[true, false]
    } else {
        &[true]
    };
    for &grouped in modes {
        for &writers in &args.load.writers {
            let f = measure(args, writers, grouped)?;
            println!("{}", serde_json::to_string(&f)?);
        }
    }
    Ok(())
}

fn measure(args: &Args, writers: usize, grouped: bool) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let options = RedbOptions {
        durability: if args.relaxed {
            Durability::Relaxed
        } else {
            Durability::Immediate
        },
        max_group: if grouped { 4096 } else { 1 },
        ..RedbOptions::default()
    };
    let store = Store::open_with(dir.path().join("bench.redb"), options)?;
    let value = vec![0xabu8; args.load.value_size];
    let (latencies, elapsed) = run_writers(writers, args.load.seconds, |w, i| {
        let key = format!("w{w:04}-{i:010}").into_bytes();
        let v = value.clone();
        store
            .transact(move |tx| tx.put("bench", &key, &v))
            .expect("durable write");
    });
    let stats = store.engine().stats();
    let writes = latencies.len() as u64;
    anyhow::ensure!(
        store.tree_len("bench")? == writes,
        "every acknowledged write must be stored"
    );
    Ok(Figures {
        bench: "storage",
        durable: !args.relaxed,
        group_commit: grouped,
        writers,
        seconds: elapsed,
        writes,
        writes_per_sec: writes as f64 / elapsed,
        commits: stats.commits,
        avg_group: stats.transactions as f64 / stats.commits.max(1) as f64,
        p50_us: quantile(&latencies, 0.50),
        p99_us: quantile(&latencies, 0.99),
        max_us: *latencies.last().unwrap_or(&0),
    })
}
