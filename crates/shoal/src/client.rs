//! The operator CLI's connection to a node: an ephemeral identity authenticated with the
//! cluster secret from the node's own configuration file.

use std::sync::Arc;

use anyhow::Context;
use serde::de::DeserializeOwned;
use shoal_net::{CallsOnly, NetConfig, Network, NodeId, NodeKey, TcpTransport};

use crate::config::Config;

/// How the CLI reaches its node.
enum Link {
    /// The admin endpoint, with the admin token.
    Http {
        agent: ureq::Agent,
        base: String,
        token: String,
    },
    /// Cluster RPC, with an ephemeral key and the cluster secret (nodes without an admin
    /// endpoint).
    Rpc {
        net: Network<TcpTransport>,
        node: NodeId,
    },
}

/// A connection to the node a configuration file describes: its admin endpoint when the
/// configuration names one, the cluster RPC otherwise.
pub struct AdminClient {
    link: Link,
}

impl AdminClient {
    /// Connects to the node of `config`.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        if let (Some(addr), Some(token)) = (&config.admin_bind_addr, &config.admin_token) {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(60)))
                .build()
                .into();
            return Ok(AdminClient {
                link: Link::Http {
                    agent,
                    base: format!("http://{addr}"),
                    token: token.clone(),
                },
            });
        }
        Self::connect_rpc(config).await
    }

    async fn connect_rpc(config: &Config) -> anyhow::Result<Self> {
        let net = Network::new(
            NodeKey::generate(),
            config.secret(),
            TcpTransport::default(),
            NetConfig::default(),
            Arc::new(CallsOnly),
        );
        let addr = config.public_addr();
        let node = net
            .connect(addr, None)
            .await
            .with_context(|| format!("connecting to the node at {addr} (is it running?)"))?;
        Ok(AdminClient {
            link: Link::Rpc { net, node },
        })
    }

    /// Calls an admin endpoint and decodes the reply.
    pub async fn call<R: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<R> {
        let reply = match &self.link {
            Link::Rpc { net, node } => net
                .call(*node, endpoint, body)
                .await
                .with_context(|| format!("{endpoint} failed"))?,
            Link::Http { agent, base, token } => {
                let (agent, url, auth) = (
                    agent.clone(),
                    format!("{base}/v1/call/{endpoint}"),
                    format!("Bearer {token}"),
                );
                let endpoint = endpoint.to_string();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
                    let mut response = agent
                        .post(&url)
                        .header("Authorization", &auth)
                        .send(&body[..])
                        .with_context(|| format!("reaching the admin endpoint at {url}"))?;
                    let status = response.status();
                    let bytes = response.body_mut().read_to_vec()?;
                    if !status.is_success() {
                        anyhow::bail!(
                            "{endpoint} failed ({status}): {}",
                            String::from_utf8_lossy(&bytes).trim()
                        );
                    }
                    Ok(bytes)
                })
                .await??
            }
        };
        rmp_serde::from_slice(&reply).with_context(|| format!("malformed reply to {endpoint}"))
    }
}
