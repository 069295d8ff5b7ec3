//! The API's operations, independent of HTTP: K2V reads and writes through quorum replication,
//! ReadIndex over every node's counts, long polls, access keys and buckets.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use shoal_cluster::node::Node;
use shoal_cluster::replication::{QuorumError, Replicated};
use shoal_net::{ErrorCode, RemoteError, Transport};
use shoal_storage::{KeyRange, Store};
use shoal_sync::ids::IdKey;
use shoal_sync::index::PartitionIndex;
use shoal_table::crdt::{Flag, Lww, LwwMap};
use shoal_table::{Table, engine_key};
use tokio::sync::watch;

mod access;
use access::decode;
pub use access::{BucketInfo, KeyInfo, LocalItem, LocalItems};

use crate::cache::RowCache;
use crate::causality::{CausalContext, Dvvs, DvvsValue, WriterId};
use crate::counters::{Counts, IndexQuery, K2vCounters};
use crate::endpoints::ApiEndpoint;
use crate::model::{
    AccessKey, Bucket, BucketTable, K2vItem, K2vPartition, K2vTable, KeyTable, Permission,
    SYSTEM_PK, stamp_now,
};

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The region clients sign for.
    pub region: String,
    /// Request bodies above this are refused (413) before being read.
    pub max_body_bytes: usize,
    /// Requests (other than long polls) this node serves at once; more are answered 503 with
    /// `Retry-After` at once.
    pub max_requests_in_flight: usize,
    /// Items this node's K2V writes may have in flight at once. A write waits for room (its
    /// client is slowed: backpressure) up to `write_admission_wait`, then is answered 503.
    pub max_writes_in_flight: usize,
    /// How long a write waits for room before it is refused.
    pub write_admission_wait: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            region: "shoal".into(),
            max_body_bytes: 8 << 20,
            max_requests_in_flight: 4096,
            max_writes_in_flight: 16_384,
            write_admission_wait: Duration::from_secs(10),
        }
    }
}

/// Why an API operation failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not authenticated or not allowed (403).
    #[error("{0}")]
    AccessDenied(String),
    /// No such bucket (404).
    #[error("no bucket {0}")]
    NoSuchBucket(String),
    /// No such item (404).
    #[error("no item with this key")]
    NoSuchKey,
    /// The name is taken (409).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Too few replicas answered, or this node has more work in flight than it accepts (503,
    /// with `Retry-After`): try again later. A write refused this way may still have reached
    /// some replicas (anti-entropy spreads it), as the specification warns.
    #[error("{0}")]
    Unavailable(String),
    /// A storage failure or a bug (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The code this failure carries when it answers an RPC (an operator's call, a peer's).
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::Malformed,
            ApiError::AccessDenied(_) | ApiError::AlreadyExists(_) => ErrorCode::Refused,
            ApiError::NoSuchBucket(_) | ApiError::NoSuchKey => ErrorCode::NotFound,
            ApiError::Unavailable(_) => ErrorCode::RetryLater,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<QuorumError> for ApiError {
    fn from(e: QuorumError) -> Self {
        match e {
            // Replicas that do not answer come back, or are replaced: a matter of time.
            QuorumError::Write { .. } | QuorumError::Read { .. } | QuorumError::NoLayout(_) => {
                ApiError::Unavailable(e.to_string())
            }
            QuorumError::Decode(_) => ApiError::Internal(e.to_string()),
        }
    }
}

struct Inner<T: Transport> {
    node: Node<T>,
    store: Store,
    items: Replicated<K2vTable, T>,
    keys: Replicated<KeyTable, T>,
    buckets: Replicated<BucketTable, T>,
    keys_local: Table<KeyTable>,
    buckets_local: Table<BucketTable>,
    key_cache: RowCache<AccessKey>,
    bucket_cache: RowCache<Bucket>,
    writer: WriterId,
    clock: AtomicU64,
    changes: watch::Receiver<u64>,
    config: ApiConfig,
    metrics: crate::metrics::ApiMetrics,
    /// Room for requests in flight (see [`ApiConfig::max_requests_in_flight`]).
    requests: Arc<tokio::sync::Semaphore>,
    /// Room for written items in flight (see [`ApiConfig::max_writes_in_flight`]).
    writes: Arc<tokio::sync::Semaphore>,
}

/// The API of one node. Cheap to clone.
pub struct Api<T: Transport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api {
            inner: self.inner.clone(),
        }
    }
}

/// A range of sort keys within one partition key, as K2V's searches give it.
#[derive(Debug, Clone, Default)]
pub struct SortRange {
    /// Only sort keys with this prefix.
    pub prefix: Option<String>,
    /// First sort key (the highest when `reverse`).
    pub start: Option<String>,
    /// Sort key where the listing stops, excluded.
    pub end: Option<String>,
    /// Descending order.
    pub reverse: bool,
}

/// A page of items.
#[derive(Debug, Clone)]
pub struct ItemPage {
    /// Items in order.
    pub items: Vec<K2vItem>,
    /// The first sort key not returned, when the limit stopped the listing.
    pub next_start: Option<String>,
}

/// A page of ReadIndex.
#[derive(Debug, Clone)]
pub struct IndexPage {
    /// Partition keys and their counts.
    pub keys: Vec<(String, Counts)>,
    /// The first partition key not returned, when the limit stopped the listing.
    pub next_start: Option<String>,
}

/// Most items one search returns when the client sets no limit.
pub const DEFAULT_LIMIT: usize = 1000;

impl<T: Transport> Api<T> {
    /// Opens the API's tables in `store`, registers them with `node` (K2V items sharded, keys
    /// and buckets fully replicated) and adds the API's node-to-node endpoints. The caller
    /// starts the tables' syncers.
    pub async fn install(
        node: &Node<T>,
        store: &Store,
        id_key: IdKey,
        config: ApiConfig,
    ) -> Result<Self, ApiError> {
        let internal = |e: shoal_storage::StorageError| ApiError::Internal(e.to_string());
        let (counters, changes) = K2vCounters::new();
        let items_index = PartitionIndex::open_async(store, "k2v", id_key.clone())
            .await
            .map_err(internal)?;
        let items_table = Table::<K2vTable>::new(store.clone())
            .with_hook(items_index.clone())
            .with_hook(counters);
        let keys_index = PartitionIndex::open_async(store, "keys", id_key.clone())
            .await
            .map_err(internal)?;
        let (key_cache, bucket_cache) = (RowCache::default(), RowCache::default());
        let keys_local = Table::<KeyTable>::new(store.clone())
            .with_hook(keys_index.clone())
            .with_hook(key_cache.invalidator());
        let buckets_index = PartitionIndex::open_async(store, "buckets", id_key)
            .await
            .map_err(internal)?;
        let buckets_local = Table::<BucketTable>::new(store.clone())
            .with_hook(buckets_index.clone())
            .with_hook(bucket_cache.invalidator());
        node.add_table(Arc::new((items_table, items_index)));
        node.add_full_table(Arc::new((keys_local.clone(), keys_index)));
        node.add_full_table(Arc::new((buckets_local.clone(), buckets_index)));

        let writer = u64::from_be_bytes(node.id().0[..8].try_into().expect("8 bytes"));
        let api = Api {
            inner: Arc::new(Inner {
                node: node.clone(),
                store: store.clone(),
                items: Replicated::new(node.clone()),
                keys: Replicated::new(node.clone()),
                buckets: Replicated::new(node.clone()),
                keys_local,
                buckets_local,
                key_cache,
                bucket_cache,
                writer,
                clock: AtomicU64::new(crate::now_micros()),
                changes,
                requests: Arc::new(tokio::sync::Semaphore::new(
                    config.max_requests_in_flight.max(1),
                )),
                writes: Arc::new(tokio::sync::Semaphore::new(
                    config.max_writes_in_flight.max(1),
                )),
                config,
                metrics: crate::metrics::ApiMetrics::default(),
            }),
        };
        let store = store.clone();
        node.add_endpoint(
            ApiEndpoint::K2vIndex.name(),
            Arc::new(move |_from, body| {
                let store = store.clone();
                Box::pin(async move {
                    let q: IndexQuery = decode(&body)?;
                    let rows = tokio::task::spawn_blocking(move || {
                        crate::counters::local_counts(&store, &q)
                    })
                    .await
                    .map_err(|e| RemoteError::internal(e.to_string()))?
                    .map_err(|e| RemoteError::internal(e.to_string()))?;
                    Ok(rmp_serde::to_vec_named(&rows).expect("counts encode"))
                })
            }),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        api.add_admin_endpoints()?;
        Ok(api)
    }

    /// The API's request metrics.
    pub fn metrics(&self) -> &crate::metrics::ApiMetrics {
        &self.inner.metrics
    }

    /// The node this API runs on.
    pub fn node(&self) -> &Node<T> {
        &self.inner.node
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    fn next_time(&self, context: Option<&CausalContext>) -> u64 {
        let now = crate::now_micros();
        let mut t = 0;
        let _ = self
            .inner
            .clock
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                t = Dvvs::next_time(self.inner.writer, now.max(last + 1), context);
                Some(t)
            });
        t
    }

    /// Room for one more request, if this node has any (see
    /// [`ApiConfig::max_requests_in_flight`]); held until the request is answered.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.requests.clone().try_acquire_owned().ok()
    }

    /// Room for `items` written items, waiting for it up to
    /// [`ApiConfig::write_admission_wait`]: the backpressure that keeps a node taking more
    /// writes than it commits from queueing without bound (and its heartbeats behind them).
    pub async fn write_room(
        &self,
        items: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let n = items.clamp(1, self.inner.config.max_writes_in_flight.max(1)) as u32;
        let acquire = self.inner.writes.clone().acquire_many_owned(n);
        match tokio::time::timeout(self.inner.config.write_admission_wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Unavailable(format!(
                "this node has {} items of writes in flight; retry later",
                self.inner.config.max_writes_in_flight
            ))),
        }
    }

    // ---- K2V items ----------------------------------------------------------------------

    /// Writes `value` (a deletion if `DvvsValue::Deleted`) superseding what `context` saw.
    pub async fn insert(
        &self,
        bucket_id: &str,
        pk: &str,
        sk: &str,
        context: Option<&CausalContext>,
        value: DvvsValue,
    ) -> Result<(), ApiError> {
        let time = self.next_time(context);
        let item = K2vItem {
            partition: K2vPartition {
                bucket: bucket_id.into(),
                pk: pk.into(),
            },
            sk: sk.into(),
            dvvs: Dvvs::write(self.inner.writer, time, context, value),
        };
        let _room = self.write_room(1).await?;
        Ok(self.inner.items.insert(&item).await?)
    }

    /// Writes each `(partition key, sort key, causality token, value)` as [`Api::insert`]
    /// does, the items of a ring partition in one message per replica (InsertBatch).
    pub async fn insert_batch(
        &self,
        bucket_id: &str,
        writes: Vec<(String, String, Option<CausalContext>, DvvsValue)>,
    ) -> Result<(), ApiError> {
        let _room = self.write_room(writes.len()).await?;
        let items: Vec<K2vItem> = writes
            .into_iter()
            .map(|(pk, sk, context, value)| {
                let time = self.next_time(context.as_ref());
                K2vItem {
                    partition: K2vPartition {
                        bucket: bucket_id.into(),
                        pk,
                    },
                    sk,
                    dvvs: Dvvs::write(self.inner.writer, time, context.as_ref(), value),
                }
            })
            .collect();
        Ok(self.inner.items.insert_many(&items).await?)
    }

    /// Reads an item through a read quorum.
    pub async fn read(
        &self,
        bucket_id: &str,
        pk: &str,
        sk: &str,
    ) -> Result<Option<K2vItem>, ApiError> {
        let partition = K2vPartition {
            bucket: bucket_id.into(),
            pk: pk.into(),
        };
        Ok(self.inner.items.get(&partition, &sk.to_string()).await?)
    }

    /// Lists items of a partition key: up to `limit` that `keep` accepts, and where to go on.
    pub async fn list(
        &self,
        bucket_id: &str,
        pk: &str,
        range: &SortRange,
        limit: usize,
        keep: impl Fn(&K2vItem) -> bool,
    ) -> Result<ItemPage, ApiError> {
        let partition = K2vPartition {
            bucket: bucket_id.into(),
            pk: pk.into(),
        };
        let hash = engine_key(&partition, &String::new());
        let with = |sk: &str| {
            let mut k = hash.clone();
            k.extend_from_slice(sk.as_bytes());
            k
        };
        let mut key_range = crate::range::key_range(
            &hash,
            range.prefix.as_deref(),
            range.start.as_deref(),
            range.end.as_deref(),
            range.reverse,
        );
        let mut items = Vec::new();
        let page = shoal_cluster::node::MAX_RANGE_ITEMS;
        loop {
            let batch = self
                .inner
                .items
                .range(&partition, key_range.clone(), range.reverse, page)
                .await?;
            let full = batch.len() == page;
            let last_key = batch.last().map(|i| with(&i.sk));
            for item in batch {
                if items.len() == limit {
                    return Ok(ItemPage {
                        items,
                        next_start: Some(item.sk),
                    });
                }
                if keep(&item) {
                    items.push(item);
                }
            }
            match last_key {
                Some(k) if full => {
                    if range.reverse {
                        key_range.end = Bound::Excluded(k);
                    } else {
                        key_range.start = Bound::Excluded(k);
                    }
                }
                _ => {
                    return Ok(ItemPage {
                        items,
                        next_start: None,
                    });
                }
            }
        }
    }

    /// ReadIndex: every node's counts for the bucket, the largest per partition key.
    pub async fn read_index(&self, q: IndexQuery) -> Result<IndexPage, ApiError> {
        let limit = q.limit;
        let mut asked = q.clone();
        asked.limit = limit.saturating_add(1);
        let body = rmp_serde::to_vec_named(&asked).expect("query encodes");
        let nodes = self.inner.node.layout().all_nodes();
        let mut set = tokio::task::JoinSet::new();
        for n in nodes {
            let (node, body) = (self.inner.node.clone(), body.clone());
            set.spawn(async move { node.call_endpoint(n, "k2v.index", body).await });
        }
        let mut merged: BTreeMap<String, Counts> = BTreeMap::new();
        let mut answered = 0;
        while let Some(r) = set.join_next().await {
            let Ok(Ok(reply)) = r else { continue };
            let rows: Vec<(String, Counts)> = rmp_serde::from_slice(&reply)
                .map_err(|e| ApiError::Internal(format!("malformed counts: {e}")))?;
            answered += 1;
            for (pk, c) in rows {
                merged.entry(pk).or_default().max(&c);
            }
        }
        if answered == 0 {
            return Err(ApiError::Internal("no node answered ReadIndex".into()));
        }
        let mut keys: Vec<(String, Counts)> =
            merged.into_iter().filter(|(_, c)| c.entries > 0).collect();
        if q.reverse {
            keys.reverse();
        }
        let next_start = if keys.len() > limit {
            Some(keys[limit].0.clone())
        } else {
            None
        };
        keys.truncate(limit);
        Ok(IndexPage { keys, next_start })
    }

    /// Waits until the item holds a value `context` has not seen, or `timeout`.
    pub async fn poll_item(
        &self,
        bucket_id: &str,
        pk: &str,
        sk: &str,
        context: &CausalContext,
        timeout: Duration,
    ) -> Result<Option<K2vItem>, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.changes.clone();
        loop {
            changes.mark_unchanged();
            if let Some(item) = self.read(bucket_id, pk, sk).await?
                && item.dvvs.has_news_for(context)
            {
                return Ok(Some(item));
            }
            if !self.wait_change(&mut changes, deadline).await {
                return Ok(None);
            }
        }
    }

    /// Waits until some item of the range changed after `seen` (everything, if `seen` is
    /// `None`), or `timeout`. Returns the changed items and the new marker.
    pub async fn poll_range(
        &self,
        bucket_id: &str,
        pk: &str,
        range: &SortRange,
        seen: Option<&CausalContext>,
        timeout: Duration,
    ) -> Result<Option<(Vec<K2vItem>, CausalContext)>, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.changes.clone();
        loop {
            changes.mark_unchanged();
            let page = self
                .list(bucket_id, pk, range, usize::MAX, |_| true)
                .await?;
            let mut marker = seen.cloned().unwrap_or_default();
            for item in &page.items {
                for (n, t) in item.dvvs.context().seen {
                    let m = marker.seen.entry(n).or_default();
                    *m = (*m).max(t);
                }
            }
            let news: Vec<K2vItem> = match seen {
                None => page.items,
                Some(s) => page
                    .items
                    .into_iter()
                    .filter(|i| i.dvvs.has_news_for(s))
                    .collect(),
            };
            if seen.is_none() || !news.is_empty() {
                return Ok(Some((news, marker)));
            }
            if !self.wait_change(&mut changes, deadline).await {
                return Ok(None);
            }
        }
    }

    /// Waits for a local change (or a second, for changes stored only on other nodes); false
    /// at the deadline.
    async fn wait_change(
        &self,
        changes: &mut watch::Receiver<u64>,
        deadline: tokio::time::Instant,
    ) -> bool {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = changes.changed() => true,
            _ = tick => true,
            _ = tokio::time::sleep_until(deadline) => false,
        }
    }
}

/// A row of a fully replicated system table (keys, buckets) by name: the cached copy, else
/// this node's store, else a quorum read (a row not synced here yet).
async fn system_row<S, T>(
    cache: &RowCache<S::Entry>,
    local: &Table<S>,
    cluster: &Replicated<S, T>,
    name: &str,
) -> Result<Option<Arc<S::Entry>>, ApiError>
where
    S: shoal_table::Schema<PartitionKey = String, SortKey = String>,
    T: Transport,
{
    // Keys are built only on a miss: a hit is the common case, on every request.
    let cached = cache.get_or_load(name, || {
        local
            .get(&SYSTEM_PK.to_string(), &name.to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))
    })?;
    match cached {
        Some(row) => Ok(Some(row)),
        None => Ok(cluster
            .get(&SYSTEM_PK.to_string(), &name.to_string())
            .await?
            .map(Arc::new)),
    }
}
