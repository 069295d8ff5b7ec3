//! Sync messages and their wire encoding.
//!
//! Messages are a serde enum (for logs, tests and fuzzing); on the wire they use a compact
//! binary layout, because this is the protocol whose bytes Shoal promises to keep near the
//! information-theoretic minimum: a tag byte, then fixed fields, LEB128 varints and packed
//! arrays. The first message of a session, [`Message::Hello`], carries the protocol version;
//! every later message belongs to the version agreed there. Every message is at most
//! [`MAX_MESSAGE_BYTES`]; decoding checks every length and never trusts one.

use serde::{Deserialize, Serialize};

use crate::estimator::MINI_WIRE_BYTES;
use crate::sketch::{CELL_WIRE_BYTES, Cell};

/// The protocol version this code speaks (2: item streams may travel zstd-compressed).
pub const PROTOCOL_VERSION: u8 = 2;

/// Item stream fragments shorter than this are sent as they are.
const COMPRESS_FROM: usize = 256;
/// zstd level of item stream fragments: the fastest levels already take out what repeats from
/// item to item (bucket ids, field names, node ids) at hundreds of MB/s.
const COMPRESSION_LEVEL: i32 = 1;

/// No encoded message is larger than this, whatever the difference.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Room for a message's tag and fixed fields.
const HEADER_ROOM: usize = 32;

/// Most cells in one `Cells` message.
pub const MAX_CELLS_PER_MESSAGE: usize = (MAX_MESSAGE_BYTES - HEADER_ROOM) / CELL_WIRE_BYTES;
/// Most ids in one `Ids` or `Want` message.
pub const MAX_IDS_PER_MESSAGE: usize = (MAX_MESSAGE_BYTES - HEADER_ROOM) / 8;
/// Most bytes of the item stream in one `Items` message.
pub const MAX_ITEM_BYTES_PER_MESSAGE: usize = MAX_MESSAGE_BYTES - HEADER_ROOM;

/// A partition digest: sketch cell 0 with its full count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// XOR of all ids.
    pub xor: u64,
    /// XOR of all id checks.
    pub check: u32,
    /// Number of items.
    pub count: u64,
}

impl From<Cell> for Digest {
    fn from(c: Cell) -> Self {
        Digest {
            xor: c.xor,
            check: c.check,
            count: c.count,
        }
    }
}

/// One message of a sync session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Initiator → responder, first: the initiator's partition digest.
    Hello {
        /// Protocol version of the session.
        version: u8,
        /// The initiator's digest.
        digest: Digest,
        /// The initiator's mini summary: lets the responder size its first batch of cells.
        mini: [u8; MINI_WIRE_BYTES],
    },
    /// Responder → initiator: the digests are equal; the session is over.
    InSync,
    /// Sketch cells `from..`, packed ([`CELL_WIRE_BYTES`] each); `last` ends the batch.
    Cells {
        /// Index of the first cell.
        from: u64,
        /// Packed cells.
        cells: Vec<u8>,
        /// Whether this is the batch's final message.
        last: bool,
    },
    /// Initiator → responder: peeling needs more cells, up to `upto` at least; `summary` (the
    /// initiator's estimator summary) lets the responder size the batch from the difference.
    More {
        /// Cells wanted, at least.
        upto: u64,
        /// The initiator's summary, packed.
        summary: Option<Vec<u8>>,
    },
    /// Responder → initiator: all the responder's ids, packed (8 bytes each), instead of cells
    /// when the difference is so large that listing ids is cheaper.
    Ids {
        /// Packed ids.
        ids: Vec<u8>,
        /// Whether this is the list's final message.
        last: bool,
    },
    /// Ids whose items the sender lacks and asks for, packed.
    Want {
        /// Packed ids.
        ids: Vec<u8>,
        /// Whether this is the list's final message.
        last: bool,
    },
    /// Responder → initiator: the responder holds nothing; send every item.
    WantAll,
    /// A fragment of the item stream (records of LEB128 length + encoded item).
    Items {
        /// Stream bytes.
        data: Vec<u8>,
        /// Whether the stream ends with this message.
        last: bool,
    },
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// The tag byte names no message.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A Hello of a version this code does not speak.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnknownVersion(u8),
    /// The message ends inside a field.
    #[error("truncated {0} message")]
    Truncated(&'static str),
    /// A field's value is impossible (a packed array of the wrong length, a bad flag).
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

const TAG_HELLO: u8 = 1;
const TAG_IN_SYNC: u8 = 2;
const TAG_CELLS: u8 = 3;
const TAG_MORE: u8 = 4;
const TAG_IDS: u8 = 5;
const TAG_WANT: u8 = 6;
const TAG_WANT_ALL: u8 = 7;
const TAG_ITEMS: u8 = 8;
const TAG_ITEMS_ZSTD: u8 = 9;

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint from the front of `input`.
pub fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Message {
    /// Bytes of an encoded message that are item payload as it travels (compressed or not):
    /// all of an `Items` message but its tag and `last` flag, nothing of any other.
    pub fn encoded_item_bytes(encoded: &[u8]) -> u64 {
        match encoded.first() {
            Some(&TAG_ITEMS | &TAG_ITEMS_ZSTD) => encoded.len().saturating_sub(2) as u64,
            _ => 0,
        }
    }

    /// The wire encoding. Panics in debug builds if a message was built over the size limit
    /// (the session never does).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::Hello {
                version,
                digest,
                mini,
            } => {
                out.push(TAG_HELLO);
                out.push(*version);
                out.extend_from_slice(&digest.xor.to_le_bytes());
                out.extend_from_slice(&digest.check.to_le_bytes());
                put_varint(&mut out, digest.count);
                out.extend_from_slice(mini);
            }
            Message::InSync => out.push(TAG_IN_SYNC),
            Message::Cells { from, cells, last } => {
                out.push(TAG_CELLS);
                out.push(u8::from(*last));
                put_varint(&mut out, *from);
                out.extend_from_slice(cells);
            }
            Message::More { upto, summary } => {
                out.push(TAG_MORE);
                put_varint(&mut out, *upto);
                match summary {
                    Some(s) => {
                        out.push(1);
                        out.extend_from_slice(s);
                    }
                    None => out.push(0),
                }
            }
            Message::Ids { ids, last } => {
                out.push(TAG_IDS);
                out.push(u8::from(*last));
                out.extend_from_slice(ids);
            }
            Message::Want { ids, last } => {
                out.push(TAG_WANT);
                out.push(u8::from(*last));
                out.extend_from_slice(ids);
            }
            Message::WantAll => out.push(TAG_WANT_ALL),
            Message::Items { data, last } => {
                // Compressed only when that is smaller: values may be incompressible.
                let packed = (data.len() >= COMPRESS_FROM)
                    .then(|| zstd::bulk::compress(data, COMPRESSION_LEVEL).ok())
                    .flatten()
                    .filter(|z| z.len() < data.len());
                out.push(if packed.is_some() {
                    TAG_ITEMS_ZSTD
                } else {
                    TAG_ITEMS
                });
                out.push(u8::from(*last));
                out.extend_from_slice(packed.as_deref().unwrap_or(data));
            }
        }
        debug_assert!(out.len() <= MAX_MESSAGE_BYTES, "message over the limit");
        out
    }

    /// Decodes one message, checking every length.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (&tag, mut rest) = bytes.split_first().ok_or(WireError::Empty)?;
        let flag = |rest: &mut &[u8], what| -> Result<bool, WireError> {
            let (&b, r) = rest.split_first().ok_or(WireError::Truncated(what))?;
            *rest = r;
            match b {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(WireError::Malformed(what)),
            }
        };
        let packed_ids = |rest: &[u8], what| -> Result<Vec<u8>, WireError> {
            if !rest.len().is_multiple_of(8) {
                return Err(WireError::Malformed(what));
            }
            Ok(rest.to_vec())
        };
        match tag {
            TAG_HELLO => {
                let (&version, r) = rest.split_first().ok_or(WireError::Truncated("hello"))?;
                if version != PROTOCOL_VERSION {
                    return Err(WireError::UnknownVersion(version));
                }
                if r.len() < 12 {
                    return Err(WireError::Truncated("hello"));
                }
                let xor = u64::from_le_bytes(r[0..8].try_into().expect("8"));
                let check = u32::from_le_bytes(r[8..12].try_into().expect("4"));
                let mut r = &r[12..];
                let count = take_varint(&mut r).ok_or(WireError::Truncated("hello"))?;
                let mini: [u8; MINI_WIRE_BYTES] =
                    r.try_into().map_err(|_| WireError::Malformed("hello"))?;
                Ok(Message::Hello {
                    version,
                    digest: Digest { xor, check, count },
                    mini,
                })
            }
            TAG_IN_SYNC if rest.is_empty() => Ok(Message::InSync),
            TAG_WANT_ALL if rest.is_empty() => Ok(Message::WantAll),
            TAG_IN_SYNC => Err(WireError::Malformed("in-sync")),
            TAG_WANT_ALL => Err(WireError::Malformed("want-all")),
            TAG_CELLS => {
                let last = flag(&mut rest, "cells")?;
                let from = take_varint(&mut rest).ok_or(WireError::Truncated("cells"))?;
                if rest.len() % CELL_WIRE_BYTES != 0 {
                    return Err(WireError::Malformed("cells"));
                }
                Ok(Message::Cells {
                    from,
                    cells: rest.to_vec(),
                    last,
                })
            }
            TAG_MORE => {
                let upto = take_varint(&mut rest).ok_or(WireError::Truncated("more"))?;
                let has = flag(&mut rest, "more")?;
                let summary = if has {
                    if rest.len() != crate::estimator::SUMMARY_WIRE_BYTES {
                        return Err(WireError::Malformed("more"));
                    }
                    Some(rest.to_vec())
                } else if rest.is_empty() {
                    None
                } else {
                    return Err(WireError::Malformed("more"));
                };
                Ok(Message::More { upto, summary })
            }
            TAG_IDS => {
                let last = flag(&mut rest, "ids")?;
                Ok(Message::Ids {
                    ids: packed_ids(rest, "ids")?,
                    last,
                })
            }
            TAG_WANT => {
                let last = flag(&mut rest, "want")?;
                Ok(Message::Want {
                    ids: packed_ids(rest, "want")?,
                    last,
                })
            }
            TAG_ITEMS => {
                let last = flag(&mut rest, "items")?;
                Ok(Message::Items {
                    data: rest.to_vec(),
                    last,
                })
            }
            TAG_ITEMS_ZSTD => {
                let last = flag(&mut rest, "items")?;
                // Bounded: a fragment never inflates past what one plain message may carry. The
                // frame declares its size (the encoder always writes it): exactly that much is
                // allocated, and a frame that declares none, or more, is refused unread.
                let malformed = WireError::Malformed("compressed items");
                let size = zstd::zstd_safe::get_frame_content_size(rest)
                    .ok()
                    .flatten()
                    .filter(|&n| n <= MAX_ITEM_BYTES_PER_MESSAGE as u64)
                    .ok_or(malformed.clone())? as usize;
                let data = zstd::bulk::decompress(rest, size).map_err(|_| malformed.clone())?;
                if data.len() != size {
                    return Err(malformed);
                }
                Ok(Message::Items { data, last })
            }
            other => Err(WireError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_sizes() {
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            digest: Digest {
                xor: 7,
                check: 9,
                count: 1_000_000,
            },
            mini: [7; MINI_WIRE_BYTES],
        };
        let enc = hello.encode();
        assert_eq!(
            enc.len(),
            1 + 1 + 8 + 4 + 3 + 16,
            "hello is 33 bytes for a million items"
        );
        assert_eq!(Message::decode(&enc).unwrap(), hello);
        assert_eq!(Message::InSync.encode().len(), 1);
        for m in [
            Message::InSync,
            Message::WantAll,
            Message::Cells {
                from: 300,
                cells: vec![1; 24],
                last: true,
            },
            Message::More {
                upto: 99,
                summary: None,
            },
            Message::More {
                upto: 1,
                summary: Some(vec![3; crate::estimator::SUMMARY_WIRE_BYTES]),
            },
            Message::Ids {
                ids: vec![5; 16],
                last: false,
            },
            Message::Want {
                ids: vec![],
                last: true,
            },
            Message::Items {
                data: vec![1, 2, 3],
                last: true,
            },
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    /// An item stream fragment of `n` K2V-like records: what repeats from item to item (bucket
    /// id, field names, node id) compresses; the values, random, do not.
    fn item_stream(n: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for i in 0..n {
            let mut item = format!("partition bucket 3f9a0c1d5e7b2a4c6e8f0a1b3c5d7e9f pk p{} sk key-{i:08} dvvs node 77aa01bb22cc33dd", i % 16).into_bytes();
            item.extend((0..13).flat_map(|_| next().to_le_bytes()));
            out.push(item.len() as u8);
            out.extend_from_slice(&item);
        }
        out
    }

    #[test]
    fn item_fragments_travel_compressed_when_that_is_smaller() {
        let data = item_stream(2000);
        let m = Message::Items {
            data: data.clone(),
            last: false,
        };
        let enc = m.encode();
        assert_eq!(enc[0], TAG_ITEMS_ZSTD);
        // Each record has 104 random bytes out of about 200: compression takes out most of
        // the rest, never the random part.
        assert!(
            enc.len() < data.len() * 7 / 10,
            "{} of {}",
            enc.len(),
            data.len()
        );
        assert!(enc.len() > 2000 * 104);
        assert_eq!(Message::decode(&enc).unwrap(), m);
        // Incompressible or short fragments go as they are.
        let random: Vec<u8> = (0..4000).map(|_| rand::random::<u8>()).collect();
        for data in [vec![7u8; 100], random] {
            let m = Message::Items { data, last: true };
            let enc = m.encode();
            assert_eq!(enc[0], TAG_ITEMS, "{} bytes", enc.len());
            assert_eq!(Message::decode(&enc).unwrap(), m);
        }
    }

    #[test]
    fn compressed_items_that_inflate_past_the_limit_or_do_not_decompress_are_refused() {
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_ITEM_BYTES_PER_MESSAGE + 1], 1).unwrap();
        let mut enc = vec![TAG_ITEMS_ZSTD, 0];
        enc.extend_from_slice(&bomb);
        assert!(enc.len() < 1000);
        assert_eq!(
            Message::decode(&enc),
            Err(WireError::Malformed("compressed items"))
        );
        // A stream-encoded frame does not declare its size: refused, however small.
        let unsized_frame = zstd::stream::encode_all(&[5u8; 1000][..], 1).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame),
            Ok(None)
        ));
        let mut enc = vec![TAG_ITEMS_ZSTD, 0];
        enc.extend_from_slice(&unsized_frame);
        assert_eq!(
            Message::decode(&enc),
            Err(WireError::Malformed("compressed items"))
        );
        assert_eq!(
            Message::decode(&[TAG_ITEMS_ZSTD, 1, 1, 2, 3]),
            Err(WireError::Malformed("compressed items"))
        );
        assert_eq!(
            Message::decode(&[TAG_ITEMS_ZSTD, 3]),
            Err(WireError::Malformed("items"))
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[99]), Err(WireError::UnknownTag(99)));
        assert_eq!(
            Message::decode(&[TAG_HELLO, 1, 0]),
            Err(WireError::UnknownVersion(1))
        );
        assert_eq!(
            Message::decode(&[TAG_HELLO, PROTOCOL_VERSION, 0]),
            Err(WireError::Truncated("hello"))
        );
        assert_eq!(
            Message::decode(&[TAG_CELLS, 1, 0, 1, 2]),
            Err(WireError::Malformed("cells"))
        );
        assert_eq!(
            Message::decode(&[TAG_WANT, 2]),
            Err(WireError::Malformed("want"))
        );
        assert_eq!(
            Message::decode(&[TAG_IDS, 0, 1]),
            Err(WireError::Malformed("ids"))
        );
        assert_eq!(
            Message::decode(&[TAG_IN_SYNC, 0]),
            Err(WireError::Malformed("in-sync"))
        );
        let big = vec![TAG_ITEMS; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(Message::decode(&big), Err(WireError::TooLarge(_))));
        let mut v: &[u8] = &[0xff; 11];
        assert_eq!(take_varint(&mut v), None, "an overlong varint is refused");
    }
}
