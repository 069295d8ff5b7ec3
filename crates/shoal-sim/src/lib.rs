//! Deterministic simulation of Shoal: the node code, unchanged, over turmoil's simulated network.
//!
//! The network layer is generic over a [`Transport`]; [`SimTransport`] is that transport over
//! `turmoil::net`, so hosts of one turmoil simulation (one thread, virtual time, a seeded
//! random source) connect, lose messages, get partitioned and repaired, exactly where real
//! nodes would use TCP.

pub mod cluster;
pub mod crashable;

use std::io;
use std::net::SocketAddr;

use shoal_net::Transport;

/// TCP of a turmoil simulation. Must be used from a host (or client) of a running simulation.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimTransport;

impl Transport for SimTransport {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }

    async fn bind(&self, addr: &str) -> io::Result<(Self::Listener, SocketAddr)> {
        let listener = turmoil::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    }

    async fn accept(listener: &mut Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }
}
