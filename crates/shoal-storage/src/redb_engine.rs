//! The product engine: redb, durable by default, with group commit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tracing::{debug, warn};

use crate::memory::scan_map;
use crate::overlay::{WriteBase, run_job};
use crate::row_cache::RowCache;
use crate::{
    AfterCommit, Direction, Engine, EngineStats, Entries, KeyRange, OpenError, ReadView,
    StorageError, WriteCallback, WriteJob,
};

/// Tree holding Shoal's own marker, written when the store is created.
const META_TREE: &str = "__shoal_meta";
const FORMAT_KEY: &[u8] = b"format";
/// Identifies a Shoal store and the layout of its trees. Bump on incompatible change.
const FORMAT_MARKER: &[u8] = b"shoal-store/1";
/// redb files start with these bytes; anything else is not a database at all.
const REDB_MAGIC: &[u8] = b"redb";

type Def<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;
type BytesTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type RangeItem<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge only after the commit is on stable storage (fsync). The default: an
    /// acknowledged transaction survives a process kill or a power loss.
    #[default]
    Immediate,
    /// **Not durable**: acknowledge before syncing. A crash may lose recent commits (the file
    /// stays consistent). For benchmarks and bulk loads only.
    Relaxed,
}

/// How to open a [`RedbEngine`].
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// When commits are acknowledged.
    pub durability: Durability,
    /// Page cache size in bytes.
    pub cache_size: usize,
    /// Row cache size in bytes (values of single keys answered without a B-tree walk); 0: none.
    pub row_cache_size: usize,
    /// Most transactions sharing one commit.
    pub max_group: usize,
    /// Verify every page checksum when opening. Costs one read of the file; catches a damaged
    /// file at open time with a clear error instead of at some later read.
    pub verify_on_open: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            durability: Durability::Immediate,
            cache_size: 256 << 20,
            row_cache_size: 64 << 20,
            max_group: 4096,
            verify_on_open: true,
        }
    }
}

struct Pending {
    job: WriteJob,
    done: WriteCallback,
}

/// A store in one redb file.
pub struct RedbEngine {
    db: Arc<DbSlot>,
    path: PathBuf,
    queue: Option<mpsc::Sender<Pending>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// The open database, replaced by the writer when an I/O error (a full disk) has poisoned it:
/// redb refuses every later write on that handle, so the handle is closed and the file opened
/// again, which recovers the last durable commit. Empty while the reopen waits for readers.
struct DbSlot {
    db: parking_lot::RwLock<Option<Arc<redb::Database>>>,
    path: PathBuf,
    cache_size: usize,
    /// Twice the commits (and reopens) so far, plus one while a group runs and commits: even,
    /// it names the state every new read transaction sees; odd, a new one may see the next.
    generation: AtomicU64,
    /// Tables of the latest committed state, each opened by the first point read after a commit
    /// and shared by the reads that follow until the next one. A point read otherwise pays a
    /// read transaction and a lookup of the table's root, as much again as the read itself.
    latest: parking_lot::RwLock<LatestTables>,
    /// Values of single keys in the latest committed state, exact by the protocol described in
    /// [`crate::row_cache`], which relies on `generation`.
    rows: Option<RowCache>,
}

/// Open read-only tables of one committed state.
#[derive(Default)]
struct LatestTables {
    /// The (even) [`DbSlot::generation`] they were opened at: they show exactly that state.
    generation: u64,
    /// By tree name; `None` for a tree that does not exist in that state.
    tables: HashMap<String, Option<Arc<ReadTable>>>,
}

impl DbSlot {
    fn new(db: Arc<redb::Database>, path: PathBuf, options: &RedbOptions) -> Self {
        DbSlot {
            db: parking_lot::RwLock::new(Some(db)),
            path,
            cache_size: options.cache_size,
            generation: AtomicU64::new(0),
            latest: Default::default(),
            rows: RowCache::new(options.row_cache_size),
        }
    }

    /// Called by the writer before a group's transactions run: until [`DbSlot::committed`],
    /// new read transactions may see either state, none of their tables is shared, and the row
    /// cache takes no new entry (the group's writes invalidate theirs as they are made).
    fn committing(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Called by the writer after a commit (or a failed one, or a reopen) and before anyone is
    /// told of it: no read that starts after the acknowledgement is served from an older
    /// state. Dropping the old tables also lets redb reuse the pages the commit freed.
    fn committed(&self) {
        let mut latest = self.latest.write();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(generation.is_multiple_of(2));
        latest.generation = generation;
        latest.tables.clear();
    }

    /// `tree` as of the latest commit (`None` if it does not exist), opened at most once per
    /// commit while no commit is under way.
    fn latest_table(&self, tree: &str) -> Result<Option<Arc<ReadTable>>, StorageError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let settled = generation.is_multiple_of(2);
        if settled {
            let latest = self.latest.read();
            if latest.generation == generation
                && let Some(t) = latest.tables.get(tree)
            {
                return Ok(t.clone());
            }
        }
        let snapshot = RedbSnapshot(self.get()?.begin_read().map_err(map_err)?);
        let table = snapshot.table(tree)?.map(Arc::new);
        if settled {
            // Shared only if no commit began before the transaction did: then it shows exactly
            // this generation's state (only the writer commits, and it says so first).
            let mut latest = self.latest.write();
            if self.generation.load(Ordering::SeqCst) == generation {
                if latest.generation != generation {
                    latest.generation = generation;
                    latest.tables.clear();
                }
                latest.tables.insert(tree.to_string(), table.clone());
            }
        }
        Ok(table)
    }

    fn get(&self) -> Result<Arc<redb::Database>, StorageError> {
        self.db.read().clone().ok_or_else(|| {
            StorageError::Engine(format!(
                "{} is being reopened after an I/O error",
                self.path.display()
            ))
        })
    }

    /// Closes the poisoned handle and opens the file again. Waits (up to 5 s) for readers
    /// still holding the old handle, whose file lock forbids a second open.
    fn reopen(&self, old: Arc<redb::Database>) -> Result<(), StorageError> {
        *self.db.write() = None;
        // Shared tables hold the old file open too. The reopened file holds the last durable
        // commit, which may be older than what the row cache remembers.
        self.committing();
        if let Some(rows) = &self.rows {
            rows.clear();
        }
        self.committed();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut old = Some(old);
        loop {
            if let Some(o) = old.take() {
                match Arc::try_unwrap(o) {
                    Ok(db) => drop(db),
                    Err(o) => old = Some(o),
                }
            }
            if old.is_none() {
                let mut builder = redb::Database::builder();
                builder.set_cache_size(self.cache_size);
                match builder.open(&self.path) {
                    Ok(db) => {
                        *self.db.write() = Some(Arc::new(db));
                        return Ok(());
                    }
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) => {}
                    Err(e) => return Err(map_err(e)),
                }
            }
            if std::time::Instant::now() > deadline {
                // Keep the old handle (still poisoned) rather than nothing; try again later.
                if let Some(o) = old {
                    *self.db.write() = Some(o);
                }
                return Err(StorageError::Engine(
                    "readers held the store open; reopen postponed".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    commits: AtomicU64,
}

fn map_err(e: impl Into<redb::Error>) -> StorageError {
    match e.into() {
        redb::Error::Io(io) if io.raw_os_error() == Some(28) => StorageError::DiskFull,
        redb::Error::Io(io) => StorageError::Io(io),
        redb::Error::Corrupted(s) => StorageError::Corrupted(s),
        redb::Error::DatabaseClosed => StorageError::Closed,
        other => StorageError::Engine(other.to_string()),
    }
}

impl RedbEngine {
    /// Opens the store at `path`, creating it if the file does not exist.
    ///
    /// An existing file must be a whole Shoal store: an empty, truncated, damaged, foreign or
    /// random file is refused with an [`OpenError`] naming it, and is never reinitialised.
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let exists = path.exists();
        if exists {
            precheck_file(&path)?;
            precheck_marker(&path)?;
        }
        let mut builder = redb::Database::builder();
        builder
            .set_cache_size(options.cache_size)
            .set_check_integrity_on_open(exists && options.verify_on_open);
        // redb documents that a plain open of an altered file may panic; a panic must never take
        // the node down, so it becomes an error naming the file.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if exists {
                builder.open(&path)
            } else {
                builder.create(&path)
            }
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_error(&path, e)),
            Err(_) => {
                return Err(OpenError::Corrupt {
                    path,
                    detail: "the engine failed while reading the file".into(),
                });
            }
        };
        let db = Arc::new(db);
        if exists {
            check_marker(&db, &path)?;
        } else {
            write_marker(&db).map_err(|e| OpenError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }

        let (queue, rx) = mpsc::channel::<Pending>();
        let db = Arc::new(DbSlot::new(db, path.clone(), &options));
        let writer_db = db.clone();
        let counters = Arc::new(Counters::default());
        let writer_counters = counters.clone();
        let writer = std::thread::Builder::new()
            .name("shoal-store-writer".into())
            .spawn(move || writer_loop(writer_db, rx, options, &writer_counters))
            .map_err(|source| OpenError::Io {
                path: path.clone(),
                source,
            })?;
        debug!(path = %path.display(), "store opened");
        Ok(RedbEngine {
            db,
            path,
            queue: Some(queue),
            writer: Some(writer),
            counters,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Cheap checks before handing the file to the engine, for the clearest possible errors.
fn precheck_file(path: &Path) -> Result<(), OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(OpenError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(io)?;
    if n < magic.len() || magic != REDB_MAGIC {
        return Err(OpenError::NotADatabase {
            path: path.to_path_buf(),
            detail: "the file does not start with a database header".into(),
        });
    }
    Ok(())
}

/// Refuses a whole database that is not a Shoal store before the real open, which may write to
/// the file (integrity check, repair). A file that cannot be opened read-only (it needs repair
/// after a crash, or is damaged) is left to the real open to repair or refuse.
fn precheck_marker(path: &Path) -> Result<(), OpenError> {
    let opened = std::panic::catch_unwind(|| redb::Builder::new().open_read_only(path));
    let Ok(Ok(db)) = opened else {
        return Ok(());
    };
    let txn = match db.begin_read() {
        Ok(t) => t,
        Err(_) => return Ok(()),
    };
    match txn.open_table(Def::new(META_TREE)) {
        Err(redb::TableError::TableDoesNotExist(_)) => Err(OpenError::Foreign {
            path: path.to_path_buf(),
            detail: "no Shoal format marker".into(),
        }),
        _ => Ok(()),
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::AlreadyOpen { path },
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            OpenError::Io { path, source }
        }
        redb::DatabaseError::UpgradeRequired(v) => OpenError::Foreign {
            path,
            detail: format!("written by an older engine file format ({v})"),
        },
        other => OpenError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

fn write_marker(db: &redb::Database) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(map_err)?;
    {
        let mut t = txn.open_table(Def::new(META_TREE)).map_err(map_err)?;
        t.insert(FORMAT_KEY, FORMAT_MARKER).map_err(map_err)?;
    }
    txn.commit().map_err(map_err)
}

fn check_marker(db: &redb::Database, path: &Path) -> Result<(), OpenError> {
    let read = || -> Result<Option<Vec<u8>>, StorageError> {
        let txn = db.begin_read().map_err(map_err)?;
        let t = match txn.open_table(Def::new(META_TREE)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(map_err(e)),
        };
        Ok(t.get(FORMAT_KEY)
            .map_err(map_err)?
            .map(|v| v.value().to_vec()))
    };
    match read() {
        Ok(Some(m)) if m == FORMAT_MARKER => Ok(()),
        Ok(Some(m)) => Err(OpenError::Foreign {
            path: path.to_path_buf(),
            detail: format!(
                "format marker {:?}, expected {:?}",
                String::from_utf8_lossy(&m),
                String::from_utf8_lossy(FORMAT_MARKER)
            ),
        }),
        Ok(None) => Err(OpenError::Foreign {
            path: path.to_path_buf(),
            detail: "no Shoal format marker".into(),
        }),
        Err(e) => Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// The group-commit loop: take everything queued, run it in one engine transaction, commit once,
/// then acknowledge each transaction.
fn writer_loop(
    slot: Arc<DbSlot>,
    rx: mpsc::Receiver<Pending>,
    options: RedbOptions,
    counters: &Counters,
) {
    // Set when an I/O error poisoned the handle and the reopen has not happened yet: the
    // writer then wakes every second to reopen by itself, since readers fail on a poisoned
    // handle and no write may come to trigger it.
    let mut poisoned: Option<StorageError> = None;
    let mut last_reopen: Option<std::time::Instant> = None;
    let second = std::time::Duration::from_secs(1);
    loop {
        let first = if poisoned.is_some() {
            match rx.recv_timeout(second) {
                Ok(p) => Some(p),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(p) => Some(p),
                Err(_) => break,
            }
        };
        if let Some(cause) = &poisoned
            && last_reopen.is_none_or(|t| t.elapsed() >= second)
        {
            // An I/O error poisons a redb handle for good: reopen (at most once a second while
            // the cause, a full disk say, lasts), which recovers the last durable commit.
            last_reopen = Some(std::time::Instant::now());
            if let Ok(db) = slot.get() {
                match slot.reopen(db) {
                    Ok(()) => {
                        warn!(path = %slot.path.display(), cause = %cause, "store reopened after an I/O error");
                        poisoned = None;
                    }
                    Err(r) => {
                        warn!(path = %slot.path.display(), cause = %cause, error = %r, "store reopen failed; retrying in a second")
                    }
                }
            }
        }
        let Some(first) = first else { continue };
        let mut group = vec![first];
        while group.len() < options.max_group {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        counters
            .transactions
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        counters.commits.fetch_add(1, Ordering::Relaxed);
        let db = match slot.get() {
            Ok(db) => db,
            Err(e) => {
                fail_all(group.into_iter().map(|p| p.done), &e);
                continue;
            }
        };
        if let Err(e) = commit_group(&db, group, options.durability, &slot) {
            poisoned = Some(e);
        }
    }
    debug!("store writer stopped");
}

/// Runs and commits one group; returns the I/O error that poisoned the handle, if one did.
fn commit_group(
    db: &redb::Database,
    group: Vec<Pending>,
    durability: Durability,
    slot: &DbSlot,
) -> Result<(), StorageError> {
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let previous_io = matches!(
                e,
                redb::TransactionError::Storage(redb::StorageError::PreviousIo)
            );
            let e = map_err(e);
            warn!(error = %e, "cannot begin a write transaction");
            fail_all(group.into_iter().map(|p| p.done), &e);
            return if previous_io { Err(e) } else { Ok(()) };
        }
    };
    if durability == Durability::Relaxed
        && let Err(e) = txn.set_durability(redb::Durability::None)
    {
        warn!(error = %e, "cannot relax durability; committing durably");
    }
    let mut acks: Vec<(WriteCallback, Result<(), StorageError>)> = Vec::with_capacity(group.len());
    let mut any_commit = false;
    let mut fatal = None;
    let mut after_commit: Vec<AfterCommit> = Vec::new();
    // From here until the commit is over, reads may see either state: see `committing`.
    slot.committing();
    {
        let base = RedbBase {
            txn: &txn,
            tables: RefCell::new(HashMap::new()),
            rows: slot.rows.as_ref(),
        };
        for p in group {
            if fatal.is_some() {
                acks.push((p.done, Ok(())));
                continue;
            }
            match run_job(&base, p.job) {
                Ok(Some(actions)) => {
                    any_commit = true;
                    after_commit.extend(actions);
                    acks.push((p.done, Ok(())));
                }
                Ok(None) => acks.push((p.done, Ok(()))),
                Err(StorageError::Panicked(msg)) => {
                    acks.push((p.done, Err(StorageError::Panicked(msg))))
                }
                Err(e) => {
                    // The shared transaction may hold part of this job's writes: the whole
                    // group must be abandoned.
                    acks.push((p.done, Ok(())));
                    fatal = Some(e);
                }
            }
        }
    }
    let result = match fatal {
        Some(e) => {
            let _ = txn.abort();
            Err(e)
        }
        None if any_commit => txn.commit().map_err(map_err),
        None => txn.abort().map_err(map_err),
    };
    slot.committed();
    match result {
        Ok(()) => {
            for action in after_commit {
                action();
            }
            for (done, r) in acks {
                done(r);
            }
        }
        Err(e) => {
            warn!(error = %e, transactions = acks.len(), "group commit failed; no transaction of the group was applied");
            fail_all(acks.into_iter().map(|(d, _)| d), &e);
            if matches!(e, StorageError::DiskFull | StorageError::Io(_)) {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn fail_all(dones: impl Iterator<Item = WriteCallback>, e: &StorageError) {
    for done in dones {
        done(Err(clone_err(e)));
    }
}

fn clone_err(e: &StorageError) -> StorageError {
    match e {
        StorageError::DiskFull => StorageError::DiskFull,
        StorageError::Io(io) => StorageError::Io(std::io::Error::new(io.kind(), io.to_string())),
        StorageError::Corrupted(s) => StorageError::Corrupted(s.clone()),
        StorageError::Closed => StorageError::Closed,
        StorageError::Panicked(s) => StorageError::Panicked(s.clone()),
        StorageError::Engine(s) => StorageError::Engine(s.clone()),
    }
}

/// The open engine transaction shared by a group, with its tables opened once each.
struct RedbBase<'t> {
    txn: &'t redb::WriteTransaction,
    tables: RefCell<HashMap<String, BytesTable<'t>>>,
    /// Told of every key written, while the generation is odd.
    rows: Option<&'t RowCache>,
}

impl RedbBase<'_> {
    fn with_table<R>(
        &self,
        tree: &str,
        f: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        let mut tables = self.tables.borrow_mut();
        if !tables.contains_key(tree) {
            let t = self.txn.open_table(Def::new(tree)).map_err(map_err)?;
            tables.insert(tree.to_owned(), t);
        }
        f(tables.get_mut(tree).expect("table was just opened"))
    }
}

fn scan_table(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    range: &KeyRange,
    direction: Direction,
    limit: usize,
) -> Result<Entries, StorageError> {
    if range.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let it = t.range::<&[u8]>(range.as_bounds()).map_err(map_err)?;
    let mut out = Vec::new();
    let mut push = |e: RangeItem<'_>| {
        let (k, v) = e.map_err(map_err)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
        Ok::<(), StorageError>(())
    };
    match direction {
        Direction::Forward => it.take(limit).try_for_each(&mut push)?,
        Direction::Backward => it.rev().take(limit).try_for_each(&mut push)?,
    }
    Ok(out)
}

impl WriteBase for RedbBase<'_> {
    fn base_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.with_table(tree, |t| {
            Ok(t.get(key).map_err(map_err)?.map(|v| v.value().to_vec()))
        })
    }

    fn base_scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.with_table(tree, |t| scan_table(t, range, direction, limit))
    }

    fn base_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        if let Some(rows) = self.rows {
            rows.invalidate(tree, key);
        }
        self.with_table(tree, |t| t.insert(key, value).map(|_| ()).map_err(map_err))
    }

    fn base_delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        if let Some(rows) = self.rows {
            rows.invalidate(tree, key);
        }
        self.with_table(tree, |t| t.remove(key).map(|_| ()).map_err(map_err))
    }
}

/// A read transaction: one consistent state of the store.
struct RedbSnapshot(redb::ReadTransaction);

impl RedbSnapshot {
    fn table(&self, tree: &str) -> Result<Option<ReadTable>, StorageError> {
        match self.0.open_table(Def::new(tree)) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }
}

impl ReadView for RedbSnapshot {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(t) = self.table(tree)? else {
            return Ok(None);
        };
        Ok(t.get(key).map_err(map_err)?.map(|v| v.value().to_vec()))
    }

    fn for_each_key(
        &self,
        tree: &str,
        range: &KeyRange,
        f: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let Some(t) = self.table(tree)? else {
            return Ok(());
        };
        if range.is_empty() {
            return Ok(());
        }
        for e in t.range::<&[u8]>(range.as_bounds()).map_err(map_err)? {
            let (k, _) = e.map_err(map_err)?;
            if !f(k.value()) {
                break;
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        match self.table(tree)? {
            Some(t) => scan_table(&t, range, direction, limit),
            None => Ok(scan_map(None, range, direction, limit)),
        }
    }
}

impl RedbEngine {
    fn read(&self) -> Result<RedbSnapshot, StorageError> {
        Ok(RedbSnapshot(self.db.get()?.begin_read().map_err(map_err)?))
    }
}

impl ReadView for RedbEngine {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let miss = match &self.db.rows {
            Some(rows) => match rows.get(tree, key, &self.db.generation) {
                Ok(known) => return Ok(known),
                Err(miss) => Some((rows, miss)),
            },
            None => None,
        };
        let value = match self.db.latest_table(tree)? {
            Some(t) => t.get(key).map_err(map_err)?.map(|v| v.value().to_vec()),
            None => None,
        };
        if let Some((rows, miss)) = miss {
            rows.fill(miss, value.as_deref(), &self.db.generation);
        }
        Ok(value)
    }

    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.read()?.scan(tree, range, direction, limit)
    }

    fn for_each_key(
        &self,
        tree: &str,
        range: &KeyRange,
        f: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StorageError> {
        self.read()?.for_each_key(tree, range, f)
    }
}

impl Engine for RedbEngine {
    fn submit(&self, job: WriteJob, done: WriteCallback) {
        match &self.queue {
            Some(q) => {
                if let Err(mpsc::SendError(p)) = q.send(Pending { job, done }) {
                    (p.done)(Err(StorageError::Closed));
                }
            }
            None => done(Err(StorageError::Closed)),
        }
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + Send + '_>, StorageError> {
        Ok(Box::new(self.read()?))
    }

    fn tree_len(&self, tree: &str) -> Result<u64, StorageError> {
        match self.read()?.table(tree)? {
            Some(t) => t.len().map_err(map_err),
            None => Ok(0),
        }
    }

    fn approximate_size(&self) -> Result<u64, StorageError> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    fn describe(&self) -> String {
        format!("redb store {}", self.path.display())
    }

    fn stats(&self) -> EngineStats {
        let (row_cache_hits, row_cache_misses) =
            self.db.rows.as_ref().map_or((0, 0), RowCache::counts);
        EngineStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            row_cache_hits,
            row_cache_misses,
        }
    }
}

impl Drop for RedbEngine {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued, then stop.
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
