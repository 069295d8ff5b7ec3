//! K2V's causality: each item is a multi-value register over a dotted version vector set
//! (DVVS), and clients carry a *causality token* (the item's causal context) from a read to
//! the write that supersedes what they read.
//!
//! Pure: no clock (timestamps are passed in), no I/O. The register is a CRDT (the merge keeps,
//! per writer node, the largest discard time and the values written after it), so it rides the
//! table layer's merge-on-write and anti-entropy unchanged.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use shoal_table::crdt::Crdt;

/// A writer node, as K2V's contexts name it: the first 8 bytes of the node id.
pub type WriterId = u64;

/// One stored value, or a deletion recorded as a value (so a delete concurrent with a write is
/// kept beside it, as the spec asks).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DvvsValue {
    /// A value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A deletion.
    Deleted,
}

/// The values one writer node wrote, and up to when its earlier writes are superseded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct WriterEntry {
    /// Values written by this node at times `<= t_discard` were seen and overwritten.
    t_discard: u64,
    /// `(time, value)`, ascending time, all after `t_discard`.
    values: Vec<(u64, DvvsValue)>,
}

/// The multi-value register of one K2V item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dvvs {
    writers: BTreeMap<WriterId, WriterEntry>,
}

/// What a client saw: per writer node, the latest time it saw. Sent as an opaque token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CausalContext {
    /// Writer node → time.
    pub seen: BTreeMap<WriterId, u64>,
}

/// A malformed causality token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not base64.
    #[error("causality token is not base64")]
    Base64,
    /// Wrong length or checksum.
    #[error("causality token is corrupt: {0}")]
    Corrupt(&'static str),
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl CausalContext {
    /// The token: `checksum, [writer, time]*` as big-endian u64s (the checksum XORs all of
    /// them), in URL-safe base64 so it fits headers and query strings unescaped.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(8 + 16 * self.seen.len());
        let checksum = self.seen.iter().fold(0u64, |c, (n, t)| c ^ n ^ t);
        bytes.extend_from_slice(&checksum.to_be_bytes());
        for (n, t) in &self.seen {
            bytes.extend_from_slice(&n.to_be_bytes());
            bytes.extend_from_slice(&t.to_be_bytes());
        }
        B64.encode(bytes)
    }

    /// Parses a token made by [`CausalContext::encode`].
    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let bytes = B64
            .decode(token.trim().trim_end_matches('='))
            .map_err(|_| TokenError::Base64)?;
        if bytes.len() < 8 || !(bytes.len() - 8).is_multiple_of(16) {
            return Err(TokenError::Corrupt("bad length"));
        }
        let word = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let mut seen = BTreeMap::new();
        let mut checksum = 0;
        for i in (8..bytes.len()).step_by(16) {
            let (n, t) = (word(i), word(i + 8));
            checksum ^= n ^ t;
            seen.insert(n, t);
        }
        if checksum != word(0) {
            return Err(TokenError::Corrupt("checksum mismatch"));
        }
        Ok(CausalContext { seen })
    }

    /// Whether this context has seen everything `other` has.
    pub fn covers(&self, other: &CausalContext) -> bool {
        other
            .seen
            .iter()
            .all(|(n, t)| self.seen.get(n).is_some_and(|s| s >= t))
    }
}

impl Dvvs {
    /// The context a reader of this register gets: per writer, the latest time it knows of.
    pub fn context(&self) -> CausalContext {
        CausalContext {
            seen: self
                .writers
                .iter()
                .map(|(n, e)| {
                    let last = e.values.last().map_or(0, |(t, _)| *t);
                    (*n, last.max(e.t_discard))
                })
                .collect(),
        }
    }

    /// The time `writer` must use for its next write given the client's `context`: later than
    /// anything `writer` wrote that the client saw, and than `now`.
    pub fn next_time(writer: WriterId, now: u64, context: Option<&CausalContext>) -> u64 {
        let seen = context
            .and_then(|c| c.seen.get(&writer))
            .copied()
            .unwrap_or(0);
        now.max(seen + 1)
    }

    /// The delta of a write by `writer` at `time` (see [`Dvvs::next_time`]) that saw
    /// `context`: it supersedes every value the context covers and adds `value`. Merging the
    /// delta into the stored register applies the write.
    pub fn write(
        writer: WriterId,
        time: u64,
        context: Option<&CausalContext>,
        value: DvvsValue,
    ) -> Self {
        let mut d = Dvvs::default();
        if let Some(c) = context {
            for (n, t) in &c.seen {
                d.writers.entry(*n).or_default().t_discard = *t;
            }
        }
        let e = d.writers.entry(writer).or_default();
        debug_assert!(time > e.t_discard, "a write must be later than what it saw");
        e.values.push((time, value));
        d
    }

    /// The current values, concurrent ones included, duplicates (same bytes, or several
    /// deletions) shown once, in writer then time order.
    pub fn values(&self) -> Vec<&DvvsValue> {
        let mut out: Vec<&DvvsValue> = Vec::new();
        for e in self.writers.values() {
            for (_, v) in &e.values {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// Whether every current value is a deletion (or there is none).
    pub fn is_tombstone(&self) -> bool {
        self.values().iter().all(|v| **v == DvvsValue::Deleted)
    }

    /// Whether the register holds a value the context has not seen.
    pub fn has_news_for(&self, context: &CausalContext) -> bool {
        self.writers.iter().any(|(n, e)| {
            let seen = context.seen.get(n).copied().unwrap_or(0);
            e.values.iter().any(|(t, _)| *t > seen)
        })
    }
}

impl Crdt for Dvvs {
    fn merge(&mut self, other: &Self) {
        for (n, theirs) in &other.writers {
            let mine = self.writers.entry(*n).or_default();
            mine.t_discard = mine.t_discard.max(theirs.t_discard);
            let mut by_time: BTreeMap<u64, DvvsValue> = BTreeMap::new();
            for (t, v) in mine.values.iter().chain(&theirs.values) {
                // The same (writer, time) names the same write; if it ever did not, keeping
                // the larger value keeps the merge deterministic.
                match by_time.get_mut(t) {
                    Some(existing) if *existing >= *v => {}
                    _ => {
                        by_time.insert(*t, v.clone());
                    }
                }
            }
            let t_discard = mine.t_discard;
            mine.values = by_time
                .into_iter()
                .filter(|(t, _)| *t > t_discard)
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> DvvsValue {
        DvvsValue::Value(s.as_bytes().to_vec())
    }

    #[test]
    fn tokens_round_trip_and_reject_damage() {
        let c = CausalContext {
            seen: [(1, 10), (7, 99)].into_iter().collect(),
        };
        let t = c.encode();
        assert_eq!(CausalContext::decode(&t).unwrap(), c);
        assert_eq!(CausalContext::decode("!!"), Err(TokenError::Base64));
        let mut bytes = B64.decode(&t).unwrap();
        bytes[12] ^= 1;
        assert!(matches!(
            CausalContext::decode(&B64.encode(&bytes)),
            Err(TokenError::Corrupt(_))
        ));
        assert!(CausalContext::decode(&B64.encode([0u8; 9])).is_err());
    }

    #[test]
    fn the_spec_example_of_a_superseding_write() {
        // (node1, (v1, t1), (v2, t2)), (node2, (v3, t3)); a client reads all three, writes v4
        // through node2: only v4 remains.
        let mut item = Dvvs::default();
        item.merge(&Dvvs::write(1, 1, None, v("v1")));
        item.merge(&Dvvs::write(1, 2, None, v("v2")));
        item.merge(&Dvvs::write(2, 3, None, v("v3")));
        assert_eq!(item.values().len(), 3, "concurrent writes are siblings");
        let ctx = item.context();
        // Meanwhile v5 is written through node1 having seen only v1.
        let seen_v1 = CausalContext {
            seen: [(1, 1)].into_iter().collect(),
        };
        let t5 = Dvvs::next_time(1, 5, Some(&seen_v1));
        item.merge(&Dvvs::write(1, t5, Some(&seen_v1), v("v5")));
        assert_eq!(item.values(), vec![&v("v2"), &v("v5"), &v("v3")]);
        let t4 = Dvvs::next_time(2, 4, Some(&ctx));
        item.merge(&Dvvs::write(2, t4, Some(&ctx), v("v4")));
        assert_eq!(item.values(), vec![&v("v5"), &v("v4")]);
    }

    #[test]
    fn a_delete_with_the_token_leaves_a_tombstone_and_a_concurrent_write_survives_it() {
        let mut item = Dvvs::write(1, 10, None, v("a"));
        let ctx = item.context();
        item.merge(&Dvvs::write(2, 11, Some(&ctx), DvvsValue::Deleted));
        assert!(item.is_tombstone());
        // A write that never saw the delete is concurrent with it.
        item.merge(&Dvvs::write(3, 12, Some(&ctx), v("b")));
        assert!(!item.is_tombstone());
        assert_eq!(item.values(), vec![&DvvsValue::Deleted, &v("b")]);
        assert!(item.has_news_for(&ctx));
        assert!(!item.has_news_for(&item.context()));
    }

    fn arb_write() -> impl Strategy<Value = Dvvs> {
        (
            0u64..3,
            1u64..20,
            proptest::collection::btree_map(0u64..3, 0u64..20, 0..3),
            proptest::option::of(0u8..3),
        )
            .prop_map(|(n, t, seen, val)| {
                let ctx = CausalContext { seen };
                let t = Dvvs::next_time(n, t, Some(&ctx));
                let value = match val {
                    Some(b) => DvvsValue::Value(vec![b]),
                    None => DvvsValue::Deleted,
                };
                Dvvs::write(n, t, Some(&ctx), value)
            })
    }

    fn fold(ws: &[Dvvs]) -> Dvvs {
        let mut acc = Dvvs::default();
        for w in ws {
            acc.merge(w);
        }
        acc
    }

    proptest! {
        #[test]
        fn merge_is_a_crdt(a in arb_write(), b in arb_write(), c in arb_write()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
        }

        #[test]
        fn any_order_of_writes_gives_the_same_register(
            ws in proptest::collection::vec(arb_write(), 1..8),
            seed in any::<u64>(),
        ) {
            let mut shuffled = ws.clone();
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed.wrapping_mul(i as u64 + 1) % n as u64) as usize;
                shuffled.swap(i, j);
            }
            prop_assert_eq!(fold(&ws), fold(&shuffled));
        }
    }
}
