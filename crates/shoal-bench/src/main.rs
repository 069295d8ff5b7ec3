//! Shoal's benchmarks. Each subcommand prints one JSON object per line per configuration, so
//! figures can be compared across machines and commits.

mod campaign;
mod cluster;
mod conformance;
mod insert;
mod k2v_http;
mod load;
mod negentropy_baseline;
mod overload;
mod peers;
mod procs;
mod scale;
mod storage;
mod sync;
mod syncload;

use clap::{Parser, Subcommand};

/// Shoal benchmarks (run with --release).
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Durable write throughput of the storage engine with concurrent writers (group commit).
    Storage(storage::Args),
    /// Durable table inserts per second, with and without the partition index.
    Insert(insert::Args),
    /// Reconciliation of two on-disk replicas of one partition: Shoal vs the seed vs negentropy.
    Sync(sync::Args),
    /// The real-process fault campaign (5 nodes, load, faults, checks); see
    /// scripts/fault-campaign.sh, which prepares what it needs (root).
    Campaign(campaign::Args),
    /// Three-node Shoal vs Garage vs etcd on loopback: writes, reads, catch-up, repair (root:
    /// iptables byte counters). Prepare the peers with bench/prepare-peers.sh.
    Cluster(cluster::Args),
    /// More writes than a node commits, through one node of three (InsertBatch of 1,000
    /// items from 4, 16 and 64 clients): every answer 2xx or 503, no live node declared down.
    Overload(overload::Args),
    /// The K2V conformance suite against Shoal and Garage side by side (bench/prepare-peers.sh
    /// builds Garage).
    Conformance(conformance::Args),
    /// The syncer's share of a node's CPU under steady durable writes, one node cut off every
    /// 30 s (root: iptables).
    Syncload(syncload::Args),
    /// N real nodes as `shoal dev` configures them: time to form, idle RPC bytes per node,
    /// memory per node, failure and recovery detection, catch-up (root: iptables).
    Scale(scale::ScaleArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Storage(args) => storage::run(&args),
        Command::Sync(args) => sync::run(&args),
        Command::Insert(args) => insert::run(&args),
        Command::Campaign(args) => campaign::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Overload(args) => overload::run(&args),
        Command::Conformance(args) => conformance::run(&args),
        Command::Syncload(args) => syncload::run(&args),
        Command::Scale(args) => scale::run(&args),
    }
}
