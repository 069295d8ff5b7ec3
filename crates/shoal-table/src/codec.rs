//! Versioned encoding of stored values: a version marker, then MessagePack with named fields.
//!
//! Named fields let a struct gain optional fields (`#[serde(default)]`) without a new version.
//! For any other change, a type declares a new [`Versioned::VERSION_MARKER`], names its
//! predecessor in [`Versioned::Previous`] and converts it in [`Versioned::migrate`]: data
//! written under any earlier version is then still read, converted on the fly.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why stored bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes start with no marker of this type or of any of its earlier versions.
    #[error("unknown version marker (first bytes {prefix:02x?}) for {type_name}")]
    UnknownVersion {
        /// The type being decoded.
        type_name: &'static str,
        /// The first bytes of the value.
        prefix: Vec<u8>,
    },
    /// The marker matched but the body is not a valid encoding of that version.
    #[error("malformed {type_name} value: {source}")]
    Malformed {
        /// The version being decoded.
        type_name: &'static str,
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {type_name}: {source}")]
pub struct EncodeError {
    type_name: &'static str,
    #[source]
    source: rmp_serde::encode::Error,
}

/// A type stored with a version marker. Markers of a type and of all its predecessors must be
/// distinct and none a prefix of another.
pub trait Versioned: Serialize + DeserializeOwned {
    /// Bytes written before the encoded value. Keep them short and unique to this version.
    const VERSION_MARKER: &'static [u8];
    /// The version this one replaced ([`Initial`] for a first version).
    type Previous: Versioned;
    /// Converts a value of the previous version.
    fn migrate(previous: Self::Previous) -> Self;

    /// Marker followed by the MessagePack encoding with named fields.
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Self::VERSION_MARKER.to_vec();
        rmp_serde::encode::write_named(&mut out, self).map_err(|source| EncodeError {
            type_name: std::any::type_name::<Self>(),
            source,
        })?;
        Ok(out)
    }

    /// Decodes bytes written under this version or any earlier one.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if Self::VERSION_MARKER.is_empty() {
            // Only `Initial` has no marker: the chain of versions is exhausted.
            return Err(DecodeError::UnknownVersion {
                type_name: std::any::type_name::<Self>(),
                prefix: bytes.iter().take(8).copied().collect(),
            });
        }
        match bytes.strip_prefix(Self::VERSION_MARKER) {
            Some(body) => rmp_serde::from_slice(body).map_err(|source| DecodeError::Malformed {
                type_name: std::any::type_name::<Self>(),
                source,
            }),
            None => match Self::Previous::decode(bytes) {
                Ok(prev) => Ok(Self::migrate(prev)),
                Err(DecodeError::UnknownVersion { prefix, .. }) => {
                    Err(DecodeError::UnknownVersion {
                        type_name: std::any::type_name::<Self>(),
                        prefix,
                    })
                }
                Err(e) => Err(e),
            },
        }
    }
}

/// The predecessor of every first version: no value ever has this type.
#[derive(Debug, Serialize, Deserialize)]
pub enum Initial {}

impl Versioned for Initial {
    const VERSION_MARKER: &'static [u8] = b"";
    type Previous = Initial;
    fn migrate(previous: Initial) -> Self {
        previous
    }
}
