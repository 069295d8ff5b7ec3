//! Errors of table operations.

use shoal_storage::{StorageError, TxError};

use crate::codec::{DecodeError, EncodeError};

/// Why a table operation failed. On any error, the operation wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored or received value could not be decoded.
    #[error("table {table}: cannot decode the value of key {key}: {source}")]
    Decode {
        /// The table.
        table: &'static str,
        /// The engine key, in hex.
        key: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// A value could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// `delete` was given an entry that is not a tombstone.
    #[error("table {table}: delete needs a tombstone entry")]
    NotATombstone {
        /// The table.
        table: &'static str,
    },
}

impl From<TxError<TableError>> for TableError {
    fn from(e: TxError<TableError>) -> Self {
        e.flatten()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
