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
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
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
