//! Garage's own K2V client (`k2v-client`, from crates.io) drives a 3-node Shoal cluster started
//! by `shoal dev`, with the credentials `shoal dev` wrote to `k2v.env`: every operation the
//! client offers, siblings from concurrent writes, a causal overwrite, a delete, batches, polls,
//! a wrongly signed request that is refused and writes nothing, and keys that need escaping
//! (slashes, spaces, `+ & = ? # %`, non-ASCII) in every operation.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{base_port, start_dev, stop};
use k2v_client::{
    BatchDeleteOp, BatchInsertOp, BatchReadOp, Filter, K2vClient, K2vClientConfig, K2vValue,
    PollRangeFilter,
};

fn env(dir: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("k2v.env")).expect("shoal dev writes k2v.env");
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn client(env: &HashMap<String, String>, secret: Option<&str>) -> K2vClient {
    K2vClient::new(K2vClientConfig {
        endpoint: env["K2V_ENDPOINT"].clone(),
        region: env["AWS_REGION"].clone(),
        aws_access_key_id: env["AWS_ACCESS_KEY_ID"].clone(),
        aws_secret_access_key: secret
            .map(String::from)
            .unwrap_or_else(|| env["AWS_SECRET_ACCESS_KEY"].clone()),
        bucket: env["K2V_BUCKET"].clone(),
        user_agent: None,
    })
    .unwrap()
}

fn value(v: &[u8]) -> K2vValue {
    K2vValue::Value(v.to_vec())
}

#[test]
fn garage_k2v_client_against_a_three_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, out) = start_dev(dir.path(), base_port(15000), 3);
    assert!(out.contains("ready in"), "{out}");
    let env = env(dir.path());
    for k in [
        "K2V_ENDPOINT",
        "K2V_BUCKET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        assert!(env.contains_key(k), "k2v.env lacks {k}: {env:?}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client(&env, None);

        // InsertItem and ReadItem.
        c.insert_item("mail", "inbox", b"v1".to_vec(), None)
            .await
            .unwrap();
        let r = c.read_item("mail", "inbox").await.unwrap();
        assert_eq!(r.value, vec![value(b"v1")]);
        let t1 = r.causality.clone();

        // A write without the token is concurrent: two siblings come back (as JSON).
        c.insert_item("mail", "inbox", b"v2".to_vec(), None)
            .await
            .unwrap();
        let r = c.read_item("mail", "inbox").await.unwrap();
        assert_eq!(r.value.len(), 2, "siblings: {:?}", r.value);
        assert!(r.value.contains(&value(b"v1")) && r.value.contains(&value(b"v2")));

        // A write with the token of that read supersedes both.
        c.insert_item("mail", "inbox", b"v3".to_vec(), Some(r.causality.clone()))
            .await
            .unwrap();
        let r = c.read_item("mail", "inbox").await.unwrap();
        assert_eq!(r.value, vec![value(b"v3")]);

        // A write with an old token supersedes only what that token saw.
        c.insert_item("mail", "inbox", b"v4".to_vec(), Some(t1))
            .await
            .unwrap();
        let r = c.read_item("mail", "inbox").await.unwrap();
        assert_eq!(r.value.len(), 2, "v3 and v4 are concurrent: {:?}", r.value);

        // DeleteItem leaves a tombstone.
        c.delete_item("mail", "inbox", r.causality.clone())
            .await
            .unwrap();
        let r = c.read_item("mail", "inbox").await.unwrap();
        assert_eq!(r.value, vec![K2vValue::Tombstone]);

        // A missing item is NotFound.
        assert!(matches!(
            c.read_item("mail", "never-written").await,
            Err(k2v_client::Error::NotFound)
        ));

        // InsertBatch over two partition keys.
        let sks: Vec<String> = (0..25).map(|i| format!("msg{i:03}")).collect();
        let mut ops: Vec<BatchInsertOp> = sks
            .iter()
            .map(|sk| BatchInsertOp {
                partition_key: "box:a",
                sort_key: sk,
                causality: None,
                value: value(sk.as_bytes()),
            })
            .collect();
        ops.push(BatchInsertOp {
            partition_key: "box:b",
            sort_key: "only",
            causality: None,
            value: value(b"b"),
        });
        c.insert_batch(&ops).await.unwrap();

        // ReadBatch: a page with a limit, a prefix, a single item, reverse order.
        let res = c
            .read_batch(&[
                BatchReadOp {
                    partition_key: "box:a",
                    filter: Filter {
                        limit: Some(10),
                        ..Filter::default()
                    },
                    ..BatchReadOp::default()
                },
                BatchReadOp {
                    partition_key: "box:a",
                    filter: Filter {
                        prefix: Some("msg01"),
                        ..Filter::default()
                    },
                    ..BatchReadOp::default()
                },
                BatchReadOp {
                    partition_key: "box:b",
                    filter: Filter {
                        start: Some("only"),
                        ..Filter::default()
                    },
                    single_item: true,
                    ..BatchReadOp::default()
                },
                BatchReadOp {
                    partition_key: "box:a",
                    filter: Filter {
                        limit: Some(3),
                        reverse: true,
                        ..Filter::default()
                    },
                    ..BatchReadOp::default()
                },
            ])
            .await
            .unwrap();
        assert_eq!(res[0].items.len(), 10);
        assert_eq!(res[0].next_start.as_deref(), Some("msg010"));
        assert_eq!(res[1].items.len(), 10, "msg010..msg019");
        assert!(res[1].items.keys().all(|k| k.starts_with("msg01")));
        assert_eq!(res[2].items["only"].value, vec![value(b"b")]);
        assert_eq!(
            res[3].items.keys().cloned().collect::<Vec<_>>(),
            vec!["msg022", "msg023", "msg024"]
        );
        assert_eq!(res[3].next_start.as_deref(), Some("msg021"));

        // ReadIndex: partition keys with their counts (kept asynchronously: wait for them).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let idx = c.read_index(Filter::default()).await.unwrap();
            let a = idx.items.get("box:a").map(|i| i.entries);
            let b = idx.items.get("box:b").map(|i| i.entries);
            if a == Some(25) && b == Some(1) {
                assert_eq!(idx.items["box:a"].values, 25);
                assert!(
                    !idx.items.contains_key("mail"),
                    "a tombstone is not an entry"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "index never showed the batch: {:?}",
                idx.items
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let idx = c
            .read_index(Filter {
                prefix: Some("box:b"),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(idx.items.keys().cloned().collect::<Vec<_>>(), vec!["box:b"]);

        // PollItem: times out without a write, returns the new value after one.
        let r = c.read_item("box:b", "only").await.unwrap();
        let started = Instant::now();
        let none = c
            .poll_item(
                "box:b",
                "only",
                r.causality.clone(),
                Some(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        assert!(none.is_none() && started.elapsed() >= Duration::from_millis(900));
        let poller = {
            let c = client(&env, None);
            let token = r.causality.clone();
            tokio::spawn(async move {
                c.poll_item("box:b", "only", token, Some(Duration::from_secs(20)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.insert_item("box:b", "only", b"b2".to_vec(), Some(r.causality))
            .await
            .unwrap();
        let polled = poller
            .await
            .unwrap()
            .unwrap()
            .expect("the poll sees the write");
        assert_eq!(polled.value, vec![value(b"b2")]);

        // PollRange: everything at first, then only what changed after the marker.
        let (items, marker) = c
            .poll_range("box:a", None, None, Some(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the first poll returns the range at once");
        assert_eq!(items.len(), 25);
        let poller = {
            let c = client(&env, None);
            let marker = marker.clone();
            tokio::spawn(async move {
                c.poll_range(
                    "box:a",
                    Some(PollRangeFilter {
                        prefix: Some("msg"),
                        ..PollRangeFilter::default()
                    }),
                    Some(&marker),
                    Some(Duration::from_secs(20)),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.insert_item("box:a", "msg007", b"changed".to_vec(), None)
            .await
            .unwrap();
        let (changed, _) = poller
            .await
            .unwrap()
            .unwrap()
            .expect("the range poll sees the write");
        assert_eq!(changed.keys().cloned().collect::<Vec<_>>(), vec!["msg007"]);

        // DeleteBatch: a whole partition key, and a single item.
        let deleted = c
            .delete_batch(&[
                BatchDeleteOp {
                    prefix: Some("msg00"),
                    ..BatchDeleteOp::new("box:a")
                },
                BatchDeleteOp {
                    start: Some("only"),
                    single_item: true,
                    ..BatchDeleteOp::new("box:b")
                },
            ])
            .await
            .unwrap();
        assert_eq!(deleted, vec![10, 1]);
        let res = c
            .read_batch(&[BatchReadOp {
                partition_key: "box:a",
                ..BatchReadOp::default()
            }])
            .await
            .unwrap();
        assert_eq!(res[0].items.len(), 15, "msg010..msg024 remain");

        // A wrong secret: refused (403) and nothing written.
        let forger = client(&env, Some(&"0".repeat(64)));
        match forger
            .insert_item("forged", "x", b"evil".to_vec(), None)
            .await
        {
            Err(k2v_client::Error::Remote(status, ..)) => assert_eq!(status.as_u16(), 403),
            other => panic!("a wrongly signed write must be refused: {other:?}"),
        }
        assert!(matches!(
            c.read_item("forged", "x").await,
            Err(k2v_client::Error::NotFound)
        ));

        // Keys that need escaping, in paths, queries and JSON alike: written one by one and
        // in a batch, read one by one, in a batch and from the index.
        let hard = k2v_conformance::cases::HARD_KEYS;
        for (i, k) in hard.iter().enumerate() {
            let pk = format!("hard:{k}");
            c.insert_item(&pk, k, format!("one {i}").into_bytes(), None)
                .await
                .unwrap_or_else(|e| panic!("InsertItem {k:?}: {e:?}"));
            let r = c
                .read_item(&pk, k)
                .await
                .unwrap_or_else(|e| panic!("ReadItem {k:?}: {e:?}"));
            assert_eq!(r.value, vec![value(format!("one {i}").as_bytes())], "{k:?}");
        }
        let ops: Vec<BatchInsertOp> = hard
            .iter()
            .map(|k| BatchInsertOp {
                partition_key: "hard:batch",
                sort_key: k,
                causality: None,
                value: value(k.as_bytes()),
            })
            .collect();
        c.insert_batch(&ops).await.unwrap();
        let res = c
            .read_batch(&[BatchReadOp {
                partition_key: "hard:batch",
                ..BatchReadOp::default()
            }])
            .await
            .unwrap();
        let mut sorted: Vec<&str> = hard.to_vec();
        sorted.dedup();
        sorted.sort();
        let got: Vec<&str> = res[0].items.keys().map(String::as_str).collect();
        assert_eq!(got, sorted);
        for k in hard {
            assert_eq!(res[0].items[*k].value, vec![value(k.as_bytes())]);
        }
    });
    stop(dev);
}
