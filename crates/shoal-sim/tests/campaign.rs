//! `cargo test` runs 200 seeds of the cluster simulation (40 per scenario), and checks that a
//! seed replays to the same trace.

use shoal_sim::cluster::{RunConfig, Scenario, run};

fn campaign(scenario: Scenario, seeds: u64) {
    let mut failures = Vec::new();
    let mut acked = 0;
    for seed in 1..=seeds {
        let o = run(&RunConfig::new(seed, scenario));
        acked += o.acked;
        if !o.passed() {
            failures.push(format!("seed {seed}: {}", o.violations.join("; ")));
        }
    }
    eprintln!(
        "{}: {seeds} seeds, {acked} acknowledged writes, {} failed",
        scenario.name(),
        failures.len()
    );
    assert!(
        acked as u64 > seeds * 100,
        "the workload must actually write: {acked}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn partitions() {
    campaign(Scenario::Partitions, 40);
}

#[test]
fn crashes() {
    campaign(Scenario::Crashes, 40);
}

#[test]
fn clock_skew() {
    campaign(Scenario::ClockSkew, 40);
}

#[test]
fn layout_change() {
    campaign(Scenario::LayoutChange, 40);
}

#[test]
fn mixed() {
    campaign(Scenario::Mixed, 40);
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    for scenario in [Scenario::Mixed, Scenario::Crashes] {
        let a = run(&RunConfig::new(7, scenario));
        let b = run(&RunConfig::new(7, scenario));
        assert!(!a.trace_hash.is_empty());
        assert_eq!(a.trace_hash, b.trace_hash, "{}", scenario.name());
        assert_eq!((a.acked, a.reads), (b.acked, b.reads));
    }
}
