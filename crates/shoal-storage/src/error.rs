//! Precise errors: opening a store, using it, and running a transaction.

use std::path::PathBuf;

/// Why a store file could not be opened. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file (or its directory) could not be read or created.
    #[error("cannot open store file {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but holds no data at all: it was truncated, or its creation never finished.
    #[error(
        "store file {path} is empty (truncated?): refusing to treat it as a new store; move it away to start afresh"
    )]
    Empty {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a database (wrong magic bytes, random data, another format).
    #[error("{path} is not a Shoal store (not a redb database): {detail}")]
    NotADatabase {
        /// The store file.
        path: PathBuf,
        /// What the engine reported.
        detail: String,
    },
    /// The file is a database but not one written by Shoal, or by an incompatible Shoal.
    #[error("{path} is a redb database but not a Shoal store: {detail}")]
    Foreign {
        /// The store file.
        path: PathBuf,
        /// What is missing or different.
        detail: String,
    },
    /// The file is a store whose pages fail their checksums, or whose structure is damaged
    /// (truncated, overwritten).
    #[error("store file {path} is corrupt: {detail}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What the engine reported.
        detail: String,
    },
    /// Another process (or handle) has the store open.
    #[error("store file {path} is already open by another process")]
    AlreadyOpen {
        /// The store file.
        path: PathBuf,
    },
}

/// An error while reading or writing an open store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The device has no space left; nothing of the failed commit was applied.
    #[error("disk full: the commit was not applied")]
    DiskFull,
    /// An I/O error from the operating system.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The engine found damaged data while reading.
    #[error("storage corrupted: {0}")]
    Corrupted(String),
    /// The store was closed, or its writer stopped after a fatal error.
    #[error("store is closed")]
    Closed,
    /// A transaction closure panicked; its writes were discarded.
    #[error("transaction panicked: {0}")]
    Panicked(String),
    /// Any other error reported by the engine.
    #[error("storage engine error: {0}")]
    Engine(String),
}

/// The outcome of a failed [`Store::transact`](crate::Store::transact).
#[derive(Debug, thiserror::Error)]
pub enum TxError<E> {
    /// The closure returned an error: none of its writes were applied.
    #[error("transaction aborted: {0}")]
    Aborted(E),
    /// The closure succeeded but the commit failed: none of its writes were applied.
    #[error("commit failed: {0}")]
    Commit(StorageError),
}

impl<E> TxError<E> {
    /// Collapses both cases into the caller's error type.
    pub fn flatten(self) -> E
    where
        E: From<StorageError>,
    {
        match self {
            TxError::Aborted(e) => e,
            TxError::Commit(e) => E::from(e),
        }
    }
}

impl From<TxError<StorageError>> for StorageError {
    fn from(e: TxError<StorageError>) -> Self {
        e.flatten()
    }
}
