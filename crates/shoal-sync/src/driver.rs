//! Runs a session between two local replicas through an in-process channel that counts every
//! byte: for tests, benchmarks and local repair. Each side sends everything it can before the
//! other answers, so a *leg* is one side's uninterrupted stream and a round trip is two legs.

use std::time::Duration;

use crate::protocol::{MAX_MESSAGE_BYTES, Message};
use crate::session::{Replica, Session, SessionStats, SyncError};

/// What crossed the channel during one session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    /// Encoded bytes from the initiator to the responder.
    pub bytes_a_to_b: u64,
    /// Encoded bytes from the responder to the initiator.
    pub bytes_b_to_a: u64,
    /// Bytes on the wire with the carrier's framing (in a cluster: the `SyncStep` of each leg,
    /// the RPC envelope, the Noise frames' lengths and tags); 0 where the carrier does not
    /// count it (the in-process driver: see [`Leg`] to compute it).
    pub wire_bytes: u64,
    /// Item payload bytes as they travelled (compressed when they went compressed), both ways:
    /// the rest of the bytes is metadata.
    pub item_bytes: u64,
    /// The same items' bytes before compression.
    pub item_bytes_uncompressed: u64,
    /// Messages, both ways.
    pub messages: u64,
    /// The largest message.
    pub max_message: u64,
    /// Uninterrupted one-way streams.
    pub legs: u64,
    /// Initiator's counters.
    pub a: SessionStats,
    /// Responder's counters.
    pub b: SessionStats,
    /// Time the initiator's side spent working (by the caller's clock).
    pub time_a: Duration,
    /// Time the responder's side spent working.
    pub time_b: Duration,
}

impl Transcript {
    /// Every byte that is not an item payload.
    pub fn meta_bytes(&self) -> u64 {
        (self.bytes_a_to_b + self.bytes_b_to_a)
            .checked_sub(self.item_bytes)
            .expect("item bytes are counted within the bytes carried: a metadata count below 0 is a counting bug")
    }

    /// Times a side had to wait for the other's reply.
    pub fn round_trips(&self) -> u64 {
        self.legs.div_ceil(2)
    }
}

/// One side's uninterrupted stream: the sizes of its encoded messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// Whether the initiator sent it.
    pub from_initiator: bool,
    /// Encoded size of each message.
    pub messages: Vec<usize>,
}

/// Syncs `a` (initiator) with `b` (responder) to completion, through encoded messages.
pub fn sync_pair(a: &dyn Replica, b: &dyn Replica) -> Result<Transcript, SyncError> {
    sync_pair_timed(a, b, &|| Duration::ZERO)
}

/// [`sync_pair`], charging each side's work to it with `clock` (for instance the thread's CPU
/// time).
pub fn sync_pair_timed(
    a: &dyn Replica,
    b: &dyn Replica,
    clock: &dyn Fn() -> Duration,
) -> Result<Transcript, SyncError> {
    sync_pair_recorded(a, b, clock, &mut Vec::new())
}

/// [`sync_pair_timed`], also recording every leg in `legs` (so that a caller can compute
/// what a carrier's framing adds).
pub fn sync_pair_recorded(
    a: &dyn Replica,
    b: &dyn Replica,
    clock: &dyn Fn() -> Duration,
    legs: &mut Vec<Leg>,
) -> Result<Transcript, SyncError> {
    let mut t = Transcript::default();
    let mut leg = Vec::new();
    let timed = |acc: &mut Duration, f: &mut dyn FnMut() -> Result<(), SyncError>| {
        let start = clock();
        let r = f();
        *acc += clock().saturating_sub(start);
        r
    };
    let mut ia = None;
    timed(&mut t.time_a, &mut || {
        ia = Some(Session::initiate(a)?);
        Ok(())
    })?;
    let mut ia = ia.expect("initiated");
    let mut rb: Option<Session> = None;
    loop {
        let mut sent = false;
        loop {
            let mut next = None;
            timed(&mut t.time_a, &mut || {
                next = ia.poll_send(a)?;
                Ok(())
            })?;
            let Some(m) = next else { break };
            let mut msg = Some(carry(&mut t, &m, true, &mut leg)?);
            sent = true;
            timed(&mut t.time_b, &mut || {
                let msg = msg.take().expect("delivered once");
                match rb.as_mut() {
                    Some(s) => s.receive(b, msg)?,
                    None => rb = Some(Session::respond(b, msg)?),
                }
                Ok(())
            })?;
        }
        if sent {
            t.legs += 1;
            legs.push(Leg {
                from_initiator: true,
                messages: std::mem::take(&mut leg),
            });
        }
        let mut answered = false;
        if let Some(s) = rb.as_mut() {
            loop {
                let mut next = None;
                timed(&mut t.time_b, &mut || {
                    next = s.poll_send(b)?;
                    Ok(())
                })?;
                let Some(m) = next else { break };
                let mut msg = Some(carry(&mut t, &m, false, &mut leg)?);
                answered = true;
                timed(&mut t.time_a, &mut || {
                    ia.receive(a, msg.take().expect("delivered once"))
                })?;
            }
        }
        if answered {
            t.legs += 1;
            legs.push(Leg {
                from_initiator: false,
                messages: std::mem::take(&mut leg),
            });
        }
        if !sent && !answered {
            break;
        }
    }
    let rb = rb.ok_or(SyncError::Protocol {
        state: "starting",
        got: "nothing",
    })?;
    if !ia.is_done() || !rb.is_done() {
        return Err(SyncError::Protocol {
            state: "ending",
            got: "silence before the session finished",
        });
    }
    t.a = ia.stats();
    t.b = rb.stats();
    t.item_bytes_uncompressed = t.a.item_bytes_sent + t.b.item_bytes_sent;
    Ok(t)
}

fn carry(
    t: &mut Transcript,
    m: &Message,
    a_to_b: bool,
    leg: &mut Vec<usize>,
) -> Result<Message, SyncError> {
    let bytes = m.encode();
    leg.push(bytes.len());
    tracing::trace!(
        direction = if a_to_b { "a->b" } else { "b->a" },
        bytes = bytes.len(),
        message = ?std::mem::discriminant(m),
        "sync message"
    );
    assert!(
        bytes.len() <= MAX_MESSAGE_BYTES,
        "a session built an oversized message"
    );
    if a_to_b {
        t.bytes_a_to_b += bytes.len() as u64;
    } else {
        t.bytes_b_to_a += bytes.len() as u64;
    }
    t.item_bytes += Message::encoded_item_bytes(&bytes);
    t.messages += 1;
    t.max_message = t.max_message.max(bytes.len() as u64);
    Ok(Message::decode(&bytes)?)
}
