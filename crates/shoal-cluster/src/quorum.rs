//! How many replicas a write waits for and a read asks: the one place quorums come from.
//!
//! Read-after-write rests on `write + read > replicas`: any read quorum then meets any write
//! quorum in at least one replica holding the write. Every caller (the replicated tables, the
//! syncer's "did this pass reach every acknowledged write?", the status report) asks here,
//! with the node set of the layout version it works on, so a replication factor of 1 to 7 and
//! a fully replicated table over any number of nodes get the same guarantee.
//!
//! - **Sharded tables** (each partition on `replication_factor` nodes): a majority of the
//!   partition's nodes, `⌊n/2⌋ + 1`, for writes and reads. At RF 3: 2 and 2; at RF 5: 3 and 3
//!   (two nodes may fail); at RF 1 or 2 every replica.
//! - **Fully replicated tables** (every node of the layout: access keys, buckets): reads are
//!   frequent (every request's key lookup) and served from the local copy when it has the row,
//!   writes are rare. They tolerate the same number of failures `f` as the sharded tables,
//!   `f = rf − (⌊rf/2⌋ + 1)`, with a write quorum of `n − f` and a read quorum of `f + 1` over
//!   the `n` nodes: still `write + read = n + 1 > n`. (Garage reads one replica and writes to
//!   `n − f`, which may read stale keys; this costs one more answer on a miss only.)
//!
//! [`ConsistencyMode`] lets an operator trade that guarantee for availability, as Garage's
//! `consistency_mode` does.

use serde::{Deserialize, Serialize};

use crate::worklist::Replication;

/// What a node's reads and writes wait for, chosen per node in its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyMode {
    /// Quorum writes and quorum reads: every read sees every write acknowledged before it
    /// began (read-after-write), as long as a majority of each partition's replicas is up.
    #[default]
    Consistent,
    /// Quorum writes, reads from one replica. Reads keep working with a single replica up, but
    /// may return an older value than the last acknowledged write (until anti-entropy or read
    /// repair brings that replica up to date). Writes are still durable on a majority.
    Degraded,
    /// Writes acknowledged by one replica, reads from one replica. Keeps working with any
    /// replica up; an acknowledged write may be lost if that one replica's disk dies before
    /// anti-entropy copied it, and reads may be stale. For recovering data from a cluster that
    /// lost its majority, not for normal operation.
    Dangerous,
}

impl ConsistencyMode {
    /// The name used in configuration files and reports.
    pub fn name(self) -> &'static str {
        match self {
            ConsistencyMode::Consistent => "consistent",
            ConsistencyMode::Degraded => "degraded",
            ConsistencyMode::Dangerous => "dangerous",
        }
    }
}

impl std::fmt::Display for ConsistencyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A consistency mode that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consistency mode {0:?}: expected consistent, degraded or dangerous")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for ConsistencyMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "consistent" => Ok(ConsistencyMode::Consistent),
            "degraded" => Ok(ConsistencyMode::Degraded),
            "dangerous" => Ok(ConsistencyMode::Dangerous),
            other => Err(UnknownMode(other.to_string())),
        }
    }
}

/// Replicas a write waits for and a read asks, over one node set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorums {
    /// Durable acknowledgements a write needs.
    pub write: usize,
    /// Answers a read needs.
    pub read: usize,
}

/// The majority of `n` replicas.
fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Failures a layout of replication factor `rf` tolerates with majority quorums.
pub fn tolerated_failures(rf: usize) -> usize {
    rf.saturating_sub(majority(rf))
}

impl Quorums {
    /// The quorums of a table replicated as `replication` over a node set of `set_len` nodes
    /// (a partition's nodes in one layout version: `rf` of them for a sharded table, every
    /// node of the layout for a fully replicated one), in a layout of replication factor `rf`,
    /// under `mode`. Never more than the set holds, never 0 for a non-empty set.
    pub fn of(replication: Replication, set_len: usize, rf: usize, mode: ConsistencyMode) -> Self {
        if set_len == 0 {
            return Quorums { write: 0, read: 0 };
        }
        let consistent = match replication {
            Replication::Sharded => Quorums {
                write: majority(set_len),
                read: majority(set_len),
            },
            Replication::Full => {
                let f = tolerated_failures(rf.max(1)).min(set_len - 1);
                Quorums {
                    write: set_len - f,
                    read: f + 1,
                }
            }
        };
        match mode {
            ConsistencyMode::Consistent => consistent,
            ConsistencyMode::Degraded => Quorums {
                write: consistent.write,
                read: 1,
            },
            ConsistencyMode::Dangerous => Quorums { write: 1, read: 1 },
        }
    }

    /// How many of a set's nodes a sync pass must reach so that every write acknowledged by a
    /// write quorum of that set is among them: `n − write + 1`.
    pub fn to_see_every_write(self, set_len: usize) -> usize {
        set_len.saturating_sub(self.write) + 1
    }
}

/// Why a replicated operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The layout assigns no node to the partition (no layout applied yet).
    #[error("no node stores partition {0}: apply a layout first")]
    NoLayout(u8),
    /// Too few nodes acknowledged the write durably; it may still reach some replicas, and
    /// anti-entropy will spread it, but it was not acknowledged.
    #[error("write quorum not reached: {acks} of {needed} acknowledgements; errors: {errors:?}")]
    Write {
        /// Durable acknowledgements received.
        acks: usize,
        /// Acknowledgements needed.
        needed: usize,
        /// What the others said.
        errors: Vec<String>,
    },
    /// Too few nodes answered the read.
    #[error("read quorum not reached: {answers} of {needed} answers; errors: {errors:?}")]
    Read {
        /// Answers received.
        answers: usize,
        /// Answers needed.
        needed: usize,
        /// What the others said.
        errors: Vec<String>,
    },
    /// A replica returned an undecodable item.
    #[error("undecodable item from a replica: {0}")]
    Decode(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [ConsistencyMode; 3] = [
        ConsistencyMode::Consistent,
        ConsistencyMode::Degraded,
        ConsistencyMode::Dangerous,
    ];

    #[test]
    fn sharded_quorums_are_majorities_of_the_replication_factor() {
        let c = ConsistencyMode::Consistent;
        let expected = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (rf, q) in expected {
            let got = Quorums::of(Replication::Sharded, rf, rf, c);
            assert_eq!((got.write, got.read), (q, q), "rf {rf}");
        }
    }

    #[test]
    fn consistent_quorums_intersect_at_every_size() {
        for rf in 1..=7 {
            for n in rf..=20 {
                for (replication, set) in [(Replication::Sharded, rf), (Replication::Full, n)] {
                    let q = Quorums::of(replication, set, rf, ConsistencyMode::Consistent);
                    assert!(
                        q.write + q.read > set,
                        "{replication:?} rf {rf} n {n}: {q:?}"
                    );
                    assert!(q.write <= set && q.read <= set && q.write >= 1 && q.read >= 1);
                    // Two writes' quorums intersect too (no two minorities both acknowledge).
                    assert!(2 * q.write > set, "{replication:?} rf {rf} n {n}: {q:?}");
                }
            }
        }
    }

    #[test]
    fn fully_replicated_tables_tolerate_what_sharded_ones_do() {
        // RF 3 tolerates 1 failure: over 5 nodes, writes need 4 and reads 2.
        let q = Quorums::of(Replication::Full, 5, 3, ConsistencyMode::Consistent);
        assert_eq!((q.write, q.read), (4, 2));
        // RF 5 tolerates 2: over 5 nodes, 3 and 3.
        let q = Quorums::of(Replication::Full, 5, 5, ConsistencyMode::Consistent);
        assert_eq!((q.write, q.read), (3, 3));
        // RF 1 tolerates none: every node has every write, any one answers.
        let q = Quorums::of(Replication::Full, 4, 1, ConsistencyMode::Consistent);
        assert_eq!((q.write, q.read), (4, 1));
        for rf in 1..=7 {
            for n in rf..=12 {
                let q = Quorums::of(Replication::Full, n, rf, ConsistencyMode::Consistent);
                assert_eq!(n - q.write, tolerated_failures(rf), "rf {rf} n {n}");
            }
        }
    }

    #[test]
    fn weaker_modes_give_up_read_or_write_quorums_only() {
        for rf in 1..=7 {
            let c = Quorums::of(Replication::Sharded, rf, rf, ConsistencyMode::Consistent);
            let d = Quorums::of(Replication::Sharded, rf, rf, ConsistencyMode::Degraded);
            let x = Quorums::of(Replication::Sharded, rf, rf, ConsistencyMode::Dangerous);
            assert_eq!(
                d,
                Quorums {
                    write: c.write,
                    read: 1
                }
            );
            assert_eq!(x, Quorums { write: 1, read: 1 });
        }
    }

    #[test]
    fn a_sync_pass_must_reach_enough_to_meet_every_write_quorum() {
        for rf in 1..=7 {
            for mode in MODES {
                let q = Quorums::of(Replication::Sharded, rf, rf, mode);
                let needed = q.to_see_every_write(rf);
                // Any `needed` nodes meet any `write` nodes of the `rf`.
                assert!(needed + q.write > rf, "rf {rf} {mode}");
                assert!(needed <= rf);
            }
        }
    }

    #[test]
    fn empty_sets_need_nothing_and_modes_parse() {
        assert_eq!(
            Quorums::of(Replication::Sharded, 0, 3, ConsistencyMode::Consistent),
            Quorums { write: 0, read: 0 }
        );
        for m in MODES {
            assert_eq!(m.name().parse::<ConsistencyMode>(), Ok(m));
        }
        assert!("strong".parse::<ConsistencyMode>().is_err());
    }
}
