//! `shoal dev`: a local cluster of real `shoal server` processes on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_cluster::layout::NodeRole;
use shoal_cluster::node::{ClusterStatus, LayoutReport};
use shoal_cluster::quorum::ConsistencyMode;

use crate::client::AdminClient;
use crate::config::Config;

/// A random 32-byte hex secret kept in `dir/name`, created on first use.
fn secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(_) => {
            let bytes: [u8; 32] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&path, &hex).with_context(|| format!("writing {}", path.display()))?;
            Ok(hex)
        }
    }
}

/// What `shoal dev` starts.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where the nodes keep their data and configuration.
    pub dir: PathBuf,
    /// How many nodes.
    pub nodes: usize,
    /// RPC port of the first node.
    pub base_port: u16,
    /// Replicas of each partition.
    pub replication_factor: usize,
    /// Every node's consistency mode.
    pub consistency_mode: ConsistencyMode,
    /// Stop when standard input closes.
    pub exit_with_stdin: bool,
}

/// Writes each node's configuration, starts the nodes, applies a layout, and waits.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let DevOptions {
        dir,
        nodes,
        base_port,
        replication_factor,
        consistency_mode,
        exit_with_stdin,
    } = options;
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !(1..=crate::config::MAX_REPLICATION_FACTOR).contains(&replication_factor) {
        bail!(
            "--replication-factor {replication_factor} is out of range: from 1 to {}",
            crate::config::MAX_REPLICATION_FACTOR
        );
    }
    if replication_factor > nodes {
        bail!(
            "--replication-factor {replication_factor} needs at least {replication_factor} nodes: \
             add --nodes {replication_factor}"
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let admin_token = secret(&dir, "admin_token")?;
    let secret = secret(&dir, "rpc_secret")?;
    let addr = |k: usize| format!("127.0.0.1:{}", base_port as usize + k);
    let mut configs = Vec::new();
    for k in 0..nodes {
        let node_dir = dir.join(format!("node{}", k + 1));
        std::fs::create_dir_all(&node_dir)?;
        let config = Config {
            data_dir: node_dir.clone(),
            rpc_bind_addr: addr(k),
            rpc_public_addr: None,
            rpc_secret: secret.clone(),
            bootstrap_peers: (0..nodes).filter(|&j| j != k).map(addr).collect(),
            replication_factor,
            consistency_mode,
            heartbeat_ms: 500,
            sync_start_delay_ms: 2_000,
            sync_interval_secs: 600,
            api_bind_addr: Some(api_addr(base_port, k)),
            admin_bind_addr: Some(format!("127.0.0.1:{}", base_port as usize + 2000 + k)),
            admin_token: Some(admin_token.clone()),
            api_region: "shoal".into(),
            api_max_body_bytes: 8 << 20,
            api_max_requests_in_flight: crate::config::default_max_requests(),
            api_max_writes_in_flight: crate::config::default_max_writes(),
            api_write_wait_ms: crate::config::default_write_wait(),
        };
        let path = node_dir.join("shoal.toml");
        std::fs::write(&path, toml::to_string(&config)?)?;
        configs.push((path, config));
    }
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for (path, config) in &configs {
        let log = std::fs::File::create(config.data_dir.join("node.log"))?;
        let child = tokio::process::Command::new(&exe)
            .arg("server")
            .arg("-c")
            .arg(path)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the node of {}", path.display()))?;
        children.push(child);
    }
    let first = &configs[0].1;
    let status = wait_for_cluster(first, nodes).await?;
    let report: LayoutReport = AdminClient::connect(first)
        .await?
        .call("admin.layout", Vec::new())
        .await?;
    if report.current.version > 0 && report.current.replication_factor != replication_factor {
        bail!(
            "the cluster in {} was created with replication factor {}, not {replication_factor}; \
             the replication factor is fixed when a cluster is created: use another --dir",
            dir.display(),
            report.current.replication_factor
        );
    }
    let missing: Vec<_> = status
        .nodes
        .iter()
        .filter(|n| !report.current.roles.contains_key(&n.id))
        .collect();
    if !missing.is_empty() {
        let client = AdminClient::connect(first).await?;
        for (i, n) in status.nodes.iter().enumerate() {
            let role = NodeRole {
                zone: format!("dc{}", i + 1),
                capacity: Some(1),
            };
            let body = rmp_serde::to_vec_named(&(n.id, Some(role)))?;
            let _: LayoutReport = client.call("admin.stage", body).await?;
        }
        let r: LayoutReport = client.call("admin.apply", Vec::new()).await?;
        println!(
            "applied layout version {} over {} nodes, replication factor {}",
            r.current.version, nodes, r.current.replication_factor
        );
    } else {
        println!(
            "layout version {} already covers the {} nodes",
            report.current.version, nodes
        );
    }
    let env = k2v_credentials(first, &dir, &api_addr(base_port, 0)).await?;
    println!(
        "Shoal dev cluster of {nodes} nodes ready in {}",
        dir.display()
    );
    println!(
        "K2V API (bucket `dev`, its key in {}/k2v.env):",
        dir.display()
    );
    print!("{env}");
    println!("Point the CLI at any node, for instance:");
    println!("  shoal -c {} status", configs[0].0.display());
    println!(
        "  (through cargo: cargo run --release -p shoal -- -c {} status)",
        configs[0].0.display()
    );
    println!(
        "Logs: {}/nodeK/node.log. Ctrl-C stops the cluster; running again reuses the data.",
        dir.display()
    );

    let stdin_closed = crate::server::stdin_closed(exit_with_stdin);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
    }
    println!("stopping the cluster");
    for c in &mut children {
        // Closing a node's standard input asks it to shut down cleanly.
        c.stdin.take();
    }
    for c in &mut children {
        if tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
    Ok(())
}

/// The K2V API address of node `k` (0-based): 1000 ports above its RPC port.
fn api_addr(base_port: u16, k: usize) -> String {
    format!("127.0.0.1:{}", base_port as usize + 1000 + k)
}

/// Makes sure a bucket `dev` and a key `dev` allowed on it exist, writes `<dir>/k2v.env` and
/// returns its text: shell `export` lines a client can source.
async fn k2v_credentials(first: &Config, dir: &Path, endpoint: &str) -> anyhow::Result<String> {
    use shoal_api::service::{BucketInfo, KeyInfo};
    let client = AdminClient::connect(first).await?;
    let keys: Vec<KeyInfo> = client.call("api.key.list", rmp(&())).await?;
    let key = match keys.into_iter().find(|k| k.name == "dev") {
        Some(k) => k,
        None => client.call("api.key.create", rmp(&"dev")).await?,
    };
    let buckets: Vec<BucketInfo> = client.call("api.bucket.list", rmp(&())).await?;
    if !buckets.iter().any(|b| b.name == "dev") {
        let _: BucketInfo = client.call("api.bucket.create", rmp(&"dev")).await?;
    }
    let _: BucketInfo = client
        .call(
            "api.bucket.allow",
            rmp(&("dev", key.id.as_str(), true, true)),
        )
        .await?;
    let env = format!(
        "export K2V_ENDPOINT=http://{endpoint}\nexport K2V_BUCKET=dev\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_REGION=shoal\n",
        key.id, key.secret
    );
    let path = dir.join("k2v.env");
    std::fs::write(&path, &env).with_context(|| format!("writing {}", path.display()))?;
    Ok(env)
}

fn rmp<V: serde::Serialize>(v: &V) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("requests encode")
}

async fn wait_for_cluster(first: &Config, nodes: usize) -> anyhow::Result<ClusterStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = AdminClient::connect(first).await
            && let Ok(s) = client
                .call::<ClusterStatus>("admin.status", Vec::new())
                .await
            && s.nodes.len() >= nodes
            && s.nodes.iter().all(|n| n.up)
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("the {nodes} nodes did not all come up within 30 s; see their node.log files");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
