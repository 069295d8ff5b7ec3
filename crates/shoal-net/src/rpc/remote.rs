//! What a peer's handler answers when it fails: a code a caller can act on, and a message for
//! people. The code travels in the reply's envelope beside the message.

use serde::{Deserialize, Serialize};

/// The kind of a failure reported by a peer's handler: what the caller should do about it.
///
/// Encoded as one byte; a code this build does not know (a newer peer's) reads as
/// [`ErrorCode::Unspecified`], and a peer that sends none (an older build) too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "u8", into = "u8")]
pub enum ErrorCode {
    /// No code given (an older peer) or one this build does not know.
    #[default]
    Unspecified,
    /// The peer is busy or the resource is held by someone else: the same request may succeed
    /// later.
    RetryLater,
    /// The peer will not do this for this caller, whenever asked (a forgotten node, a reserved
    /// name): retrying is useless.
    Refused,
    /// What the request names (a table, an endpoint) does not exist on the peer.
    NotFound,
    /// The request could not be decoded.
    Malformed,
    /// The peer failed while serving (its storage, a bug): it may work on another replica.
    Internal,
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again later.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::RetryLater | ErrorCode::Internal)
    }
}

impl From<u8> for ErrorCode {
    fn from(b: u8) -> Self {
        match b {
            1 => ErrorCode::RetryLater,
            2 => ErrorCode::Refused,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::Malformed,
            5 => ErrorCode::Internal,
            _ => ErrorCode::Unspecified,
        }
    }
}

impl From<ErrorCode> for u8 {
    fn from(c: ErrorCode) -> u8 {
        match c {
            ErrorCode::Unspecified => 0,
            ErrorCode::RetryLater => 1,
            ErrorCode::Refused => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::Malformed => 4,
            ErrorCode::Internal => 5,
        }
    }
}

/// A failure reported by a peer's handler: its [`ErrorCode`] and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// What the caller may do about it.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl RemoteError {
    /// A failure of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RemoteError {
            code,
            message: message.into(),
        }
    }

    /// The handler failed while serving.
    pub fn internal(message: impl Into<String>) -> Self {
        RemoteError::new(ErrorCode::Internal, message)
    }

    /// The request could not be decoded.
    pub fn malformed(message: impl Into<String>) -> Self {
        RemoteError::new(ErrorCode::Malformed, message)
    }

    /// The peer will not serve this request.
    pub fn refused(message: impl Into<String>) -> Self {
        RemoteError::new(ErrorCode::Refused, message)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_survives_its_byte_and_unknown_bytes_are_unspecified() {
        for code in [
            ErrorCode::Unspecified,
            ErrorCode::RetryLater,
            ErrorCode::Refused,
            ErrorCode::NotFound,
            ErrorCode::Malformed,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from(u8::from(code)), code);
        }
        assert_eq!(ErrorCode::from(200), ErrorCode::Unspecified);
    }
}
