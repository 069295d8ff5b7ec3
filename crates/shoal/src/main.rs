//! The `shoal` binary: parses the command line and wires Shoal's library crates together. No
//! storage or replication logic lives here.

mod cli;
mod client;
mod config;
mod demo;
mod dev;
mod index;
mod server;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_cluster::layout::NodeRole;

/// Shoal: a replicated table store whose replicas find their differences and converge.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log JSON lines (also: SHOAL_LOG_FORMAT=json); the level comes from RUST_LOG.
    #[arg(long, global = true)]
    log_json: bool,
    /// The node's configuration file (for `server` and the operator commands).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Server {
        /// Stop when standard input closes (used by `shoal dev`).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
    /// Start a local cluster of N nodes on 127.0.0.1 and apply a layout.
    Dev {
        /// Where the nodes keep their data and configuration.
        #[arg(long, default_value = "./shoal-dev")]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// RPC port of the first node; the others follow.
        #[arg(long, default_value_t = 3901)]
        base_port: u16,
        /// Replicas of each partition, 1 to 7 and at most the node count [default: 3, or the
        /// node count if smaller]. Fixed when the cluster is first created.
        #[arg(long, value_name = "R")]
        replication_factor: Option<usize>,
        /// What reads and writes wait for on every node: consistent, degraded or dangerous.
        #[arg(long, default_value = "consistent")]
        consistency_mode: shoal_cluster::quorum::ConsistencyMode,
        /// Stop when standard input closes (for tests).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
    /// The cluster as the node sees it: nodes, up or down, zones, layout version.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Write a value to the built-in `kv` table, at quorum.
    Put {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// The value.
        value: String,
        /// Write this many items, the sort key suffixed with a counter.
        #[arg(long, default_value_t = 1)]
        copies: u32,
    },
    /// Read a value of the built-in `kv` table, at quorum.
    Get {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
    },
    /// This node's 256 partition digests of a table, as JSON.
    #[command(hide = true)]
    Digests {
        /// The table.
        #[arg(long, default_value = "kv")]
        table: String,
    },
    /// The K2V items this node stores itself under one partition key of a bucket, as JSON
    /// (read locally, no quorum: for checking each replica).
    #[command(hide = true)]
    LocalItems {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The partition key.
        #[arg(long)]
        pk: String,
    },
    /// This node's id.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Anti-entropy progress.
    Sync {
        #[command(subcommand)]
        action: SyncAction,
    },
    /// Sync every partition this node stores with its other replicas now, and follow it to
    /// the end with a progress bar.
    Repair {
        /// Only this table (default: every table).
        #[arg(long)]
        table: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Access keys of the K2V API.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Buckets of the K2V API.
    Bucket {
        #[command(subcommand)]
        action: BucketAction,
    },
    /// Stage, show and apply layout changes.
    Layout {
        #[command(subcommand)]
        action: LayoutAction,
    },
    /// Demonstrate tables on the embedded engine: CRDT merges, ranges, tombstones, two replicas
    /// converging through one sync session, durability across runs.
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
    /// The configuration file: an annotated example of every key, or a check of a file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print an annotated shoal.toml: every key, its meaning, its default.
    Example,
    /// Check the file given with -c: every key known, every value valid.
    Check,
}

#[derive(Subcommand)]
enum SyncAction {
    /// Per table: partitions queued and in progress, items and bytes exchanged, an ETA.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create an access key for the K2V API; prints its id and secret.
    Create {
        /// A name for the key.
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the access keys.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BucketAction {
    /// Create a bucket.
    Create {
        /// The bucket's name (3–63 of a-z, 0-9, '-', '.').
        name: String,
    },
    /// Allow an access key to read and/or write a bucket (neither flag: revoke).
    Allow {
        /// The bucket.
        name: String,
        /// The access key id.
        #[arg(long)]
        key: String,
        /// Allow reads.
        #[arg(long)]
        read: bool,
        /// Allow writes.
        #[arg(long)]
        write: bool,
    },
    /// List the buckets and their grants.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Print `id@address`.
    Id,
}

#[derive(Subcommand)]
enum LayoutAction {
    /// The applied layout, the staged changes, and how many partitions applying them moves.
    Show {
        /// Print JSON (with every partition's nodes).
        #[arg(long)]
        json: bool,
    },
    /// Stage a role for a node (id or id prefix).
    Assign {
        /// The node.
        node: String,
        /// Its zone.
        #[arg(long)]
        zone: String,
        /// Its relative capacity.
        #[arg(long, conflicts_with = "gateway")]
        capacity: Option<u64>,
        /// A gateway: stores nothing.
        #[arg(long)]
        gateway: bool,
    },
    /// Stage the removal of a node.
    Remove {
        /// The node.
        node: String,
    },
    /// Apply the staged changes as the next layout version.
    Apply,
    /// Declare a node that left the layout lost for good (its disk is gone): deleted items'
    /// tombstones stop waiting for it to hand off its copies, and its sync sessions are refused
    /// from now on, so wipe its data before it ever rejoins.
    Forget {
        /// The node (id or id prefix), removed from the layout and applied first.
        node: String,
    },
}

fn config(path: &Option<PathBuf>) -> anyhow::Result<config::Config> {
    let path = path
        .as_ref()
        .context("this command needs the node's configuration: -c PATH/shoal.toml")?;
    config::Config::load(path)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Level from RUST_LOG (default warn); JSON lines with --log-json or SHOAL_LOG_FORMAT=json.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let json_logs = cli.log_json
        || std::env::var("SHOAL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    match cli.command {
        Command::Demo { dir } => demo::run(&dir),
        Command::Index { action } => index::run(action),
        Command::Config {
            action: ConfigAction::Example,
        } => {
            print!("{}", config::example());
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let c = config(&cli.config)?;
            println!(
                "ok: {}: every key known, every value valid; data in {}, RPC on {}, {} bootstrap peers, replication factor {}",
                cli.config
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                c.data_dir.display(),
                c.rpc_bind_addr,
                c.bootstrap_peers.len(),
                c.replication_factor
            );
            Ok(())
        }
        Command::Server { exit_with_stdin } => {
            let c = config(&cli.config)?;
            rt()?.block_on(server::run(c, exit_with_stdin))
        }
        Command::Dev {
            dir,
            nodes,
            base_port,
            replication_factor,
            consistency_mode,
            exit_with_stdin,
        } => rt()?.block_on(dev::run(dev::DevOptions {
            dir,
            nodes,
            base_port,
            replication_factor: replication_factor.unwrap_or(nodes.min(3)),
            consistency_mode,
            exit_with_stdin,
        })),
        Command::Status { json } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::status(&c, json))
        }
        Command::Node {
            action: NodeAction::Id,
        } => cli::node_id(&config(&cli.config)?),
        Command::Put {
            pk,
            sk,
            value,
            copies,
        } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::put(&c, &pk, &sk, Some(&value), copies))
        }
        Command::Get { pk, sk } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::get(&c, &pk, &sk))
        }
        Command::LocalItems { bucket, pk } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::local_items(&c, &bucket, &pk))
        }
        Command::Digests { table } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::digests(&c, &table))
        }
        Command::Sync {
            action: SyncAction::Status { json },
        } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::sync_status(&c, json))
        }
        Command::Repair { table, timeout } => {
            let c = config(&cli.config)?;
            rt()?.block_on(cli::repair(&c, table.as_deref(), timeout))
        }
        Command::Key { action } => {
            let c = config(&cli.config)?;
            match action {
                KeyAction::Create { name, json } => {
                    rt()?.block_on(cli::key_create(&c, &name, json))
                }
                KeyAction::List { json } => rt()?.block_on(cli::key_list(&c, json)),
            }
        }
        Command::Bucket { action } => {
            let c = config(&cli.config)?;
            match action {
                BucketAction::Create { name } => rt()?.block_on(cli::bucket_create(&c, &name)),
                BucketAction::Allow {
                    name,
                    key,
                    read,
                    write,
                } => rt()?.block_on(cli::bucket_allow(&c, &name, &key, read, write)),
                BucketAction::List { json } => rt()?.block_on(cli::bucket_list(&c, json)),
            }
        }
        Command::Layout { action } => {
            let c = config(&cli.config)?;
            let rt = rt()?;
            match action {
                LayoutAction::Show { json } => rt.block_on(cli::layout_show(&c, json)),
                LayoutAction::Assign {
                    node,
                    zone,
                    capacity,
                    gateway,
                } => {
                    let role = NodeRole {
                        zone,
                        capacity: if gateway {
                            None
                        } else {
                            Some(capacity.unwrap_or(1))
                        },
                    };
                    rt.block_on(cli::layout_stage(&c, &node, Some(role)))
                }
                LayoutAction::Remove { node } => rt.block_on(cli::layout_stage(&c, &node, None)),
                LayoutAction::Apply => rt.block_on(cli::layout_apply(&c)),
                LayoutAction::Forget { node } => rt.block_on(cli::layout_forget(&c, &node)),
            }
        }
    }
}
