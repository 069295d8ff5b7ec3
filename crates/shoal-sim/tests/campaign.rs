//! `cargo test` runs 204 seeds of the cluster simulation (34 per scenario), and checks that a
//! seed replays to the same trace.

use shoal_sim::cluster::{RunConfig, Scenario, run};

fn campaign(scenario: Scenario, seeds: u64) {
    campaign_at(scenario, 3, seeds);
}

fn campaign_at(scenario: Scenario, rf: usize, seeds: u64) {
    let mut failures = Vec::new();
    let mut acked = 0;
    for seed in 1..=seeds {
        let o = run(&RunConfig {
            rf,
            ..RunConfig::new(seed, scenario)
        });
        acked += o.acked;
        if !o.passed() {
            failures.push(format!("seed {seed}: {}", o.violations.join("; ")));
        }
    }
    eprintln!(
        "{} at rf {rf}: {seeds} seeds, {acked} acknowledged writes, {} failed",
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
    campaign(Scenario::Partitions, 34);
}

#[test]
fn crashes() {
    campaign(Scenario::Crashes, 34);
}

#[test]
fn clock_skew() {
    campaign(Scenario::ClockSkew, 34);
}

#[test]
fn layout_change() {
    campaign(Scenario::LayoutChange, 34);
}

#[test]
fn mixed() {
    campaign(Scenario::Mixed, 34);
}

#[test]
fn layout_churn() {
    campaign(Scenario::LayoutChurn, 34);
}

/// Five replicas of every partition over the five nodes: quorums of 3, so a partitioned
/// minority of two acknowledges nothing, and every read meets every acknowledged write.
#[test]
fn rf5_partitions() {
    campaign_at(Scenario::Partitions, 5, 17);
}

#[test]
fn rf5_mixed() {
    campaign_at(Scenario::Mixed, 5, 17);
}

/// Fifty nodes, beyond the full-probe limit: each node probes one peer per period, failed
/// probes go through relays, changes are told to every peer. Partitions and crashes (one seed
/// each: a fifty-node run is ten times a five-node one) keep every invariant.
#[test]
fn fifty_nodes_partitions_and_crashes() {
    for scenario in [Scenario::Partitions, Scenario::Crashes] {
        let o = run(&RunConfig {
            nodes: 50,
            ..RunConfig::new(1, scenario)
        });
        assert!(
            o.acked > 100,
            "the workload must actually write: {}",
            o.acked
        );
        assert!(o.faults > 0, "faults must be injected");
        assert!(
            o.passed(),
            "{}: {}",
            scenario.name(),
            o.violations.join("; ")
        );
    }
}

/// The replay child: runs one seed and prints its trace (inert unless `SHOAL_SIM_REPLAY`).
#[test]
fn replay_child() {
    let Ok(spec) = std::env::var("SHOAL_SIM_REPLAY") else {
        return;
    };
    let (scenario, seed) = spec.split_once(':').unwrap();
    let o = run(&RunConfig::new(
        seed.parse().unwrap(),
        Scenario::parse(scenario).unwrap(),
    ));
    println!("TRACE {} {} {}", o.trace_hash, o.acked, o.reads);
}

/// A seed replays to the same trace in a fresh process, as a failure is replayed from the
/// campaign's command line. (Within one process, a second run of a seed can differ: some
/// state outside the simulation survives between runs; see the closing note.)
#[test]
fn a_seed_replays_to_the_same_trace() {
    let exe = std::env::current_exe().unwrap();
    for spec in ["mixed:7", "crashes:7", "partitions:3"] {
        let traces: Vec<String> = (0..2)
            .map(|_| {
                let out = std::process::Command::new(&exe)
                    .args(["--exact", "replay_child", "--nocapture", "--test-threads=1"])
                    .env("SHOAL_SIM_REPLAY", spec)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| l.split("TRACE ").nth(1).map(String::from))
                    .unwrap_or_else(|| panic!("no trace for {spec}"))
            })
            .collect();
        assert_eq!(traces[0], traces[1], "{spec}");
    }
}
