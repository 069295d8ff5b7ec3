//! `shoal-bench conformance`: the K2V conformance suite (`k2v-conformance`) against a
//! three-node Shoal cluster and, with `--peers garage`, a three-node Garage cluster (from
//! `bench/prepare-peers.sh`), one line per case with both outcomes, then each system's
//! `P passed, F failed`.

use std::path::PathBuf;

use anyhow::Context;
use k2v_conformance::{Outcome, Target};

use crate::peers::Garage;
use crate::procs::{NodeSpec, ShoalCluster};

#[derive(clap::Args)]
pub struct Args {
    /// Also run against: garage (or nothing).
    #[arg(long, value_delimiter = ',', default_value = "garage")]
    peers: Vec<String>,
    /// Only the cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Cases of the property test on keys.
    #[arg(long, default_value_t = k2v_conformance::cases::KEY_CASES)]
    key_cases: u32,
    /// Where the clusters keep their data.
    #[arg(long, default_value = "/tmp/shoal-bench-conformance")]
    dir: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let mut results: Vec<(String, Vec<Outcome>)> = Vec::new();
    {
        let dir = args.dir.join("shoal");
        let specs: Vec<NodeSpec> = (0..3)
            .map(|k| NodeSpec {
                ip: "127.0.0.1".into(),
                rpc_port: 25901 + k as u16,
                data_dir: dir.join(format!("node{}", k + 1)),
            })
            .collect();
        let cluster = ShoalCluster::start(&dir, specs, 3, "bench")?;
        let (key_id, secret, bucket) = cluster.k2v.clone().context("K2V credentials")?;
        let target = Target {
            name: "shoal".into(),
            addr: cluster.nodes[0]
                .api_endpoint()
                .trim_start_matches("http://")
                .to_string(),
            bucket,
            key_id,
            secret,
            region: "shoal".into(),
            others: cluster.nodes[1..]
                .iter()
                .map(|n| n.api_endpoint().trim_start_matches("http://").to_string())
                .collect(),
        };
        results.push((
            "shoal".into(),
            k2v_conformance::run_all(&target, args.filter.as_deref(), args.key_cases),
        ));
    }
    if args.peers.iter().any(|p| p == "garage") {
        let mut garage = Garage::start(&args.dir.join("garage"), false)?;
        let target = Target {
            name: "garage".into(),
            addr: garage.endpoints()[0]
                .trim_start_matches("http://")
                .to_string(),
            bucket: "bench".into(),
            key_id: garage.key_id.clone(),
            secret: garage.secret.clone(),
            region: "garage".into(),
            others: garage.endpoints()[1..]
                .iter()
                .map(|e| e.trim_start_matches("http://").to_string())
                .collect(),
        };
        results.push((
            "garage".into(),
            k2v_conformance::run_all(&target, args.filter.as_deref(), args.key_cases),
        ));
        garage.stop();
    }
    let notes: std::collections::HashMap<&str, Option<&str>> = k2v_conformance::cases::all()
        .iter()
        .map(|c| (c.name, c.note))
        .collect();
    for (i, case) in results[0].1.iter().enumerate() {
        let mut line = format!("{:<52}", case.name);
        for (system, outcomes) in &results {
            let verdict = if outcomes[i].failure.is_none() {
                "pass"
            } else {
                "FAIL"
            };
            line.push_str(&format!(" {system}: {verdict:<5}"));
        }
        println!("{line}");
        for (system, outcomes) in &results {
            if let Some(f) = &outcomes[i].failure {
                let f: String = f.chars().take(400).collect();
                println!("    {system}: {f}");
            }
        }
        if let Some(Some(note)) = notes.get(case.name) {
            println!("    note: {note}");
        }
    }
    for (system, outcomes) in &results {
        println!("{system}: {}", k2v_conformance::summary(outcomes));
    }
    Ok(())
}
