//! A replicated counter per user, in a table of your own, on three nodes in one process.
//!
//! Each node counts the visits it served in its own slot of the user's counter; a read merges
//! the replicas' copies slot by slot (the highest count each node reported) and adds the
//! slots up. Concurrent increments on different nodes never conflict, and every replica ends
//! with the same total, whatever order the writes reached it in.
//!
//! Run: `cargo run -p shoal-cluster --example counter`

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_cluster::local::LocalCluster;
use shoal_cluster::tables::TableOptions;
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::Max;
use shoal_table::{Entry, Schema};

/// One user's visits, per node that counted them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Visits {
    user: String,
    /// Node (hex id) → the visits it counted. Merged per node by keeping the larger count.
    per_node: BTreeMap<String, Max<u64>>,
}
shoal_table::crdt_struct!(Visits { per_node });

impl Visits {
    fn total(&self) -> u64 {
        self.per_node.values().map(|m| m.0).sum()
    }
}

impl Versioned for Visits {
    // Stored items start with this marker; a later version of the struct names this one as
    // `Previous` and migrates it.
    const VERSION_MARKER: &'static [u8] = b"Evs1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, ()> for Visits {
    fn partition_key(&self) -> &String {
        &self.user
    }
    fn sort_key(&self) -> &() {
        &()
    }
    fn is_tombstone(&self) -> bool {
        false
    }
}

/// The table: one counter per user.
struct VisitsTable;
impl Schema for VisitsTable {
    const TABLE_NAME: &'static str = "visits";
    type PartitionKey = String;
    type SortKey = ();
    type Entry = Visits;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Three nodes, three replicas of every partition.
    let cluster = LocalCluster::start(dir.path(), 3, 3).await?;
    let mut tables = Vec::new();
    for n in cluster.nodes() {
        // The one call: index, hook, sync registration, syncer, collector.
        let options = TableOptions {
            syncer: Some(shoal_cluster::node::SyncerConfig {
                start_delay: Duration::from_millis(200),
                ..Default::default()
            }),
            ..TableOptions::default()
        };
        tables.push(n.node.open_table::<VisitsTable>(&n.store, options).await?);
    }

    // Each node serves some of ada's and bob's visits, all at once.
    let visits = [("ada", [5u64, 3, 4]), ("bob", [1, 0, 2])];
    let mut writers = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let table = table.clone();
        writers.push(tokio::spawn(async move {
            for (user, per_node) in visits {
                for _ in 0..per_node[i] {
                    let me = table.node().id().to_string();
                    let user = user.to_string();
                    // Read this node's slot at quorum, count one more visit in it.
                    let mut current = table.get(&user, &()).await?.unwrap_or(Visits {
                        user: user.clone(),
                        per_node: BTreeMap::new(),
                    });
                    let mine = current.per_node.entry(me).or_default();
                    mine.0 += 1;
                    table.insert(&current).await?;
                }
            }
            Ok::<_, shoal_cluster::quorum::QuorumError>(())
        }));
    }
    for w in writers {
        w.await??;
    }

    for (user, per_node) in visits {
        let expected: u64 = per_node.iter().sum();
        let read = tables[2].get(&user.to_string(), &()).await?;
        let total = read.as_ref().map_or(0, Visits::total);
        println!("{user}: {total} visits read at quorum from node 3 (expected {expected})");
        assert_eq!(total, expected);
    }

    // Every replica holds the same counters: writes reached a quorum at once, and the
    // others get them in the background.
    for attempt in 0.. {
        let locals: Vec<u64> = tables
            .iter()
            .map(|t| {
                t.local()
                    .get(&"ada".to_string(), &())
                    .ok()
                    .flatten()
                    .map_or(0, |v| v.total())
            })
            .collect();
        if locals.iter().all(|&n| n == 12) {
            println!("ada's counter on each node's own copy: {locals:?}");
            break;
        }
        assert!(attempt < 100, "replicas did not converge: {locals:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.close().await;
    Ok(())
}
