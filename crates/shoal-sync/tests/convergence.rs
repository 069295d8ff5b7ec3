//! One session, started by either side, leaves both replicas with identical items and identical
//! index digests, sends nothing the receiver already held, and keeps every message bounded.

use proptest::prelude::*;
use shoal_sync::driver::sync_pair;
use shoal_sync::protocol::MAX_MESSAGE_BYTES;

mod common;
use common::{Node, item, pk_in};

const P: u8 = 0x80;

#[derive(Debug, Clone)]
struct Case {
    common: Vec<(u16, u8)>,
    only_a: Vec<(u16, u8)>,
    only_b: Vec<(u16, u8)>,
    modified: Vec<(u16, u8, u8)>,
    b_starts: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let items = |max| prop::collection::vec((any::<u16>(), any::<u8>()), 0..max);
    (
        items(300),
        items(60),
        items(60),
        prop::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 0..40),
        any::<bool>(),
    )
        .prop_map(|(common, only_a, only_b, modified, b_starts)| Case {
            common,
            only_a,
            only_b,
            modified,
            b_starts,
        })
}

/// Sort keys: big-endian u16 plus a tag, so sides never collide unless meant to; the extremes
/// (empty key, 0xff…) sit at the partition's boundaries.
fn sk(n: u16, tag: u8) -> Vec<u8> {
    match n {
        0 => vec![],
        u16::MAX => vec![0xff; 8],
        _ => [n.to_be_bytes().as_slice(), &[tag]].concat(),
    }
}

fn build(c: &Case) -> (Node, Node) {
    let (a, b) = (Node::memory(), Node::memory());
    let pk = pk_in(P, 0);
    for (n, v) in &c.common {
        let it = item(&pk, &sk(*n, 0), 1, 1, &[*v]);
        a.table.insert(&it).unwrap();
        b.table.insert(&it).unwrap();
    }
    for (n, v) in &c.only_a {
        a.table.insert(&item(&pk, &sk(*n, 1), 2, 1, &[*v])).unwrap();
    }
    for (n, v) in &c.only_b {
        b.table.insert(&item(&pk, &sk(*n, 2), 2, 2, &[*v])).unwrap();
    }
    for (n, va, vb) in &c.modified {
        // Same key, concurrent versions: the merge keeps the later stamp for the value and
        // the deletion flag from either side, so it can differ from both versions.
        let key = sk(*n, 3);
        let mut ia = item(&pk, &key, 5, 1, &[*va]);
        let mut ib = item(&pk, &key, 5 + u64::from(*vb % 3), 2, &[*vb]);
        if va % 2 == 1 {
            ia.deleted.raise();
        }
        if vb % 5 == 1 {
            ib.deleted.raise();
        }
        a.table.insert(&ia).unwrap();
        b.table.insert(&ib).unwrap();
    }
    // Neighbouring partitions hold items the session must not touch.
    for p in [P - 1, P + 1] {
        a.table
            .insert(&item(&pk_in(p, 0), b"outside", 1, 1, b"a"))
            .unwrap();
        b.table
            .insert(&item(&pk_in(p, 0), b"other", 1, 2, b"b"))
            .unwrap();
    }
    (a, b)
}

fn converge(a: &Node, b: &Node, b_starts: bool) {
    let outside_a: Vec<_> = a.dump().into_iter().filter(|(k, _)| k[0] != P).collect();
    let outside_b: Vec<_> = b.dump().into_iter().filter(|(k, _)| k[0] != P).collect();
    let (ra, rb) = (a.replica(P), b.replica(P));
    let t = if b_starts {
        sync_pair(&rb, &ra)
    } else {
        sync_pair(&ra, &rb)
    }
    .unwrap();
    let in_p = |n: &Node| {
        n.dump()
            .into_iter()
            .filter(|(k, _)| k[0] == P)
            .collect::<Vec<_>>()
    };
    assert!(in_p(a) == in_p(b), "identical items after one session");
    assert_eq!(a.head(P), b.head(P), "identical index digests");
    assert_eq!(
        t.a.items_identical + t.b.items_identical,
        0,
        "nothing sent that was held"
    );
    assert!(t.max_message as usize <= MAX_MESSAGE_BYTES);
    let outside = |n: &Node| {
        n.dump()
            .into_iter()
            .filter(|(k, _)| k[0] != P)
            .collect::<Vec<_>>()
    };
    assert!(outside(a) == outside_a, "other partitions untouched");
    assert!(outside(b) == outside_b, "other partitions untouched");
    assert!(
        a.index
            .verify(a.table.store())
            .unwrap()
            .mismatched
            .is_empty()
    );
    assert!(
        b.index
            .verify(b.table.store())
            .unwrap()
            .mismatched
            .is_empty()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn one_session_converges_both_replicas(c in case()) {
        let (a, b) = build(&c);
        converge(&a, &b, c.b_starts);
    }
}

#[test]
fn merged_versions_that_differ_from_both_sides_converge() {
    for b_starts in [false, true] {
        let (a, b) = (Node::memory(), Node::memory());
        let pk = pk_in(P, 0);
        for i in 0..100u32 {
            let it = item(&pk, &i.to_be_bytes(), 1, 1, b"same");
            a.table.insert(&it).unwrap();
            b.table.insert(&it).unwrap();
        }
        for i in 0..20u32 {
            // A: newer value, not deleted. B: older value, deleted. Merge: newer value, deleted.
            a.table
                .insert(&item(&pk, &[9, i as u8], 2, 1, b"newer"))
                .unwrap();
            let mut old = item(&pk, &[9, i as u8], 1, 2, b"older");
            old.deleted.raise();
            b.table.insert(&old).unwrap();
        }
        converge(&a, &b, b_starts);
        let merged = a.table.get(&pk, &vec![9, 0]).unwrap().unwrap();
        assert!(merged.deleted.is_set() && merged.value.get() == b"newer");
    }
}

#[test]
fn empty_side_single_item_and_equal_sides() {
    let pk = pk_in(P, 0);
    for b_starts in [false, true] {
        // One side empty.
        let (a, b) = (Node::memory(), Node::memory());
        for i in 0..500u32 {
            a.table
                .insert(&item(&pk, &i.to_be_bytes(), 1, 1, b"v"))
                .unwrap();
        }
        converge(&a, &b, b_starts);
        // Single item on one side.
        let (a, b) = (Node::memory(), Node::memory());
        b.table.insert(&item(&pk, b"only", 1, 1, b"v")).unwrap();
        converge(&a, &b, b_starts);
        // One item more on one side: read straight off the digests.
        let (a, b) = (Node::memory(), Node::memory());
        for i in 0..50u32 {
            let it = item(&pk, &i.to_be_bytes(), 1, 1, b"v");
            a.table.insert(&it).unwrap();
            b.table.insert(&it).unwrap();
        }
        a.table.insert(&item(&pk, b"extra", 1, 1, b"v")).unwrap();
        converge(&a, &b, b_starts);
        // Equal sides: one round trip.
        let t = sync_pair(&a.replica(P), &b.replica(P)).unwrap();
        assert_eq!((t.round_trips(), t.item_bytes), (1, 0));
        assert!(t.meta_bytes() <= 64, "{} bytes", t.meta_bytes());
    }
}

#[test]
fn both_sides_starting_at_once_converge() {
    let c = Case {
        common: (0..200).map(|i| (i, 1)).collect(),
        only_a: (1000..1030).map(|i| (i, 2)).collect(),
        only_b: (2000..2020).map(|i| (i, 3)).collect(),
        modified: (3000..3010).map(|i| (i, 1, 2)).collect(),
        b_starts: false,
    };
    let (a, b) = build(&c);
    let (ra, rb) = (a.replica(P), b.replica(P));
    // Interleave two sessions message by message: A→B and B→A.
    use shoal_sync::protocol::Message;
    use shoal_sync::session::Session;
    let mut s1 = Session::initiate(&ra).unwrap();
    let mut s2 = Session::initiate(&rb).unwrap();
    let (mut r1, mut r2): (Option<Session>, Option<Session>) = (None, None);
    for _ in 0..100 {
        let mut moved = false;
        if let Some(m) = s1.poll_send(&ra).unwrap() {
            let m = Message::decode(&m.encode()).unwrap();
            match r1.as_mut() {
                Some(r) => r.receive(&rb, m).unwrap(),
                None => r1 = Some(Session::respond(&rb, m).unwrap()),
            }
            moved = true;
        }
        if let Some(m) = s2.poll_send(&rb).unwrap() {
            match r2.as_mut() {
                Some(r) => r.receive(&ra, m).unwrap(),
                None => r2 = Some(Session::respond(&ra, m).unwrap()),
            }
            moved = true;
        }
        if let Some(r) = r1.as_mut() {
            while let Some(m) = r.poll_send(&rb).unwrap() {
                s1.receive(&ra, m).unwrap();
                moved = true;
            }
        }
        if let Some(r) = r2.as_mut() {
            while let Some(m) = r.poll_send(&ra).unwrap() {
                s2.receive(&rb, m).unwrap();
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    assert!(s1.is_done() && s2.is_done());
    let in_p = |n: &Node| {
        n.dump()
            .into_iter()
            .filter(|(k, _)| k[0] == P)
            .collect::<Vec<_>>()
    };
    assert!(
        in_p(&a) == in_p(&b),
        "both sessions together converge partition P"
    );
    assert_eq!(a.head(P), b.head(P));
}

#[test]
fn large_difference_on_disk_stays_within_message_bounds() {
    let (a, b) = (Node::on_disk(), Node::on_disk());
    let pk = pk_in(P, 0);
    let big = vec![7u8; 3000];
    let batch: Vec<_> = (0..2000u32)
        .map(|i| item(&pk, &i.to_be_bytes(), 1, 1, &big))
        .collect();
    a.table.insert_many(batch).unwrap();
    let batch: Vec<_> = (1500..2600u32)
        .map(|i| item(&pk, &i.to_be_bytes(), 1, 1, &big))
        .collect();
    b.table.insert_many(batch).unwrap();
    let t = sync_pair(&a.replica(P), &b.replica(P)).unwrap();
    assert!(t.messages > 4, "6 MB of items must span several messages");
    assert!(t.max_message as usize <= MAX_MESSAGE_BYTES);
    assert!(a.dump() == b.dump());
    assert_eq!(a.head(P), b.head(P));
}

#[test]
fn seed_baseline_needs_both_directions() {
    let c = Case {
        common: (0..300).map(|i| (i, 1)).collect(),
        only_a: (1000..1010).map(|i| (i, 2)).collect(),
        only_b: (2000..2010).map(|i| (i, 3)).collect(),
        modified: (3000..3005).map(|i| (i, 1, 2)).collect(),
        b_starts: false,
    };
    let (a, b) = build(&c);
    let in_p = |n: &Node| {
        n.dump()
            .into_iter()
            .filter(|(k, _)| k[0] == P)
            .collect::<Vec<_>>()
    };
    let one = shoal_sync::seed::seed_sync(&a.replica(P), &b.replica(P), P).unwrap();
    assert!(
        in_p(&a) != in_p(&b),
        "the seed's one-way sync leaves B's extra items behind"
    );
    assert!(one.round_trips >= 2);
    shoal_sync::seed::seed_sync(&b.replica(P), &a.replica(P), P).unwrap();
    assert!(in_p(&a) == in_p(&b), "both directions converge");
}

#[test]
fn modified_case_from_the_property_generator() {
    let c = Case {
        common: (0..50).map(|i| (i, 1)).collect(),
        only_a: vec![],
        only_b: vec![],
        modified: vec![(5, 1, 0), (6, 3, 2)],
        b_starts: false,
    };
    let (a, b) = build(&c);
    let pk = pk_in(P, 0);
    assert!(
        a.table
            .get(&pk, &vec![0, 5, 3])
            .unwrap()
            .unwrap()
            .deleted
            .is_set()
    );
    converge(&a, &b, false);
    let merged = b.table.get(&pk, &vec![0, 5, 3]).unwrap().unwrap();
    assert!(merged.deleted.is_set() && merged.value.get() == &vec![0u8]);
}
