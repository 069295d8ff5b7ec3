//! The real RPC layer (Noise handshake, framing, multiplexing, timeouts, reconnection) over
//! turmoil's simulated network: calls work, a partition makes them fail by timeout and not
//! hang, a repair lets them work again, and a peer with the wrong secret is refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shoal_net::{
    ClusterSecret, ErrorCode, Handler, NetConfig, Network, NodeId, NodeKey, RemoteError, RpcError,
};
use shoal_sim::SimTransport;

struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        from: NodeId,
        endpoint: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>> + Send>> {
        Box::pin(async move {
            match endpoint.as_str() {
                "echo" => Ok(body),
                "whoami" => Ok(from.0.to_vec()),
                other => Err(RemoteError::new(
                    ErrorCode::NotFound,
                    format!("no endpoint {other}"),
                )),
            }
        })
    }
}

fn network(secret: &ClusterSecret, key: NodeKey) -> Network<SimTransport> {
    let config = NetConfig {
        call_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(1),
        ..NetConfig::default()
    };
    Network::new(key, secret.clone(), SimTransport, config, Arc::new(Echo))
}

fn server(sim: &mut turmoil::Sim<'_>, name: &str, secret: ClusterSecret, key: [u8; 32]) {
    sim.host(name, move || {
        let secret = secret.clone();
        async move {
            let net = network(&secret, NodeKey::from_secret_bytes(key));
            net.listen("0.0.0.0:3901").await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

#[test]
fn rpc_over_a_simulated_network_survives_a_partition() {
    let secret = ClusterSecret::from_bytes([1; 32]);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .build();
    server(&mut sim, "node1", secret.clone(), [11; 32]);
    let node1 = NodeKey::from_secret_bytes([11; 32]).node_id();
    let s = secret.clone();
    sim.client("client", async move {
        let net = network(&s, NodeKey::from_secret_bytes([22; 32]));
        net.listen("0.0.0.0:3901").await?;
        let id = net.connect("node1:3901", Some(node1)).await?;
        assert_eq!(id, node1);
        assert_eq!(net.call(node1, "echo", b"hello".to_vec()).await?, b"hello");
        assert_eq!(
            net.call(node1, "whoami", vec![]).await?,
            net.node_id().0.to_vec()
        );

        turmoil::partition("client", "node1");
        let cut = net.call(node1, "echo", b"lost".to_vec()).await;
        assert!(
            matches!(
                cut,
                Err(RpcError::Timeout { .. } | RpcError::ConnectionLost(_))
            ),
            "a call across a partition fails instead of hanging: {cut:?}"
        );

        turmoil::repair("client", "node1");
        // The old connection may be dead: the network dials again after its backoff.
        let mut healed = None;
        for _ in 0..20 {
            match net.call(node1, "echo", b"again".to_vec()).await {
                Ok(body) => {
                    healed = Some(body);
                    break;
                }
                Err(_) => {
                    net.disconnect(node1);
                    let _ = net.connect("node1:3901", Some(node1)).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        assert_eq!(
            healed.as_deref(),
            Some(&b"again"[..]),
            "calls work after repair"
        );
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_in_simulation() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(30))
        .build();
    server(
        &mut sim,
        "node1",
        ClusterSecret::from_bytes([1; 32]),
        [11; 32],
    );
    sim.client("stranger", async move {
        let net = network(
            &ClusterSecret::from_bytes([2; 32]),
            NodeKey::from_secret_bytes([33; 32]),
        );
        let r = net.connect("node1:3901", None).await;
        assert!(
            r.is_err(),
            "a wrong secret never yields a connection: {r:?}"
        );
        Ok(())
    });
    sim.run().unwrap();
}
