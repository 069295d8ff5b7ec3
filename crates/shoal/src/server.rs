//! `shoal server`: run one node until interrupted.

use std::time::Duration;

use anyhow::Context;
use shoal_cluster::layout::Layout;
use shoal_cluster::node::{Node, NodeConfig, SyncerConfig};
use shoal_net::{NodeKey, TcpTransport};
use shoal_storage::Store;

use crate::config::Config;

/// Starts the node described by `config` and serves until Ctrl-C, SIGTERM, or (with
/// `exit_with_stdin`) the end of standard input, which is how `shoal dev` ties its nodes' lives
/// to its own.
pub async fn run(config: Config, exit_with_stdin: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let key = NodeKey::load_or_create(&config.data_dir)?;
    let store = Store::open(config.data_dir.join("db.redb"))?;
    let node_config = NodeConfig {
        public_addr: config.public_addr().to_string(),
        bootstrap: config.bootstrap_peers.clone(),
        heartbeat: Duration::from_millis(config.heartbeat_ms),
        system_store: Some(store.clone()),
        consistency: config.consistency_mode,
        ..NodeConfig::default()
    };
    // Bound to one address (not all of them): dial from it too, so each node shows one
    // address to its peers and to firewalls.
    let transport = match config.rpc_bind_addr.parse::<std::net::SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() => TcpTransport::from_source(a.ip()),
        _ => TcpTransport::default(),
    };
    let node = Node::start(
        key,
        config.secret(),
        transport,
        &config.rpc_bind_addr,
        node_config,
        Layout::empty(config.replication_factor),
    )
    .await
    .with_context(|| format!("listening on {}", config.rpc_bind_addr))?;
    let syncer = SyncerConfig {
        start_delay: Duration::from_millis(config.sync_start_delay_ms),
        scan_interval: Duration::from_secs(config.sync_interval_secs),
        ..SyncerConfig::default()
    };
    // The operator's `kv` table: declared in one call (index, hook, sync, syncer, collector).
    node.open_table::<shoal_cluster::kv::KvTable>(
        &store,
        shoal_cluster::tables::TableOptions {
            syncer: Some(syncer.clone()),
            ..Default::default()
        },
    )
    .await
    .context("opening the kv table")?;
    let api = shoal_api::Api::install(
        &node,
        &store,
        shoal_sync::ids::IdKey::derive(config.secret().as_bytes()),
        shoal_api::ApiConfig {
            region: config.api_region.clone(),
            max_body_bytes: config.api_max_body_bytes,
            max_requests_in_flight: config.api_max_requests_in_flight,
            max_writes_in_flight: config.api_max_writes_in_flight,
            write_admission_wait: Duration::from_millis(config.api_write_wait_ms),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("installing the K2V API: {e}"))?;
    for table in ["k2v", "keys", "buckets"] {
        node.start_syncer(table, syncer.clone())?;
    }
    // Tombstones of the K2V table are collected once every replica holds them.
    node.start_gc("k2v", shoal_cluster::node::GcConfig::default())?;
    let _admin_server = match &config.admin_bind_addr {
        Some(bind) => {
            let registry = shoal_api::metrics::registry(&node, &store, api.metrics());
            let token = config.admin_token.clone().unwrap_or_default();
            let (addr, task) = shoal_api::admin::serve(api.clone(), registry, token, bind)
                .await
                .with_context(|| format!("admin endpoint listening on {bind}"))?;
            tracing::info!(%addr, "admin endpoint listening");
            println!("admin endpoint on http://{addr} (metrics at /metrics)");
            Some(task)
        }
        None => None,
    };
    let _api_server = match &config.api_bind_addr {
        Some(bind) => {
            let (addr, task) = shoal_api::serve_http(api.clone(), bind)
                .await
                .with_context(|| format!("K2V API listening on {bind}"))?;
            tracing::info!(%addr, "K2V API listening");
            println!("K2V API on http://{addr}");
            Some(task)
        }
        None => None,
    };
    std::fs::write(
        config.data_dir.join("shoal.pid"),
        std::process::id().to_string(),
    )?;
    tracing::info!(id = %node.id(), addr = %config.public_addr(), "shoal node running");
    println!("node {} listening on {}", node.id(), config.public_addr());

    let stdin_closed = stdin_closed(exit_with_stdin);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
    tracing::info!("shutting down");
    // Every table's index heads are persisted, so the next start rebuilds nothing.
    node.close().await;
    Ok(())
}

/// Completes when standard input reaches its end, if `enabled`; never otherwise. A process
/// started by another (`shoal dev`, tests) stops when its parent closes the pipe or dies.
pub async fn stdin_closed(enabled: bool) {
    use tokio::io::AsyncReadExt;
    if !enabled {
        return std::future::pending().await;
    }
    let mut buf = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
