//! The loop of a table's background syncer, run under the supervisor of
//! [`Node::start_syncer`]: the events that wake it, the work list it drains, the backoff of
//! failed partitions, and what a caught panic says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_net::{NodeId, Transport};
use tracing::{debug, info, warn};

use super::{BlockingFailed, Node, Processed, Retry, State, SyncTable, SyncerConfig};
use crate::layout::Layout;

/// What wakes a table's syncer, subscribed before it runs.
pub(super) struct SyncerEvents {
    layout: tokio::sync::watch::Receiver<Layout>,
    peers: tokio::sync::broadcast::Receiver<NodeId>,
    repair: tokio::sync::broadcast::Receiver<String>,
    retired: tokio::sync::broadcast::Receiver<Layout>,
    missed: tokio::sync::watch::Receiver<()>,
}

impl SyncerEvents {
    pub(super) fn subscribe<T: Transport>(state: &State<T>) -> Self {
        SyncerEvents {
            layout: state.layout_tx.subscribe(),
            peers: state.peer_up_tx.subscribe(),
            repair: state.repair_tx.subscribe(),
            retired: state.retired_tx.subscribe(),
            missed: state.missed_tx.subscribe(),
        }
    }
}

/// The delay before retrying work that failed or panicked `failures` times in a row: 1 s,
/// doubling up to a minute.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.clamp(1, 7).saturating_sub(1)).min(Duration::from_secs(60))
}

/// What a caught panic said.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Re-raises the failure of storage work as a panic of the caller, for the syncer's and the
/// collector's supervisors to catch and count.
pub(super) fn reraise(e: BlockingFailed) -> ! {
    std::panic::resume_unwind(Box::new(e.to_string()))
}

/// The loop of a table's syncer (see [`Node::start_syncer`]); returns when the node is gone.
pub(super) async fn run_syncer<T: Transport>(
    node: std::sync::Weak<State<T>>,
    name: String,
    t: Arc<dyn SyncTable>,
    config: SyncerConfig,
    first_scan: Duration,
    events: SyncerEvents,
) {
    let SyncerEvents {
        layout: mut layout_rx,
        peers: mut peers_rx,
        repair: mut repair_rx,
        retired: mut retired_rx,
        missed: mut missed_rx,
    } = events;
    let replication = node
        .upgrade()
        .map(|state| Node { state }.replication_of(&name))
        .unwrap_or_default();
    let mut work = crate::worklist::WorkList::new(config.seed, replication);
    // Peers already up when the syncer starts: a restarted node hears from them in its
    // first heartbeat round, before this task subscribed to their coming up, and may
    // have missed writes while it was away (even if no one saw it down). What it shares
    // with them is queued now rather than at the first full scan.
    if let Some(state) = node.upgrade() {
        let me = Node { state };
        let layout = me.layout();
        for p in me.peers().into_iter().filter(|p| p.up) {
            work.peer_up(&layout, me.id(), p.id);
        }
    }
    // The layout version whose after-acknowledgement pass has been queued.
    let mut ack_pass: Option<u64> = None;
    let mut prev = layout_rx.borrow_and_update().clone();
    let mut next_full = tokio::time::Instant::now() + first_scan;
    // Work postpones the next full scan, but not the first: that one also finds data
    // this node holds outside its partitions, which no event queues.
    let mut scanned = false;
    // Failed partitions come back after a delay that doubles with each failure (1 s up
    // to a minute), instead of waiting for the next full scan.
    let mut retry: BTreeMap<u8, Retry> = BTreeMap::new();
    loop {
        let now = tokio::time::Instant::now();
        for r in retry.values().filter(|r| r.at <= now) {
            work.push(r.work);
        }
        let Some(state) = node.upgrade() else { return };
        let me = Node { state };
        // `changed()` in the select below marks the new layout as seen: compare with the
        // last one handled rather than trusting `has_changed`.
        if layout_rx.borrow().version != prev.version || *layout_rx.borrow() != prev {
            let next = layout_rx.borrow_and_update().clone();
            let t2 = t.clone();
            work.layout_changed(&prev, &next, me.id(), |p| t2.has_data(p).unwrap_or(false));
            prev = next;
        }
        while let Ok(peer) = peers_rx.try_recv() {
            work.peer_up(&prev, me.id(), peer);
        }
        let missed = me
            .state
            .missed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&name)
            .map(std::mem::take)
            .unwrap_or_default();
        if !missed.is_empty() {
            me.bump(&name, |s| s.missed_writes += missed.len() as u64);
            for partition in missed {
                let retain = replication.nodes_of(&prev, partition).contains(&me.id());
                work.push(crate::worklist::Work { partition, retain });
            }
        }
        while let Ok(old) = retired_rx.try_recv() {
            // Partitions only a retired version gave this node are now offloaded.
            let t2 = t.clone();
            work.layout_changed(&old, &prev, me.id(), |p| t2.has_data(p).unwrap_or(false));
        }
        while let Ok(t) = repair_rx.try_recv() {
            if t == name {
                next_full = tokio::time::Instant::now();
            }
        }
        if tokio::time::Instant::now() >= next_full {
            let t2 = t.clone();
            let layout = prev.clone();
            let id = me.id();
            work = me
                .blocking(move || {
                    work.full_scan(&layout, id, |p| t2.has_data(p).unwrap_or(false));
                    work
                })
                .await
                .unwrap_or_else(|e| reraise(e));
            next_full = tokio::time::Instant::now() + config.scan_interval;
            scanned = true;
            me.bump(&name, |s| s.full_scans += 1);
        }
        me.set_queued(&name, work.len());
        debug!(table = %name, queued = work.len(), layout = prev.version, "syncer loop");
        if let Some(w) = work.pop() {
            if scanned {
                next_full = tokio::time::Instant::now() + config.scan_interval;
            }
            me.bump(&name, |s| s.in_progress += 1);
            // A panic in one partition's work fails that partition (retried with backoff),
            // not the whole syncer.
            let outcome =
                    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                        me.process(&name, &t, w),
                    ))
                    .await
                    .unwrap_or_else(|panic| {
                        let message = panic_message(&*panic);
                        tracing::error!(table = %name, partition = w.partition, panic = %message, "partition sync panicked");
                        me.bump(&name, |s| s.panics += 1);
                        Err(format!("panicked: {message}"))
                    });
            me.bump(&name, |s| s.in_progress -= 1);
            let mut again = |lagging_only: bool| {
                let failures = retry.get(&w.partition).map_or(0, |r| r.failures) + 1;
                let delay = Duration::from_secs(1 << failures.min(6).saturating_sub(1));
                let at = tokio::time::Instant::now() + delay;
                retry.insert(
                    w.partition,
                    Retry {
                        at,
                        work: w,
                        failures,
                        lagging_only,
                    },
                );
                delay
            };
            match outcome {
                Ok(Processed::Done) => {
                    retry.remove(&w.partition);
                    me.completed(&name);
                }
                Ok(Processed::Again) => work.push(w),
                Ok(Processed::ReplicasLag(lagging)) => {
                    // Done here; the live replicas it could not reach get another pass.
                    me.completed(&name);
                    let delay = again(true);
                    info!(table = %name, partition = w.partition, lagging, retry_in = ?delay, "partition synced here; live replicas failed and get another pass");
                }
                Err(e) => {
                    let delay = again(false);
                    warn!(table = %name, partition = w.partition, error = %e, retry_in = ?delay, "partition sync failed");
                    me.bump(&name, |s| s.errors += 1);
                }
            }
            continue;
        }
        // Once every node acknowledged the current version, one more pass over every
        // partition: writes started under older versions have all landed by then.
        let history = me.history();
        if ack_pass != Some(prev.version) && history.all_acked(prev.version) {
            ack_pass = Some(prev.version);
            // Only partitions whose nodes changed since the oldest live version, and
            // only during a change: a single live version has no older writes.
            if let Some(oldest) = history
                .versions
                .first()
                .filter(|o| o.version < prev.version)
            {
                let (t2, from, to, id) = (t.clone(), oldest.clone(), prev.clone(), me.id());
                work = me
                    .blocking(move || {
                        work.layout_changed(&from, &to, id, |p| t2.has_data(p).unwrap_or(false));
                        work
                    })
                    .await
                    .unwrap_or_else(|e| reraise(e));
                continue;
            }
        }
        // A partition held back only for a lagging replica is whole here.
        if work.is_empty()
            && retry.values().all(|r| r.lagging_only)
            && ack_pass == Some(prev.version)
        {
            me.table_done(&name, prev.version).await;
            // With a single live version and every retirement handled, this node holds
            // nothing outside its partitions of that version.
            if retired_rx.is_empty() && !me.history().in_transition() {
                me.table_offloaded(&name, prev.version);
            }
        }
        let next_retry = retry
            .values()
            .map(|r| r.at)
            .min()
            .unwrap_or(next_full)
            .min(next_full);
        // Waiting for every node to acknowledge the version: look again shortly.
        let next_retry = if ack_pass != Some(prev.version) {
            next_retry.min(tokio::time::Instant::now() + Duration::from_millis(500))
        } else {
            next_retry
        };
        drop(me);
        // Biased: branches polled in order, so a simulation replays the same choices.
        tokio::select! {
            biased;
            _ = layout_rx.changed() => {}
            r = retired_rx.recv() => {
                if let Ok(old) = r
                    && let Some(state) = node.upgrade()
                {
                    let me = Node { state };
                    let t2 = t.clone();
                    work.layout_changed(&old, &prev, me.id(), |p| t2.has_data(p).unwrap_or(false));
                }
            }
            r = repair_rx.recv() => {
                if r.is_ok_and(|t| t == name) {
                    next_full = tokio::time::Instant::now();
                }
            }
            r = peers_rx.recv() => {
                if let Ok(peer) = r
                    && let Some(state) = node.upgrade()
                {
                    let l = state.layout.read().unwrap_or_else(|p| p.into_inner()).clone();
                    work.peer_up(&l, state.id, peer);
                }
            }
            _ = missed_rx.changed() => {}
            _ = tokio::time::sleep_until(next_retry) => {}
        }
    }
}
