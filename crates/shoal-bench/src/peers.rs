//! The systems Shoal is compared with, as three-node clusters on 127.0.0.1: Garage (built by
//! `bench/prepare-peers.sh`) and etcd (from Debian).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::hex32;

/// A three-node Garage cluster on 127.0.0.1.
pub(crate) struct Garage {
    bin: PathBuf,
    /// Where its nodes keep their data.
    pub(crate) dir: PathBuf,
    configs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
    /// The access key allowed on bucket `bench`.
    pub(crate) key_id: String,
    /// Its secret.
    pub(crate) secret: String,
}

impl Garage {
    /// Starts three nodes (with `metadata_fsync` as given), a layout, bucket `bench` and a key.
    pub(crate) fn start(dir: &Path, fsync: bool) -> anyhow::Result<Self> {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/.peers/bin/garage");
        if !bin.exists() {
            bail!("{} is missing: run bench/prepare-peers.sh", bin.display());
        }
        std::fs::create_dir_all(dir)?;
        let secret = hex32();
        let mut configs = Vec::new();
        let mut children = Vec::new();
        for k in 0..3 {
            let node = dir.join(format!("node{}", k + 1));
            std::fs::create_dir_all(&node)?;
            let port = 26901 + 10 * k as u16;
            let config = dir.join(format!("node{}.toml", k + 1));
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{n}/meta\"\ndata_dir = \"{n}/data\"\ndb_engine = \"lmdb\"\n\
                     metadata_fsync = {fsync}\nreplication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{port}\"\nrpc_public_addr = \"127.0.0.1:{port}\"\n\
                     rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{}\"\n\n\
                     [k2v_api]\napi_bind_addr = \"127.0.0.1:{}\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{}\"\n",
                    port + 1,
                    port + 2,
                    port + 3,
                    n = node.display(),
                ),
            )?;
            configs.push(config);
            children.push(None);
        }
        let mut g = Garage {
            bin,
            dir: dir.to_path_buf(),
            configs,
            children,
            key_id: String::new(),
            secret: String::new(),
        };
        for k in 0..3 {
            g.start_node(k)?;
        }
        std::thread::sleep(Duration::from_secs(2));
        let mut ids = Vec::new();
        for k in 0..3 {
            let out = g.cli(k, &["node", "id", "-q"])?;
            ids.push(out.trim().to_string());
        }
        for id in &ids[1..] {
            g.cli(0, &["node", "connect", id])?;
        }
        for (k, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap_or("");
            g.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("z{}", k + 1),
                    "-c",
                    "10G",
                    short,
                ],
            )?;
        }
        g.cli(0, &["layout", "apply", "--version", "1"])?;
        g.cli(0, &["bucket", "create", "bench"])?;
        let out = g.cli(0, &["key", "create", "bench-key"])?;
        for line in out.lines() {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("Key ID:") {
                g.key_id = v.trim().to_string();
            }
            if let Some(v) = l.strip_prefix("Secret key:") {
                g.secret = v.trim().to_string();
            }
        }
        if g.key_id.is_empty() || g.secret.is_empty() {
            bail!("garage key create printed no key: {out}");
        }
        g.cli(
            0,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "bench",
                "--key",
                "bench-key",
            ],
        )?;
        std::thread::sleep(Duration::from_secs(2));
        Ok(g)
    }

    /// Each node's K2V endpoint, `http://host:port`.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        (0..3)
            .map(|k| format!("http://127.0.0.1:{}", 26901 + 10 * k + 2))
            .collect()
    }

    pub(crate) fn cli(&self, k: usize, args: &[&str]) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.configs[k])
                .args(args)
                .output()?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).to_string());
            }
            if Instant::now() > deadline {
                bail!("garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub(crate) fn start_node(&mut self, k: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{}.log", k + 1)))?;
        self.children[k] = Some(
            Command::new(&self.bin)
                .arg("-c")
                .arg(&self.configs[k])
                .arg("server")
                .stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()?,
        );
        Ok(())
    }

    /// SIGTERM (a clean shutdown) and wait.
    pub(crate) fn stop_node(&mut self, k: usize) {
        if let Some(mut c) = self.children[k].take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Items of the K2V table in node `k`'s own store (its `table_size` metric).
    pub(crate) fn k2v_items(&self, k: usize) -> anyhow::Result<usize> {
        let out = Command::new("curl")
            .args(["-s", "-m", "2"])
            .arg(format!("http://127.0.0.1:{}/metrics", 26901 + 10 * k + 3))
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("table_size{table_name=\"k2v_item\"} ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .map(|v| v as usize)
            .context("garage metrics without table_size for k2v_item")
    }

    /// Kills every node.
    pub(crate) fn stop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Garage {
    /// The running nodes' process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().flatten().map(|c| c.id()).collect()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-member etcd cluster on 127.0.0.1.
pub(crate) struct Etcd {
    /// The members' processes.
    pub(crate) children: Vec<Child>,
}

impl Etcd {
    /// Starts three members and waits until they are healthy.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let peer = |k: usize| format!("http://127.0.0.1:{}", 27901 + 10 * k + 1);
        let initial: Vec<String> = (0..3).map(|k| format!("e{k}={}", peer(k))).collect();
        let mut children = Vec::new();
        for k in 0..3 {
            let log = std::fs::File::create(dir.join(format!("e{k}.log")))?;
            children.push(
                Command::new("etcd")
                    .args(["--name", &format!("e{k}")])
                    .arg("--data-dir")
                    .arg(dir.join(format!("e{k}")))
                    .args([
                        "--listen-peer-urls",
                        &peer(k),
                        "--initial-advertise-peer-urls",
                        &peer(k),
                    ])
                    .args([
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{}", 27901 + 10 * k),
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{}", 27901 + 10 * k),
                    ])
                    .args([
                        "--initial-cluster",
                        &initial.join(","),
                        "--initial-cluster-state",
                        "new",
                    ])
                    .args(["--initial-cluster-token", "shoal-bench"])
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting etcd (bench/prepare-peers.sh installs it)")?,
            );
        }
        let e = Etcd { children };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &e.endpoints().join(","),
                    "endpoint",
                    "health",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return Ok(e);
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Each node's K2V endpoint, `http://host:port`.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        (0..3)
            .map(|k| format!("http://127.0.0.1:{}", 27901 + 10 * k))
            .collect()
    }

    /// Kills every member.
    pub(crate) fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
