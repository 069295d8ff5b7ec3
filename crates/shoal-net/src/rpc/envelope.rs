//! The RPC envelope: a version marker, then a request (id, endpoint, body) or a reply (id,
//! result) in named MessagePack, encoded from borrowed parts into one allocation.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::remote::RemoteError;

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
        /// The failure's [`ErrorCode`] as a byte; absent on success and from peers older than
        /// the code (read as unspecified).
        #[serde(default)]
        code: u8,
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
        #[serde(skip_serializing_if = "is_zero")]
        code: u8,
    },
}

fn is_zero(code: &u8) -> bool {
    *code == 0
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

/// The encoded reply to request `id`: a success's body, or a failure's message and code.
pub(super) fn encode_response(id: u64, result: &Result<Vec<u8>, RemoteError>) -> Vec<u8> {
    EnvelopeOut::Response {
        id,
        result: match result {
            Ok(b) => Ok(serde_bytes::Bytes::new(b)),
            Err(e) => Err(&e.message),
        },
        code: result.as_ref().err().map_or(0, |e| e.code.into()),
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
        let success = encode_response(u64::MAX, &Ok(body.clone()));
        // A success carries no code: its bytes are those of the envelope before codes existed.
        let mut before_codes = vec![RPC_VERSION];
        #[derive(Serialize)]
        enum Old<'a> {
            Response {
                id: u64,
                result: Result<&'a serde_bytes::Bytes, &'a str>,
            },
        }
        rmp_serde::encode::write_named(
            &mut before_codes,
            &Old::Response {
                id: u64::MAX,
                result: Ok(serde_bytes::Bytes::new(&body)),
            },
        )
        .expect("encodes");
        assert_eq!(success, before_codes);
        let failure = RemoteError::new(super::super::ErrorCode::RetryLater, "no table t");
        for result in [Ok(body.clone()), Err(failure)] {
            let reply = encode_response(u64::MAX, &result);
            match Envelope::decode(&reply) {
                Ok(Envelope::Response {
                    id,
                    result: r,
                    code,
                }) => {
                    assert_eq!(id, u64::MAX);
                    match (&result, r) {
                        (Ok(b), Ok(got)) => assert_eq!(&got.into_vec(), b),
                        (Err(e), Err(message)) => {
                            assert_eq!(message, e.message);
                            assert_eq!(super::super::ErrorCode::from(code), e.code);
                        }
                        other => panic!("mismatch: {other:?}"),
                    }
                }
                other => panic!("not a response: {other:?}"),
            }
        }
        // A reply from a peer older than the codes decodes, with the code unspecified.
        let mut old_failure = vec![RPC_VERSION];
        rmp_serde::encode::write_named(
            &mut old_failure,
            &Old::Response {
                id: 1,
                result: Err("refused"),
            },
        )
        .expect("encodes");
        assert!(matches!(
            Envelope::decode(&old_failure),
            Ok(Envelope::Response { code: 0, result: Err(m), .. }) if m == "refused"
        ));
    }
}
