//! `shoal-sim`: a campaign of deterministic cluster simulations.
//!
//! `cargo run --release -p shoal-sim -- --seeds N [--scenario NAME] [--rf R] [--first-seed S]` runs
//! N seeds (of one scenario, or of each), prints each failure with the command that replays it,
//! and ends with `P passed, F failed`.

use clap::Parser;
use shoal_sim::cluster::{RunConfig, Scenario, run};

#[derive(Parser)]
#[command(about = "Deterministic simulation campaigns of Shoal clusters")]
struct Args {
    /// Seeds to run (per scenario).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// One scenario: partitions, crashes, clock-skew, layout-change, mixed (default: all).
    #[arg(long)]
    scenario: Option<String>,
    /// Replicas of each partition (1 to 5, at most the node count); quorums are majorities.
    #[arg(long, default_value_t = 3)]
    rf: usize,
    /// Nodes in the simulated cluster (5 by default; 50 or more exercise the membership of
    /// large clusters: a few probes per period, indirect probes, told changes).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Print every run, not only failures.
    #[arg(long)]
    verbose: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let scenarios: Vec<Scenario> = match &args.scenario {
        None => Scenario::ALL.to_vec(),
        Some(name) => match Scenario::parse(name) {
            Some(s) => vec![s],
            None => {
                eprintln!("unknown scenario {name}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    if !(1..=5).contains(&args.rf) || args.rf > args.nodes {
        eprintln!("--rf must be from 1 to 5, and at most --nodes");
        return std::process::ExitCode::from(2);
    }
    let (mut passed, mut failed) = (0u64, 0u64);
    let (mut acked, mut faults, mut lost) = (0usize, 0usize, 0usize);
    let started = std::time::Instant::now();
    for scenario in scenarios {
        for seed in args.first_seed..args.first_seed + args.seeds {
            let outcome = run(&RunConfig {
                rf: args.rf,
                nodes: args.nodes,
                ..RunConfig::new(seed, scenario)
            });
            acked += outcome.acked;
            faults += outcome.faults;
            lost += outcome.lost_transactions;
            if outcome.passed() {
                passed += 1;
                if args.verbose {
                    println!(
                        "ok   {} seed {seed}: {} acked, {} failed writes, {} reads, {} faults, {} unsynced transactions lost, trace {}",
                        scenario.name(),
                        outcome.acked,
                        outcome.failed_writes,
                        outcome.reads,
                        outcome.faults,
                        outcome.lost_transactions,
                        outcome.trace_hash
                    );
                }
            } else {
                failed += 1;
                println!(
                    "FAIL {} seed {seed} (replay: cargo run --release -p shoal-sim -- --scenario {} --rf {} --nodes {} --first-seed {seed} --seeds 1 --verbose)",
                    scenario.name(),
                    scenario.name(),
                    args.rf,
                    args.nodes
                );
                for v in outcome.violations.iter().take(10) {
                    println!("     {v}");
                }
            }
        }
    }
    println!(
        "({acked} acknowledged writes, {faults} faults, {lost} unsynced transactions lost by crashes, {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
