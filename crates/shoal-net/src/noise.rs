//! The Noise `XXpsk3` handshake and encrypted, length-delimited messages.
//!
//! Frames: a 4-byte big-endian length, then at most one Noise message (64 KiB). A length over
//! the maximum is refused before anything is buffered. An application message is its 4-byte
//! length followed by its bytes, cut into as many Noise messages as needed.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::NodeId;
use crate::identity::{ClusterSecret, NOISE_PARAMS, NodeKey};

/// Largest frame: one Noise message.
pub const MAX_FRAME: usize = 65535;
/// The authentication tag a Noise transport message adds to its plaintext.
const TAG_LEN: usize = 16;
/// Plaintext carried by one full frame.
const MAX_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed or closed during the handshake. A peer with another cluster
    /// secret closes it at the third message, so this is also what a wrong secret looks like.
    #[error("connection closed during the handshake (wrong cluster secret?): {0}")]
    Closed(String),
    /// A handshake message did not decrypt or authenticate (wrong cluster secret, tampering).
    #[error("handshake failed (wrong cluster secret or tampered message): {0}")]
    Noise(#[from] snow::Error),
    /// The peer is a member of the cluster, but not the node we dialled.
    #[error("peer is {got:?}, expected {expected:?}")]
    UnexpectedPeer {
        /// The node we meant to reach.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// The handshake took longer than allowed.
    #[error("handshake timed out")]
    Timeout,
}

/// Bytes a message of `len` bytes occupies on the connection when sealed by itself: its
/// 4-byte length, cut into frames of at most `MAX_PLAINTEXT` bytes, each with its 4-byte
/// frame length and 16-byte tag.
pub fn sealed_len(len: usize) -> usize {
    let plain = 4 + len;
    plain + plain.div_ceil(MAX_PLAINTEXT) * (4 + TAG_LEN)
}

/// A connection's frames.
pub type FramedStream<S> = Framed<S, LengthDelimitedCodec>;

/// Frames a byte stream: 4-byte length, at most [`MAX_FRAME`] bytes.
pub fn framed<S: AsyncRead + AsyncWrite>(stream: S) -> FramedStream<S> {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_framed(stream)
}

/// An established, authenticated connection.
pub struct Secured<S> {
    /// Frames to send.
    pub sink: SplitSink<FramedStream<S>, Bytes>,
    /// Frames received.
    pub stream: SplitStream<FramedStream<S>>,
    /// The session keys, shared by the reading and the writing half.
    pub cipher: Arc<Mutex<snow::TransportState>>,
    /// The authenticated peer.
    pub peer: NodeId,
}

async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(
    f: &mut FramedStream<S>,
) -> Result<BytesMut, HandshakeError> {
    match f.next().await {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => Err(HandshakeError::Closed(e.to_string())),
        None => Err(HandshakeError::Closed("end of stream".into())),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    f: &mut FramedStream<S>,
    bytes: &[u8],
) -> Result<(), HandshakeError> {
    f.send(Bytes::copy_from_slice(bytes))
        .await
        .map_err(|e| HandshakeError::Closed(e.to_string()))
}

fn peer_of(state: &snow::HandshakeState) -> Result<NodeId, HandshakeError> {
    let key = state
        .get_remote_static()
        .ok_or(snow::Error::Input)
        .map_err(HandshakeError::Noise)?;
    Ok(NodeId(key.try_into().map_err(|_| snow::Error::Input)?))
}

/// Runs the handshake on `stream`. The initiator names the node it expects (if it knows it)
/// and aborts before authenticating itself to anyone else.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    key: &NodeKey,
    secret: &ClusterSecret,
    initiator: bool,
    expected: Option<NodeId>,
    timeout: Duration,
) -> Result<Secured<S>, HandshakeError> {
    match tokio::time::timeout(timeout, run(stream, key, secret, initiator, expected)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout),
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    key: &NodeKey,
    secret: &ClusterSecret,
    initiator: bool,
    expected: Option<NodeId>,
) -> Result<Secured<S>, HandshakeError> {
    let psk = secret.psk();
    let builder = snow::Builder::new(NOISE_PARAMS.parse().expect("valid noise params"))
        .local_private_key(key.private())?
        .psk(3, &psk)?;
    let mut f = framed(stream);
    let mut buf = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME];
    let (state, peer) = if initiator {
        let mut hs = builder.build_initiator()?;
        let n = hs.write_message(&[], &mut out)?;
        send(&mut f, &out[..n]).await?;
        let m = next_frame(&mut f).await?;
        hs.read_message(&m, &mut buf)?;
        let peer = peer_of(&hs)?;
        if let Some(expected) = expected
            && expected != peer
        {
            return Err(HandshakeError::UnexpectedPeer {
                expected,
                got: peer,
            });
        }
        let n = hs.write_message(&[], &mut out)?;
        send(&mut f, &out[..n]).await?;
        let mut t = hs.into_transport_mode()?;
        // The responder confirms it derived the same keys (same secret) before we trust the
        // connection.
        let m = next_frame(&mut f).await?;
        t.read_message(&m, &mut buf)?;
        (t, peer)
    } else {
        let mut hs = builder.build_responder()?;
        let m = next_frame(&mut f).await?;
        hs.read_message(&m, &mut buf)?;
        let n = hs.write_message(&[], &mut out)?;
        send(&mut f, &out[..n]).await?;
        let m = next_frame(&mut f).await?;
        hs.read_message(&m, &mut buf)?;
        let peer = peer_of(&hs)?;
        let mut t = hs.into_transport_mode()?;
        let n = t.write_message(&[], &mut out)?;
        send(&mut f, &out[..n]).await?;
        (t, peer)
    };
    let (sink, stream) = f.split();
    Ok(Secured {
        sink,
        stream,
        cipher: Arc::new(Mutex::new(state)),
        peer,
    })
}

/// Why a message could not be read or written on an established connection.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The connection closed or failed.
    #[error("connection lost: {0}")]
    Closed(String),
    /// A frame did not decrypt: corrupted or forged; the connection must be dropped.
    #[error("undecryptable frame: {0}")]
    Decrypt(snow::Error),
    /// A message announced a length over the limit.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u64),
}

/// Encrypts application messages into frames, reusing one buffer for the plaintext.
///
/// Messages are queued, then sealed together: the queued messages (each behind its length)
/// form one stream cut into frames of at most `MAX_PLAINTEXT` bytes. A batch of small
/// messages thus costs one encryption, not one each: for a message of a hundred bytes the
/// cipher's per-call setup (Poly1305's key powers) costs more than the bytes themselves.
#[derive(Default)]
pub struct Sealer {
    plain: Vec<u8>,
}

impl Sealer {
    /// Queues one application message for the next [`Sealer::seal`].
    pub fn queue(&mut self, message: &[u8]) {
        self.plain
            .extend_from_slice(&(message.len() as u32).to_be_bytes());
        self.plain.extend_from_slice(message);
    }

    /// Bytes queued since the last seal.
    pub fn queued(&self) -> usize {
        self.plain.len()
    }

    /// Encrypts everything queued and appends the frames to `frames`. Each frame is encrypted
    /// straight into its own buffer.
    pub fn seal(&mut self, cipher: &Mutex<snow::TransportState>, frames: &mut Vec<Bytes>) {
        let mut t = cipher.lock();
        for chunk in self.plain.chunks(MAX_PLAINTEXT) {
            let mut out = BytesMut::zeroed(chunk.len() + TAG_LEN);
            let n = t
                .write_message(chunk, &mut out)
                .expect("a chunk within the Noise limit encrypts");
            out.truncate(n);
            frames.push(out.freeze());
        }
        drop(t);
        self.plain.clear();
        // A rare large message (a sync batch) must not pin its buffer for the connection's life.
        if self.plain.capacity() > 4 * MAX_FRAME {
            self.plain = Vec::new();
        }
    }
}

/// Reassembles application messages from decrypted frames.
pub struct Opener {
    buf: Vec<u8>,
    max_message: usize,
    scratch: Vec<u8>,
}

impl Opener {
    /// An opener accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Opener {
            buf: Vec::new(),
            max_message,
            scratch: vec![0u8; MAX_FRAME],
        }
    }

    /// Decrypts one frame; returns the messages it completed.
    pub fn push(
        &mut self,
        cipher: &Mutex<snow::TransportState>,
        frame: &[u8],
    ) -> Result<Vec<Vec<u8>>, ChannelError> {
        let n = cipher
            .lock()
            .read_message(frame, &mut self.scratch)
            .map_err(ChannelError::Decrypt)?;
        let mut done = Vec::new();
        // The common case, a whole message in one frame and nothing pending: no reassembly.
        if self.buf.is_empty() && n >= 4 {
            let len = u32::from_be_bytes(self.scratch[..4].try_into().expect("4")) as usize;
            if len > self.max_message {
                return Err(ChannelError::TooLarge(len as u64));
            }
            if 4 + len == n {
                done.push(self.scratch[4..n].to_vec());
                return Ok(done);
            }
        }
        self.buf.extend_from_slice(&self.scratch[..n]);
        // A frame may carry many messages (a sealed batch): read them at a cursor and drop
        // the consumed bytes once, not once per message.
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4")) as usize;
            if len > self.max_message {
                return Err(ChannelError::TooLarge(len as u64));
            }
            if self.buf.len() - at < 4 + len {
                break;
            }
            done.push(self.buf[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        self.buf.drain(..at);
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair of transport states (initiator, responder) over a throwaway handshake.
    fn pair() -> (Mutex<snow::TransportState>, Mutex<snow::TransportState>) {
        let params: snow::params::NoiseParams =
            "Noise_NN_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
        let mut i = snow::Builder::new(params.clone())
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params).build_responder().unwrap();
        let (mut a, mut b) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        let n = r.write_message(&[], &mut a).unwrap();
        i.read_message(&a[..n], &mut b).unwrap();
        (
            Mutex::new(i.into_transport_mode().unwrap()),
            Mutex::new(r.into_transport_mode().unwrap()),
        )
    }

    #[test]
    fn sealed_batches_open_to_the_same_messages_in_order() {
        let (tx, rx) = pair();
        let sizes = [
            0,
            1,
            100,
            MAX_PLAINTEXT - 4,
            MAX_PLAINTEXT - 3,
            MAX_PLAINTEXT,
            200_000,
            7,
        ];
        let messages: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|j| (j * 31 + k) as u8).collect())
            .collect();
        // Sealed one by one, all at once, and in uneven batches: the same messages come out.
        let groupings: [&[usize]; 3] = [&[1; 8], &[8], &[3, 1, 4]];
        for grouping in groupings {
            let mut sealer = Sealer::default();
            let mut frames = Vec::new();
            let mut next = messages.iter();
            for &count in grouping {
                for m in next.by_ref().take(count) {
                    sealer.queue(m);
                }
                sealer.seal(&tx, &mut frames);
                assert_eq!(sealer.queued(), 0);
            }
            assert!(frames.iter().all(|f| f.len() <= MAX_FRAME));
            let mut opener = Opener::new(1 << 20);
            let mut opened = Vec::new();
            for f in &frames {
                opened.extend(opener.push(&rx, f).unwrap());
            }
            assert_eq!(opened, messages, "grouping {grouping:?}");
        }
    }

    #[test]
    fn sealed_len_counts_the_frames_a_message_is_sealed_into() {
        let (a, _b) = pair();
        for len in [
            0usize,
            10,
            MAX_PLAINTEXT - 4,
            MAX_PLAINTEXT - 3,
            3 * MAX_PLAINTEXT,
        ] {
            let mut sealer = Sealer::default();
            sealer.queue(&vec![0u8; len]);
            let mut frames = Vec::new();
            sealer.seal(&a, &mut frames);
            let on_wire: usize = frames.iter().map(|f| 4 + f.len()).sum();
            assert_eq!(sealed_len(len), on_wire, "message of {len} bytes");
        }
    }

    #[test]
    fn a_batch_of_small_messages_is_one_frame() {
        let (tx, rx) = pair();
        let messages: Vec<Vec<u8>> = (0..50u8).map(|k| vec![k; 100]).collect();
        let mut sealer = Sealer::default();
        for m in &messages {
            sealer.queue(m);
        }
        let mut frames = Vec::new();
        sealer.seal(&tx, &mut frames);
        assert_eq!(frames.len(), 1);
        let opened = Opener::new(1 << 20).push(&rx, &frames[0]).unwrap();
        assert_eq!(opened, messages);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_in_either_path() {
        for size in [100, 100_000] {
            let (tx, rx) = pair();
            let mut frames = Vec::new();
            let mut sealer = Sealer::default();
            sealer.queue(&vec![1u8; size]);
            sealer.seal(&tx, &mut frames);
            let mut opener = Opener::new(size - 1);
            let err = opener.push(&rx, &frames[0]).unwrap_err();
            assert!(matches!(err, ChannelError::TooLarge(n) if n == size as u64));
        }
    }
}
