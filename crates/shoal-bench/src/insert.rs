//! `shoal-bench insert`: durable table inserts per second with concurrent writers, with the
//! partition index maintained in the same transaction, and without it.

use serde::Serialize;
use shoal_storage::Store;
use shoal_sync::ids::IdKey;
use shoal_sync::index::PartitionIndex;
use shoal_table::Table;

use crate::load::{quantile, run_writers};
use crate::sync::{Bench, bench_item};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: crate::load::LoadArgs,
    /// Alternating rounds of each configuration; the ratio compares medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Partition keys the writes spread over.
    #[arg(long, default_value_t = 1000)]
    partition_keys: u64,
}

#[derive(Serialize)]
struct Figures {
    bench: &'static str,
    index: bool,
    writers: usize,
    inserts: u64,
    inserts_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    for &writers in &args.load.writers {
        // Fsync latency drifts from run to run: alternate the two configurations, so the ratio
        // measures the index and not the disk's mood.
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 0..args.rounds.max(1) {
            // Alternate which configuration goes first too: the second run of a pair tends to
            // meet a warmer (or more fragmented) disk.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for index in order {
                let f = measure(args, writers, index)?;
                println!("{}", serde_json::to_string(&f)?);
                if index {
                    with.push(f.inserts_per_sec);
                } else {
                    without.push(f.inserts_per_sec);
                }
            }
        }
        // Each round's two runs are back to back: the median of the per-round ratios cancels
        // the drift between rounds that a ratio of medians would keep.
        let mut paired: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w / o).collect();
        let paired = median(&mut paired);
        let (a, b) = (median(&mut without), median(&mut with));
        println!(
            "{{\"bench\":\"insert-ratio\",\"writers\":{writers},\"rounds\":{},\"median_without_index\":{a:.0},\"median_with_index\":{b:.0},\"ratio_of_medians\":{:.3},\"median_paired_ratio\":{paired:.3}}}",
            without.len(),
            b / a
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn measure(args: &Args, writers: usize, index: bool) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("insert.redb"))?;
    let mut table = Table::<Bench>::new(store.clone());
    if index {
        table = table.with_hook(PartitionIndex::open(
            &store,
            "bench",
            IdKey::insecure_default(),
        )?);
    }
    let value = vec![0x5au8; args.load.value_size];
    let pks = args.partition_keys;
    let (lat, elapsed) = run_writers(writers, args.load.seconds, |w, i| {
        let pk = format!("pk-{}", (i * 7919 + w as u64) % pks);
        let sk = format!("w{w:04}-{i:010}").into_bytes();
        table
            .insert(&bench_item(&pk, sk, value.clone()))
            .expect("durable insert");
    });
    let n = lat.len() as u64;
    anyhow::ensure!(
        table.len()? >= n,
        "every acknowledged insert must be stored"
    );
    Ok(Figures {
        bench: "insert",
        index,
        writers,
        inserts: n,
        inserts_per_sec: n as f64 / elapsed,
        p50_us: quantile(&lat, 0.5),
        p99_us: quantile(&lat, 0.99),
    })
}
