//! The sync session: a pure state machine that leaves both replicas holding the CRDT merge of
//! both, whichever side starts.
//!
//! A session is driven from outside: the initiator is created with [`Session::initiate`], the
//! responder with [`Session::respond`] on the first message; then each side feeds received
//! messages to [`Session::receive`] and sends what [`Session::poll_send`] returns until both are
//! [`done`](Session::is_done). The session reads and writes its own replica through [`Replica`];
//! it does no I/O of its own, keeps no clock and draws no randomness.
//!
//! The conversation (I = initiator, R = responder; round trips in brackets):
//!
//! 1. I → R `Hello` (digest: XOR, check and count of the partition's ids). R compares:
//!    equal → `InSync` [1 round trip, 18 bytes at a million items]. A difference of one item is
//!    read off the digests: R sends the item, or asks for it with `Want`. An empty side asks for
//!    everything (`WantAll`) or receives everything.
//! 2. Otherwise R → I `Cells` 0..m₀ of its sketch, m₀ sized from the count difference.
//! 3. I peels its own cells against R's. Success → I → R `Want` (ids I lacks) and `Items` (the
//!    items R lacks); R → I the wanted `Items` [2 round trips]. Failure → I → R `More` with its
//!    estimator summary; R sizes the next batch from the estimated difference (or, when listing
//!    every id is cheaper, sends `Ids`), and step 3 repeats [3 round trips].
//!
//! Every message is at most [`MAX_MESSAGE_BYTES`](crate::protocol::MAX_MESSAGE_BYTES): cells, ids
//! and items stream over as many messages as needed. An unexpected message is a
//! [`SyncError::Protocol`] and changes nothing.
//!
//! Over 800 lines on purpose: one state machine, whose states and transitions read best side
//! by side; the messages are in `protocol`, the sketch in `sketch`.

use std::collections::{HashSet, VecDeque};

use crate::estimator::{MINI_SATURATION, MINI_WIRE_BYTES, MiniEstimate, Summary, estimate_mini};
use crate::index::Head;
use crate::protocol::{
    Digest, MAX_CELLS_PER_MESSAGE, MAX_IDS_PER_MESSAGE, MAX_ITEM_BYTES_PER_MESSAGE, Message,
    PROTOCOL_VERSION, WireError, put_varint, take_varint,
};
use crate::sketch::{
    CELL_WIRE_BYTES, Cell, ItemId, WireCell, check_of, decode_cells, encode_cells, peel,
};

/// Largest item a session accepts.
pub const MAX_ITEM_BYTES: u64 = 64 << 20;

/// What a session needs from the local replica of the partition being synced.
pub trait Replica {
    /// The partition's index head (digest and mini summary).
    fn head(&self) -> Result<Head, SyncError>;
    /// The encoded item under an engine key, if held.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError>;
    /// Sketch cells `from..to`.
    fn cells(&self, from: u64, to: u64) -> Result<Vec<Cell>, SyncError>;
    /// Every id of the partition.
    fn ids(&self) -> Result<Vec<ItemId>, SyncError>;
    /// The full difference-size summary.
    fn summary(&self) -> Result<Summary, SyncError>;
    /// The engine key of the item with this id, if held.
    fn key_of(&self, id: ItemId) -> Result<Option<Vec<u8>>, SyncError>;
    /// Whether an item with this id is held.
    fn has(&self, id: ItemId) -> Result<bool, SyncError> {
        Ok(self.key_of(id)?.is_some())
    }
    /// The encoded item with this id, if held.
    fn item(&self, id: ItemId) -> Result<Option<Vec<u8>>, SyncError> {
        match self.key_of(id)? {
            Some(key) => self.get(&key),
            None => Ok(None),
        }
    }
    /// Up to `limit` items of the partition after engine key `after`: (engine key, encoded).
    fn items_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<shoal_storage::Entries, SyncError>;
    /// Merges received encoded items (each must belong to the partition).
    fn apply(&self, items: Vec<Vec<u8>>) -> Result<ApplyStats, SyncError>;
}

/// What applying received items did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Items received.
    pub received: u64,
    /// Items that were already held byte for byte (sent for nothing).
    pub identical: u64,
}

/// Why a session failed. After an error the session must be dropped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A message could not be decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A message arrived that the protocol does not allow in this state.
    #[error("protocol violation: {got} while {state}")]
    Protocol {
        /// What the session was waiting for.
        state: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The peer sent an item of another partition or a malformed item stream.
    #[error("bad item from peer: {0}")]
    BadItem(String),
    /// Local storage failed.
    #[error(transparent)]
    Storage(#[from] shoal_storage::StorageError),
    /// The local table failed.
    #[error(transparent)]
    Table(#[from] shoal_table::TableError),
}

/// Counters of one side of a session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Items sent.
    pub items_sent: u64,
    /// Bytes of encoded items sent (payload, without framing).
    pub item_bytes_sent: u64,
    /// Items received and merged.
    pub items_received: u64,
    /// Received items that were already held identically.
    pub items_identical: u64,
    /// Sketch cells sent.
    pub cells_sent: u64,
    /// Ids decoded by peeling (initiator).
    pub ids_decoded: u64,
    /// Whether the id-list fallback was used.
    pub used_id_list: bool,
}

/// Cells that decode a difference of `d` ids with high probability (measured by the
/// `sketch_overhead` example: 1.4 per difference for large `d`, more for small).
pub fn cells_needed(d: f64) -> u64 {
    (1.4 * d + 6.0 * d.sqrt() + 4.0).ceil() as u64
}

/// First batch when the count difference is `k` (the exact size of a one-sided difference, a
/// lower bound otherwise) and the mini summaries say `e`: enough to decode w.h.p. (an estimate
/// that exceeds `k` is inflated by 1.5 for its spread), but never more than about 7 cells per
/// difference surely present, so that small differences stay within three times the
/// information-theoretic minimum. A saturated estimate only says "at least 150": the batch is
/// sized for that, and a larger difference costs one more exchange.
fn first_batch(k: u64, e: &MiniEstimate) -> u64 {
    let k = k as f64;
    if e.saturated {
        return cells_needed(k.max(1.5 * MINI_SATURATION));
    }
    let target = if e.estimate <= 1.25 * k {
        k
    } else {
        1.5 * e.estimate
    };
    let sure = k.max(f64::from(e.differing_buckets)).max(2.0);
    cells_needed(target).min((7.0 * sure - 3.0) as u64)
}

/// Cells asked for after a failed first batch when nothing better is known.
fn initial_cells(k: u64) -> u64 {
    first_batch(
        k,
        &MiniEstimate {
            estimate: 0.0,
            differing_buckets: 0,
            saturated: false,
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitReply,
    AwaitCells,
    AwaitIds,
    AwaitItems,
    AwaitHello,
    Serving { want_done: bool, items_done: bool },
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitReply => "awaiting the reply to hello",
            State::AwaitCells => "awaiting cells",
            State::AwaitIds => "awaiting ids",
            State::AwaitItems => "awaiting items",
            State::AwaitHello => "awaiting hello",
            State::Serving { .. } => "serving requests",
            State::Done => "finished",
        }
    }
}

fn message_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::InSync => "in-sync",
        Message::Cells { .. } => "cells",
        Message::More { .. } => "more",
        Message::Ids { .. } => "ids",
        Message::Want { .. } => "want",
        Message::WantAll => "want-all",
        Message::Items { .. } => "items",
    }
}

#[derive(Debug)]
enum Producer {
    Cells {
        cells: Vec<Cell>,
        from: u64,
        pos: usize,
    },
    Ids {
        ids: Vec<ItemId>,
        pos: usize,
        want: bool,
    },
    ItemsById {
        ids: Vec<ItemId>,
        pos: usize,
        buf: Vec<u8>,
    },
    /// Items read when they were asked for: (engine key, version then).
    Resolved {
        items: Vec<(Vec<u8>, Vec<u8>)>,
        pos: usize,
        buf: Vec<u8>,
    },
    AllItems {
        after: Option<Vec<u8>>,
        exhausted: bool,
        buf: Vec<u8>,
    },
}

/// Reassembles the item stream from `Items` fragments.
#[derive(Debug, Default)]
struct ItemStream {
    buf: Vec<u8>,
}

impl ItemStream {
    fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, SyncError> {
        self.buf.extend_from_slice(data);
        let mut items = Vec::new();
        let mut rest: &[u8] = &self.buf;
        loop {
            let mut probe = rest;
            let Some(len) = take_varint(&mut probe) else {
                if rest.len() > 10 {
                    return Err(SyncError::BadItem("malformed item length".into()));
                }
                break;
            };
            if len > MAX_ITEM_BYTES {
                return Err(SyncError::BadItem(format!("item of {len} bytes")));
            }
            if (probe.len() as u64) < len {
                break;
            }
            items.push(probe[..len as usize].to_vec());
            rest = &probe[len as usize..];
        }
        let consumed = self.buf.len() - rest.len();
        self.buf.drain(..consumed);
        Ok(items)
    }
}

/// One side of a sync session over one partition.
#[derive(Debug)]
pub struct Session {
    state: State,
    out: VecDeque<Message>,
    producers: VecDeque<Producer>,
    head: Option<Head>,
    peer_count: u64,
    remote_cells: Vec<WireCell>,
    summary_sent: bool,
    doubled_blind: bool,
    push_only: bool,
    remote_ids: Vec<ItemId>,
    wanted: Vec<ItemId>,
    received: HashSet<[u8; 32]>,
    cells_offered: u64,
    inbound: ItemStream,
    stats: SessionStats,
}

impl Session {
    fn new(state: State) -> Self {
        Session {
            state,
            out: VecDeque::new(),
            producers: VecDeque::new(),
            head: None,
            peer_count: 0,
            remote_cells: Vec::new(),
            summary_sent: false,
            doubled_blind: false,
            push_only: false,
            remote_ids: Vec::new(),
            wanted: Vec::new(),
            received: HashSet::new(),
            cells_offered: 0,
            inbound: ItemStream::default(),
            stats: SessionStats::default(),
        }
    }

    /// Starts a session as initiator: queues the `Hello`.
    pub fn initiate(replica: &dyn Replica) -> Result<Session, SyncError> {
        let head = replica.head()?;
        let mut s = Session::new(State::AwaitReply);
        s.out.push_back(Message::Hello {
            version: PROTOCOL_VERSION,
            digest: head.digest.into(),
            mini: head.mini,
        });
        s.head = Some(head);
        Ok(s)
    }

    /// Starts a session that only *pushes*: the initiator sends what the responder lacks and
    /// asks for nothing (offloading a partition this node no longer stores).
    pub fn initiate_push_only(replica: &dyn Replica) -> Result<Session, SyncError> {
        let mut s = Self::initiate(replica)?;
        s.push_only = true;
        Ok(s)
    }

    /// Starts a session as responder, from the initiator's first message.
    pub fn respond(replica: &dyn Replica, first: Message) -> Result<Session, SyncError> {
        let mut s = Session::new(State::AwaitHello);
        s.receive(replica, first)?;
        Ok(s)
    }

    /// Whether this side has nothing left to send or receive.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.out.is_empty() && self.producers.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The next message to send, if any. Large transfers are produced lazily, one bounded
    /// message at a time.
    pub fn poll_send(&mut self, replica: &dyn Replica) -> Result<Option<Message>, SyncError> {
        if let Some(m) = self.out.pop_front() {
            return Ok(Some(m));
        }
        let Some(mut p) = self.producers.pop_front() else {
            return Ok(None);
        };
        let (msg, finished) = self.produce(replica, &mut p)?;
        if !finished {
            self.producers.push_front(p);
        }
        Ok(Some(msg))
    }

    fn produce(
        &mut self,
        replica: &dyn Replica,
        p: &mut Producer,
    ) -> Result<(Message, bool), SyncError> {
        match p {
            Producer::Cells { cells, from, pos } => {
                let end = (*pos + MAX_CELLS_PER_MESSAGE).min(cells.len());
                let msg = Message::Cells {
                    from: *from + *pos as u64,
                    cells: encode_cells(&cells[*pos..end]),
                    last: end == cells.len(),
                };
                self.stats.cells_sent += (end - *pos) as u64;
                *pos = end;
                Ok((msg, end == cells.len()))
            }
            Producer::Ids { ids, pos, want } => {
                let end = (*pos + MAX_IDS_PER_MESSAGE).min(ids.len());
                let packed = ids[*pos..end]
                    .iter()
                    .flat_map(|i| i.0.to_le_bytes())
                    .collect();
                let last = end == ids.len();
                *pos = end;
                let msg = if *want {
                    Message::Want { ids: packed, last }
                } else {
                    Message::Ids { ids: packed, last }
                };
                Ok((msg, last))
            }
            Producer::ItemsById { ids, pos, buf } => {
                while buf.len() < MAX_ITEM_BYTES_PER_MESSAGE && *pos < ids.len() {
                    // An item that vanished meanwhile (offloaded, say) is skipped.
                    if let Some(item) = replica.item(ids[*pos])? {
                        self.stats.items_sent += 1;
                        self.stats.item_bytes_sent += item.len() as u64;
                        put_varint(buf, item.len() as u64);
                        buf.extend_from_slice(&item);
                    }
                    *pos += 1;
                }
                let exhausted = *pos == ids.len();
                Ok(Self::items_message(buf, exhausted))
            }
            Producer::Resolved { items, pos, buf } => {
                while buf.len() < MAX_ITEM_BYTES_PER_MESSAGE && *pos < items.len() {
                    let (key, then) = std::mem::take(&mut items[*pos]);
                    *pos += 1;
                    // Since it was asked for, the item may have merged what the peer sent: if
                    // that left exactly the peer's version, the peer has it all; otherwise the
                    // current version holds the one asked for and more.
                    let item = match replica.get(&key)? {
                        Some(now) if now == then => then,
                        Some(now) if self.received.contains(blake3::hash(&now).as_bytes()) => {
                            continue;
                        }
                        Some(now) => now,
                        None => then,
                    };
                    self.stats.items_sent += 1;
                    self.stats.item_bytes_sent += item.len() as u64;
                    put_varint(buf, item.len() as u64);
                    buf.extend_from_slice(&item);
                }
                let exhausted = *pos == items.len();
                Ok(Self::items_message(buf, exhausted))
            }
            Producer::AllItems {
                after,
                exhausted,
                buf,
            } => {
                while buf.len() < MAX_ITEM_BYTES_PER_MESSAGE && !*exhausted {
                    let page = replica.items_after(after.as_deref(), 256)?;
                    if page.len() < 256 {
                        *exhausted = true;
                    }
                    for (k, v) in page {
                        self.stats.items_sent += 1;
                        self.stats.item_bytes_sent += v.len() as u64;
                        put_varint(buf, v.len() as u64);
                        buf.extend_from_slice(&v);
                        *after = Some(k);
                    }
                }
                Ok(Self::items_message(buf, *exhausted))
            }
        }
    }

    fn items_message(buf: &mut Vec<u8>, source_exhausted: bool) -> (Message, bool) {
        let n = buf.len().min(MAX_ITEM_BYTES_PER_MESSAGE);
        let data: Vec<u8> = buf.drain(..n).collect();
        let last = source_exhausted && buf.is_empty();
        (Message::Items { data, last }, last)
    }

    fn violation(&self, got: &Message) -> SyncError {
        SyncError::Protocol {
            state: self.state.name(),
            got: message_name(got),
        }
    }

    /// Feeds one received message.
    pub fn receive(&mut self, replica: &dyn Replica, msg: Message) -> Result<(), SyncError> {
        match (self.state, msg) {
            (
                State::AwaitHello,
                Message::Hello {
                    version,
                    digest,
                    mini,
                },
            ) => {
                if version != PROTOCOL_VERSION {
                    return Err(WireError::UnknownVersion(version).into());
                }
                self.on_hello(replica, digest, &mini)
            }
            (State::AwaitReply, Message::InSync) => {
                self.state = State::Done;
                Ok(())
            }
            (State::AwaitReply | State::AwaitCells, Message::Cells { from, cells, last })
                if from == self.remote_cells.len() as u64 =>
            {
                let cells = decode_cells(&cells).ok_or(WireError::Malformed("cells"))?;
                self.remote_cells.extend(cells);
                if last {
                    self.try_decode(replica)?;
                }
                Ok(())
            }
            (State::AwaitReply, Message::Want { ids, last: true }) => {
                // The responder read a one-item difference off the digests.
                let ids = unpack_ids(&ids);
                let mut all_held = true;
                for id in &ids {
                    all_held &= replica.has(*id)?;
                }
                if all_held {
                    self.producers.push_back(Producer::ItemsById {
                        ids,
                        pos: 0,
                        buf: Vec::new(),
                    });
                    self.state = State::Done;
                } else {
                    // A digest accident: ask for a sketch instead.
                    self.request_more(replica, 2 * initial_cells(2))?;
                }
                Ok(())
            }
            (State::AwaitReply, Message::WantAll) => {
                self.producers.push_back(Producer::AllItems {
                    after: None,
                    exhausted: false,
                    buf: Vec::new(),
                });
                self.state = State::Done;
                Ok(())
            }
            (State::AwaitReply | State::AwaitItems, Message::Items { data, last }) => {
                self.take_items(replica, &data, last)?;
                if last {
                    self.state = State::Done;
                }
                Ok(())
            }
            (State::AwaitCells | State::AwaitIds, Message::Ids { ids, last }) => {
                self.state = State::AwaitIds;
                self.remote_ids.extend(unpack_ids(&ids));
                if last {
                    self.finish_from_id_lists(replica)?;
                }
                Ok(())
            }
            (
                State::Serving {
                    want_done,
                    items_done,
                },
                msg,
            ) => self.serve(replica, msg, want_done, items_done),
            (_, msg) => Err(self.violation(&msg)),
        }
    }

    fn take_items(
        &mut self,
        replica: &dyn Replica,
        data: &[u8],
        last: bool,
    ) -> Result<(), SyncError> {
        let items = self.inbound.push(data)?;
        if last && !self.inbound.buf.is_empty() {
            return Err(SyncError::BadItem("item stream ends inside an item".into()));
        }
        if !items.is_empty() {
            for item in &items {
                self.received.insert(*blake3::hash(item).as_bytes());
            }
            let applied = replica.apply(items)?;
            self.stats.items_received += applied.received;
            self.stats.items_identical += applied.identical;
        }
        Ok(())
    }

    // ---- responder ----------------------------------------------------------------------

    fn on_hello(
        &mut self,
        replica: &dyn Replica,
        theirs: Digest,
        their_mini: &[u8; MINI_WIRE_BYTES],
    ) -> Result<(), SyncError> {
        let head = replica.head()?;
        let ours: Digest = head.digest.into();
        self.peer_count = theirs.count;
        if ours == theirs {
            self.out.push_back(Message::InSync);
            self.state = State::Done;
            return Ok(());
        }
        if theirs.count == 0 {
            self.producers.push_back(Producer::AllItems {
                after: None,
                exhausted: false,
                buf: Vec::new(),
            });
            self.state = State::Done;
            return Ok(());
        }
        if ours.count == 0 {
            self.out.push_back(Message::WantAll);
            self.state = State::Serving {
                want_done: true,
                items_done: false,
            };
            return Ok(());
        }
        let x = ItemId(ours.xor ^ theirs.xor);
        let pure = x.0 != 0 && check_of(x) == ours.check ^ theirs.check;
        if pure && ours.count == theirs.count + 1 && replica.has(x)? {
            self.producers.push_back(Producer::ItemsById {
                ids: vec![x],
                pos: 0,
                buf: Vec::new(),
            });
            self.state = State::Done;
            self.head = Some(head);
            return Ok(());
        }
        if pure && theirs.count == ours.count + 1 && !replica.has(x)? {
            self.out.push_back(Message::Want {
                ids: x.0.to_le_bytes().to_vec(),
                last: true,
            });
            self.state = State::Serving {
                want_done: true,
                items_done: false,
            };
            self.head = Some(head);
            return Ok(());
        }
        let estimate = estimate_mini(&head.mini, their_mini);
        let m0 = first_batch(ours.count.abs_diff(theirs.count), &estimate);
        self.head = Some(head);
        self.offer_cells(replica, m0)?;
        self.state = State::Serving {
            want_done: false,
            items_done: false,
        };
        Ok(())
    }

    fn offer_cells(&mut self, replica: &dyn Replica, upto: u64) -> Result<(), SyncError> {
        let from = self.cells_offered;
        if upto <= from {
            return Ok(());
        }
        let cells = replica.cells(from, upto)?;
        self.cells_offered = upto;
        self.producers.push_back(Producer::Cells {
            cells,
            from,
            pos: 0,
        });
        Ok(())
    }

    fn serve(
        &mut self,
        replica: &dyn Replica,
        msg: Message,
        mut want_done: bool,
        mut items_done: bool,
    ) -> Result<(), SyncError> {
        match msg {
            Message::More { upto, summary } if !want_done || !items_done => {
                let head = match &self.head {
                    Some(h) => *h,
                    None => replica.head()?,
                };
                let mut target = upto.max(self.cells_offered + 8);
                if let Some(s) = summary {
                    let theirs = Summary::from_wire(&s).ok_or(WireError::Malformed("more"))?;
                    let estimate = replica.summary()?.estimate_difference(&theirs);
                    target = target.max(cells_needed(1.5 * estimate));
                }
                // When the difference is so large that the id list is smaller than the cells
                // still to send, list the ids instead.
                let cell_bytes = (target - self.cells_offered) * CELL_WIRE_BYTES as u64;
                if cell_bytes > 8 * head.count() {
                    self.stats.used_id_list = true;
                    self.producers.push_back(Producer::Ids {
                        ids: replica.ids()?,
                        pos: 0,
                        want: false,
                    });
                } else {
                    self.offer_cells(replica, target)?;
                }
                // A fallback from the one-item shortcut: the full exchange follows.
                want_done = false;
                self.state = State::Serving {
                    want_done,
                    items_done,
                };
                Ok(())
            }
            Message::Want { ids, last } if !want_done => {
                self.wanted.extend(unpack_ids(&ids));
                if last {
                    want_done = true;
                    if !self.wanted.is_empty() {
                        // Read the wanted versions now, before the initiator's items (which
                        // follow in the same stream) are merged over them: what the initiator
                        // lacks is these versions, and a merged one could equal what it sent.
                        let mut items = Vec::with_capacity(self.wanted.len());
                        for id in std::mem::take(&mut self.wanted) {
                            if let Some(key) = replica.key_of(id)?
                                && let Some(item) = replica.get(&key)?
                            {
                                items.push((key, item));
                            }
                        }
                        self.producers.push_back(Producer::Resolved {
                            items,
                            pos: 0,
                            buf: Vec::new(),
                        });
                    }
                }
                self.state = State::Serving {
                    want_done,
                    items_done,
                };
                self.maybe_done();
                Ok(())
            }
            Message::Items { data, last } if !items_done => {
                self.take_items(replica, &data, last)?;
                items_done = last;
                self.state = State::Serving {
                    want_done,
                    items_done,
                };
                self.maybe_done();
                Ok(())
            }
            other => Err(self.violation(&other)),
        }
    }

    fn maybe_done(&mut self) {
        if self.state
            == (State::Serving {
                want_done: true,
                items_done: true,
            })
        {
            self.state = State::Done;
        }
    }

    // ---- initiator ----------------------------------------------------------------------

    fn local_cells(&mut self, replica: &dyn Replica, m: u64) -> Result<Vec<Cell>, SyncError> {
        replica.cells(0, m)
    }

    fn try_decode(&mut self, replica: &dyn Replica) -> Result<(), SyncError> {
        let m = self.remote_cells.len() as u64;
        let local = self.local_cells(replica, m)?;
        let sparse = match peel(&local, &self.remote_cells) {
            Ok(diff) => {
                let mut genuine = true;
                for id in &diff.local_only {
                    if !replica.has(*id)? {
                        genuine = false;
                        break;
                    }
                }
                if genuine {
                    self.stats.ids_decoded = diff.len() as u64;
                    self.finish(diff.local_only, diff.remote_only);
                    return Ok(());
                }
                false
            }
            // A small first batch means a small difference (the mini summaries said so): a few
            // more cells will most likely do, and cost less than the full summary.
            Err(_) => m <= 64,
        };
        if sparse && !self.doubled_blind && !self.summary_sent {
            self.doubled_blind = true;
            self.out.push_back(Message::More {
                upto: m + (m / 2).max(8),
                summary: None,
            });
            self.state = State::AwaitCells;
            return Ok(());
        }
        self.request_more(replica, 2 * m)
    }

    fn request_more(&mut self, replica: &dyn Replica, upto: u64) -> Result<(), SyncError> {
        let summary = if self.summary_sent {
            None
        } else {
            self.summary_sent = true;
            Some(replica.summary()?.to_wire())
        };
        self.out.push_back(Message::More { upto, summary });
        self.state = State::AwaitCells;
        Ok(())
    }

    fn finish_from_id_lists(&mut self, replica: &dyn Replica) -> Result<(), SyncError> {
        let local = replica.ids()?;
        let mut remote = std::mem::take(&mut self.remote_ids);
        remote.sort_unstable();
        let (mut local_only, mut remote_only) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < local.len() || j < remote.len() {
            match (local.get(i), remote.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    local_only.push(*a);
                    i += 1;
                }
                (Some(_), Some(b)) => {
                    remote_only.push(*b);
                    j += 1;
                }
                (Some(a), None) => {
                    local_only.push(*a);
                    i += 1;
                }
                (None, Some(b)) => {
                    remote_only.push(*b);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        self.stats.used_id_list = true;
        self.finish(local_only, remote_only);
        Ok(())
    }

    fn finish(&mut self, local_only: Vec<ItemId>, remote_only: Vec<ItemId>) {
        let remote_only = if self.push_only {
            Vec::new()
        } else {
            remote_only
        };
        let wants = !remote_only.is_empty();
        self.producers.push_back(Producer::Ids {
            ids: remote_only,
            pos: 0,
            want: true,
        });
        self.producers.push_back(Producer::ItemsById {
            ids: local_only,
            pos: 0,
            buf: Vec::new(),
        });
        self.state = if wants {
            State::AwaitItems
        } else {
            State::Done
        };
    }
}

fn unpack_ids(packed: &[u8]) -> Vec<ItemId> {
    packed
        .chunks_exact(8)
        .map(|c| ItemId(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
        .collect()
}
