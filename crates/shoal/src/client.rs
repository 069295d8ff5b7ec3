//! The operator CLI's connection to a node: an ephemeral identity authenticated with the
//! cluster secret from the node's own configuration file.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use serde::de::DeserializeOwned;
use shoal_net::{Handler, NetConfig, Network, NodeId, NodeKey, TcpTransport};

use crate::config::Config;

struct NoService;

impl Handler for NoService {
    fn handle(
        &self,
        _from: NodeId,
        _endpoint: String,
        _body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> {
        Box::pin(async { Err("the CLI serves nothing".to_string()) })
    }
}

/// A connection to the node a configuration file describes.
pub struct AdminClient {
    net: Network<TcpTransport>,
    node: NodeId,
}

impl AdminClient {
    /// Connects to the node of `config`.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let net = Network::new(
            NodeKey::generate(),
            config.secret(),
            TcpTransport,
            NetConfig::default(),
            Arc::new(NoService),
        );
        let addr = config.public_addr();
        let node = net
            .connect(addr, None)
            .await
            .with_context(|| format!("connecting to the node at {addr} (is it running?)"))?;
        Ok(AdminClient { net, node })
    }

    /// Calls an admin endpoint and decodes the reply.
    pub async fn call<R: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<R> {
        let reply = self
            .net
            .call(self.node, endpoint, body)
            .await
            .with_context(|| format!("{endpoint} failed"))?;
        rmp_serde::from_slice(&reply).with_context(|| format!("malformed reply to {endpoint}"))
    }
}
