//! K2V's listings (ReadIndex, ReadBatch, DeleteBatch, PollRange) select keys by `prefix`,
//! `start`, `end` and `reverse` under a common key prefix: one translation into engine bounds,
//! so the engine stops at the limit instead of the caller filtering a whole scan.

use std::ops::Bound;

use shoal_storage::KeyRange;

/// The engine range of the keys `base ‖ k` where `k` starts with `prefix`, and `k >= start`
/// and `k < end` (with `reverse`: `k <= start` and `k > end`, `start` being the highest).
pub(crate) fn key_range(
    base: &[u8],
    prefix: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    reverse: bool,
) -> KeyRange {
    let with = |k: &str| {
        let mut v = base.to_vec();
        v.extend_from_slice(k.as_bytes());
        v
    };
    let mut range = KeyRange::prefix(&with(prefix.unwrap_or("")));
    let (upper, lower) = if reverse {
        (
            start.map(|s| Bound::Included(with(s))),
            end.map(|e| Bound::Excluded(with(e))),
        )
    } else {
        (
            end.map(|e| Bound::Excluded(with(e))),
            start.map(|s| Bound::Included(with(s))),
        )
    };
    if let Some(b) = lower {
        range.start = tighter_start(range.start, b);
    }
    if let Some(b) = upper {
        range.end = tighter_end(range.end, b);
    }
    range
}

fn tighter_start(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    let key = |x: &Bound<Vec<u8>>| match x {
        Bound::Included(k) => Some((k.clone(), 0)),
        Bound::Excluded(k) => Some((k.clone(), 1)),
        Bound::Unbounded => None,
    };
    if key(&b) > key(&a) { b } else { a }
}

fn tighter_end(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    let key = |x: &Bound<Vec<u8>>| match x {
        Bound::Included(k) => (0, k.clone(), 1),
        Bound::Excluded(k) => (0, k.clone(), 0),
        Bound::Unbounded => (1, Vec::new(), 0),
    };
    if key(&b) < key(&a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(r: &KeyRange) -> Vec<&'static str> {
        ["a", "ab", "abc", "b", "ba", "c"]
            .into_iter()
            .filter(|k| r.contains(&[b"p/".as_slice(), k.as_bytes()].concat()))
            .collect()
    }

    #[test]
    fn bounds_and_prefix_combine_in_both_directions() {
        assert_eq!(keys(&key_range(b"p/", None, None, None, false)).len(), 6);
        assert_eq!(
            keys(&key_range(b"p/", Some("a"), None, None, false)),
            ["a", "ab", "abc"]
        );
        assert_eq!(
            keys(&key_range(b"p/", None, Some("ab"), Some("ba"), false)),
            ["ab", "abc", "b"]
        );
        assert_eq!(
            keys(&key_range(b"p/", None, Some("ba"), Some("ab"), true)),
            ["abc", "b", "ba"]
        );
        assert_eq!(
            keys(&key_range(b"p/", Some("a"), Some("ab"), None, false)),
            ["ab", "abc"]
        );
        assert!(!key_range(b"p/", None, None, None, false).contains(b"q/a"));
    }
}
