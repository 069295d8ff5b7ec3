//! Closed-loop load: writer threads each repeat one operation until time is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What every closed-loop benchmark takes.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Writer counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub writers: Vec<usize>,
    /// Seconds per configuration.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
}

/// Runs `writers` threads for `seconds`; thread `w` calls `op(w, i)` for i = 0, 1, … and each
/// call's latency is recorded. Returns the latencies in microseconds, sorted, and the elapsed
/// seconds.
pub fn run_writers<F>(writers: usize, seconds: f64, op: F) -> (Vec<u64>, f64)
where
    F: Fn(usize, u64) + Sync,
{
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let mut lat: Vec<u64> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (stop, op) = (&stop, &op);
                sc.spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        op(w, i);
                        lat.push(t.elapsed().as_micros() as u64);
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    });
    lat.sort_unstable();
    (lat, start.elapsed().as_secs_f64())
}

/// The `p` quantile (0..=1) of sorted latencies.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}
