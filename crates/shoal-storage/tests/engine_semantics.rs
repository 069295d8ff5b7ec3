//! The engine contract, checked on both engines: the redb product engine and the memory engine
//! must behave identically (the memory engine stands in for redb in logic tests).

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use shoal_storage::{Direction, KeyRange, RedbOptions, StorageError, Store, TxError};

fn engines() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let redb = Store::open(dir.path().join("s.redb")).unwrap();
    vec![(Store::memory(), None), (redb, Some(dir))]
}

fn put(store: &Store, tree: &'static str, k: &[u8], v: &[u8]) {
    let (k, v) = (k.to_vec(), v.to_vec());
    store
        .transact(move |tx| tx.put(tree, &k, &v))
        .expect("put commits");
}

#[test]
fn get_put_delete_and_tree_isolation() {
    for (s, _d) in engines() {
        assert_eq!(s.get("t", b"a").unwrap(), None, "unknown tree reads empty");
        put(&s, "t", b"a", b"1");
        put(&s, "u", b"a", b"2");
        assert_eq!(s.get("t", b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get("u", b"a").unwrap().as_deref(), Some(&b"2"[..]));
        s.transact(|tx| tx.delete("t", b"a")).unwrap();
        assert_eq!(s.get("t", b"a").unwrap(), None);
        assert_eq!(s.get("u", b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(s.tree_len("u").unwrap(), 1);
        assert_eq!(s.tree_len("t").unwrap(), 0);
        assert_eq!(s.tree_len("never").unwrap(), 0);
    }
}

#[test]
fn scans_forward_backward_bounded_limited() {
    for (s, _d) in engines() {
        s.transact(|tx| {
            for i in 0u8..10 {
                tx.put("t", &[i], &[i * 2])?;
            }
            Ok::<_, StorageError>(())
        })
        .unwrap();
        let keys =
            |r: Vec<(Vec<u8>, Vec<u8>)>| r.into_iter().map(|(k, _)| k[0]).collect::<Vec<_>>();
        let r = KeyRange::half_open(vec![2], vec![7]);
        assert_eq!(
            keys(s.scan("t", &r, Direction::Forward, 100).unwrap()),
            vec![2, 3, 4, 5, 6]
        );
        assert_eq!(
            keys(s.scan("t", &r, Direction::Backward, 100).unwrap()),
            vec![6, 5, 4, 3, 2]
        );
        assert_eq!(
            keys(s.scan("t", &r, Direction::Backward, 2).unwrap()),
            vec![6, 5]
        );
        assert_eq!(
            keys(
                s.scan("t", &KeyRange::all(), Direction::Forward, 3)
                    .unwrap()
            ),
            vec![0, 1, 2]
        );
        let incl = KeyRange {
            start: Bound::Excluded(vec![7]),
            end: Bound::Included(vec![9]),
        };
        assert_eq!(
            keys(s.scan("t", &incl, Direction::Forward, 10).unwrap()),
            vec![8, 9]
        );
        let empty = KeyRange::half_open(vec![5], vec![5]);
        assert!(
            s.scan("t", &empty, Direction::Forward, 10)
                .unwrap()
                .is_empty()
        );
        let mut seen = vec![];
        s.for_each("t", &KeyRange::all(), 3, |k, _| {
            seen.push(k[0]);
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            (0..10).collect::<Vec<_>>(),
            "paged iteration sees every key once"
        );
    }
}

#[test]
fn transactions_read_their_writes_and_abort_atomically() {
    for (s, _d) in engines() {
        put(&s, "t", b"x", b"old");
        let seen = s
            .transact(|tx| {
                tx.put("t", b"x", b"new")?;
                tx.put("t", b"y", b"1")?;
                tx.delete("t", b"x")?;
                tx.put("t", b"x", b"newer")?;
                let x = tx.get("t", b"x")?;
                let all = tx.scan("t", &KeyRange::all(), Direction::Forward, 10)?;
                Ok::<_, StorageError>((x, all.len()))
            })
            .unwrap();
        assert_eq!(seen, (Some(b"newer".to_vec()), 2));

        let r: Result<(), TxError<&str>> = s.transact(|tx| {
            tx.put("t", b"x", b"doomed").unwrap();
            tx.put("t", b"z", b"doomed").unwrap();
            Err("no")
        });
        assert!(matches!(r, Err(TxError::Aborted("no"))));
        assert_eq!(s.get("t", b"x").unwrap().as_deref(), Some(&b"newer"[..]));
        assert_eq!(
            s.get("t", b"z").unwrap(),
            None,
            "aborted writes are discarded"
        );

        let r: Result<(), TxError<StorageError>> = s.transact(|tx| {
            tx.put("t", b"p", b"1").unwrap();
            panic!("boom");
        });
        assert!(
            matches!(r, Err(TxError::Commit(StorageError::Panicked(_)))),
            "{r:?}"
        );
        assert_eq!(
            s.get("t", b"p").unwrap(),
            None,
            "a panicking transaction writes nothing"
        );
        put(&s, "t", b"after", b"1");
        assert!(
            s.get("t", b"after").unwrap().is_some(),
            "the store keeps working after a panic"
        );
    }
}

#[test]
fn after_commit_actions_run_only_for_committed_transactions_before_the_ack() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    for (s, _d) in engines() {
        let ran = Arc::new(AtomicU32::new(0));
        let r = ran.clone();
        s.transact(move |tx| {
            tx.put("t", b"k", b"v")?;
            tx.after_commit(Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }));
            Ok::<_, StorageError>(())
        })
        .unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "ran before transact returned"
        );

        let r = ran.clone();
        let aborted = s.transact(move |tx| {
            tx.put("t", b"k2", b"v")?;
            tx.after_commit(Box::new(move || {
                r.fetch_add(10, Ordering::SeqCst);
            }));
            Err::<(), _>(StorageError::Corrupted("abort on purpose".into()))
        });
        assert!(matches!(aborted, Err(TxError::Aborted(_))));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "an aborted transaction runs nothing"
        );
        assert_eq!(s.get("t", b"k2").unwrap(), None);
    }
}

#[test]
fn snapshots_do_not_see_later_commits() {
    for (s, _d) in engines() {
        put(&s, "t", b"a", b"1");
        let snap = s.snapshot().unwrap();
        put(&s, "t", b"a", b"2");
        put(&s, "t", b"b", b"2");
        assert_eq!(snap.get("t", b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(
            snap.scan("t", &KeyRange::all(), Direction::Forward, 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.get("t", b"a").unwrap().as_deref(), Some(&b"2"[..]));
    }
}

/// Point reads share the latest state's open tables: a write acknowledged is read at once by
/// anyone, and concurrent readers never see the value go back.
#[test]
fn point_reads_see_every_acknowledged_write_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("r.redb")).unwrap();
    let written = std::sync::atomic::AtomicU64::new(0);
    let read = |s: &Store| {
        s.get("t", b"counter")
            .unwrap()
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
    };
    std::thread::scope(|sc| {
        for _ in 0..4 {
            let (s, written) = (s.clone(), &written);
            sc.spawn(move || {
                let mut last = 0;
                while written.load(std::sync::atomic::Ordering::SeqCst) < 300 {
                    let acked = written.load(std::sync::atomic::Ordering::SeqCst);
                    let v = read(&s);
                    assert!(v >= last, "a reader went back from {last} to {v}");
                    assert!(v >= acked, "read {v} after {acked} was acknowledged");
                    last = v;
                }
            });
        }
        for i in 1..=300u64 {
            put(&s, "t", b"counter", &i.to_be_bytes());
            written.store(i, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(read(&s), i, "the writer reads its own write");
        }
    });
}

/// The tables shared by point reads pin the state they were opened at; they are let go at the
/// next commit, so a stream of writes with no reads between them reuses the space it frees.
#[test]
fn overwrites_after_a_read_reuse_space() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("o.redb")).unwrap();
    let value = vec![7u8; 4096];
    for k in 0..64u8 {
        put(&s, "t", &[k], &value);
    }
    assert_eq!(s.get("t", &[0]).unwrap().as_deref(), Some(&value[..]));
    let before = s.approximate_size().unwrap();
    for round in 0..2000usize {
        put(&s, "t", &[(round % 64) as u8], &value);
    }
    let after = s.approximate_size().unwrap();
    // 2000 overwrites of 4 KiB would add some 8 MB if the first state stayed pinned.
    assert!(
        after < before + 2 * 1024 * 1024,
        "file grew from {before} to {after} bytes"
    );
}

#[test]
fn concurrent_writers_share_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("g.redb")).unwrap();
    let threads = 32;
    let per = 20;
    std::thread::scope(|sc| {
        for t in 0..threads {
            let s = s.clone();
            sc.spawn(move || {
                for i in 0..per {
                    let k = format!("{t:03}-{i:03}").into_bytes();
                    s.transact(move |tx| tx.put("t", &k, b"v")).unwrap();
                }
            });
        }
    });
    assert_eq!(s.tree_len("t").unwrap(), (threads * per) as u64);
    let stats = s.engine().stats();
    assert!(stats.transactions >= (threads * per) as u64);
    assert!(
        stats.commits < stats.transactions,
        "group commit must merge concurrent transactions: {stats:?}"
    );
}

#[test]
fn async_transactions_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("a.redb")).unwrap();
    let rt = tokio_rt();
    rt.block_on(async {
        let mut handles = vec![];
        for i in 0u32..50 {
            let s = s.clone();
            handles.push(async move {
                s.transact_async(move |tx| tx.put("t", &i.to_be_bytes(), b"v"))
                    .await
            });
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    assert_eq!(s.tree_len("t").unwrap(), 50);
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    {
        let s = Store::open(&path).unwrap();
        put(&s, "t", b"k", b"v");
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(s.approximate_size().unwrap() > 0);
}

#[test]
fn relaxed_mode_still_commits_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RedbOptions {
        durability: shoal_storage::Durability::Relaxed,
        ..RedbOptions::default()
    };
    let s = Store::open_with(dir.path().join("x.redb"), opts).unwrap();
    put(&s, "t", b"k", b"v");
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..32, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        (0u8..32).prop_map(Op::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Transactions of random puts and deletes, some aborted, and scans inside and outside the
    /// transaction, give the same answers as a plain ordered map on both engines.
    #[test]
    fn engines_match_an_ordered_map(
        txs in prop::collection::vec((prop::collection::vec(op(), 1..12), any::<bool>()), 1..12),
        lo in 0u8..32, hi in 0u8..32, limit in 1usize..40, backward in any::<bool>(),
    ) {
        let range = KeyRange::half_open(vec![lo], vec![hi]);
        let dir = if backward { Direction::Backward } else { Direction::Forward };
        for (s, _d) in engines() {
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (ops, commit) in &txs {
                let mut local = model.clone();
                for o in ops {
                    match o {
                        Op::Put(k, v) => { local.insert(vec![*k], vec![*v]); }
                        Op::Delete(k) => { local.remove(&vec![*k]); }
                    }
                }
                let expect_in_tx: Vec<_> = scan_model(&local, lo, hi, dir, limit);
                let (ops2, commit2, range2) = (ops.clone(), *commit, range.clone());
                let r = s.transact(move |tx| {
                    for o in &ops2 {
                        match o {
                            Op::Put(k, v) => tx.put("t", &[*k], &[*v])?,
                            Op::Delete(k) => tx.delete("t", &[*k])?,
                        }
                    }
                    let seen = tx.scan("t", &range2, dir, limit)?;
                    if commit2 { Ok(seen) } else { Err(StorageError::Engine(format!("{seen:?}"))) }
                });
                match r {
                    Ok(seen) => {
                        prop_assert_eq!(seen, expect_in_tx);
                        model = local;
                    }
                    Err(TxError::Aborted(StorageError::Engine(seen))) => {
                        prop_assert!(!commit);
                        prop_assert_eq!(seen, format!("{:?}", expect_in_tx));
                    }
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            let got = s.scan("t", &range, dir, limit).unwrap();
            prop_assert_eq!(got, scan_model(&model, lo, hi, dir, limit));
        }
    }
}

fn scan_model(
    m: &BTreeMap<Vec<u8>, Vec<u8>>,
    lo: u8,
    hi: u8,
    dir: Direction,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    if lo >= hi {
        return vec![];
    }
    let it = m
        .range(vec![lo]..vec![hi])
        .map(|(k, v)| (k.clone(), v.clone()));
    match dir {
        Direction::Forward => it.take(limit).collect(),
        Direction::Backward => it.rev().take(limit).collect(),
    }
}

#[test]
fn for_each_key_lists_the_keys_a_scan_returns_and_stops_when_told() {
    for (s, _d) in engines() {
        s.transact(|tx| {
            // More than one page of the default implementation (4,096 keys).
            for i in 0u16..5000 {
                tx.put("t", &i.to_be_bytes(), b"v")?;
            }
            Ok::<_, StorageError>(())
        })
        .unwrap();
        let engine = s.engine();
        for range in [
            KeyRange::all(),
            KeyRange::half_open(100u16.to_be_bytes(), 4900u16.to_be_bytes()),
            KeyRange::prefix(&[3]),
            KeyRange::half_open(vec![9], vec![9]),
        ] {
            let mut listed = Vec::new();
            engine
                .for_each_key("t", &range, &mut |k| {
                    listed.push(k.to_vec());
                    true
                })
                .unwrap();
            let scanned: Vec<Vec<u8>> = s
                .scan("t", &range, Direction::Forward, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(listed, scanned, "{range:?}");
        }
        let mut seen = 0;
        engine
            .for_each_key("t", &KeyRange::all(), &mut |_| {
                seen += 1;
                seen < 10
            })
            .unwrap();
        assert_eq!(seen, 10, "stops at the first false");
        engine
            .for_each_key("never", &KeyRange::all(), &mut |_| panic!("no keys"))
            .unwrap();
    }
}
