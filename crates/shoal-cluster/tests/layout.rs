//! Layout assignment: valid, zone-aware, capacity-weighted, and moving little on a change.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_cluster::layout::{Layout, LayoutError, NodeRole, PARTITIONS, replicas_per_zone};
use shoal_table::crdt::NodeId;

fn id(i: u8) -> NodeId {
    NodeId([i; 32])
}

fn roles(spec: &[(u8, &str, Option<u64>)]) -> BTreeMap<NodeId, NodeRole> {
    spec.iter()
        .map(|(i, z, c)| {
            (
                id(*i),
                NodeRole {
                    zone: z.to_string(),
                    capacity: *c,
                },
            )
        })
        .collect()
}

fn check_valid(l: &Layout) {
    let zones: BTreeSet<&str> = l
        .roles
        .values()
        .filter(|r| r.capacity.is_some())
        .map(|r| r.zone.as_str())
        .collect();
    for p in 0..PARTITIONS {
        let nodes = &l.assignment[p];
        assert_eq!(nodes.len(), l.replication_factor, "partition {p}");
        let distinct: BTreeSet<_> = nodes.iter().collect();
        assert_eq!(
            distinct.len(),
            nodes.len(),
            "distinct nodes in partition {p}"
        );
        for n in nodes {
            assert!(l.roles[n].capacity.is_some(), "gateways store nothing");
        }
        if zones.len() >= l.replication_factor {
            let z: BTreeSet<_> = nodes.iter().map(|n| &l.roles[n].zone).collect();
            assert_eq!(z.len(), nodes.len(), "distinct zones in partition {p}");
        }
        if zones.len() >= 2 && l.replication_factor >= 2 {
            let z: BTreeSet<_> = nodes.iter().map(|n| &l.roles[n].zone).collect();
            assert!(z.len() >= 2, "partition {p} lives in one zone alone");
        }
        let per_zone = replicas_per_zone(&l.roles, l.replication_factor);
        for n in nodes {
            let same = nodes
                .iter()
                .filter(|k| l.roles[*k].zone == l.roles[n].zone)
                .count();
            assert!(
                same <= per_zone,
                "partition {p}: {same} replicas in one zone"
            );
        }
    }
}

fn counts(l: &Layout) -> BTreeMap<NodeId, usize> {
    let mut c = BTreeMap::new();
    for nodes in &l.assignment {
        for n in nodes {
            *c.entry(*n).or_default() += 1;
        }
    }
    c
}

#[test]
fn three_zones_rf3_equal_capacity_is_balanced() {
    let r = roles(&[
        (1, "a", Some(1)),
        (2, "b", Some(1)),
        (3, "c", Some(1)),
        (4, "a", None),
    ]);
    let (l, moved) = Layout::empty(3).apply(r).unwrap();
    check_valid(&l);
    assert_eq!(moved, 3 * PARTITIONS);
    assert!(counts(&l).values().all(|&c| c == PARTITIONS));
    assert!(l.partitions_of(id(4)).is_empty());
}

#[test]
fn capacity_weights_the_share() {
    let r = roles(&[
        (1, "a", Some(1)),
        (2, "a", Some(3)),
        (3, "b", Some(2)),
        (4, "b", Some(2)),
    ]);
    let (l, _) = Layout::empty(2).apply(r).unwrap();
    check_valid(&l);
    let c = counts(&l);
    // Zone a: 256 replicas split 1:3; zone b: 256 split 1:1.
    assert!((c[&id(1)] as i64 - 64).abs() <= 1, "{c:?}");
    assert!((c[&id(2)] as i64 - 192).abs() <= 1, "{c:?}");
    assert!((c[&id(3)] as i64 - 128).abs() <= 1, "{c:?}");
}

#[test]
fn errors_are_clear() {
    let r = roles(&[(1, "a", Some(1)), (2, "b", None)]);
    assert_eq!(
        Layout::empty(2).apply(r).unwrap_err(),
        LayoutError::TooFewNodes { nodes: 1, rf: 2 }
    );
    let r = roles(&[(1, "a", Some(0))]);
    assert!(matches!(
        Layout::empty(1).apply(r),
        Err(LayoutError::ZeroCapacity(_))
    ));
}

#[test]
fn merge_keeps_the_newest_version() {
    let r = roles(&[(1, "a", Some(1)), (2, "b", Some(1))]);
    let (v1, _) = Layout::empty(2).apply(r.clone()).unwrap();
    let mut r2 = r;
    r2.insert(
        id(3),
        NodeRole {
            zone: "c".into(),
            capacity: Some(1),
        },
    );
    let (v2, _) = v1.apply(r2).unwrap();
    let mut a = v1.clone();
    a.merge(&v2);
    assert_eq!(a, v2);
    let mut b = v2.clone();
    b.merge(&v1);
    assert_eq!(b, v2);
}

/// Every node within 2 replicas (or 3%) of its capacity-proportional target.
fn check_balanced(l: &Layout) -> Result<(), TestCaseError> {
    let targets = shoal_cluster::layout::replica_targets(&l.roles, l.replication_factor);
    let c = counts(l);
    for (n, t) in targets {
        let have = c.get(&n).copied().unwrap_or(0) as f64;
        prop_assert!(
            (have - t).abs() <= 2.0f64.max(0.03 * t),
            "node {:?}: {} replicas, target {:.1}",
            n,
            have,
            t
        );
    }
    Ok(())
}

/// A lower bound on the replicas that must move from `old` to `new`: the larger of two.
/// - What nodes gained, net (counts alone).
/// - Per partition, the replicas that must enter it: at least one per old replica that cannot
///   stay (its node left, or its zone now holds more than `replicas_per_zone`), and one per node
///   that must be in every partition (its target is all of them) but was not in this one.
///
/// Chains through third nodes can make the true minimum higher still, so the tests allow 1.5
/// times this.
fn necessary_moves(old: &Layout, new: &Layout) -> usize {
    let (co, cn) = (counts(old), counts(new));
    let gains: usize = cn
        .iter()
        .map(|(n, c)| c.saturating_sub(co.get(n).copied().unwrap_or(0)))
        .sum();
    let per_zone = replicas_per_zone(&new.roles, new.replication_factor);
    let targets = shoal_cluster::layout::replica_targets(&new.roles, new.replication_factor);
    let everywhere: Vec<_> = targets
        .iter()
        .filter(|(_, t)| **t > PARTITIONS as f64 - 0.5)
        .map(|(n, _)| *n)
        .collect();
    let zone = |n: &NodeId| new.roles.get(n).map(|r| r.zone.as_str());
    let mut entries = 0;
    for p in 0..PARTITIONS {
        let was = &old.assignment[p];
        let staying: Vec<_> = was
            .iter()
            .filter(|n| new.roles.get(*n).is_some_and(|r| r.capacity.is_some()))
            .collect();
        let mut in_zone: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for n in &staying {
            *in_zone.entry(zone(n)).or_default() += 1;
        }
        let excess: usize = in_zone.values().map(|c| c.saturating_sub(per_zone)).sum();
        let must_leave = (was.len() - staying.len()) + excess;
        let must_enter = everywhere.iter().filter(|n| !was.contains(n)).count();
        entries += must_leave.max(must_enter);
    }
    gains.max(entries)
}

fn cluster() -> impl Strategy<Value = (Vec<(u8, u8, Option<u64>)>, usize)> {
    (
        prop::collection::vec((0u8..4, prop::option::weighted(0.9, 1u64..4)), 3..10),
        1usize..=3,
    )
        .prop_map(|(nodes, rf)| {
            (
                nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (z, c))| (i as u8 + 1, z, c))
                    .collect(),
                rf,
            )
        })
}

fn to_roles(spec: &[(u8, u8, Option<u64>)]) -> BTreeMap<NodeId, NodeRole> {
    spec.iter()
        .map(|(i, z, c)| {
            (
                id(*i),
                NodeRole {
                    zone: format!("z{z}"),
                    capacity: *c,
                },
            )
        })
        .collect()
}

/// Two zones, three replicas: every partition spans both zones, so losing either zone loses no
/// partition, and a third zone's arrival moves few replicas besides the new node's. A random
/// proptest input found this: partitions could sit wholly in one zone, and growing moved 393
/// replicas where 256 were necessary.
#[test]
fn fewer_zones_than_replicas_still_spread_and_a_new_zone_moves_little() {
    let r = roles(&[
        (1, "z2", Some(3)),
        (2, "z3", Some(3)),
        (3, "z3", Some(3)),
        (4, "z2", Some(1)),
        (5, "z3", Some(3)),
        (6, "z2", Some(2)),
    ]);
    assert_eq!(replicas_per_zone(&r, 3), 2);
    let (l, _) = Layout::empty(3).apply(r.clone()).unwrap();
    check_valid(&l);
    for p in 0..PARTITIONS {
        let z: BTreeSet<_> = l.assignment[p].iter().map(|n| &l.roles[n].zone).collect();
        assert_eq!(z.len(), 2, "partition {p} spans both zones");
    }
    let mut grown = r.clone();
    grown.insert(
        id(200),
        NodeRole {
            zone: "z4".into(),
            capacity: Some(1),
        },
    );
    let (g, moved) = l.apply(grown).unwrap();
    check_valid(&g);
    assert_eq!(necessary_moves(&l, &g), 256);
    // Which z2 replica each two-z2 partition had decides how many must still move between z2's
    // nodes to rebalance them; that is why this is more than 256 (290 today), and it was 393.
    assert!(
        moved <= 256 * 3 / 2 + 8,
        "moved {moved} where 256 were necessary"
    );
}

#[test]
fn replicas_per_zone_is_the_least_the_zones_allow() {
    let r = roles(&[
        (1, "a", Some(1)),
        (2, "a", Some(1)),
        (3, "a", Some(1)),
        (4, "a", Some(1)),
        (5, "a", Some(1)),
        (6, "b", Some(1)),
        (7, "gw", None),
    ]);
    // One node in b: four replicas need three in a.
    assert_eq!(replicas_per_zone(&r, 4), 3);
    assert_eq!(replicas_per_zone(&r, 2), 1);
    assert_eq!(replicas_per_zone(&r, 3), 2);
    let one = roles(&[(1, "a", Some(1)), (2, "a", Some(1)), (3, "a", Some(1))]);
    assert_eq!(replicas_per_zone(&one, 3), 3);
}

/// The suite runs 64 cases from a fixed seed, so it gives the same answer on every run;
/// `SHOAL_LAYOUT_EXPLORE=N` runs N cases from a random seed instead. Exploring 3,000 random
/// cases at a time finds a cluster, now and then (about one in a few thousand), whose churn
/// exceeds 1.5× the lower bound below: the two examined were removals where zone limits force
/// replicas through third nodes, one of them provably at its true minimum (129 moves = 77
/// refills + 26 + 26 entries of the two nodes that must hold every partition, before the bound
/// counted those). The exact minimum is a min-cost flow; the bound is the weak side.
fn layout_proptest_config() -> ProptestConfig {
    match std::env::var("SHOAL_LAYOUT_EXPLORE")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(cases) => ProptestConfig {
            cases,
            ..ProptestConfig::default()
        },
        None => ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(20261126),
            ..ProptestConfig::default()
        },
    }
}

proptest! {
    #![proptest_config(layout_proptest_config())]

    #[test]
    fn assignments_are_valid_stable_and_move_little((spec, rf) in cluster(), extra_cap in 1u64..4, extra_zone in 0u8..5) {
        let r = to_roles(&spec);
        let storage = r.values().filter(|x| x.capacity.is_some()).count();
        let Ok((l, _)) = Layout::empty(rf).apply(r.clone()) else {
            prop_assert!(storage < rf);
            return Ok(());
        };
        check_valid(&l);
        // Re-applying the same roles moves nothing.
        let (same, moved) = l.apply(r.clone()).unwrap();
        prop_assert_eq!(moved, 0);
        prop_assert_eq!(&same.assignment, &l.assignment);

        check_balanced(&l)?;

        // Adding a node: valid, balanced, and no churn beyond the count changes it implies.
        let mut grown = r.clone();
        grown.insert(id(200), NodeRole { zone: format!("z{extra_zone}"), capacity: Some(extra_cap) });
        let (g, moved) = l.apply(grown).unwrap();
        check_valid(&g);
        check_balanced(&g)?;
        prop_assert!(moved <= necessary_moves(&l, &g) * 3 / 2 + 8, "moved {} where {} were necessary", moved, necessary_moves(&l, &g));

        // Removing a storage node: the same.
        if storage > rf {
            let victim = *r.iter().find(|(_, x)| x.capacity.is_some()).unwrap().0;
            let mut shrunk = r.clone();
            shrunk.remove(&victim);
            if let Ok((s, moved)) = l.apply(shrunk) {
                check_valid(&s);
                check_balanced(&s)?;
                prop_assert!(moved <= necessary_moves(&l, &s) * 3 / 2 + 8, "moved {} where {} were necessary", moved, necessary_moves(&l, &s));
            }
        }
    }
}
