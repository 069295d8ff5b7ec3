//! The K2V conformance suite (`k2v-conformance`) against a three-node `shoal dev` cluster:
//! every case must pass. The same suite runs against Garage with `shoal-bench conformance`.

mod common;

use common::{base_port, start_dev, stop};

/// What `shoal dev` wrote to `k2v.env`.
fn env_value(env: &str, name: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
        .unwrap_or_else(|| panic!("{name} in k2v.env"))
        .to_string()
}

#[test]
fn shoal_passes_the_k2v_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(0);
    let (child, _) = start_dev(dir.path(), base, 3);
    let env = std::fs::read_to_string(dir.path().join("k2v.env")).unwrap();
    let target = k2v_conformance::Target {
        name: "shoal".into(),
        addr: env_value(&env, "K2V_ENDPOINT")
            .trim_start_matches("http://")
            .to_string(),
        bucket: env_value(&env, "K2V_BUCKET"),
        key_id: env_value(&env, "AWS_ACCESS_KEY_ID"),
        secret: env_value(&env, "AWS_SECRET_ACCESS_KEY"),
        region: env_value(&env, "AWS_REGION"),
        // `shoal dev` puts node k's API 1000 ports above its RPC port.
        others: (1..3)
            .map(|k| format!("127.0.0.1:{}", base as usize + 1000 + k))
            .collect(),
    };
    let outcomes = k2v_conformance::run_all(&target, None, k2v_conformance::cases::KEY_CASES);
    for o in &outcomes {
        match &o.failure {
            None => eprintln!("pass {}", o.name),
            Some(e) => eprintln!("FAIL {}: {e}", o.name),
        }
    }
    let summary = k2v_conformance::summary(&outcomes);
    eprintln!("shoal: {summary}");
    stop(child);
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|e| format!("{}: {e}", o.name)))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(outcomes.len() >= 30, "{summary}");
}
