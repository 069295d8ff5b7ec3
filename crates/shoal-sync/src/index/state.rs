//! What the index keeps in memory for one partition: its first sketch cells and its full
//! difference-size summary, both updated in O(1) per id on every committed write.

use shoal_storage::StorageError;

use crate::estimator::{BUCKETS, LEVELS, Summary};
use crate::index::Head;
use crate::sketch::{Cell, ItemId, apply_id};

/// Sketch cells kept up to date on every write, cell 0 (the digest) among them.
///
/// Enough for the first batch of any difference the mini summary in `Hello` can size (a
/// saturated estimate asks for `cells_needed(225)` = 409 cells), so a session on a partition
/// that differs by up to about 300 ids reads no id at all; larger differences compute their
/// cells from the id tree. Each id falls in about 12 of these cells, so a write toggles ~24
/// cells (old and new id); kept per non-empty partition: 512 × 24 bytes + 256 bytes of summary.
pub const MAINTAINED_CELLS: u64 = 512;

/// Bytes of the persisted digest (cell 0): XOR of ids (8), check (4), count (8).
const DIGEST_BYTES: usize = 20;
/// Bytes of every other persisted cell: XOR of ids (8), check (4), count modulo 256 (1): only
/// the digest's count is used whole (the partition's item count); other cells' counts are only
/// ever used modulo 256 (on the wire and when peeling).
const CELL_BYTES: usize = 13;
/// Bytes of a persisted partition state.
pub(crate) const STATE_BYTES: usize =
    DIGEST_BYTES + (MAINTAINED_CELLS as usize - 1) * CELL_BYTES + LEVELS * BUCKETS;

/// A partition's maintained cells and summary.
#[derive(Clone, Debug)]
pub(crate) struct PartitionState {
    cells: Box<[Cell]>,
    summary: Summary,
}

/// Equal as far as anything uses them: the digest whole, the other cells' counts modulo 256.
impl PartialEq for PartitionState {
    fn eq(&self, other: &Self) -> bool {
        self.summary == other.summary
            && self.cells[0] == other.cells[0]
            && self.cells[1..].iter().zip(&other.cells[1..]).all(|(a, b)| {
                a.xor == b.xor && a.check == b.check && a.count as u8 == b.count as u8
            })
    }
}

impl Eq for PartitionState {}

impl Default for PartitionState {
    fn default() -> Self {
        PartitionState {
            cells: vec![Cell::default(); MAINTAINED_CELLS as usize].into_boxed_slice(),
            summary: Summary::default(),
        }
    }
}

impl PartitionState {
    /// The state of a set of ids.
    pub(crate) fn of(ids: impl IntoIterator<Item = ItemId>) -> Self {
        let mut s = PartitionState::default();
        for id in ids {
            s.toggle(id, false);
        }
        s
    }

    /// Adds or removes an id: cells and summary form commutative groups, so changes may be
    /// applied in any order.
    pub(crate) fn toggle(&mut self, id: ItemId, remove: bool) {
        apply_id(&mut self.cells, 0, id, remove);
        self.summary.toggle(id);
    }

    pub(crate) fn head(&self) -> Head {
        Head {
            digest: self.cells[0],
            mini: self.summary.mini(),
        }
    }

    pub(crate) fn cells(&self, from: u64, to: u64) -> Vec<Cell> {
        let to = to.min(MAINTAINED_CELLS) as usize;
        let from = (from as usize).min(to);
        self.cells[from..to].to_vec()
    }

    pub(crate) fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Whether no id is held (an empty set's cells and summary are all zero).
    pub(crate) fn is_empty(&self) -> bool {
        self.cells.iter().all(Cell::is_empty) && self.summary == Summary::default()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_BYTES);
        for (i, c) in self.cells.iter().enumerate() {
            out.extend_from_slice(&c.xor.to_le_bytes());
            out.extend_from_slice(&c.check.to_le_bytes());
            if i == 0 {
                out.extend_from_slice(&c.count.to_le_bytes());
            } else {
                out.push(c.count as u8);
            }
        }
        out.extend_from_slice(&self.summary.0);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        if bytes.len() != STATE_BYTES {
            return Err(StorageError::Corrupted(format!(
                "partition index state of {} bytes, expected {STATE_BYTES}",
                bytes.len()
            )));
        }
        let (digest, rest) = bytes.split_at(DIGEST_BYTES);
        let (cells, summary) = rest.split_at((MAINTAINED_CELLS as usize - 1) * CELL_BYTES);
        let cell = |c: &[u8], count: u64| Cell {
            xor: u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
            check: u32::from_le_bytes(c[8..12].try_into().expect("4 bytes")),
            count,
        };
        let cells = std::iter::once(cell(
            digest,
            u64::from_le_bytes(digest[12..20].try_into().expect("8 bytes")),
        ))
        .chain(
            cells
                .chunks_exact(CELL_BYTES)
                .map(|c| cell(c, u64::from(c[12]))),
        )
        .collect();
        let mut s = Summary::default();
        s.0.copy_from_slice(summary);
        if s.0.iter().any(|b| *b > 0xf) {
            return Err(StorageError::Corrupted(
                "partition index summary holds a bucket above 4 bits".into(),
            ));
        }
        Ok(PartitionState { cells, summary: s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::{cells_of, mix64};

    #[test]
    fn maintained_state_equals_the_state_computed_from_the_ids() {
        let ids: Vec<ItemId> = (1..3000u64).map(|i| ItemId(mix64(i) | 1)).collect();
        let mut s = PartitionState::default();
        // Add all, remove a third, in an order different from the computed state's.
        for id in ids.iter().rev() {
            s.toggle(*id, false);
        }
        for id in ids.iter().step_by(3) {
            s.toggle(*id, true);
        }
        let kept: Vec<ItemId> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, id)| *id)
            .collect();
        let computed = PartitionState::of(kept.iter().copied());
        assert_eq!(s, computed);
        assert_eq!(
            s.cells(3, 40),
            cells_of(kept.iter().copied(), 3, 40),
            "maintained cells are the sketch's cells"
        );
        assert_eq!(s.head().count(), kept.len() as u64);
        let mut full = Summary::default();
        kept.iter().for_each(|id| full.toggle(*id));
        assert_eq!(s.head().mini, full.mini());
        assert_eq!(PartitionState::decode(&s.encode()).unwrap(), s);
        // Decoded, then changed: still equal to the state computed from the ids.
        let mut reloaded = PartitionState::decode(&s.encode()).unwrap();
        let extra = ItemId(mix64(99_999) | 1);
        reloaded.toggle(extra, false);
        let mut with_extra = kept.clone();
        with_extra.push(extra);
        assert_eq!(reloaded, PartitionState::of(with_extra.iter().copied()));
        reloaded.toggle(extra, true);
        assert!(PartitionState::decode(&s.encode()[1..]).is_err());
        for id in &kept {
            s.toggle(*id, true);
        }
        assert!(s.is_empty());
    }
}
