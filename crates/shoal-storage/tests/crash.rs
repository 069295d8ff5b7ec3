//! Kill -9 a writing process at random moments: every transaction it reported committed is in
//! the reopened store, whole (all of its keys or none).
//!
//! The test binary runs itself as the child (`crash_child`, inert unless `SHOAL_CRASH_DIR` is
//! set), so the writer is a real separate process using the real engine.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use shoal_storage::{Direction, KeyRange, StorageError, Store};
use shoal_testkit::child::{WriterChild, ack};

const KEYS_PER_TX: usize = 3;

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("SHOAL_CRASH_DIR") else {
        return; // run as a normal test: nothing to do
    };
    let round: u32 = std::env::var("SHOAL_CRASH_ROUND").unwrap().parse().unwrap();
    let store = Store::open(std::path::Path::new(&dir).join("crash.redb")).unwrap();
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|sc| {
        for w in 0..8u32 {
            let (store, out) = (store.clone(), &out);
            sc.spawn(move || {
                for i in 0u32.. {
                    let tx_id = format!("{round:03}-{w:02}-{i:07}");
                    let id = tx_id.clone();
                    store
                        .transact(move |tx| {
                            for k in 0..KEYS_PER_TX {
                                tx.put("items", format!("{id}/{k}").as_bytes(), id.as_bytes())?;
                            }
                            Ok::<_, StorageError>(())
                        })
                        .unwrap();
                    ack(&mut *out.lock().unwrap(), &tx_id);
                }
            });
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let rounds = 25;
    let mut total_acked = 0usize;
    for round in 0..rounds {
        let child = WriterChild::spawn(
            "crash_child",
            &[
                ("SHOAL_CRASH_DIR", dir.path().display().to_string()),
                ("SHOAL_CRASH_ROUND", round.to_string()),
            ],
        );
        // Let the child open the store and write for a random while, then kill it mid-write.
        let acked = child.kill_after(Duration::from_millis(rng.random_range(30..400)));

        let store = Store::open(dir.path().join("crash.redb"))
            .unwrap_or_else(|e| panic!("round {round}: store must reopen after SIGKILL: {e}"));
        for id in &acked {
            for k in 0..KEYS_PER_TX {
                let v = store.get("items", format!("{id}/{k}").as_bytes()).unwrap();
                assert_eq!(
                    v.as_deref(),
                    Some(id.as_bytes()),
                    "round {round}: acknowledged transaction {id} lost key {k}"
                );
            }
        }
        // Atomicity: every transaction present is present whole, acknowledged or not.
        let prefix = format!("{round:03}-");
        let rows = store
            .scan(
                "items",
                &KeyRange::prefix(prefix.as_bytes()),
                Direction::Forward,
                usize::MAX,
            )
            .unwrap();
        assert_eq!(
            rows.len() % KEYS_PER_TX,
            0,
            "round {round}: a torn transaction"
        );
        assert!(rows.len() / KEYS_PER_TX >= acked.len());
        total_acked += acked.len();
    }
    assert!(
        total_acked > rounds,
        "the child must have acknowledged writes: {total_acked}"
    );
    eprintln!("{rounds} SIGKILL rounds, {total_acked} acknowledged transactions, none lost");
}
