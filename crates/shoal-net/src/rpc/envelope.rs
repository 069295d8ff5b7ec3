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
