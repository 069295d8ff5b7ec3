//! Time of computing sketch cells from a partition's ids (the large-difference path of a
//! session): `cargo run --release -p shoal-sync --example cells_speed`.

use std::time::Instant;

use shoal_sync::sketch::{ItemId, cells_of};

fn main() {
    let ids: Vec<ItemId> = (1..=1_000_000u64)
        .map(|i| ItemId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1))
        .collect();
    for (from, to) in [(0u64, 512u64), (0, 14_604), (512, 14_604), (0, 140_004)] {
        let t = Instant::now();
        let cells = cells_of(ids.iter().copied(), from, to);
        println!(
            "cells {from}..{to} of 10^6 ids: {:.1} ms (checksum {})",
            t.elapsed().as_secs_f64() * 1e3,
            cells.iter().fold(0u64, |a, c| a ^ c.xor ^ c.count)
        );
    }
}
