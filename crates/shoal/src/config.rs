//! The node's configuration file (TOML). Unknown keys and bad values are errors that name them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// `shoal.toml`. Its doc comments, defaults and examples are also what `shoal config example`
/// prints (through its JSON schema), so the annotated example cannot drift from the parser.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the node keeps its store and its key.
    #[schemars(example = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Address the node listens on for other nodes.
    #[schemars(example = "10.0.0.1:3901")]
    pub rpc_bind_addr: String,
    /// Address other nodes reach it at (default: `rpc_bind_addr`).
    #[serde(default)]
    pub rpc_public_addr: Option<String>,
    /// The cluster secret: 64 hex digits, the same on every node (`shoal config example`
    /// prints a fresh one; or `openssl rand -hex 32`). Keep it like a root password: it makes
    /// a process a member and lets it call the admin endpoints.
    pub rpc_secret: String,
    /// Other nodes to contact at start.
    #[serde(default)]
    pub bootstrap_peers: Vec<String>,
    /// Replicas of each partition (1 to 7), fixed when the cluster's first layout is applied.
    #[serde(default = "default_rf")]
    pub replication_factor: usize,
    /// What reads and writes coordinated by this node wait for: `consistent` (quorum writes
    /// and reads, read-after-write), `degraded` (reads from one replica: may be stale) or
    /// `dangerous` (writes and reads on one replica: may lose acknowledged writes).
    #[serde(default)]
    #[schemars(with = "String", default = "default_consistency")]
    pub consistency_mode: shoal_cluster::quorum::ConsistencyMode,
    /// Milliseconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Milliseconds after start before the first full anti-entropy scan.
    #[serde(default = "default_sync_start")]
    pub sync_start_delay_ms: u64,
    /// Seconds without sync work after which a full scan runs again.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    /// Address of the K2V HTTP API (none: the node serves no API).
    #[serde(default)]
    pub api_bind_addr: Option<String>,
    /// The region K2V clients sign their requests for.
    #[serde(default = "default_region")]
    pub api_region: String,
    /// Largest K2V request body, in bytes; larger ones are refused before being read.
    #[serde(default = "default_max_body")]
    pub api_max_body_bytes: usize,
    /// K2V requests (other than long polls) served at once; more are answered 503.
    #[serde(default = "default_max_requests")]
    pub api_max_requests_in_flight: usize,
    /// Items of K2V writes in flight at once; a write waits for room, then is answered 503.
    #[serde(default = "default_max_writes")]
    pub api_max_writes_in_flight: usize,
    /// Milliseconds a K2V write waits for room before it is answered 503.
    #[serde(default = "default_write_wait")]
    pub api_write_wait_ms: u64,
    /// Address of the admin endpoint: `/metrics`, and the operator CLI's calls.
    #[serde(default)]
    pub admin_bind_addr: Option<String>,
    /// The token operator calls must present (required with `admin_bind_addr`).
    #[serde(default)]
    pub admin_token: Option<String>,
}

fn default_consistency() -> String {
    "consistent".into()
}

fn default_region() -> String {
    "shoal".into()
}

fn default_max_body() -> usize {
    8 << 20
}

pub(crate) fn default_max_requests() -> usize {
    4096
}

pub(crate) fn default_max_writes() -> usize {
    16_384
}

pub(crate) fn default_write_wait() -> u64 {
    10_000
}

fn default_sync_start() -> u64 {
    20_000
}

fn default_sync_interval() -> u64 {
    12 * 3600
}

/// The largest replication factor accepted (every value from 1 up to it is tested).
pub const MAX_REPLICATION_FACTOR: usize = 7;

fn default_rf() -> usize {
    3
}

fn default_heartbeat() -> u64 {
    1000
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        config
            .check()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        shoal_net::ClusterSecret::from_hex(&self.rpc_secret).context("rpc_secret")?;
        for (name, addr) in [
            ("rpc_bind_addr", Some(&self.rpc_bind_addr)),
            ("rpc_public_addr", self.rpc_public_addr.as_ref()),
            ("api_bind_addr", self.api_bind_addr.as_ref()),
            ("admin_bind_addr", self.admin_bind_addr.as_ref()),
        ] {
            if let Some(a) = addr {
                a.parse::<SocketAddr>().with_context(|| {
                    format!("{name} = {a:?} is not an address like 127.0.0.1:3901")
                })?;
            }
        }
        for a in &self.bootstrap_peers {
            a.parse::<SocketAddr>()
                .with_context(|| format!("bootstrap_peers: {a:?} is not an address"))?;
        }
        if !(1..=MAX_REPLICATION_FACTOR).contains(&self.replication_factor) {
            bail!(
                "replication_factor = {} is out of range: from 1 to {MAX_REPLICATION_FACTOR}",
                self.replication_factor
            );
        }
        if self.admin_bind_addr.is_some()
            && self
                .admin_token
                .as_deref()
                .is_none_or(|t| t.trim().len() < 16)
        {
            bail!("admin_bind_addr needs an admin_token of at least 16 characters");
        }
        if self.api_max_body_bytes == 0 {
            bail!("api_max_body_bytes must be at least 1");
        }
        if self.api_max_requests_in_flight == 0 || self.api_max_writes_in_flight == 0 {
            bail!("api_max_requests_in_flight and api_max_writes_in_flight must be at least 1");
        }
        if self.heartbeat_ms == 0 {
            bail!("heartbeat_ms must be at least 1");
        }
        Ok(())
    }

    /// The address other nodes (and the CLI) reach this node at.
    pub fn public_addr(&self) -> &str {
        self.rpc_public_addr
            .as_deref()
            .unwrap_or(&self.rpc_bind_addr)
    }

    /// The cluster secret.
    pub fn secret(&self) -> shoal_net::ClusterSecret {
        shoal_net::ClusterSecret::from_hex(&self.rpc_secret).expect("checked at load")
    }
}

/// The annotated example of every key (`shoal config example`): each key's documentation, then
/// the key with an example value if it is required, or commented out with its default.
pub fn example() -> String {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let required: Vec<&str> = root["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut out = String::from(
        "# shoal.toml: every key of a node's configuration, with its meaning and its default.\n\
         # Required keys are set to examples; optional ones are commented out at their default.\n",
    );
    let Some(properties) = root["properties"].as_object() else {
        return out;
    };
    for (key, p) in properties {
        out.push('\n');
        for line in p["description"].as_str().unwrap_or("").lines() {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        if key == "rpc_secret" {
            // Never a fixed example secret: a fresh one, to be copied to every node.
            let secret: [u8; 32] = rand::random();
            out.push_str(&format!("{key} = \"{}\"\n", hex::encode(secret)));
        } else if required.contains(&key.as_str()) {
            let example = &p["examples"][0];
            out.push_str(&format!("{key} = {}\n", toml_value(example)));
        } else {
            match &p["default"] {
                serde_json::Value::Null => out.push_str(&format!("# {key} = (none)\n")),
                d => out.push_str(&format!("# {key} = {}\n", toml_value(d))),
            }
        }
    }
    out
}

/// A JSON value as TOML writes it.
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, s)?;
        Config::load(&p)
    }

    const GOOD: &str = r#"
data_dir = "/tmp/x"
rpc_bind_addr = "127.0.0.1:3901"
rpc_secret = "0000000000000000000000000000000000000000000000000000000000000001"
"#;

    #[test]
    fn good_config_loads_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.replication_factor, 3);
        assert_eq!(c.public_addr(), "127.0.0.1:3901");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = format!(
            "{:#}",
            parse(&format!("{GOOD}\nreplication = 2\n")).unwrap_err()
        );
        assert!(e.contains("replication"), "{e}");
        let e = format!("{:#}", parse(&GOOD.replace("0001\"", "01\"")).unwrap_err());
        assert!(e.contains("rpc_secret"), "{e}");
        let e = format!(
            "{:#}",
            parse(&GOOD.replace("127.0.0.1:3901", "nowhere")).unwrap_err()
        );
        assert!(e.contains("rpc_bind_addr"), "{e}");
        let e = format!(
            "{:#}",
            parse(&format!("{GOOD}\nreplication_factor = 0\n")).unwrap_err()
        );
        assert!(e.contains("replication_factor"), "{e}");
        let e = format!(
            "{:#}",
            parse(&format!("{GOOD}\nreplication_factor = 8\n")).unwrap_err()
        );
        assert!(e.contains("from 1 to 7"), "{e}");
        for rf in 1..=7 {
            let c = parse(&format!("{GOOD}\nreplication_factor = {rf}\n")).unwrap();
            assert_eq!(c.replication_factor, rf);
        }
        let e = format!(
            "{:#}",
            parse(&format!("{GOOD}\nconsistency_mode = \"strong\"\n")).unwrap_err()
        );
        assert!(e.contains("consistency_mode"), "{e}");
        let c = parse(&format!("{GOOD}\nconsistency_mode = \"degraded\"\n")).unwrap();
        assert_eq!(
            c.consistency_mode,
            shoal_cluster::quorum::ConsistencyMode::Degraded
        );
        assert_eq!(
            parse(GOOD).unwrap().consistency_mode,
            shoal_cluster::quorum::ConsistencyMode::Consistent
        );
    }

    #[test]
    fn the_example_names_every_key_and_parses_as_it_is() {
        let text = super::example();
        // Every key the parser knows appears, set or commented out.
        let all = toml::to_string(&toml::from_str::<Config>(GOOD).unwrap()).unwrap();
        let full = Config {
            rpc_public_addr: Some("10.0.0.1:3901".into()),
            api_bind_addr: Some("10.0.0.1:3902".into()),
            admin_bind_addr: Some("10.0.0.1:3903".into()),
            admin_token: Some("t".into()),
            ..toml::from_str::<Config>(GOOD).unwrap()
        };
        let keys: Vec<String> = toml::to_string(&full)
            .unwrap()
            .lines()
            .chain(all.lines())
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
            .collect();
        assert!(keys.len() >= 18, "{keys:?}");
        for key in &keys {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "{key} missing from the example:\n{text}"
            );
        }
        // As printed, it is a valid configuration, and its commented defaults are the parser's.
        let parsed: Config = toml::from_str(&text).unwrap();
        parsed.check().unwrap();
        assert!(text.contains(&format!("# heartbeat_ms = {}", parsed.heartbeat_ms)));
        assert!(text.contains(&format!(
            "# replication_factor = {}",
            parsed.replication_factor
        )));
        assert!(text.contains(&format!(
            "# sync_interval_secs = {}",
            parsed.sync_interval_secs
        )));
        assert!(text.contains("# consistency_mode = \"consistent\""));
        // Uncommenting a default changes nothing.
        let uncommented = text.replace("# heartbeat_ms = ", "heartbeat_ms = ");
        let again: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(again.heartbeat_ms, parsed.heartbeat_ms);
    }
}
