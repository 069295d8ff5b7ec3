//! Where connections come from: TCP in the product, anything else (a simulated network) in
//! tests, through the same two operations.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// Opens and accepts byte-stream connections.
pub trait Transport: Send + Sync + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound listener.
    type Listener: Send + 'static;

    /// Connects to `addr`.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Binds a listener on `addr`; returns it and the address it is bound to.
    fn bind(
        &self,
        addr: &str,
    ) -> impl Future<Output = io::Result<(Self::Listener, SocketAddr)>> + Send;
    /// Accepts the next connection.
    fn accept(
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

/// Plain TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTransport {
    /// Where outgoing connections leave from; the system's choice if `None`.
    source: Option<std::net::IpAddr>,
}

impl TcpTransport {
    /// TCP whose outgoing connections leave from `ip` (a node bound to one address of a
    /// multi-homed host dials from it too, so peers and firewalls see one address per node).
    pub fn from_source(ip: std::net::IpAddr) -> Self {
        Self { source: Some(ip) }
    }
}

impl Transport for TcpTransport {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let s = match self.source {
            None => tokio::net::TcpStream::connect(addr).await?,
            Some(ip) => {
                let target = tokio::net::lookup_host(addr)
                    .await?
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::AddrNotAvailable,
                            format!("{addr} has no address of the family of {ip}"),
                        )
                    })?;
                let socket = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(target).await?
            }
        };
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn bind(&self, addr: &str) -> io::Result<(Self::Listener, SocketAddr)> {
        let l = tokio::net::TcpListener::bind(addr).await?;
        let a = l.local_addr()?;
        Ok((l, a))
    }

    async fn accept(listener: &mut Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = listener.accept().await?;
        s.set_nodelay(true)?;
        Ok((s, a))
    }
}
