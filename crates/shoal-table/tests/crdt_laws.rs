//! `merge` is commutative, associative and idempotent for every building block and for a
//! composed entry; and a table's `insert` is exactly `merge`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_storage::Store;
use shoal_table::Table;
use shoal_table::crdt::{Crdt, Flag, Lww, LwwMap, Max, NodeId, Stamp};

mod common;
use common::{Doc, Docs};

fn stamp() -> impl Strategy<Value = Stamp> {
    // Few distinct times and nodes, so that ties and equal stamps are frequent.
    (0u64..4, 0u8..3).prop_map(|(t, n)| Stamp::new(t, NodeId([n; 32])))
}

fn lww() -> impl Strategy<Value = Lww<u64>> {
    (stamp(), 0u64..4).prop_map(|(s, v)| Lww::new(s, v))
}

fn lww_map() -> impl Strategy<Value = LwwMap<u8, Option<u64>>> {
    prop::collection::vec((0u8..4, stamp(), prop::option::of(0u64..4)), 0..6).prop_map(|sets| {
        let mut m = LwwMap::new();
        for (k, s, v) in sets {
            m.set(k, s, v);
        }
        m
    })
}

fn flag() -> impl Strategy<Value = Flag> {
    any::<bool>().prop_map(|b| if b { Flag::set() } else { Flag::unset() })
}

fn map() -> impl Strategy<Value = BTreeMap<u8, Max<u32>>> {
    prop::collection::btree_map(0u8..4, (0u32..5).prop_map(Max), 0..4)
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        stamp(),
        prop::collection::vec(0u8..3, 0..3),
        prop::collection::vec((0u8..3, stamp(), prop::option::of(0u8..3)), 0..4),
        any::<bool>(),
    )
        .prop_map(|(s, body, meta, del)| {
            let mut m = LwwMap::new();
            for (k, st, v) in meta {
                m.set(format!("k{k}"), st, v.map(|v| format!("v{v}")));
            }
            Doc {
                bucket: "b".into(),
                name: "n".into(),
                body: Lww::new(s, body),
                meta: m,
                deleted: if del { Flag::set() } else { Flag::unset() },
            }
        })
}

fn merged<T: Crdt + Clone>(a: &T, b: &T) -> T {
    let mut x = a.clone();
    x.merge(b);
    x
}

macro_rules! laws {
    ($name:ident, $strategy:expr) => {
        proptest! {
            #[test]
            fn $name(a in $strategy, b in $strategy, c in $strategy) {
                prop_assert_eq!(merged(&a, &b), merged(&b, &a), "commutative");
                prop_assert_eq!(
                    merged(&merged(&a, &b), &c),
                    merged(&a, &merged(&b, &c)),
                    "associative"
                );
                prop_assert_eq!(merged(&a, &a), a.clone(), "idempotent");
            }
        }
    };
}

laws!(lww_laws, lww());
laws!(lww_map_laws, lww_map());
laws!(flag_laws, flag());
laws!(btree_map_laws, map());
laws!(option_laws, prop::option::of(lww()));
laws!(pair_laws, (lww(), flag()));
laws!(composed_entry_laws, doc());

proptest! {
    /// Inserting entries one by one, in any order, stores their merge.
    #[test]
    fn insert_is_merge(docs in prop::collection::vec(doc(), 1..6), rotate in 0usize..6) {
        let expected = docs.iter().skip(1).fold(docs[0].clone(), |acc, d| merged(&acc, d));
        let table = Table::<Docs>::new(Store::memory());
        let n = docs.len();
        for i in 0..n {
            table.insert(&docs[(i + rotate) % n]).unwrap();
        }
        let stored = table.get(&"b".to_string(), &"n".to_string()).unwrap().unwrap();
        prop_assert_eq!(&stored, &expected);
        // insert_many in reverse order reaches the same state.
        let other = Table::<Docs>::new(Store::memory());
        other.insert_many(docs.iter().rev().cloned().collect()).unwrap();
        prop_assert_eq!(other.get(&"b".to_string(), &"n".to_string()).unwrap().unwrap(), expected);
    }
}

#[test]
fn lww_order_is_time_then_node() {
    let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
    let mut r = Lww::new(Stamp::new(5, b), "from b at 5".to_string());
    r.set(Stamp::new(5, a), "from a at 5".into());
    assert_eq!(
        r.get(),
        "from b at 5",
        "same time: the greater node id wins"
    );
    r.set(Stamp::new(4, b), "older".into());
    assert_eq!(r.get(), "from b at 5", "an older write never wins");
    r.set(Stamp::new(6, a), "newer".into());
    assert_eq!(r.get(), "newer");
}
