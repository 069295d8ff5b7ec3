//! A table's background syncer ([`Syncer`]): the events that wake it, the work list it drains
//! one partition at a time, the backoff of failed partitions, and the marks it sets when a
//! layout version's work is done. [`Node::start_syncer`] runs it under a supervisor that
//! restarts it after a panic.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_net::{NodeId, Transport};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::{BlockingFailed, NodeError};
use super::state::{Node, State};
use super::table::SyncTable;
use super::wire::{decode, encode};
use crate::layout::Layout;
use crate::worklist::{Replication, Work, WorkList};

/// How a table's background syncer behaves.
#[derive(Debug, Clone)]
pub struct SyncerConfig {
    /// Delay before the first full scan after start.
    pub start_delay: Duration,
    /// A full scan happens again after this long without work.
    pub scan_interval: Duration,
    /// Seed of the random order in which partitions are taken.
    pub seed: u64,
}

impl Default for SyncerConfig {
    fn default() -> Self {
        SyncerConfig {
            start_delay: Duration::from_secs(20),
            scan_interval: Duration::from_secs(12 * 3600),
            seed: 0x5eed,
        }
    }
}

/// What became of a syncer's piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Processed {
    /// Synced with every replica, or offloaded.
    Done,
    /// Not finished (written to during an offload): take it again.
    Again,
    /// This node has every acknowledged write, but this many replicas that count as up
    /// could not be reached: the partition gets another pass for them.
    ReplicasLag(usize),
}

/// A partition waiting to be taken again after a failure.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    work: Work,
    /// Failures in a row: the delay doubles with each.
    failures: u32,
    /// Whole on this node; only a replica it could not reach lags. Such a partition does not
    /// hold back the table's "synced" mark for a layout version.
    lagging_only: bool,
}

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

/// A table's background syncer: its work list and what it remembers between steps. It holds
/// the node weakly, and returns once the node is gone.
pub(super) struct Syncer<T: Transport> {
    node: Weak<State<T>>,
    name: String,
    table: Arc<dyn SyncTable>,
    config: SyncerConfig,
    events: SyncerEvents,
    replication: Replication,
    work: WorkList,
    /// The layout last handled (`changed()` marks a new layout as seen: compare with this one
    /// rather than trust `has_changed`).
    layout: Layout,
    /// The layout version whose after-acknowledgement pass has been queued.
    ack_pass: Option<u64>,
    next_full: Instant,
    /// Work postpones the next full scan, but not the first: that one also finds data this
    /// node holds outside its partitions, which no event queues.
    scanned: bool,
    /// Failed partitions come back after a delay that doubles with each failure (1 s up to a
    /// minute), instead of waiting for the next full scan.
    retry: BTreeMap<u8, Retry>,
}

impl<T: Transport> Syncer<T> {
    /// A syncer of `table` whose first full scan comes after `first_scan`.
    pub(super) fn new(
        me: &Node<T>,
        table: Arc<dyn SyncTable>,
        config: SyncerConfig,
        first_scan: Duration,
        mut events: SyncerEvents,
    ) -> Self {
        let name = table.name().to_string();
        let replication = me.replication_of(&name);
        let mut work = WorkList::new(config.seed, replication);
        // Peers already up when the syncer starts: a restarted node hears from them in its
        // first heartbeat round, before this syncer subscribed to their coming up, and may
        // have missed writes while it was away (even if no one saw it down). What it shares
        // with them is queued now rather than at the first full scan.
        let current = me.layout();
        for p in me.peers().into_iter().filter(|p| p.up) {
            work.peer_up(&current, me.id(), p.id);
        }
        let layout = events.layout.borrow_and_update().clone();
        Syncer {
            node: Arc::downgrade(&me.state),
            name,
            table,
            next_full: Instant::now() + first_scan,
            config,
            events,
            replication,
            work,
            layout,
            ack_pass: None,
            scanned: false,
            retry: BTreeMap::new(),
        }
    }

    /// The node, while it lives.
    pub(super) fn node(&self) -> Option<Node<T>> {
        self.node.upgrade().map(|state| Node { state })
    }

    /// Runs until the node is gone: absorb what happened, scan when due, take one piece of
    /// work; with none, mark what is done and sleep until the next wake-up.
    pub(super) async fn run(mut self) {
        loop {
            let Some(me) = self.node() else { return };
            self.absorb_events(&me);
            if Instant::now() >= self.next_full {
                self.full_scan(&me).await;
            }
            me.set_queued(&self.name, self.work.len());
            debug!(table = %self.name, queued = self.work.len(), layout = self.layout.version, "syncer loop");
            if let Some(w) = self.work.pop() {
                self.step(&me, w).await;
                continue;
            }
            if self.queue_ack_pass(&me).await {
                continue;
            }
            self.mark_done(&me).await;
            let wake = self.next_wakeup();
            drop(me);
            self.wait(wake).await;
        }
    }

    /// Takes in every event that arrived since the last look, and the retries now due.
    pub(super) fn absorb_events(&mut self, me: &Node<T>) {
        let now = Instant::now();
        for r in self.retry.values().filter(|r| r.at <= now) {
            self.work.push(r.work);
        }
        let latest = self.events.layout.borrow().clone();
        if latest != self.layout {
            let next = self.events.layout.borrow_and_update().clone();
            let t = self.table.clone();
            self.work
                .layout_changed(&self.layout, &next, me.id(), |p| holds(&*t, p));
            self.layout = next;
        }
        while let Ok(peer) = self.events.peers.try_recv() {
            self.work.peer_up(&self.layout, me.id(), peer);
        }
        let missed = me
            .state
            .missed
            .lock()
            .get_mut(&self.name)
            .map(std::mem::take)
            .unwrap_or_default();
        if !missed.is_empty() {
            me.bump(&self.name, |s| s.missed_writes += missed.len() as u64);
            for partition in missed {
                let retain = self
                    .replication
                    .nodes_of(&self.layout, partition)
                    .contains(&me.id());
                self.work.push(Work { partition, retain });
            }
        }
        while let Ok(old) = self.events.retired.try_recv() {
            self.retired(me, &old);
        }
        while let Ok(t) = self.events.repair.try_recv() {
            if t == self.name {
                self.next_full = Instant::now();
            }
        }
    }

    /// Partitions only a retired layout version gave this node are now offloaded.
    pub(super) fn retired(&mut self, me: &Node<T>, old: &Layout) {
        let t = self.table.clone();
        self.work
            .layout_changed(old, &self.layout, me.id(), |p| holds(&*t, p));
    }

    /// Queues every partition this node stores or must offload (off the async workers: it
    /// looks at every partition's storage).
    pub(super) async fn full_scan(&mut self, me: &Node<T>) {
        let (t, layout, id) = (self.table.clone(), self.layout.clone(), me.id());
        let mut work = self.take_work();
        self.work = me
            .blocking(move || {
                work.full_scan(&layout, id, |p| holds(&*t, p));
                work
            })
            .await
            .unwrap_or_else(|e| reraise(e));
        self.next_full = Instant::now() + self.config.scan_interval;
        self.scanned = true;
        me.bump(&self.name, |s| s.full_scans += 1);
    }

    /// The work list, moved out (to run on the blocking pool) and left empty.
    pub(super) fn take_work(&mut self) -> WorkList {
        std::mem::replace(
            &mut self.work,
            WorkList::new(self.config.seed, self.replication),
        )
    }

    /// One piece of work: processed, and its outcome recorded (done, again, or retried with
    /// backoff). A panic in it fails that partition, not the whole syncer.
    pub(super) async fn step(&mut self, me: &Node<T>, w: Work) {
        if self.scanned {
            self.next_full = Instant::now() + self.config.scan_interval;
        }
        let name = self.name.clone();
        me.bump(&name, |s| s.in_progress += 1);
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            me.process(&name, &self.table, w),
        ))
        .await
        .unwrap_or_else(|panic| {
            let message = panic_message(&*panic);
            tracing::error!(table = %name, partition = w.partition, panic = %message, "partition sync panicked");
            me.bump(&name, |s| s.panics += 1);
            Err(NodeError::Panicked(message))
        });
        me.bump(&name, |s| s.in_progress -= 1);
        match outcome {
            Ok(Processed::Done) => {
                self.retry.remove(&w.partition);
                me.completed(&name);
            }
            Ok(Processed::Again) => self.work.push(w),
            Ok(Processed::ReplicasLag(lagging)) => {
                // Done here; the live replicas it could not reach get another pass.
                me.completed(&name);
                let delay = self.again(w, true);
                info!(table = %name, partition = w.partition, lagging, retry_in = ?delay, "partition synced here; live replicas failed and get another pass");
            }
            Err(e) => {
                let delay = self.again(w, false);
                warn!(table = %name, partition = w.partition, error = %e, retry_in = ?delay, "partition sync failed");
                me.bump(&name, |s| s.errors += 1);
            }
        }
    }

    /// Schedules `w` again after a delay that doubles with each failure in a row.
    pub(super) fn again(&mut self, w: Work, lagging_only: bool) -> Duration {
        let failures = self.retry.get(&w.partition).map_or(0, |r| r.failures) + 1;
        let delay = Duration::from_secs(1 << failures.min(6).saturating_sub(1));
        self.retry.insert(
            w.partition,
            Retry {
                at: Instant::now() + delay,
                work: w,
                failures,
                lagging_only,
            },
        );
        delay
    }

    /// Once every node acknowledged the current version, one more pass over the partitions
    /// whose nodes changed since the oldest live version: writes started under older versions
    /// have all landed by then. Returns whether it queued work.
    pub(super) async fn queue_ack_pass(&mut self, me: &Node<T>) -> bool {
        let history = me.history();
        if self.ack_pass == Some(self.layout.version) || !history.all_acked(self.layout.version) {
            return false;
        }
        self.ack_pass = Some(self.layout.version);
        // Only during a change: a single live version has no older writes.
        let Some(oldest) = history
            .versions
            .first()
            .filter(|o| o.version < self.layout.version)
        else {
            return false;
        };
        let (t, from, to, id) = (
            self.table.clone(),
            oldest.clone(),
            self.layout.clone(),
            me.id(),
        );
        let mut work = self.take_work();
        self.work = me
            .blocking(move || {
                work.layout_changed(&from, &to, id, |p| holds(&*t, p));
                work
            })
            .await
            .unwrap_or_else(|e| reraise(e));
        true
    }

    /// With nothing queued and only lagging replicas to retry, this node has every write of
    /// the current version: the table's synced mark moves to it, and its offloaded mark too
    /// when no older version is live.
    pub(super) async fn mark_done(&mut self, me: &Node<T>) {
        if !(self.work.is_empty()
            && self.retry.values().all(|r| r.lagging_only)
            && self.ack_pass == Some(self.layout.version))
        {
            return;
        }
        me.table_done(&self.name, self.layout.version).await;
        if self.events.retired.is_empty() && !me.history().in_transition() {
            me.table_offloaded(&self.name, self.layout.version);
        }
    }

    /// When to look again without an event: the next retry or full scan, and shortly while
    /// the current version waits for every node's acknowledgement.
    pub(super) fn next_wakeup(&self) -> Instant {
        let next = self
            .retry
            .values()
            .map(|r| r.at)
            .min()
            .unwrap_or(self.next_full)
            .min(self.next_full);
        if self.ack_pass != Some(self.layout.version) {
            next.min(Instant::now() + Duration::from_millis(500))
        } else {
            next
        }
    }

    /// Sleeps until `wake` or an event. Biased: branches are polled in order, so a simulation
    /// replays the same choices.
    pub(super) async fn wait(&mut self, wake: Instant) {
        tokio::select! {
            biased;
            _ = self.events.layout.changed() => {}
            r = self.events.retired.recv() => {
                if let Ok(old) = r
                    && let Some(me) = self.node()
                {
                    self.retired(&me, &old);
                }
            }
            r = self.events.repair.recv() => {
                if r.is_ok_and(|t| t == self.name) {
                    self.next_full = Instant::now();
                }
            }
            r = self.events.peers.recv() => {
                if let Ok(peer) = r
                    && let Some(me) = self.node()
                {
                    let l = me.layout();
                    self.work.peer_up(&l, me.id(), peer);
                }
            }
            _ = self.events.missed.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Whether the table holds data of partition `p` (a storage failure reads as no).
fn holds(t: &dyn SyncTable, p: u8) -> bool {
    t.has_data(p).unwrap_or(false)
}

impl<T: Transport> Node<T> {
    /// Starts the background syncer of table `table`: a full scan `start_delay` after start and
    /// after `scan_interval` without work, the partitions whose nodes change with each layout,
    /// and at once the partitions shared with a peer that comes (back) up. Partitions this node
    /// stores are synced with all their other replicas; those it no longer stores are pushed to
    /// their owners and deleted here if unchanged.
    pub fn start_syncer(&self, table: &str, config: SyncerConfig) -> Result<(), NodeError> {
        let t = self.table(table)?;
        // Until its first pass, the table has synced and offloaded nothing.
        self.state
            .table_synced
            .lock()
            .entry(table.to_string())
            .or_insert(0);
        self.state
            .table_offloaded
            .lock()
            .entry(table.to_string())
            .or_insert(0);
        let node = Arc::downgrade(&self.state);
        // Subscribed now, not in the task: nothing that happens before it first runs is missed.
        let mut events = SyncerEvents::subscribe(&self.state);
        let name = table.to_string();
        // The syncer runs under a supervisor: a panic in its work (a bug, a storage layer that
        // panics) is caught, counted and logged, and the syncer starts again after a backoff
        // with a full scan, instead of the table silently never syncing again.
        let task = tokio::spawn(async move {
            let mut first_scan = config.start_delay;
            let mut panics_in_a_row = 0u32;
            loop {
                let started = Instant::now();
                let Some(state) = node.upgrade() else { return };
                let syncer = Syncer::new(
                    &Node { state },
                    t.clone(),
                    config.clone(),
                    first_scan,
                    events,
                );
                let run = std::panic::AssertUnwindSafe(syncer.run());
                let Err(panic) = futures::FutureExt::catch_unwind(run).await else {
                    return;
                };
                let Some(state) = node.upgrade() else { return };
                if started.elapsed() > Duration::from_secs(600) {
                    panics_in_a_row = 0;
                }
                panics_in_a_row += 1;
                let backoff = backoff(panics_in_a_row);
                tracing::error!(table = %name, panic = %panic_message(&*panic), restart_in = ?backoff, "the syncer panicked; it restarts with a full scan");
                Node {
                    state: state.clone(),
                }
                .bump(&name, |s| s.panics += 1);
                events = SyncerEvents::subscribe(&state);
                drop(state);
                tokio::time::sleep(backoff).await;
                first_scan = Duration::ZERO;
            }
        });
        self.state.tasks.lock().push(task);
        Ok(())
    }

    /// A write of `table`'s `partition` to `node` failed (its local write, if `node` is this
    /// node). A node counted down will be synced with when it comes back, but for one that
    /// counts as up (its connection dropped, its disk refused) nothing else would queue the
    /// partition, and the item would wait for the next full scan. So the partition is synced
    /// now: by this node if it stores it, else by a replica that does (told by `sync.missed`).
    pub fn missed_write(&self, table: &str, partition: u8, node: NodeId) {
        let me = self.id();
        let up: Vec<NodeId> = self
            .peers()
            .into_iter()
            .filter(|p| p.up)
            .map(|p| p.id)
            .collect();
        if node != me && !up.contains(&node) {
            return;
        }
        let replication = self.replication_of(table);
        let holders = replication.nodes_of(&self.layout(), partition);
        // In a large cluster, a fully replicated table's sync pass stops once it has reached
        // enough nodes (see `work`), not necessarily the one that missed the write: that node
        // is asked to pull.
        let full = replication == crate::worklist::Replication::Full
            && holders.len() > super::membership::FULL_PROBE_MAX_PEERS + 1;
        if holders.contains(&me) && (node == me || !full) {
            self.queue_missed(table, partition);
            return;
        }
        let relay = if full {
            node
        } else {
            let Some(relay) = holders.into_iter().find(|h| *h != node && up.contains(h)) else {
                return;
            };
            relay
        };
        let (net, body) = (self.net().clone(), encode(&(table, partition)));
        tokio::spawn(async move {
            let endpoint = super::endpoint::NodeEndpoint::SyncMissed.name();
            if let Err(e) = net.call(relay, endpoint, body).await {
                debug!(?relay, error = %e, "could not pass on a missed write");
            }
        });
    }

    /// `sync.missed`: a coordinator that does not store the partition passes its failed write
    /// on to a replica that does; this node does not pass it further.
    pub(super) fn serve_missed(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (table, partition): (String, u8) = decode(body)?;
        self.table(&table)?;
        self.queue_missed(&table, partition);
        Ok(Vec::new())
    }

    /// Queues `partition` of `table` for its syncer, if this node stores it.
    pub(super) fn queue_missed(&self, table: &str, partition: u8) {
        let me = self.id();
        let holders = self
            .replication_of(table)
            .nodes_of(&self.layout(), partition);
        if !holders.contains(&me) {
            return;
        }
        let added = self
            .state
            .missed
            .lock()
            .entry(table.to_string())
            .or_default()
            .insert(partition);
        if added {
            self.state.missed_tx.send_replace(());
        }
    }

    /// Asks the syncer of `table` (every table if `None`) for a full scan now; returns the
    /// tables asked.
    pub fn request_repair(&self, table: Option<&str>) -> Result<Vec<String>, NodeError> {
        let tables: Vec<String> = match table {
            Some(t) => {
                self.table(t)?;
                vec![t.to_string()]
            }
            None => {
                let mut all: Vec<String> = self.state.tables.read().keys().cloned().collect();
                all.sort();
                all
            }
        };
        for t in &tables {
            let _ = self.state.repair_tx.send(t.clone());
        }
        Ok(tables)
    }
}
