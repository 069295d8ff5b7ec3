//! Attacks on a running node's RPC port: a storm of wrong-secret handshakes, garbled frames
//! after a valid handshake, a 2³²−1 length prefix, a replayed handshake, and 500 connections
//! that never finish their handshake. The node refuses them all, gives back its file
//! descriptors and memory, and keeps serving real calls.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_port, start_dev, stop};
use futures::SinkExt;
use shoal_net::{CallsOnly, ClusterSecret, NetConfig, Network, NodeKey, TcpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Reads until the peer closes; returns whether it closed within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_node_refuses_attacks_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(13000);
    let (dev, _) = start_dev(dir.path(), base, 1);
    let addr = format!("127.0.0.1:{base}");
    let pid = std::fs::read_to_string(dir.path().join("node1/shoal.pid"))
        .unwrap()
        .trim()
        .to_string();
    let secret = ClusterSecret::from_hex(
        std::fs::read_to_string(dir.path().join("rpc_secret"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Network::new(
            NodeKey::generate(),
            secret.clone(),
            TcpTransport::default(),
            NetConfig::default(),
            Arc::new(CallsOnly),
        );
        let node = client.connect(&addr, None).await.unwrap();
        let ping = || async {
            let started = Instant::now();
            client
                .call(node, "admin.status", Vec::new())
                .await
                .expect("the node keeps serving");
            started.elapsed()
        };
        let baseline_latency = ping().await;
        let fd_baseline = fds(&pid);

        // 1,000 wrong-secret handshakes, 50 at a time: none accepted.
        let wrong = ClusterSecret::from_bytes([0x13; 32]);
        let mut accepted = 0;
        for _ in 0..20 {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let (addr, wrong) = (addr.clone(), wrong.clone());
                set.spawn(async move {
                    let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                    shoal_net::noise::handshake(
                        s,
                        &NodeKey::generate(),
                        &wrong,
                        true,
                        None,
                        Duration::from_secs(5),
                    )
                    .await
                    .is_ok()
                });
            }
            while let Some(r) = set.join_next().await {
                accepted += usize::from(r.unwrap());
            }
        }
        assert_eq!(accepted, 0, "a wrong secret is never accepted");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fds(&pid) > fd_baseline + 2 {
            assert!(
                Instant::now() < deadline,
                "file descriptors not given back: {} vs {fd_baseline}",
                fds(&pid)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "1000 wrong-secret handshakes: 0 accepted; fds {} (baseline {fd_baseline})",
            fds(&pid)
        );

        // Garbled frames after a valid handshake: the connection is dropped.
        let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut secured = shoal_net::noise::handshake(
            s,
            &NodeKey::generate(),
            &secret,
            true,
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("a valid handshake");
        for i in 0..20u8 {
            let _ = secured
                .sink
                .send(bytes::Bytes::from(vec![i; 100 + i as usize]))
                .await;
        }
        let mut closed = false;
        for _ in 0..50 {
            use futures::StreamExt;
            match tokio::time::timeout(Duration::from_millis(100), secured.stream.next()).await {
                Ok(None) | Ok(Some(Err(_))) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(closed, "garbled frames close the connection");
        ping().await;

        // A 2^32-1 length prefix, on 50 connections: refused without buffering.
        let rss_before = rss_kib(&pid);
        for _ in 0..50 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
            let _ = s.write_all(&[7u8; 60_000]).await;
            assert!(closed_within(&mut s, Duration::from_secs(5)).await);
        }
        let rss_after = rss_kib(&pid);
        eprintln!("2^32-1 length prefixes x50: RSS {rss_before} KiB -> {rss_after} KiB");
        assert!(
            rss_after < rss_before + 10 * 1024,
            "memory grew by more than 10 MiB: {rss_before} -> {rss_after} KiB"
        );

        // A replayed handshake: the bytes a real client sent, sent again, are refused.
        let (mut proxy_side, recorded) = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let proxy_addr = listener.local_addr().unwrap().to_string();
            let upstream = addr.clone();
            let recorder = tokio::spawn(async move {
                let (mut down, _) = listener.accept().await.unwrap();
                let mut up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let mut sent = Vec::new();
                let (mut buf_d, mut buf_u) = ([0u8; 8192], [0u8; 8192]);
                let until = tokio::time::Instant::now() + Duration::from_secs(2);
                loop {
                    tokio::select! {
                        r = down.read(&mut buf_d) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(n) => { sent.extend_from_slice(&buf_d[..n]); let _ = up.write_all(&buf_d[..n]).await; }
                        },
                        r = up.read(&mut buf_u) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(n) => { let _ = down.write_all(&buf_u[..n]).await; }
                        },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
                sent
            });
            let s = tokio::net::TcpStream::connect(&proxy_addr).await.unwrap();
            let ok = shoal_net::noise::handshake(
                s,
                &NodeKey::generate(),
                &secret,
                true,
                None,
                Duration::from_secs(5),
            )
            .await;
            assert!(ok.is_ok(), "the recorded handshake was a valid one");
            let recorded = recorder.await.unwrap();
            (tokio::net::TcpStream::connect(&addr).await.unwrap(), recorded)
        };
        let _ = proxy_side.write_all(&recorded).await;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        // The node answers the replayed first message with a fresh ephemeral key; the replayed
        // third message then cannot decrypt, and the node closes the connection.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), proxy_side.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
                Err(_) => panic!("a replayed handshake must be refused, not left open"),
            }
        }
        eprintln!(
            "replayed handshake ({} bytes): refused, connection closed",
            recorded.len()
        );
        ping().await;

        // 500 connections that never finish the handshake: real calls keep their latency, and
        // all 500 are closed within the handshake timeout (10 s).
        let started = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..500 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let _ = s.write_all(&[0, 0]).await; // half a length prefix, then nothing
            idle.push(s);
        }
        let mut latencies = Vec::new();
        for _ in 0..20 {
            latencies.push(ping().await);
        }
        latencies.sort();
        let median = latencies[latencies.len() / 2];
        eprintln!(
            "500 half-open connections: status call median {median:?} (baseline {baseline_latency:?})"
        );
        assert!(
            median < Duration::from_millis(200),
            "calls must keep their latency: {median:?}"
        );
        let mut set = tokio::task::JoinSet::new();
        for mut s in idle {
            set.spawn(async move { closed_within(&mut s, Duration::from_secs(15)).await });
        }
        let mut all_closed = true;
        while let Some(r) = set.join_next().await {
            all_closed &= r.unwrap();
        }
        assert!(all_closed, "every half-open connection is closed");
        eprintln!(
            "500 half-open connections closed within {:.1} s",
            started.elapsed().as_secs_f64()
        );
        ping().await;
    });
    stop(dev);
}
