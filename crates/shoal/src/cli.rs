//! Operator commands: `status`, `node id`, `layout …`, `sync status`, `repair`, `key …`,
//! `bucket …`, `put`/`get` on the `kv` table.

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_cluster::layout::NodeRole;
use shoal_cluster::node::{ClusterStatus, LayoutReport};
use shoal_net::{NodeId, NodeKey};

use crate::client::AdminClient;
use crate::config::Config;

#[derive(Serialize)]
struct NodeView {
    id: String,
    addr: String,
    zone: Option<String>,
    capacity: Option<u64>,
    up: bool,
    partitions: usize,
}

#[derive(Serialize)]
struct StatusView {
    node: String,
    layout_version: u64,
    nodes: Vec<NodeView>,
    syncers: std::collections::BTreeMap<String, shoal_cluster::node::SyncerStats>,
    /// Items stored on the answering node, per table.
    tables: std::collections::BTreeMap<String, u64>,
    /// Replicas of each partition in the current layout.
    replication_factor: usize,
    /// The answering node's consistency mode.
    consistency_mode: shoal_cluster::quorum::ConsistencyMode,
    /// Acknowledgements a write coordinated by the answering node waits for.
    write_quorum: usize,
    /// Answers a read coordinated by the answering node waits for.
    read_quorum: usize,
    /// The same for the fully replicated system tables (access keys, buckets).
    system_quorums: Option<shoal_cluster::quorum::Quorums>,
}

fn view(s: &ClusterStatus) -> StatusView {
    StatusView {
        node: s.node.to_string(),
        layout_version: s.layout_version,
        nodes: s
            .nodes
            .iter()
            .map(|n| NodeView {
                id: n.id.to_string(),
                addr: n.addr.clone(),
                zone: n.zone.clone(),
                capacity: n.capacity,
                up: n.up,
                partitions: n.partitions,
            })
            .collect(),
        syncers: s.syncers.clone(),
        tables: s.tables.clone(),
        replication_factor: s.replication_factor,
        consistency_mode: s.consistency_mode,
        write_quorum: s.write_quorum,
        read_quorum: s.read_quorum,
        system_quorums: s.system_quorums,
    }
}

/// `shoal node id`.
pub fn node_id(config: &Config) -> anyhow::Result<()> {
    let key = NodeKey::load_or_create(&config.data_dir)?;
    println!("{}@{}", key.node_id(), config.public_addr());
    Ok(())
}

/// `shoal status`.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let s: ClusterStatus = client.call("admin.status", Vec::new()).await?;
    let v = view(&s);
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("layout version {}", v.layout_version);
    println!(
        "replication factor {}, consistency mode {}: writes wait for {} replicas, reads for {}",
        v.replication_factor, v.consistency_mode, v.write_quorum, v.read_quorum
    );
    if let Ok(r) = client
        .call::<LayoutReport>("admin.layout", Vec::new())
        .await
    {
        print_history(&r.history);
    }
    if !s.tables.is_empty() {
        let tables: Vec<String> = s.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
        println!("items on this node: {}", tables.join(", "));
    }
    println!(
        "{:<18} {:<22} {:<10} {:>8} {:<5} {:>10}",
        "ID", "ADDRESS", "ZONE", "CAPACITY", "UP", "PARTITIONS"
    );
    for n in &v.nodes {
        println!(
            "{:<18} {:<22} {:<10} {:>8} {:<5} {:>10}",
            &n.id[..16],
            n.addr,
            n.zone.as_deref().unwrap_or("-"),
            n.capacity.map_or("gateway".to_string(), |c| c.to_string()),
            if n.up { "up" } else { "DOWN" },
            n.partitions
        );
    }
    Ok(())
}

/// Finds the node whose hex id starts with `prefix` among the nodes `client`'s node knows.
async fn resolve(client: &AdminClient, prefix: &str) -> anyhow::Result<NodeId> {
    let s: ClusterStatus = client.call("admin.status", Vec::new()).await?;
    let matches: Vec<NodeId> = s
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| id.to_string().starts_with(&prefix.to_lowercase()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no known node id starts with {prefix:?}"),
        _ => bail!(
            "{prefix:?} matches {} nodes; give more digits",
            matches.len()
        ),
    }
}

/// The live layout versions and each node's progress through them.
fn print_history(h: &shoal_cluster::history::LayoutHistory) {
    let versions: Vec<String> = h.versions.iter().map(|l| l.version.to_string()).collect();
    println!(
        "live layout versions: {} (reads use version {}){}",
        versions.join(", "),
        h.read_version().map_or(0, |l| l.version),
        if h.in_transition() {
            " — change in progress"
        } else {
            ""
        }
    );
    let nodes: std::collections::BTreeSet<_> = h
        .synced
        .keys()
        .chain(h.acked.keys())
        .chain(h.offloaded.keys())
        .collect();
    for (n, v) in &h.departed {
        println!(
            "  {}  left in version {v}; tombstones wait for its offload (or `shoal layout forget`)",
            &n.to_string()[..16]
        );
    }
    for n in &h.forgotten {
        println!(
            "  {}  forgotten: its sync sessions are refused",
            &n.to_string()[..16]
        );
    }
    for n in nodes {
        let get = |m: &std::collections::BTreeMap<NodeId, u64>| {
            m.get(n).map_or("-".to_string(), |v| v.to_string())
        };
        println!(
            "  {}  acknowledged {:>3}  synced {:>3}  offloaded {:>3}",
            &n.to_string()[..16],
            get(&h.acked),
            get(&h.synced),
            get(&h.offloaded)
        );
    }
}

fn print_report(r: &LayoutReport) {
    println!(
        "applied layout: version {}, replication factor {}",
        r.current.version, r.current.replication_factor
    );
    print_history(&r.history);
    for (id, role) in &r.current.roles {
        println!(
            "  {}  zone {:<10} {}  {} partitions",
            &id.to_string()[..16],
            role.zone,
            role.capacity
                .map_or("gateway".into(), |c| format!("capacity {c}")),
            r.current.partitions_of(*id).len()
        );
    }
    if r.staged.is_empty() {
        println!("no staged changes");
        return;
    }
    println!("staged changes:");
    for (id, role) in &r.staged {
        match role {
            Some(role) => println!(
                "  {}  -> zone {} {}",
                &id.to_string()[..16],
                role.zone,
                role.capacity
                    .map_or("gateway".into(), |c| format!("capacity {c}"))
            ),
            None => println!("  {}  -> removed", &id.to_string()[..16]),
        }
    }
    match &r.preview {
        Ok((next, moved)) => println!(
            "applying gives version {} and moves {moved} partition replicas (of {})",
            next.version,
            next.assignment.iter().map(Vec::len).sum::<usize>()
        ),
        Err(e) => println!("cannot apply: {e}"),
    }
}

#[derive(Serialize)]
struct LayoutView {
    version: u64,
    replication_factor: usize,
    /// For each partition, the hex ids of its nodes.
    assignment: Vec<Vec<String>>,
    staged: usize,
    /// Replicas the staged change would move, if it can be applied.
    staged_moves: Option<usize>,
    /// Live versions, the read version, and each node's acknowledged/synced/offloaded version.
    live_versions: Vec<u64>,
    read_version: Option<u64>,
    progress: std::collections::BTreeMap<String, [u64; 3]>,
}

/// `shoal layout show`.
pub async fn layout_show(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let r: LayoutReport = client.call("admin.layout", Vec::new()).await?;
    if json {
        let v = LayoutView {
            version: r.current.version,
            replication_factor: r.current.replication_factor,
            assignment: r
                .current
                .assignment
                .iter()
                .map(|nodes| nodes.iter().map(|n| n.to_string()).collect())
                .collect(),
            staged: r.staged.len(),
            staged_moves: r.preview.as_ref().ok().map(|(_, m)| *m),
            live_versions: r.history.versions.iter().map(|l| l.version).collect(),
            read_version: r.history.read_version().map(|l| l.version),
            progress: r
                .history
                .synced
                .keys()
                .map(|n| {
                    let g = |m: &std::collections::BTreeMap<NodeId, u64>| {
                        m.get(n).copied().unwrap_or(0)
                    };
                    (
                        n.to_string(),
                        [
                            g(&r.history.acked),
                            g(&r.history.synced),
                            g(&r.history.offloaded),
                        ],
                    )
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    print_report(&r);
    Ok(())
}

/// `shoal layout assign|remove`.
pub async fn layout_stage(
    config: &Config,
    node: &str,
    role: Option<NodeRole>,
) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let id = resolve(&client, node).await?;
    let body = rmp_serde::to_vec_named(&(id, role)).context("encoding")?;
    let r: LayoutReport = client.call("admin.stage", body).await?;
    print_report(&r);
    Ok(())
}

/// `shoal layout forget`: `node` is matched among the nodes that left the layout and have not
/// reported their offload.
pub async fn layout_forget(config: &Config, node: &str) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let r: LayoutReport = client.call("admin.layout", Vec::new()).await?;
    let prefix = node.to_lowercase();
    let matches: Vec<NodeId> = r
        .history
        .departed
        .keys()
        .copied()
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    let id = match matches.as_slice() {
        [one] => *one,
        [] if r
            .current
            .roles
            .keys()
            .any(|id| id.to_string().starts_with(&prefix)) =>
        {
            bail!(
                "{node:?} still has a role in the layout: `shoal layout remove` and `apply` it first"
            )
        }
        [] => bail!(
            "no node that left the layout and still holds tombstones back starts with {node:?}"
        ),
        _ => bail!("{node:?} matches {} nodes; give more digits", matches.len()),
    };
    let body = rmp_serde::to_vec_named(&id).context("encoding")?;
    let r: LayoutReport = client.call("admin.forget", body).await?;
    println!(
        "forgot {id}: tombstone collection no longer waits for it; wipe its data before it rejoins"
    );
    print_history(&r.history);
    Ok(())
}

/// `shoal layout apply`.
pub async fn layout_apply(config: &Config) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let r: LayoutReport = client.call("admin.apply", Vec::new()).await?;
    println!("applied layout version {}", r.current.version);
    Ok(())
}

/// `shoal put`: a quorum write to the built-in `kv` table (`copies` > 1 writes that many items,
/// the sort key suffixed with a counter).
pub async fn put(
    config: &Config,
    pk: &str,
    sk: &str,
    value: Option<&str>,
    copies: u32,
) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let body = rmp_serde::to_vec_named(&(
        pk,
        sk,
        value.map(|v| serde_bytes::ByteBuf::from(v.as_bytes().to_vec())),
        copies,
    ))?;
    let _written: u32 = client.call("admin.put", body).await?;
    Ok(())
}

/// `shoal get`: a quorum read of the built-in `kv` table.
pub async fn get(config: &Config, pk: &str, sk: &str) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let body = rmp_serde::to_vec_named(&(pk, sk))?;
    let v: Option<serde_bytes::ByteBuf> = client.call("admin.get", body).await?;
    match v {
        Some(v) => println!("{}", String::from_utf8_lossy(&v)),
        None => bail!("no value for {pk}/{sk}"),
    }
    Ok(())
}

/// `shoal digests`: this node's 256 partition digests of a table, as JSON (for checks).
pub async fn digests(config: &Config, table: &str) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let d: Vec<(u64, u32, u64)> = client
        .call("admin.digests", rmp_serde::to_vec_named(&table)?)
        .await?;
    println!("{}", serde_json::to_string(&d)?);
    Ok(())
}

/// `shoal local-items`: what this node stores under a K2V partition key, as JSON
/// `{"partition": P, "items": [{"sk": .., "values": [hex or null, ..]}, ..]}`.
pub async fn local_items(config: &Config, bucket: &str, pk: &str) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let local: shoal_api::service::LocalItems =
        client.call("api.local.items", rmp(&(bucket, pk))).await?;
    let items: Vec<serde_json::Value> = local
        .items
        .iter()
        .map(|i| {
            serde_json::json!({
                "sk": i.sk,
                "values": i.values.iter().map(|v| v.as_ref().map(hex::encode)).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"partition": local.partition, "items": items})
    );
    Ok(())
}

fn rmp<V: serde::Serialize>(v: &V) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("requests encode")
}

/// `shoal key create NAME`.
pub async fn key_create(config: &Config, name: &str, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let key: shoal_api::service::KeyInfo = client.call("api.key.create", rmp(&name)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&key)?);
    } else {
        println!("Key name: {}", key.name);
        println!("Key ID: {}", key.id);
        println!("Secret key: {}", key.secret);
    }
    Ok(())
}

/// `shoal key list`.
pub async fn key_list(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let keys: Vec<shoal_api::service::KeyInfo> = client.call("api.key.list", rmp(&())).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
    } else {
        println!("{:<28} NAME", "ID");
        for k in keys {
            println!("{:<28} {}", k.id, k.name);
        }
    }
    Ok(())
}

/// `shoal bucket create NAME`.
pub async fn bucket_create(config: &Config, name: &str) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let b: shoal_api::service::BucketInfo = client.call("api.bucket.create", rmp(&name)).await?;
    println!("Bucket {} created (id {})", b.name, b.id);
    Ok(())
}

/// `shoal bucket allow NAME --key ID [--read] [--write]`.
pub async fn bucket_allow(
    config: &Config,
    name: &str,
    key: &str,
    read: bool,
    write: bool,
) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let _: shoal_api::service::BucketInfo = client
        .call("api.bucket.allow", rmp(&(name, key, read, write)))
        .await?;
    let what = match (read, write) {
        (true, true) => "read and write",
        (true, false) => "read",
        (false, true) => "write",
        (false, false) => "no access to",
    };
    println!("Key {key} may now {what} bucket {name}");
    Ok(())
}

/// `shoal bucket list`.
pub async fn bucket_list(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let buckets: Vec<shoal_api::service::BucketInfo> =
        client.call("api.bucket.list", rmp(&())).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&buckets)?);
    } else {
        println!("{:<24} {:<34} KEYS (r/w)", "NAME", "ID");
        for b in buckets {
            let grants: Vec<String> = b
                .grants
                .iter()
                .map(|(k, r, w)| {
                    format!(
                        "{k}({}{})",
                        if *r { "r" } else { "" },
                        if *w { "w" } else { "" }
                    )
                })
                .collect();
            println!("{:<24} {:<34} {}", b.name, b.id, grants.join(" "));
        }
    }
    Ok(())
}

type SyncStats = std::collections::HashMap<String, shoal_cluster::node::SyncerStats>;

/// `shoal sync status`.
pub async fn sync_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = AdminClient::connect(config).await?;
    let stats: SyncStats = client.call("admin.sync", rmp(&())).await?;
    let mut rows: Vec<_> = stats.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if json {
        let map: std::collections::BTreeMap<_, _> = rows.into_iter().collect();
        println!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(());
    }
    println!(
        "{:<10} {:>6} {:>7} {:>8} {:>9} {:>6} {:>9} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "TABLE",
        "QUEUED",
        "RUNNING",
        "SYNCED",
        "OFFLOADED",
        "ERRORS",
        "SESSIONS",
        "ITEMS OUT",
        "ITEMS IN",
        "BYTES OUT",
        "BYTES IN",
        "ETA"
    );
    for (t, s) in rows {
        println!(
            "{:<10} {:>6} {:>7} {:>8} {:>9} {:>6} {:>9} {:>10} {:>10} {:>12} {:>12} {:>8}",
            t,
            s.queued,
            s.in_progress,
            s.synced,
            s.offloaded,
            s.errors,
            s.sessions,
            s.items_sent,
            s.items_received,
            s.bytes_sent,
            s.bytes_received,
            s.eta_secs.map_or("-".to_string(), |e| format!("{e} s"))
        );
    }
    Ok(())
}

/// `shoal repair [--table T]`: a full sync of the node's partitions now, followed to its end.
pub async fn repair(config: &Config, table: Option<&str>, timeout_secs: u64) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let client = AdminClient::connect(config).await?;
    let before: SyncStats = client.call("admin.sync", rmp(&())).await?;
    let tables: Vec<String> = client.call("admin.repair", rmp(&table)).await?;
    println!("repair started for {}", tables.join(", "));
    let started = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} partitions  {msg}",
    )?);
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_line = String::new();
    loop {
        let now: SyncStats = client.call("admin.sync", rmp(&())).await?;
        let (mut done, mut left, mut items, mut bytes, mut scanned) = (0, 0, 0, 0, true);
        for t in &tables {
            let s = now.get(t).cloned().unwrap_or_default();
            let b = before.get(t).cloned().unwrap_or_default();
            scanned &= s.full_scans > b.full_scans;
            done += (s.synced + s.offloaded).saturating_sub(b.synced + b.offloaded);
            left += s.queued + s.in_progress;
            items +=
                (s.items_received + s.items_sent).saturating_sub(b.items_received + b.items_sent);
            bytes +=
                (s.bytes_received + s.bytes_sent).saturating_sub(b.bytes_received + b.bytes_sent);
        }
        let line = format!(
            "{done}/{} partitions, {items} items and {bytes} bytes exchanged",
            done + left
        );
        bar.set_length(done + left);
        bar.set_position(done);
        bar.set_message(format!("{items} items, {bytes} bytes"));
        if !terminal && line != last_line {
            println!("repair: {line}");
            last_line = line.clone();
        }
        if scanned && left == 0 {
            bar.finish_and_clear();
            println!(
                "repair done in {:.1} s: {line}",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed().as_secs() > timeout_secs {
            bar.abandon();
            bail!("repair not finished after {timeout_secs} s: {line}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
