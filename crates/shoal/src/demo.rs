//! `shoal demo`: Shoal's tables at work on the embedded engine, before the cluster exists.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoal_storage::Store;
use shoal_sync::driver::sync_pair;
use shoal_sync::ids::IdKey;
use shoal_sync::index::{PartitionIndex, partition_of};
use shoal_sync::replica::TableReplica;
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Flag, Lww, NodeId, Stamp};
use shoal_table::{Entry, RangeQuery, Schema, Table};

/// A note in a notebook: notebook is the partition key, title the sort key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    notebook: String,
    title: String,
    text: Lww<String>,
    deleted: Flag,
}
shoal_table::crdt_struct!(Note { text, deleted });

impl Versioned for Note {
    const VERSION_MARKER: &'static [u8] = b"Dnote1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, String> for Note {
    fn partition_key(&self) -> &String {
        &self.notebook
    }
    fn sort_key(&self) -> &String {
        &self.title
    }
    fn is_tombstone(&self) -> bool {
        self.deleted.is_set()
    }
}

struct Notes;
impl Schema for Notes {
    const TABLE_NAME: &'static str = "notes";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = Note;
}

fn note(title: &str, time: u64, node: u8, text: &str) -> Note {
    Note {
        notebook: "demo".into(),
        title: title.into(),
        text: Lww::new(Stamp::new(time, NodeId([node; 32])), text.into()),
        deleted: Flag::unset(),
    }
}

fn show(label: &str, t: &Table<Notes>) -> anyhow::Result<Vec<String>> {
    let rows: Vec<String> = t
        .range(&"demo".into(), &RangeQuery::default())?
        .into_iter()
        .map(|n| {
            if n.deleted.is_set() {
                format!("{} = <deleted>", n.title)
            } else {
                format!("{} = {:?}", n.title, n.text.get())
            }
        })
        .collect();
    println!("  {label}: {}", rows.join(", "));
    Ok(rows)
}

pub fn run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let open = |name: &str| -> anyhow::Result<(Table<Notes>, Arc<PartitionIndex>)> {
        let store = Store::open(dir.join(name))?;
        let index = PartitionIndex::open(&store, Notes::TABLE_NAME, IdKey::insecure_default())?;
        Ok((Table::new(store).with_hook(index.clone()), index))
    };
    let (a, index_a) = open("replica-a.redb")?;
    let (b, index_b) = open("replica-b.redb")?;
    let runs = a
        .get(&"demo".into(), &"runs".into())?
        .map_or(0, |n| n.text.get().parse::<u64>().unwrap_or(0))
        + 1;
    println!(
        "Shoal demo: two replicas of a table, each in its own redb file under {}",
        dir.display()
    );
    println!("(run {runs}: the stores persist across runs, durably committed)\n");

    // Each run uses later timestamps, so its writes win over the previous run's.
    let t0 = runs * 100;
    println!("1. Concurrent writes reach the replicas in different orders:");
    a.insert(&note("groceries", t0 + 1, 1, "eggs"))?;
    a.insert(&note("todo", t0 + 3, 1, "write the sync layer"))?;
    b.insert(&note("todo", t0 + 2, 2, "read the seed"))?;
    b.insert(&note("groceries", t0 + 4, 2, "eggs, milk"))?;
    b.delete(&Note {
        deleted: Flag::set(),
        ..note("stale", t0 + 5, 2, "")
    })?;
    a.insert(&note("stale", t0 + 1, 1, "an old idea"))?;
    a.insert(&note("runs", t0 + 6, 1, &runs.to_string()))?;
    show("replica A", &a)?;
    show("replica B", &b)?;

    println!(
        "\n2. One anti-entropy session between the replicas (digests, sketch, items both ways):"
    );
    let p = partition_of(&shoal_table::engine_key(
        &"demo".to_string(),
        &String::new(),
    ));
    let t = sync_pair(
        &TableReplica::new(a.clone(), index_a.clone(), p),
        &TableReplica::new(b.clone(), index_b.clone(), p),
    )?;
    let ra = show("replica A", &a)?;
    let rb = show("replica B", &b)?;
    println!(
        "  {} messages, {} round trips, {} bytes of metadata, {} items sent A->B, {} items sent B->A",
        t.messages,
        t.round_trips(),
        t.meta_bytes(),
        t.a.items_sent,
        t.b.items_sent
    );
    anyhow::ensure!(ra == rb, "replicas diverged after the session");
    println!(
        "  converged: both replicas hold identical items (last writer wins per note; the deletion stays)"
    );
    let again = sync_pair(
        &TableReplica::new(a.clone(), index_a.clone(), p),
        &TableReplica::new(b.clone(), index_b.clone(), p),
    )?;
    println!(
        "  a second session finds them equal: {} round trip, {} bytes",
        again.round_trips(),
        again.meta_bytes()
    );
    println!("\n3. A range scan within the partition, titles in reverse order, limit 2:");
    let top: Vec<String> = a
        .range(
            &"demo".into(),
            &RangeQuery {
                limit: 2,
                reverse: true,
                ..RangeQuery::default()
            },
        )?
        .into_iter()
        .map(|n| n.title)
        .collect();
    println!("  {}", top.join(", "));
    println!(
        "\nStore files: {} bytes (A), {} bytes (B). Run `shoal demo` again: the data is still there.",
        a.store().approximate_size()?,
        b.store().approximate_size()?
    );
    Ok(())
}
