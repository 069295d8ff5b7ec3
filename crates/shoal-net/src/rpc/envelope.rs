//! The RPC envelope: a version marker, then a request (id, endpoint, body) or a reply (id,
//! result) in named MessagePack, encoded from borrowed parts into one allocation.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Version marker of the RPC envelope.
const RPC_VERSION: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Envelope {
    Request {
        id: u64,
        endpoint: String,
        body: ByteBuf,
    },
    Response {
        id: u64,
        result: Result<ByteBuf, String>,
    },
}

/// What [`Envelope`] encodes to, built from borrowed parts: sending a message copies neither
/// the endpoint's name nor the body before encoding it.
#[derive(Serialize)]
pub(super) enum EnvelopeOut<'a> {
    Request {
        id: u64,
        endpoint: &'a str,
        body: &'a serde_bytes::Bytes,
    },
    Response {
        id: u64,
        result: Result<&'a serde_bytes::Bytes, &'a str>,
    },
}

impl EnvelopeOut<'_> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let payload = match self {
            EnvelopeOut::Request { endpoint, body, .. } => endpoint.len() + body.len(),
            EnvelopeOut::Response { result, .. } => result.map_or_else(str::len, |b| b.len()),
        };
        // The version marker, the field names, the id and the length prefixes fit in the
        // slack: the message is written into one allocation, never regrown.
        let mut out = Vec::with_capacity(payload + 48);
        out.push(RPC_VERSION);
        rmp_serde::encode::write_named(&mut out, self).expect("envelopes encode");
        out
    }
}

/// The encoded reply to request `id`.
pub(super) fn encode_response(id: u64, result: &Result<Vec<u8>, String>) -> Vec<u8> {
    EnvelopeOut::Response {
        id,
        result: match result {
            Ok(b) => Ok(serde_bytes::Bytes::new(b)),
            Err(e) => Err(e),
        },
    }
    .encode()
}

impl Envelope {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&RPC_VERSION, rest)) => rmp_serde::from_slice(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("unknown rpc version {v}")),
            None => Err("empty message".into()),
        }
    }
}

/// MessagePack's header of a `bin` of `len` bytes.
fn bin_header(len: usize) -> usize {
    match len {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Bytes a request with a body of `body_len` bytes to `endpoint` occupies on a connection, sent
/// by itself: the envelope (request ids taken as 32-bit: a connection's ids count up from 0)
/// and the Noise frames that carry it (see [`crate::noise::sealed_len`]). TCP/IP headers are not
/// counted.
pub fn request_wire_bytes(endpoint: &str, body_len: usize) -> u64 {
    let empty = EnvelopeOut::Request {
        id: u64::from(u32::MAX),
        endpoint,
        body: serde_bytes::Bytes::new(&[]),
    }
    .encode()
    .len();
    crate::noise::sealed_len(empty - bin_header(0) + bin_header(body_len) + body_len) as u64
}

/// Bytes a successful reply with a body of `body_len` bytes occupies on a connection, as
/// [`request_wire_bytes`] counts them.
pub fn response_wire_bytes(body_len: usize) -> u64 {
    let empty = encode_response(u64::from(u32::MAX), &Ok(Vec::new())).len();
    crate::noise::sealed_len(empty - bin_header(0) + bin_header(body_len) + body_len) as u64
}

/// Decodes one RPC message (after decryption and reassembly) as the reader does, and says
/// whether it is well formed: the entry point of the RPC decoder's fuzz target.
pub fn check_message(bytes: &[u8]) -> Result<(), String> {
    Envelope::decode(bytes).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owned form, encoded as before the borrowed one existed: the wire format.
    fn owned(e: &Envelope) -> Vec<u8> {
        let mut out = vec![RPC_VERSION];
        rmp_serde::encode::write_named(&mut out, e).expect("encodes");
        out
    }

    #[test]
    fn wire_sizes_are_the_sizes_of_the_sealed_messages() {
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 200_000] {
            let body = vec![1u8; len];
            let request = EnvelopeOut::Request {
                id: u64::from(u32::MAX),
                endpoint: "sync",
                body: serde_bytes::Bytes::new(&body),
            }
            .encode();
            assert_eq!(
                request_wire_bytes("sync", len),
                crate::noise::sealed_len(request.len()) as u64
            );
            let response = encode_response(u64::from(u32::MAX), &Ok(body));
            assert_eq!(
                response_wire_bytes(len),
                crate::noise::sealed_len(response.len()) as u64
            );
        }
    }

    #[test]
    fn borrowed_envelopes_encode_as_the_owned_ones_and_decode_back() {
        let body = vec![7u8; 300];
        let request = EnvelopeOut::Request {
            id: 42,
            endpoint: "table.read",
            body: serde_bytes::Bytes::new(&body),
        }
        .encode();
        assert_eq!(
            request,
            owned(&Envelope::Request {
                id: 42,
                endpoint: "table.read".into(),
                body: ByteBuf::from(body.clone()),
            })
        );
        assert!(matches!(
            Envelope::decode(&request),
            Ok(Envelope::Request { id: 42, endpoint, body: b }) if endpoint == "table.read" && b[..] == body[..]
        ));
        for result in [Ok(body.clone()), Err("no table t".to_string())] {
            let reply = encode_response(u64::MAX, &result);
            assert_eq!(
                reply,
                owned(&Envelope::Response {
                    id: u64::MAX,
                    result: result.clone().map(ByteBuf::from),
                })
            );
            match Envelope::decode(&reply) {
                Ok(Envelope::Response { id, result: r }) => {
                    assert_eq!(id, u64::MAX);
                    assert_eq!(r.map(ByteBuf::into_vec), result);
                }
                other => panic!("not a response: {other:?}"),
            }
        }
    }
}
