//! Real `shoal server` processes for campaigns and cluster benchmarks: configuration files,
//! start, kill -9, SIGSTOP/SIGCONT, restart, wipe, and the operator CLI against each node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The release `shoal` binary beside this one (built first if needed), or the one `SHOAL_BIN`
/// names (to measure another build with this bench).
pub fn shoal_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SHOAL_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "shoal"])
        .status()
        .context("running cargo build -p shoal")?;
    if !status.success() {
        bail!("cargo build --release -p shoal failed");
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("shoal");
    if !bin.exists() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// The settings `ShoalCluster` gives its nodes that differ from Shoal's defaults (1000 and
/// 20000): a faster failure detector and a first full scan soon after start.
pub const NON_DEFAULT_SETTINGS: &str = "heartbeat_ms = 500, sync_start_delay_ms = 1000";

/// Where one node lives.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The address it binds everything to (RPC, API, admin): 127.0.0.x.
    pub ip: String,
    /// Its RPC port (API: +1000, admin: +2000).
    pub rpc_port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// One node: its configuration and, while it runs, its process.
pub struct ShoalNode {
    /// Where it lives.
    pub spec: NodeSpec,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its id (hex), known once it has started.
    pub id: String,
    child: Option<Child>,
    stopped: bool,
}

impl ShoalNode {
    /// `http://ip:port` of its K2V API.
    pub fn api_endpoint(&self) -> String {
        format!("http://{}:{}", self.spec.ip, self.spec.rpc_port + 1000)
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A cluster of `shoal server` processes.
pub struct ShoalCluster {
    bin: PathBuf,
    /// The nodes, in order.
    pub nodes: Vec<ShoalNode>,
    /// The K2V access key id and secret, and the bucket, once set up.
    pub k2v: Option<(String, String, String)>,
    /// The admin endpoints' bearer token.
    pub admin_token: String,
}

impl ShoalCluster {
    /// Writes the configurations, starts every node, applies a layout with one zone per node,
    /// creates a bucket and a key allowed on it.
    pub fn start(
        dir: &Path,
        specs: Vec<NodeSpec>,
        replication_factor: usize,
        bucket: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            dir,
            specs,
            replication_factor,
            bucket,
            "heartbeat_ms = 500\nsync_start_delay_ms = 1000\n",
        )
    }

    /// [`ShoalCluster::start`] with `settings` (TOML lines) instead of [`NON_DEFAULT_SETTINGS`]:
    /// an empty string runs every node at its defaults.
    pub fn start_with(
        dir: &Path,
        specs: Vec<NodeSpec>,
        replication_factor: usize,
        bucket: &str,
        settings: &str,
    ) -> anyhow::Result<Self> {
        Self::start_binary(
            shoal_binary()?,
            dir,
            specs,
            replication_factor,
            bucket,
            settings,
        )
    }

    /// [`ShoalCluster::start_with`] running `bin` (already built).
    pub fn start_binary(
        bin: PathBuf,
        dir: &Path,
        specs: Vec<NodeSpec>,
        replication_factor: usize,
        bucket: &str,
        settings: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secret = hex32();
        let token = hex32();
        let mut nodes = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            std::fs::create_dir_all(&spec.data_dir)?;
            let peers: Vec<String> = specs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, s)| format!("\"{}:{}\"", s.ip, s.rpc_port))
                .collect();
            let config = dir.join(format!("node{}.toml", k + 1));
            std::fs::write(
                &config,
                format!(
                    "data_dir = \"{}\"\nrpc_bind_addr = \"{ip}:{p}\"\nrpc_secret = \"{secret}\"\n\
                     bootstrap_peers = [{}]\nreplication_factor = {replication_factor}\n\
                     {settings}\
                     api_bind_addr = \"{ip}:{}\"\nadmin_bind_addr = \"{ip}:{}\"\n\
                     admin_token = \"{token}\"\n",
                    spec.data_dir.display(),
                    peers.join(", "),
                    spec.rpc_port + 1000,
                    spec.rpc_port + 2000,
                    ip = spec.ip,
                    p = spec.rpc_port,
                ),
            )?;
            nodes.push(ShoalNode {
                spec: spec.clone(),
                config,
                id: String::new(),
                child: None,
                stopped: false,
            });
        }
        let mut cluster = ShoalCluster {
            bin,
            nodes,
            k2v: None,
            admin_token: token.clone(),
        };
        for k in 0..cluster.nodes.len() {
            cluster.start_node(k)?;
        }
        for k in 0..cluster.nodes.len() {
            // The server writes its key at start: wait for it.
            let deadline = Instant::now() + Duration::from_secs(15);
            let out = loop {
                match cluster.cli(k, &["node", "id"]) {
                    Ok(out) => break out,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            cluster.nodes[k].id = out.trim().split('@').next().unwrap_or("").to_string();
        }
        cluster.wait_all_up(Duration::from_secs(30))?;
        for k in 0..cluster.nodes.len() {
            let id = cluster.nodes[k].id.clone();
            let zone = format!("z{}", k + 1);
            // Membership may lag the status a moment: retry.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match cluster.cli(
                    0,
                    &["layout", "assign", &id, "--zone", &zone, "--capacity", "1"],
                ) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        cluster.cli(0, &["layout", "apply"])?;
        let key: serde_json::Value =
            serde_json::from_str(&cluster.cli(0, &["key", "create", "bench", "--json"])?)?;
        let (key_id, key_secret) = (
            key["id"].as_str().unwrap_or_default().to_string(),
            key["secret"].as_str().unwrap_or_default().to_string(),
        );
        cluster.cli(0, &["bucket", "create", bucket])?;
        cluster.cli(
            0,
            &[
                "bucket", "allow", bucket, "--key", &key_id, "--read", "--write",
            ],
        )?;
        cluster.k2v = Some((key_id, key_secret, bucket.to_string()));
        // Every node knows the layout, the key and the bucket before load starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        'wait: loop {
            for k in 0..cluster.nodes.len() {
                let ok = cluster
                    .cli(k, &["bucket", "list", "--json"])
                    .map(|o| {
                        o.contains(&format!("\"{bucket}\"")) && o.contains(&key_id_of(&cluster))
                    })
                    .unwrap_or(false);
                if !ok {
                    if Instant::now() > deadline {
                        bail!("node {} does not know bucket {bucket} after 30 s", k + 1);
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    continue 'wait;
                }
            }
            break;
        }
        Ok(cluster)
    }

    /// Starts node `k`'s process.
    pub fn start_node(&mut self, k: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[k];
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.config.with_extension("log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {}", k + 1))?;
        node.child = Some(child);
        node.stopped = false;
        Ok(())
    }

    /// kill -9.
    pub fn kill9(&mut self, k: usize) {
        if let Some(mut c) = self.nodes[k].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[k].stopped = false;
    }

    /// SIGTERM and wait (a clean shutdown).
    pub fn stop(&mut self, k: usize) {
        if let Some(mut c) = self.nodes[k].child.take() {
            if self.nodes[k].stopped {
                signal(c.id(), "CONT");
            }
            signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.nodes[k].stopped = false;
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[k].stopped = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self, k: usize) {
        if let Some(pid) = self.nodes[k].pid() {
            signal(pid, "STOP");
            self.nodes[k].stopped = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, k: usize) {
        if let Some(pid) = self.nodes[k].pid()
            && self.nodes[k].stopped
        {
            signal(pid, "CONT");
            self.nodes[k].stopped = false;
        }
    }

    /// Deletes node `k`'s data but its identity (the node must be stopped).
    pub fn wipe_data(&self, k: usize) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&self.nodes[k].spec.data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.contains("key") {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Runs `shoal -c <node k> args…` and returns its standard output.
    pub fn cli(&self, k: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[k].config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running shoal {args:?}"))?;
        if !out.status.success() {
            bail!(
                "shoal {args:?} on node {}: {}",
                k + 1,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Waits until node 1 sees every node up.
    pub fn wait_all_up(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(out) = self.cli(0, &["status", "--json"])
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&out)
                && let Some(nodes) = v["nodes"].as_array()
                && nodes.len() == self.nodes.len()
                && nodes.iter().all(|n| n["up"] == true)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the nodes did not all come up within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops every node (cleanly if it answers).
    pub fn shutdown(&mut self) {
        for k in 0..self.nodes.len() {
            self.stop(k);
        }
    }
}

impl Drop for ShoalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn key_id_of(c: &ShoalCluster) -> String {
    c.k2v.as_ref().map(|k| k.0.clone()).unwrap_or_default()
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// 32 random bytes in hex.
pub fn hex32() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An iptables chain of this harness's own, hooked into OUTPUT (loopback packets cross OUTPUT
/// once), removed with everything in it when dropped. Needs root and `iptables`.
pub struct Chain {
    name: String,
}

impl Chain {
    /// Creates the chain (replacing one a crashed run left behind) and hooks it.
    pub fn install(name: &str) -> anyhow::Result<Self> {
        let chain = Chain { name: name.into() };
        chain.remove();
        iptables(&["-N", name])?;
        iptables(&["-I", "OUTPUT", "-j", name])?;
        Ok(chain)
    }

    /// Appends a rule: `args` after `-A <chain>`.
    pub fn append(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-A", self.name.as_str()];
        all.extend_from_slice(args);
        iptables(&all)
    }

    /// Deletes every rule.
    pub fn flush(&self) -> anyhow::Result<()> {
        iptables(&["-F", &self.name])
    }

    /// Zeroes the rules' counters.
    pub fn zero(&self) -> anyhow::Result<()> {
        iptables(&["-Z", &self.name])
    }

    /// Bytes counted by all the rules since the last [`Chain::zero`].
    pub fn bytes(&self) -> anyhow::Result<u64> {
        Ok(self.bytes_by_rule()?.iter().sum())
    }

    /// Bytes counted by each rule since the last [`Chain::zero`], in the rules' order.
    pub fn bytes_by_rule(&self) -> anyhow::Result<Vec<u64>> {
        let out = Command::new("iptables")
            .args(["-L", &self.name, "-v", "-x", "-n"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .collect())
    }

    fn remove(&self) {
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.name]);
        let _ = iptables(&["-F", &self.name]);
        let _ = iptables(&["-X", &self.name]);
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.remove();
    }
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .context("running iptables (bench/prepare-peers.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "iptables {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
