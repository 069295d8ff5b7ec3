//! The `shoal` binary: parses the command line and wires Shoal's library crates together. No
//! storage or replication logic lives here.

mod demo;
mod index;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Shoal: a replicated table store whose replicas find their differences and converge.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Demonstrate tables on the embedded engine: CRDT merges, ranges, tombstones, two replicas
    /// converging, durability across runs.
    Demo {
        /// Directory holding the demo's stores (created if missing; reused by later runs).
        #[arg(long, default_value = "./shoal-demo")]
        dir: PathBuf,
    },
    /// Check or rebuild a table's partition index in a store file (the node must be stopped).
    Index {
        #[command(subcommand)]
        action: index::Action,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo { dir } => demo::run(&dir),
        Command::Index { action } => index::run(action),
    }
}
