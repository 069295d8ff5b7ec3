//! Shoal's anti-entropy core: how two replicas of a partition find what differs and converge.
//!
//! - [`index`]: the persistent partition index, updated in the same transaction as every write
//!   (a table hook): per partition a 36-byte head (digest and mini summary); the ids of a
//!   differing partition are computed from one scan of its items.
//! - [`sketch`]: the rateless set-reconciliation sketch over 64-bit keyed item [`ids`]: its cost
//!   follows the size of the difference, not of the data.
//! - [`estimator`]: sizes sketch batches from two summaries: the 16-byte mini summary in every
//!   `Hello`, the 128-byte full summary when a first batch did not suffice.
//! - [`protocol`] and [`session`]: the versioned messages and the pure state machine that
//!   leaves *both* replicas holding the merge of both, from one session started by either side.
//! - [`replica`]: a table partition as a session's replica; [`driver`]: a byte-counting
//!   in-process channel.
//! - [`seed`]: the seed's range-checksum protocol, reproduced as a benchmark baseline only.
//!
//! This crate knows nothing of the network, the cluster layout or time: sessions are driven by
//! whoever carries their messages.

pub mod driver;
pub mod estimator;
pub mod ids;
pub mod index;
pub mod protocol;
pub mod replica;
pub mod seed;
pub mod session;
pub mod sketch;
