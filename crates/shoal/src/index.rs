//! `shoal index verify|rebuild`: recompute a table's partition index from its items.

use std::path::PathBuf;

use anyhow::Context;
use shoal_storage::Store;
use shoal_sync::ids::IdKey;
use shoal_sync::index::PartitionIndex;

#[derive(clap::Args)]
pub struct Target {
    /// The store file.
    #[arg(long)]
    store: PathBuf,
    /// The table whose index to check.
    #[arg(long)]
    table: String,
    /// The cluster secret (hex) the ids are keyed with; the development key if absent.
    #[arg(long)]
    cluster_secret: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Recompute the index from the items and compare; exits with status 1 on any mismatch.
    Verify(Target),
    /// Rebuild the index from the items, one partition per transaction.
    Rebuild(Target),
}

fn open(t: &Target) -> anyhow::Result<(Store, std::sync::Arc<PartitionIndex>)> {
    let key = match &t.cluster_secret {
        Some(hex) => IdKey::derive(&hex::decode(hex).context("--cluster-secret must be hex")?),
        None => IdKey::insecure_default(),
    };
    let store = Store::open(&t.store)?;
    let index = PartitionIndex::open(&store, t.table.clone(), key)?;
    Ok((store, index))
}

pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Verify(t) => {
            let (store, index) = open(&t)?;
            let report = index.verify(&store)?;
            println!(
                "table {}: {} items in {} partitions checked, {} partitions mismatched, {} id trees mismatched, {} rebuilt at open (written since their last checkpoint)",
                t.table,
                report.items,
                report.partitions,
                report.mismatched.len(),
                report.id_tree_mismatched.len(),
                index.rebuilt_at_open()
            );
            if !report.is_clean() {
                println!(
                    "mismatched partitions: {:?}; mismatched id trees: {:?}",
                    report.mismatched, report.id_tree_mismatched
                );
                println!("run `shoal index rebuild` with the same arguments to repair");
                std::process::exit(1);
            }
            Ok(())
        }
        Action::Rebuild(t) => {
            let (store, index) = open(&t)?;
            let n = index.rebuild(&store)?;
            println!("table {}: index rebuilt from {n} items", t.table);
            Ok(())
        }
    }
}
