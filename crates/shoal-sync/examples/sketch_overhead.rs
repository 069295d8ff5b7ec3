//! How many sketch cells peeling needs per difference: prints, for each difference size, the
//! median, 99th percentile and maximum over many trials of (cells needed) / d. These figures set
//! the sizes the sync protocol asks for.
//!
//! `cargo run --release -p shoal-sync --example sketch_overhead`

use shoal_sync::sketch::{Cell, ItemId, WireCell, cells_of, peel};

fn main() {
    let trials = 300u64;
    for d in [2u64, 3, 4, 6, 10, 20, 50, 100, 300, 1000, 3000] {
        let mut ratios = Vec::new();
        for t in 0..trials {
            let a: Vec<ItemId> = (0..d).map(|i| ItemId(mix(t << 32 | i) | 1)).collect();
            let max = 4 * d + 40;
            let local: Vec<Cell> = cells_of(a.iter().copied(), 0, max);
            let empty: Vec<WireCell> = vec![WireCell::default(); max as usize];
            // Smallest prefix that peels.
            let (mut lo, mut hi) = (1u64, max);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if peel(&local[..mid as usize], &empty[..mid as usize]).is_ok() {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            ratios.push(lo as f64 / d as f64);
        }
        ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| ratios[((ratios.len() as f64 * q) as usize).min(ratios.len() - 1)];
        println!(
            "d={d:5}  cells/d: p50 {:.2}  p99 {:.2}  p99.7 {:.2}  max {:.2}",
            p(0.5),
            p(0.99),
            p(0.997),
            ratios[ratios.len() - 1]
        );
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
