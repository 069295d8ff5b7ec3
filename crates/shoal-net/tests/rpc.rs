//! Real TCP on loopback: authenticated nodes call each other; strangers and garbage are refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_net::{
    ClusterSecret, ErrorCode, Handler, NetConfig, Network, NodeId, NodeKey, RemoteError, RpcError,
    TcpTransport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `echo` returns the body, `slow` sleeps then answers, `fail` errors, `whoami` names the caller,
/// `panic` panics (`echo` and `panic` answer at their first poll, in the connection's reader).
struct TestHandler;

impl Handler for TestHandler {
    fn answers_at_once(&self, endpoint: &str) -> bool {
        endpoint == "echo" || endpoint == "panic"
    }

    fn handle(
        &self,
        from: NodeId,
        endpoint: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>> + Send>> {
        Box::pin(async move {
            match endpoint.as_str() {
                "echo" => Ok(body),
                "slow" => {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok(b"late".to_vec())
                }
                "fail" => Err(RemoteError::refused("the handler refused")),
                "whoami" => Ok(from.0.to_vec()),
                "panic" => panic!("a bug in the handler"),
                other => Err(RemoteError::new(
                    ErrorCode::NotFound,
                    format!("no endpoint {other}"),
                )),
            }
        })
    }
}

fn secret(b: u8) -> ClusterSecret {
    ClusterSecret::from_bytes([b; 32])
}

fn node(s: &ClusterSecret) -> Network<TcpTransport> {
    let config = NetConfig {
        handshake_timeout: Duration::from_millis(500),
        ..NetConfig::default()
    };
    Network::new(
        NodeKey::generate(),
        s.clone(),
        TcpTransport::default(),
        config,
        Arc::new(TestHandler),
    )
}

async fn pair() -> (Network<TcpTransport>, Network<TcpTransport>, String) {
    let s = secret(7);
    let (a, b) = (node(&s), node(&s));
    let addr = a.listen("127.0.0.1:0").await.unwrap().to_string();
    b.listen("127.0.0.1:0").await.unwrap();
    (a, b, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_nodes_call_each_other_over_one_connection() {
    let (a, b, addr) = pair().await;
    let id = b.connect(&addr, Some(a.node_id())).await.unwrap();
    assert_eq!(id, a.node_id());
    assert_eq!(
        b.call(a.node_id(), "echo", b"hi".to_vec()).await.unwrap(),
        b"hi"
    );
    // The authenticated caller identity reaches the handler.
    assert_eq!(
        b.call(a.node_id(), "whoami", vec![]).await.unwrap(),
        b.node_id().0.to_vec()
    );
    // The other direction reuses the same connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        a.call(b.node_id(), "echo", b"back".to_vec()).await.unwrap(),
        b"back"
    );
    assert_eq!(a.connected_peers(), vec![b.node_id()]);
    assert_eq!(b.connected_peers(), vec![a.node_id()]);
    // Errors of the handler come back as errors.
    assert!(
        matches!(b.call(a.node_id(), "fail", vec![]).await, Err(RpcError::Remote(m)) if m.message.contains("refused") && m.code == ErrorCode::Refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_and_large_messages() {
    let (a, b, addr) = pair().await;
    b.connect(&addr, None).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..300u32 {
        let b = b.clone();
        let peer = a.node_id();
        calls.push(tokio::spawn(async move {
            b.call(peer, "echo", i.to_be_bytes().to_vec())
                .await
                .unwrap()
                == i.to_be_bytes()
        }));
    }
    for c in calls {
        assert!(c.await.unwrap(), "every reply matches its request");
    }
    // 5 MiB: cut into Noise frames and reassembled.
    let big: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    assert!(b.call(a.node_id(), "echo", big.clone()).await.unwrap() == big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fail_the_call_not_the_connection() {
    let (a, b, addr) = pair().await;
    b.connect(&addr, None).await.unwrap();
    let start = Instant::now();
    let r = b
        .call_with_timeout(a.node_id(), "slow", vec![], Duration::from_millis(200))
        .await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_millis(1000));
    assert_eq!(
        b.call(a.node_id(), "echo", b"still".to_vec())
            .await
            .unwrap(),
        b"still"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_an_unexpected_node_is_refused() {
    let (a, _b, addr) = pair().await;
    let stranger = node(&secret(8));
    let r = stranger.connect(&addr, None).await;
    assert!(matches!(r, Err(RpcError::Handshake(_))), "{r:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        a.connected_peers().is_empty(),
        "no connection from a stranger"
    );
    assert!(a.refused_handshakes() >= 1);
    // Same secret, but not the node we meant to reach.
    let c = node(&secret(7));
    let r = c.connect(&addr, Some(NodeKey::generate().node_id())).await;
    assert!(
        matches!(
            r,
            Err(RpcError::Handshake(
                shoal_net::noise::HandshakeError::UnexpectedPeer { .. }
            ))
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_frames_and_silent_clients_are_dropped() {
    let (a, b, addr) = pair().await;
    // A length prefix of 2^32 - 1: refused without buffering, the connection closed.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the node closes the connection");
    // A client that never finishes the handshake is dropped after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    // Meanwhile the node keeps serving its real peers.
    b.connect(&addr, None).await.unwrap();
    assert_eq!(
        b.call(a.node_id(), "echo", b"ok".to_vec()).await.unwrap(),
        b"ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reconnects_after_the_peer_restarts() {
    let s = secret(7);
    let key = NodeKey::generate();
    let config = NetConfig::default();
    let a = Network::new(
        key.clone(),
        s.clone(),
        TcpTransport::default(),
        config.clone(),
        Arc::new(TestHandler),
    );
    let addr = a.listen("127.0.0.1:0").await.unwrap().to_string();
    let b = node(&s);
    b.connect(&addr, Some(a.node_id())).await.unwrap();
    assert_eq!(
        b.call(a.node_id(), "echo", b"1".to_vec()).await.unwrap(),
        b"1"
    );
    // A restarts with the same key on the same address.
    a.shutdown();
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a2 = Network::new(
        key,
        s,
        TcpTransport::default(),
        config,
        Arc::new(TestHandler),
    );
    a2.listen(&addr).await.unwrap();
    let mut ok = false;
    for _ in 0..20 {
        if let Ok(r) = b.call(a2.node_id(), "echo", b"2".to_vec()).await {
            ok = r == b"2";
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the call reconnects through the known address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_to_a_dead_peer_back_off() {
    let s = secret(7);
    let b = node(&s);
    let ghost = NodeKey::generate().node_id();
    // Nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    b.add_peer_addr(ghost, addr);
    let first = b.call(ghost, "echo", vec![]).await;
    assert!(matches!(first, Err(RpcError::Connect { .. })), "{first:?}");
    // Within the wait, calls fail at once without dialling.
    let second = b.call(ghost, "echo", vec![]).await;
    assert!(
        matches!(&second, Err(RpcError::Unreachable { reason, .. }) if reason.contains("next attempt")),
        "{second:?}"
    );
    // After it, a dial is attempted again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let third = b.call(ghost, "echo", vec![]).await;
    assert!(matches!(third, Err(RpcError::Connect { .. })), "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simultaneous_dial_settles_on_one_connection_per_pair() {
    let s = secret(7);
    let (a, b) = (node(&s), node(&s));
    let addr_a = a.listen("127.0.0.1:0").await.unwrap().to_string();
    let addr_b = b.listen("127.0.0.1:0").await.unwrap().to_string();
    // Both dial at once, then keep calling each other while the duplicate is retired.
    let (ra, rb) = tokio::join!(
        a.connect(&addr_b, Some(b.node_id())),
        b.connect(&addr_a, Some(a.node_id()))
    );
    ra.unwrap();
    rb.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.open_connections(), 2, "both dials succeeded");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    while (a.open_connections(), b.open_connections()) != (1, 1) {
        assert!(
            Instant::now() < deadline,
            "the duplicate connection was never retired"
        );
        // Calls in both directions keep succeeding throughout: none lands on a closed link.
        assert_eq!(a.call(b.node_id(), "echo", vec![1]).await.unwrap(), vec![1]);
        assert_eq!(b.call(a.node_id(), "echo", vec![2]).await.unwrap(), vec![2]);
        calls += 2;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(calls > 0);
    assert_eq!(a.call(b.node_id(), "echo", vec![3]).await.unwrap(), vec![3]);
    assert_eq!(b.call(a.node_id(), "echo", vec![4]).await.unwrap(), vec![4]);
    assert_eq!((a.open_connections(), b.open_connections()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_an_error_and_the_connection_lives_on() {
    let (a, b, addr) = pair().await;
    b.connect(&addr, Some(a.node_id())).await.unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = b.call(a.node_id(), "panic", vec![]).await.unwrap_err();
        assert!(
            matches!(&err, RpcError::Remote(m) if m.message.contains("panicked") && m.message.contains("a bug in the handler") && m.code == ErrorCode::Internal),
            "{err}"
        );
        // Answered, not timed out.
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            b.call(a.node_id(), "echo", b"still here".to_vec())
                .await
                .unwrap(),
            b"still here"
        );
    }
}
