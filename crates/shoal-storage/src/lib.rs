//! Shoal's storage layer: an ordered key-value engine behind Shoal's own interface.
//!
//! A store holds named *trees* (ordered maps of byte keys to byte values). Reads see the latest
//! committed state; writes are closures run inside a *write transaction* that sees its own writes
//! and commits atomically. Two engines implement the interface:
//!
//! - [`RedbEngine`], the product engine, on [redb]. Commits are durable (fsync) by default, and
//!   concurrent writers share commits (*group commit*): one writer thread gathers every
//!   transaction queued while the previous commit was syncing and commits them together, so many
//!   small writes do not each pay an fsync. Each transaction in a group still commits or aborts
//!   on its own.
//! - [`MemoryEngine`], for logic tests only: nothing survives the process.
//!
//! Callers use [`Store`], a cheap cloneable handle with typed transaction helpers:
//!
//! ```
//! use shoal_storage::{Direction, KeyRange, Store, StorageError};
//!
//! let store = Store::memory();
//! store.transact(|tx| -> Result<(), StorageError> {
//!     tx.put("items", b"a", b"1")?;
//!     assert_eq!(tx.get("items", b"a")?.as_deref(), Some(&b"1"[..])); // read-your-writes
//!     Ok(())
//! }).unwrap();
//! let all = store.scan("items", &KeyRange::all(), Direction::Forward, 10).unwrap();
//! assert_eq!(all, vec![(b"a".to_vec(), b"1".to_vec())]);
//! ```
//!
//! This crate knows nothing of tables, CRDTs, partitions or the network.

mod engine;
mod error;
mod memory;
mod overlay;
mod redb_engine;
mod row_cache;
mod store;

pub use engine::{
    AfterCommit, Direction, Engine, EngineStats, Entries, JobOutcome, KeyRange, ReadView,
    WriteCallback, WriteJob, WriteTx,
};
pub use error::{OpenError, StorageError, TxError};
pub use memory::MemoryEngine;
pub use redb_engine::{Durability, RedbEngine, RedbOptions};
pub use store::Store;
