//! Multiplexed RPC over authenticated connections.
//!
//! Over 800 lines on purpose: the call path, the connection's reader and writer, and the
//! reconnection rules share one `Conn` and its invariants (pending replies, request permits,
//! the priority lane); the envelope and the failure codes are in `rpc/`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::NodeId;
use crate::identity::{ClusterSecret, NodeKey};
use crate::metrics::CallOutcome;
use crate::noise::{ChannelError, HandshakeError, Opener, Sealer, Secured, handshake};
use crate::transport::Transport;

// The envelope every request and reply travels in, and its encoding.
mod envelope;
mod remote;

use envelope::{Envelope, EnvelopeOut, encode_response};
pub use envelope::{check_message, request_wire_bytes, response_wire_bytes};
pub use remote::{ErrorCode, RemoteError};

/// Bytes of queued messages a connection's writer seals before one flush.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// A timed-out call drops its connection only if nothing at all arrived on it for this long
/// (or the call's timeout, if longer): a peer too busy to answer one call within a heartbeat
/// still sends other replies, and its connection carries writes that must not fail with it.
const MIN_SILENCE_TO_DROP: Duration = Duration::from_secs(5);

/// Calls and requests in flight on a connection from which its writer, finding nothing more
/// queued, lets the ready tasks run before sealing (see the writer).
const BUSY_IN_FLIGHT: usize = 2;

/// Pending once, having woken its task: the runtime puts a task that woke itself at the back
/// of its worker's run queue (unlike `tokio::task::yield_now`, which waits for the worker to
/// poll its timers and I/O), so the tasks ready now run before it resumes.
#[derive(Default)]
struct RunAfterReady {
    woken: bool,
}

impl Future for RunAfterReady {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.woken {
            return std::task::Poll::Ready(());
        }
        self.woken = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Tunables of a node's network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Default time a call may take, reply included.
    pub call_timeout: Duration,
    /// Time a handshake may take before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Largest message (request or reply body plus envelope).
    pub max_message: usize,
    /// Messages queued for sending on one connection before callers wait (backpressure).
    pub send_queue: usize,
    /// Requests from one peer handled at once.
    pub max_concurrent_requests: usize,
    /// After a failed dial, the next one waits this long, doubling with each failure up to
    /// `reconnect_max`; calls meanwhile fail at once. A connection from the peer ends the wait.
    pub reconnect_initial: Duration,
    /// The longest wait between dials to an unreachable peer.
    pub reconnect_max: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            call_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_message: 64 << 20,
            send_queue: 64,
            max_concurrent_requests: 256,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No reply within the timeout.
    #[error("call to {peer:?} ({endpoint}) timed out")]
    Timeout {
        /// The peer called.
        peer: NodeId,
        /// The endpoint called.
        endpoint: String,
    },
    /// No connection to the peer could be made.
    #[error("{peer:?} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// The connection was lost before the reply arrived.
    #[error("connection to {0:?} lost")]
    ConnectionLost(NodeId),
    /// The peer's handler returned an error.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// The message exceeds the configured maximum.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Dialling failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl RpcError {
    /// The peer's code if its handler failed; for the call itself failing (a timeout, a lost
    /// connection, an unreachable peer) [`ErrorCode::RetryLater`]; for a refused handshake or
    /// an oversized message [`ErrorCode::Refused`].
    pub fn code(&self) -> ErrorCode {
        match self {
            RpcError::Remote(e) => e.code,
            RpcError::Timeout { .. }
            | RpcError::Unreachable { .. }
            | RpcError::ConnectionLost(_)
            | RpcError::Connect { .. } => ErrorCode::RetryLater,
            RpcError::TooLarge(_) | RpcError::Handshake(_) => ErrorCode::Refused,
        }
    }
}

/// Serves the requests of peers.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request from `from` to `endpoint`.
    fn handle(
        &self,
        from: NodeId,
        endpoint: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>> + Send>>;

    /// Whether requests to `endpoint` take microseconds of CPU and no I/O (a point read): the
    /// connection's reader then runs them in place when they finish at their first poll,
    /// sparing a task. Anything slower must say no, since the reader reads nothing meanwhile.
    fn answers_at_once(&self, _endpoint: &str) -> bool {
        false
    }
}

/// The handler of a party that only calls (the operator CLI, simulated clients, tests): every
/// request to it is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallsOnly;

impl Handler for CallsOnly {
    fn handle(
        &self,
        _from: NodeId,
        _endpoint: String,
        _body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>> + Send>> {
        Box::pin(async {
            Err(RemoteError::refused(
                "this party only calls; it serves nothing",
            ))
        })
    }
}

type Reply = oneshot::Sender<Result<Vec<u8>, RpcError>>;

struct Conn {
    serial: u64,
    peer: NodeId,
    /// The node that dialled: of two connections between the same pair, both nodes keep the
    /// one dialled by the smaller node id.
    dialled_by: NodeId,
    /// Permits of the requests the peer may have in service here at once.
    permits: Arc<Semaphore>,
    max_requests: usize,
    tx: mpsc::Sender<Vec<u8>>,
    /// The priority lane: heartbeats and instant answers, sent before anything queued on `tx`
    /// (a busy connection's data never delays a heartbeat by more than one batch). Unbounded:
    /// only small control messages, at most one per request the peer is waiting on, use it.
    urgent: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<BTreeMap<u64, Reply>>,
    next_id: AtomicU64,
    alive: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// When a frame last arrived: a connection silent for a whole call timeout while a call
    /// waited is presumed dead (a peer gone without a reset, a network partition) and dropped,
    /// so the next call dials again instead of timing out on it forever.
    last_heard: Mutex<tokio::time::Instant>,
}

impl Conn {
    /// Nothing in flight either way: no call waiting for a reply, no request in service, no
    /// message queued for sending.
    fn idle(&self) -> bool {
        self.pending.lock().is_empty()
            && self.permits.available_permits() == self.max_requests
            && self.tx.capacity() == self.tx.max_capacity()
    }

    /// Calls waiting for a reply plus requests in service: how busy the connection is.
    fn in_flight(&self) -> usize {
        self.pending.lock().len() + (self.max_requests - self.permits.available_permits())
    }

    fn close(&self) {
        self.alive.store(false, Ordering::SeqCst);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        let pending: Vec<Reply> = self.pending.lock().split_off(&0).into_values().collect();
        for r in pending {
            let _ = r.send(Err(RpcError::ConnectionLost(self.peer)));
        }
    }
}

struct Inner<T: Transport> {
    key: NodeKey,
    secret: ClusterSecret,
    transport: T,
    config: NetConfig,
    handler: Arc<dyn Handler>,
    conns: Mutex<BTreeMap<NodeId, Arc<Conn>>>,
    /// Every registered connection, primary or retiring; closed ones are pruned when counted.
    all: Mutex<Vec<Arc<Conn>>>,
    metrics: crate::NetMetrics,
    addrs: Mutex<BTreeMap<NodeId, String>>,
    serial: AtomicU64,
    listeners: Mutex<Vec<JoinHandle<()>>>,
    refused: AtomicU64,
    /// Peers whose last dial failed: when to try again, and the current wait.
    backoff: Mutex<BTreeMap<NodeId, (tokio::time::Instant, Duration)>>,
}

/// A node's endpoint on the cluster network. Cheap to clone.
pub struct Network<T: Transport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Network<T> {
    fn clone(&self) -> Self {
        Network {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport> Network<T> {
    /// A network for the node `key` of the cluster sharing `secret`; `handler` serves requests.
    pub fn new(
        key: NodeKey,
        secret: ClusterSecret,
        transport: T,
        config: NetConfig,
        handler: Arc<dyn Handler>,
    ) -> Self {
        Network {
            inner: Arc::new(Inner {
                key,
                secret,
                transport,
                config,
                handler,
                conns: Mutex::new(BTreeMap::new()),
                all: Mutex::new(Vec::new()),
                metrics: crate::NetMetrics::default(),
                addrs: Mutex::new(BTreeMap::new()),
                serial: AtomicU64::new(1),
                listeners: Mutex::new(Vec::new()),
                refused: AtomicU64::new(0),
                backoff: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.key.node_id()
    }

    /// Handshakes refused so far (wrong secret, unexpected peer, timeout, garbage).
    pub fn refused_handshakes(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Accepts connections on `addr` until [`Network::shutdown`]; returns the bound address.
    pub async fn listen(&self, addr: &str) -> std::io::Result<SocketAddr> {
        let (mut listener, local) = self.inner.transport.bind(addr).await?;
        let net = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match T::accept(&mut listener).await {
                    Ok((stream, from)) => {
                        let net = net.clone();
                        tokio::spawn(async move {
                            let i = &net.inner;
                            match handshake(
                                stream,
                                &i.key,
                                &i.secret,
                                false,
                                None,
                                i.config.handshake_timeout,
                            )
                            .await
                            {
                                Ok(secured) => {
                                    let peer = secured.peer;
                                    net.register(secured, peer)
                                }
                                Err(e) => {
                                    i.refused.fetch_add(1, Ordering::Relaxed);
                                    warn!(%from, error = %e, "refused an incoming connection");
                                }
                            }
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        self.inner.listeners.lock().push(task);
        Ok(local)
    }

    /// Remembers where `peer` listens, for calls made before a connection exists.
    pub fn add_peer_addr(&self, peer: NodeId, addr: String) {
        self.inner.addrs.lock().insert(peer, addr);
    }

    /// Dials `addr` and authenticates; `expected` is the node that must answer, if known.
    pub async fn connect(&self, addr: &str, expected: Option<NodeId>) -> Result<NodeId, RpcError> {
        let i = &self.inner;
        let stream = i
            .transport
            .connect(addr)
            .await
            .map_err(|source| RpcError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let secured = handshake(
            stream,
            &i.key,
            &i.secret,
            true,
            expected,
            i.config.handshake_timeout,
        )
        .await?;
        let peer = secured.peer;
        self.register(secured, i.key.node_id());
        self.add_peer_addr(peer, addr.to_string());
        Ok(peer)
    }

    /// Peers with a live connection.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.inner
            .conns
            .lock()
            .iter()
            .filter(|(_, c)| c.alive.load(Ordering::SeqCst))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Drops the connection to `peer`, if any (tests, and peers marked down).
    pub fn disconnect(&self, peer: NodeId) {
        let c = self.inner.conns.lock().remove(&peer);
        if let Some(c) = c {
            c.close();
        }
    }

    /// Stops listening and closes every connection.
    pub fn shutdown(&self) {
        for t in self.inner.listeners.lock().drain(..) {
            t.abort();
        }
        let conns: Vec<Arc<Conn>> = self
            .inner
            .conns
            .lock()
            .split_off(&NodeId::default())
            .into_values()
            .collect();
        for c in conns {
            c.close();
        }
    }

    /// Calls `endpoint` on `peer` with the default timeout.
    pub async fn call(
        &self,
        peer: NodeId,
        endpoint: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_with_timeout(peer, endpoint, body, self.inner.config.call_timeout)
            .await
    }

    /// Calls `endpoint` on `peer`, connecting first if needed; fails after `timeout`.
    pub async fn call_with_timeout(
        &self,
        peer: NodeId,
        endpoint: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_on_lane(peer, endpoint, body, timeout, false)
            .await
    }

    /// [`Network::call_with_timeout`] on the connection's priority lane: sent before any data
    /// queued on it (heartbeats). The peer must answer the endpoint at once
    /// ([`Handler::answers_at_once`]) for the reply to take its priority lane too.
    pub async fn call_urgent(
        &self,
        peer: NodeId,
        endpoint: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_on_lane(peer, endpoint, body, timeout, true).await
    }

    /// How long nothing has arrived from `peer` on its connection (`None`: no connection). A
    /// peer whose replies and requests keep arriving is alive, however late one answer is.
    pub fn silent_for(&self, peer: NodeId) -> Option<Duration> {
        let conn = self.inner.conns.lock().get(&peer).cloned()?;
        conn.alive
            .load(Ordering::SeqCst)
            .then(|| conn.last_heard.lock().elapsed())
    }

    async fn call_on_lane(
        &self,
        peer: NodeId,
        endpoint: &str,
        body: Vec<u8>,
        timeout: Duration,
        urgent: bool,
    ) -> Result<Vec<u8>, RpcError> {
        let started = std::time::Instant::now();
        let fut = self.call_inner(peer, endpoint, body, urgent);
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                // Silence shorter than this is a busy peer, not a dead connection.
                self.drop_if_silent(peer, timeout.max(MIN_SILENCE_TO_DROP));
                Err(RpcError::Timeout {
                    peer,
                    endpoint: endpoint.to_string(),
                })
            }
        };
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(RpcError::Timeout { .. }) => CallOutcome::Timeout,
            Err(_) => CallOutcome::Error,
        };
        self.inner
            .metrics
            .record_call(endpoint, outcome, started.elapsed().as_secs_f64());
        result
    }

    /// After a timed-out call: drops the connection to `peer` if nothing at all arrived on it
    /// for `silence` (a slow handler on a live peer keeps its connection: other replies, or
    /// the peer's own requests, still arrive).
    fn drop_if_silent(&self, peer: NodeId, silence: Duration) {
        let conn = self.inner.conns.lock().get(&peer).cloned();
        if let Some(c) = conn {
            let heard = *c.last_heard.lock();
            if heard.elapsed() >= silence {
                debug!(
                    ?peer,
                    "connection silent for a whole call timeout; dropping it"
                );
                c.close();
                self.forget(&c);
            }
        }
    }

    /// This network's metrics (register them in the node's registry).
    pub fn metrics(&self) -> &crate::NetMetrics {
        &self.inner.metrics
    }

    async fn call_inner(
        &self,
        peer: NodeId,
        endpoint: &str,
        body: Vec<u8>,
        urgent: bool,
    ) -> Result<Vec<u8>, RpcError> {
        let conn = self.connection(peer).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = EnvelopeOut::Request {
            id,
            endpoint,
            body: serde_bytes::Bytes::new(&body),
        }
        .encode();
        if msg.len() > self.inner.config.max_message {
            return Err(RpcError::TooLarge(msg.len()));
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        conn.pending.lock().insert(id, reply_tx);
        // Removes the pending entry however this call ends (reply, timeout, cancellation).
        struct Forget<'a>(&'a Conn, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.pending.lock().remove(&self.1);
            }
        }
        let _forget = Forget(&conn, id);
        // A close that ran between taking the connection and the insert above failed the
        // calls pending then, not this one, and its writer may still take the message only to
        // drop it: without this check the call would wait for its whole timeout.
        if !conn.alive.load(Ordering::SeqCst) {
            return Err(RpcError::ConnectionLost(peer));
        }
        if urgent {
            conn.urgent
                .send(msg)
                .map_err(|_| RpcError::ConnectionLost(peer))?;
        } else {
            conn.tx
                .send(msg)
                .await
                .map_err(|_| RpcError::ConnectionLost(peer))?;
        }
        match reply_rx.await {
            Ok(r) => r,
            Err(_) => Err(RpcError::ConnectionLost(peer)),
        }
    }

    async fn connection(&self, peer: NodeId) -> Result<Arc<Conn>, RpcError> {
        let existing = self
            .inner
            .conns
            .lock()
            .get(&peer)
            .filter(|c| c.alive.load(Ordering::SeqCst))
            .cloned();
        if let Some(c) = existing {
            return Ok(c);
        }
        let addr =
            self.inner
                .addrs
                .lock()
                .get(&peer)
                .cloned()
                .ok_or_else(|| RpcError::Unreachable {
                    peer,
                    reason: "no known address".into(),
                })?;
        let waiting = self
            .inner
            .backoff
            .lock()
            .get(&peer)
            .map(|(at, _)| at.saturating_duration_since(tokio::time::Instant::now()))
            .filter(|d| !d.is_zero());
        if let Some(d) = waiting {
            return Err(RpcError::Unreachable {
                peer,
                reason: format!("last dial failed; next attempt in {} ms", d.as_millis()),
            });
        }
        if let Err(e) = self.connect(&addr, Some(peer)).await {
            let cfg = &self.inner.config;
            let mut b = self.inner.backoff.lock();
            let wait = b.get(&peer).map_or(cfg.reconnect_initial, |(_, w)| {
                (*w * 2).min(cfg.reconnect_max)
            });
            b.insert(peer, (tokio::time::Instant::now() + wait, wait));
            return Err(e);
        }
        self.inner
            .conns
            .lock()
            .get(&peer)
            .cloned()
            .ok_or(RpcError::ConnectionLost(peer))
    }

    /// Installs an authenticated connection and starts its reader and writer.
    /// Live connections, including a second one to the same peer that is being retired.
    pub fn open_connections(&self) -> usize {
        let mut all = self.inner.all.lock();
        all.retain(|c| c.alive.load(Ordering::SeqCst));
        all.len()
    }

    /// Closes `conn` once it has stayed idle for a second: it is the losing duplicate of a
    /// simultaneous dial, which the peer (applying the same rule) stops using too. The grace
    /// lets requests the peer sent before it saw the winner complete.
    fn retire_when_idle(&self, conn: Arc<Conn>) {
        let net = self.clone();
        tokio::spawn(async move {
            let mut quiet = 0;
            while conn.alive.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if conn.idle() {
                    quiet += 1;
                    if quiet >= 5 {
                        debug!(peer = ?conn.peer, "duplicate connection retired");
                        conn.close();
                        net.forget(&conn);
                        return;
                    }
                } else {
                    quiet = 0;
                }
            }
        });
    }

    fn register<S>(&self, secured: Secured<S>, dialled_by: NodeId)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let i = &self.inner;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(i.config.send_queue);
        let (urgent, mut urgent_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let permits = Arc::new(Semaphore::new(i.config.max_concurrent_requests));
        let conn = Arc::new(Conn {
            serial: i.serial.fetch_add(1, Ordering::Relaxed),
            peer: secured.peer,
            dialled_by,
            permits: permits.clone(),
            max_requests: i.config.max_concurrent_requests,
            tx,
            urgent,
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            tasks: Mutex::new(Vec::new()),
            last_heard: Mutex::new(tokio::time::Instant::now()),
        });
        i.backoff.lock().remove(&secured.peer);
        i.all.lock().push(conn.clone());
        let loser = {
            // When both nodes dialled at once, both keep the connection dialled by the smaller
            // node id for their calls; the other is retired once idle (closing it at once would
            // fail requests already sent on it). A second dial by the same node keeps the old.
            let mut conns = i.conns.lock();
            match conns.get(&secured.peer) {
                Some(old) if old.alive.load(Ordering::SeqCst) => {
                    if conn.dialled_by < old.dialled_by {
                        let old = old.clone();
                        conns.insert(secured.peer, conn.clone());
                        Some(old)
                    } else {
                        Some(conn.clone())
                    }
                }
                _ => {
                    conns.insert(secured.peer, conn.clone());
                    None
                }
            }
        };
        if let Some(loser) = loser {
            debug!(peer = ?secured.peer, "second connection to a peer; retiring one when idle");
            self.retire_when_idle(loser);
        }
        let Secured {
            mut sink,
            mut stream,
            cipher,
            peer,
        } = secured;
        let writer_cipher = cipher.clone();
        let writer_conn = conn.clone();
        let writer_metrics = self.inner.metrics.clone();
        let writer = tokio::spawn(async move {
            let mut sealer = Sealer::default();
            let mut frames = Vec::new();
            loop {
                let msg = tokio::select! {
                    biased;
                    Some(m) = urgent_rx.recv() => m,
                    Some(m) = rx.recv() => m,
                    else => break,
                };
                // Everything already queued is sealed together and goes out in one flush (one
                // encryption and one write under load, not one per message), up to a bound so
                // a busy connection still flushes often. Urgent messages go first.
                sealer.queue(&msg);
                while let Ok(m) = urgent_rx.try_recv() {
                    sealer.queue(&m);
                }
                let mut requeued = false;
                while sealer.queued() < WRITE_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(more) => sealer.queue(&more),
                        // Woken by the first message, the writer would otherwise run before
                        // the other tasks ready on this worker (on a busy connection, callers
                        // and handlers about to queue more): once per batch, it lets them run
                        // first. It goes to the back of this worker's queue, behind only the
                        // tasks ready now, so it waits for one pass over them, never for a
                        // timer or for the worker to go idle. Not on a quiet connection: there
                        // it would only add a trip through the scheduler.
                        Err(_) if !requeued && writer_conn.in_flight() >= BUSY_IN_FLIGHT => {
                            requeued = true;
                            RunAfterReady::default().await;
                        }
                        Err(_) => break,
                    }
                }
                sealer.seal(&writer_cipher, &mut frames);
                for frame in frames.drain(..) {
                    writer_metrics.frame_sent(frame.len());
                    if let Err(e) = sink.feed(frame).await {
                        debug!(?peer, error = %e, "send failed");
                        writer_conn.alive.store(false, Ordering::SeqCst);
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    writer_conn.alive.store(false, Ordering::SeqCst);
                    return;
                }
            }
        });
        let net = self.clone();
        let reader_conn = conn.clone();
        let max_message = i.config.max_message;
        let reader = tokio::spawn(async move {
            let mut opener = Opener::new(max_message);
            let reason = loop {
                let frame = match stream.next().await {
                    Some(Ok(f)) => {
                        *reader_conn.last_heard.lock() = tokio::time::Instant::now();
                        net.inner.metrics.frame_received(f.len());
                        f
                    }
                    Some(Err(e)) => break ChannelError::Closed(e.to_string()),
                    None => break ChannelError::Closed("end of stream".into()),
                };
                let messages = match opener.push(&cipher, &frame) {
                    Ok(m) => m,
                    Err(e) => break e,
                };
                for m in messages {
                    match Envelope::decode(&m) {
                        Ok(Envelope::Response { id, result, code }) => {
                            let waiter = reader_conn.pending.lock().remove(&id);
                            if let Some(w) = waiter {
                                let _ = w.send(result.map(|b| b.into_vec()).map_err(|message| {
                                    RpcError::Remote(RemoteError {
                                        code: code.into(),
                                        message,
                                    })
                                }));
                            }
                        }
                        Ok(Envelope::Request { id, endpoint, body }) => {
                            let metrics = net.inner.metrics.clone();
                            // A handler that panics (a bug) answers with an error instead
                            // of leaving its caller to time out, or taking this reader down.
                            let mut handling = std::panic::AssertUnwindSafe(
                                net.inner
                                    .handler
                                    .handle(peer, endpoint.clone(), body.into_vec()),
                            )
                            .catch_unwind()
                            .map(|r| r.unwrap_or_else(|panic| Err(handler_panicked(&*panic))));
                            // A handler that needs no I/O (a heartbeat, a point read) is done
                            // at its first poll: answered here, on the priority lane, with no
                            // task and no request permit, so a connection busy with data work
                            // still answers heartbeats at once.
                            if net.inner.handler.answers_at_once(&endpoint)
                                && let Some(result) = (&mut handling).now_or_never()
                            {
                                metrics.record_served(&endpoint, result.is_ok());
                                let _ = reader_conn.urgent.send(encode_response(id, &result));
                                continue;
                            }
                            // Any other goes on in a task of its own, which waits for one of
                            // the connection's request permits: the reader never waits, so
                            // what follows (heartbeats, replies to this node's calls) is read
                            // at once however busy the handlers are.
                            let (tx, permits) = (reader_conn.tx.clone(), permits.clone());
                            tokio::spawn(async move {
                                let Ok(permit) = permits.acquire_owned().await else {
                                    return;
                                };
                                let result = handling.await;
                                metrics.record_served(&endpoint, result.is_ok());
                                let _ = tx.send(encode_response(id, &result)).await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            warn!(?peer, error = %e, "undecodable rpc message; dropping the connection");
                            reader_conn.close();
                            net.forget(&reader_conn);
                            return;
                        }
                    }
                }
            };
            debug!(?peer, error = %reason, "connection closed");
            reader_conn.close();
            net.forget(&reader_conn);
        });
        conn.tasks.lock().extend([writer, reader]);
    }

    fn forget(&self, conn: &Conn) {
        let mut conns = self.inner.conns.lock();
        if conns
            .get(&conn.peer)
            .is_some_and(|c| c.serial == conn.serial)
        {
            conns.remove(&conn.peer);
        }
    }
}

/// The error a caller receives when the handler of its request panicked.
fn handler_panicked(panic: &(dyn std::any::Any + Send)) -> RemoteError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    warn!(panic = %message, "an RPC handler panicked");
    RemoteError::internal(format!("the request's handler panicked: {message}"))
}
