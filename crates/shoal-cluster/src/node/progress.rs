//! How a node counts its sync work: the syncer's counters per table, the recent completions
//! that give rates and ETAs, and the thread CPU of sync work run off the async workers.

use std::collections::HashMap;
use std::time::Duration;

use shoal_net::Transport;
use tokio::time::Instant;

use super::error::BlockingFailed;
use super::state::Node;
use super::stats::SyncerStats;

impl<T: Transport> Node<T> {
    /// [`Node::blocking`] for sync work of `table`: the thread CPU time the work took is added
    /// to the table's [`SyncerStats::cpu_us`], so that the syncer's share of the node's CPU can
    /// be read (what runs on the async workers, encoding and RPC, is not counted).
    pub(super) async fn blocking_sync<R: Send + 'static>(
        &self,
        table: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, BlockingFailed> {
        let (r, cpu) = self
            .blocking(move || {
                let start = cpu_time::ThreadTime::now();
                let r = f();
                (r, start.elapsed())
            })
            .await?;
        let us = u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX);
        self.bump(table, |s| s.cpu_us = s.cpu_us.saturating_add(us));
        Ok(r)
    }

    /// Counters of every table's syncer, with the recent rate and the time left.
    pub fn syncer_stats(&self) -> HashMap<String, SyncerStats> {
        let mut stats = self.state.syncer_stats.lock().clone();
        let mut done = self.state.completions.lock();
        for (table, s) in stats.iter_mut() {
            let recent = done.entry(table.clone()).or_default();
            while recent
                .front()
                .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
            {
                recent.pop_front();
            }
            // Over the last minute, or since the first completion if more recent.
            let window = recent
                .front()
                .map_or(60.0, |t| t.elapsed().as_secs_f64().clamp(1.0, 60.0));
            s.rate_per_sec = recent.len() as f64 / window;
            let left = s.queued + s.in_progress;
            s.eta_secs = (left > 0 && s.rate_per_sec > 0.0)
                .then(|| (left as f64 / s.rate_per_sec).ceil() as u64);
        }
        stats
    }

    pub(super) fn completed(&self, table: &str) {
        self.state
            .completions
            .lock()
            .entry(table.to_string())
            .or_default()
            .push_back(Instant::now());
    }

    pub(super) fn bump(&self, table: &str, f: impl FnOnce(&mut SyncerStats)) {
        let mut all = self.state.syncer_stats.lock();
        f(all.entry(table.to_string()).or_default());
    }

    pub(super) fn set_queued(&self, table: &str, n: usize) {
        self.bump(table, |s| s.queued = n as u64);
    }
}
