//! The rateless set-reconciliation sketch (after Yang, Gilad and Alizadeh, "Practical Rateless
//! Set Reconciliation", SIGCOMM 2024), over 64-bit item ids.
//!
//! A replica's item set is summarised by an unbounded sequence of *cells*. Every id is added to
//! cell 0 and to each later cell `i` with probability `2 / (i + 2)` (a deterministic function of
//! the id), so early cells are dense and later ones sparse. Subtracting two replicas' cells
//! cancels the ids they share; the remaining differences are recovered by *peeling*: a cell
//! holding exactly one id reveals it, removing it from the other cells reveals more. About 1.35
//! cells per difference suffice for large differences, a few more for small ones, whatever the
//! size of the sets: the cost follows the difference, not the data.
//!
//! Cell 0 is the XOR of every id with the count of ids: it is the partition's *digest*. Equal
//! digests mean equal sets (up to a 2⁻⁹⁶ accident; ids are keyed hashes, see [`crate::ids`], so
//! nobody can craft a collision), and a difference of one item is read straight off the digests.
//!
//! Cells are updated in O(1) per id and per cell, so the first cells are kept up to date on every
//! write ([`crate::index`]), and later ones are computed from the partition's ids when needed.

/// Bytes of one cell on the wire: XOR of ids (8), XOR of 24-bit checks (3), count modulo 256
/// (1). A false "pure" cell (probability 2⁻²⁴ per test) only makes peeling fail, never succeed
/// wrongly: the session then asks for more cells.
pub const CELL_WIRE_BYTES: usize = 12;

/// The part of a check that travels in wire cells.
const WIRE_CHECK_MASK: u32 = 0x00ff_ffff;

/// A 64-bit item id: a keyed hash of (engine key, value hash); never zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ItemId(pub u64);

/// The SplitMix64 finaliser: a fast bijective mixer with good avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const CHECK_SALT: u64 = 0x6a09_e667_f3bc_c908;
const MAP_SALT: u64 = 0xbb67_ae85_84ca_a73b;

/// The checksum of an id: tells a cell holding exactly one id from one holding several.
pub fn check_of(id: ItemId) -> u32 {
    (mix64(id.0 ^ CHECK_SALT) >> 32) as u32
}

/// The ascending cell indices an id belongs to: 0, then each `i` with probability `2/(i+2)`.
#[derive(Debug, Clone)]
pub struct CellIndices {
    state: u64,
    next: u64,
}

impl CellIndices {
    /// The indices of `id`.
    pub fn of(id: ItemId) -> Self {
        CellIndices {
            state: id.0 ^ MAP_SALT,
            next: 0,
        }
    }
}

impl Iterator for CellIndices {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let i = self.next;
        // Draw the next index j > i with P(next > j) = (i+1)(i+2) / ((j+1)(j+2)), which makes
        // every index k > i included with probability 2/(k+2) independently of the others.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let r = ((mix64(self.state) >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let t = (i as f64 + 1.0) * (i as f64 + 2.0) / r;
        let x = (t + 0.25).sqrt() - 1.5;
        let j = if x >= (u64::MAX / 4) as f64 {
            u64::MAX / 4
        } else {
            (x.floor() as u64 + 1).max(i + 1)
        };
        self.next = j;
        Some(i)
    }
}

/// One cell: the XOR and the count of the ids mapped to it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Cell {
    /// XOR of the ids.
    pub xor: u64,
    /// XOR of the ids' checks.
    pub check: u32,
    /// Number of ids (a replica's own cells; differences use wrapping arithmetic).
    pub count: u64,
}

impl Cell {
    /// Adds (`remove = false`) or removes an id.
    pub fn toggle(&mut self, id: ItemId, remove: bool) {
        self.xor ^= id.0;
        self.check ^= check_of(id);
        self.count = if remove {
            self.count.wrapping_sub(1)
        } else {
            self.count.wrapping_add(1)
        };
    }

    /// Whether the cell holds no id.
    pub fn is_empty(&self) -> bool {
        *self == Cell::default()
    }

    fn to_wire(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.xor.to_le_bytes());
        out.extend_from_slice(&self.check.to_le_bytes()[..3]);
        out.push(self.count as u8);
    }
}

/// Adds or removes `id` in every cell of `cells` (cells `offset..offset+len`) it maps to.
pub fn apply_id(cells: &mut [Cell], offset: u64, id: ItemId, remove: bool) {
    let end = offset + cells.len() as u64;
    for i in CellIndices::of(id) {
        if i >= end {
            break;
        }
        if i >= offset {
            cells[(i - offset) as usize].toggle(id, remove);
        }
    }
}

/// Cells `from..to` of the set `ids`.
///
/// An id's indices form a chain (each drawn from the previous, through a division and a square
/// root), so one chain at a time waits on every step's latency. Eight ids are walked side by
/// side instead: their chains are independent and the processor overlaps them (measured by
/// the `cells_speed` example: about 2× fewer nanoseconds per id). The cells are the same: a
/// cell is a XOR and a count, whatever the order of the ids.
pub fn cells_of(ids: impl IntoIterator<Item = ItemId>, from: u64, to: u64) -> Vec<Cell> {
    const LANES: usize = 8;
    let mut cells = vec![Cell::default(); to.saturating_sub(from) as usize];
    if cells.is_empty() {
        return cells;
    }
    let mut ids = ids.into_iter();
    let mut lanes: Vec<(ItemId, CellIndices)> = ids
        .by_ref()
        .take(LANES)
        .map(|id| (id, CellIndices::of(id)))
        .collect();
    while !lanes.is_empty() {
        let mut l = 0;
        while l < lanes.len() {
            let (id, indices) = &mut lanes[l];
            let i = indices.next().expect("an id's indices never end");
            if i >= to {
                match ids.next() {
                    Some(next) => lanes[l] = (next, CellIndices::of(next)),
                    None => {
                        lanes.swap_remove(l);
                        continue;
                    }
                }
            } else if i >= from {
                cells[(i - from) as usize].toggle(*id, false);
            }
            l += 1;
        }
    }
    cells
}

/// Packs cells for the wire ([`CELL_WIRE_BYTES`] each; counts modulo 256).
pub fn encode_cells(cells: &[Cell]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cells.len() * CELL_WIRE_BYTES);
    for c in cells {
        c.to_wire(&mut out);
    }
    out
}

/// A cell as received: counts are known modulo 256 only, checks to 24 bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct WireCell {
    /// XOR of the ids.
    pub xor: u64,
    /// XOR of the checks' low 24 bits.
    pub check: u32,
    /// Count modulo 256.
    pub count: u8,
}

impl From<Cell> for WireCell {
    fn from(c: Cell) -> Self {
        WireCell {
            xor: c.xor,
            check: c.check & WIRE_CHECK_MASK,
            count: c.count as u8,
        }
    }
}

/// Unpacks cells; `None` if the length is not a whole number of cells.
pub fn decode_cells(bytes: &[u8]) -> Option<Vec<WireCell>> {
    if !bytes.len().is_multiple_of(CELL_WIRE_BYTES) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(CELL_WIRE_BYTES)
            .map(|c| WireCell {
                xor: u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
                check: u32::from_le_bytes([c[8], c[9], c[10], 0]),
                count: c[11],
            })
            .collect(),
    )
}

/// What peeling recovered: ids only the local side holds, ids only the remote side holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Ids the local replica holds and the remote lacks.
    pub local_only: Vec<ItemId>,
    /// Ids the remote replica holds and the local lacks.
    pub remote_only: Vec<ItemId>,
}

impl Difference {
    /// Total number of differing ids.
    pub fn len(&self) -> usize {
        self.local_only.len() + self.remote_only.len()
    }
    /// Whether no id differs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What is left when peeling stops short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residual {
    /// Cells still holding differences.
    pub nonzero: usize,
    /// Ids recovered before peeling stopped.
    pub peeled: usize,
}

fn wire_check(id: ItemId) -> u32 {
    check_of(id) & WIRE_CHECK_MASK
}

/// Peels `local − remote` over the cells `0..local.len()`. `Ok` once every cell is empty (the
/// difference is fully recovered); `Err` with what is left if more cells are needed.
pub fn peel(local: &[Cell], remote: &[WireCell]) -> Result<Difference, Residual> {
    let m = local.len().min(remote.len());
    let mut diff: Vec<WireCell> = (0..m)
        .map(|i| WireCell {
            xor: local[i].xor ^ remote[i].xor,
            check: (local[i].check & WIRE_CHECK_MASK) ^ remote[i].check,
            count: (local[i].count as u8).wrapping_sub(remote[i].count),
        })
        .collect();
    let pure = |c: &WireCell| {
        (c.count == 1 || c.count == 255) && c.xor != 0 && wire_check(ItemId(c.xor)) == c.check
    };
    let mut stack: Vec<usize> = (0..m).filter(|&i| pure(&diff[i])).collect();
    let mut out = Difference::default();
    // A bound on peeling steps guards against cycles caused by a false pure cell.
    let mut budget = 4 * m + 16;
    while let Some(i) = stack.pop() {
        if !pure(&diff[i]) {
            continue;
        }
        if budget == 0 {
            break;
        }
        budget -= 1;
        let id = ItemId(diff[i].xor);
        let local_has = diff[i].count == 1;
        if local_has {
            out.local_only.push(id);
        } else {
            out.remote_only.push(id);
        }
        let check = wire_check(id);
        for j in CellIndices::of(id) {
            if j >= m as u64 {
                break;
            }
            let c = &mut diff[j as usize];
            c.xor ^= id.0;
            c.check ^= check;
            c.count = if local_has {
                c.count.wrapping_sub(1)
            } else {
                c.count.wrapping_add(1)
            };
            if pure(c) {
                stack.push(j as usize);
            }
        }
    }
    let nonzero = diff.iter().filter(|c| **c != WireCell::default()).count();
    if nonzero == 0 {
        Ok(out)
    } else {
        Err(Residual {
            nonzero,
            peeled: out.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u64>) -> Vec<ItemId> {
        range.map(|i| ItemId(mix64(i) | 1)).collect()
    }

    #[test]
    fn index_density_follows_two_over_i_plus_two() {
        let n = 20_000u64;
        let mut hits = [0u64; 64];
        for id in ids(0..n) {
            for i in CellIndices::of(id).take_while(|&i| i < 64) {
                hits[i as usize] += 1;
            }
        }
        for (i, &h) in hits.iter().enumerate() {
            let expected = n as f64 * 2.0 / (i as f64 + 2.0);
            let tolerance = 5.0 * expected.sqrt() + 1.0;
            assert!(
                (h as f64 - expected).abs() < tolerance,
                "cell {i}: {h} ids, expected {expected:.0}"
            );
        }
    }

    #[test]
    fn peels_two_sided_differences() {
        let common = ids(0..5000);
        let a_only = ids(10_000..10_040);
        let b_only = ids(20_000..20_025);
        let a: Vec<_> = common.iter().chain(&a_only).copied().collect();
        let b: Vec<_> = common.iter().chain(&b_only).copied().collect();
        let m = 120;
        let ca = cells_of(a, 0, m);
        let cb: Vec<WireCell> = cells_of(b, 0, m).into_iter().map(WireCell::from).collect();
        let mut d = peel(&ca, &cb).expect("65 differences decode from 120 cells");
        d.local_only.sort();
        d.remote_only.sort();
        let (mut ea, mut eb) = (a_only.clone(), b_only.clone());
        ea.sort();
        eb.sort();
        assert_eq!(d.local_only, ea);
        assert_eq!(d.remote_only, eb);
        // Too few cells: peeling reports failure, never a wrong answer.
        assert!(peel(&ca[..20], &cb[..20]).is_err());
    }

    #[test]
    fn equal_sets_have_equal_cells_and_wire_roundtrip() {
        let a = cells_of(ids(0..100), 0, 10);
        let mut shuffled = ids(0..100);
        shuffled.reverse();
        assert_eq!(a, cells_of(shuffled, 0, 10));
        let wire = decode_cells(&encode_cells(&a)).unwrap();
        assert_eq!(wire.len(), 10);
        assert_eq!(peel(&a, &wire), Ok(Difference::default()));
        assert!(decode_cells(&[0u8; 14]).is_none());
    }

    #[test]
    fn offset_cells_match_a_full_computation() {
        let all = cells_of(ids(0..300), 0, 50);
        let tail = cells_of(ids(0..300), 20, 50);
        assert_eq!(&all[20..], &tail[..]);
    }
}
