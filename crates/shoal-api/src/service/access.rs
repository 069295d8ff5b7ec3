//! Access keys and buckets: their administration (`shoal key …`, `shoal bucket …`, the
//! operator's endpoints), and the authorization of a request's key on a bucket.

use super::*;

/// A key as `shoal key` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Access key id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Secret.
    pub secret: String,
}

/// A bucket as `shoal bucket` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketInfo {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// Key id → (read, write).
    pub grants: Vec<(String, bool, bool)>,
}

impl<T: Transport> Api<T> {
    /// The secret of an access key (local copy first: keys are on every node).
    pub async fn key_secret(&self, id: &str) -> Result<Option<String>, ApiError> {
        let i = &self.inner;
        // Every request asks: the cached copy is read in place, only the secret is copied.
        Ok(system_row(&i.key_cache, &i.keys_local, &i.keys, id)
            .await?
            .filter(|k| !k.deleted.is_set())
            .map(|k| k.secret.get().clone()))
    }

    /// A bucket by name (local copy first).
    pub async fn bucket(&self, name: &str) -> Result<Option<Bucket>, ApiError> {
        Ok(self.bucket_shared(name).await?.map(Arc::unwrap_or_clone))
    }

    /// [`Api::bucket`] without copying the cached bucket.
    async fn bucket_shared(&self, name: &str) -> Result<Option<Arc<Bucket>>, ApiError> {
        let i = &self.inner;
        Ok(
            system_row(&i.bucket_cache, &i.buckets_local, &i.buckets, name)
                .await?
                .filter(|b| !b.deleted.is_set()),
        )
    }

    /// Creates an access key.
    pub async fn create_key(&self, name: &str) -> Result<KeyInfo, ApiError> {
        let mut raw = [0u8; 44];
        rand::rng().fill_bytes(&mut raw);
        let id = format!("GK{}", hex::encode(&raw[..12]));
        let secret = hex::encode(&raw[12..]);
        let stamp = stamp_now(self.inner.node.id());
        let key = AccessKey {
            pk: SYSTEM_PK.into(),
            id: id.clone(),
            name: Lww::new(stamp, name.to_string()),
            secret: Lww::new(stamp, secret.clone()),
            deleted: Flag::unset(),
        };
        self.inner.keys.insert(&key).await?;
        Ok(KeyInfo {
            id,
            name: name.into(),
            secret,
        })
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) -> Result<BucketInfo, ApiError> {
        validate_bucket_name(name)?;
        if self.bucket(name).await?.is_some() {
            return Err(ApiError::AlreadyExists(format!("bucket {name}")));
        }
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let bucket = Bucket {
            pk: SYSTEM_PK.into(),
            name: name.into(),
            id: Lww::new(stamp_now(self.inner.node.id()), id.clone()),
            grants: LwwMap::new(),
            deleted: Flag::unset(),
        };
        self.inner.buckets.insert(&bucket).await?;
        Ok(BucketInfo {
            name: name.into(),
            id,
            grants: Vec::new(),
        })
    }

    /// Grants (or, with both false, revokes) a key's access to a bucket.
    pub async fn allow(
        &self,
        bucket: &str,
        key_id: &str,
        read: bool,
        write: bool,
    ) -> Result<BucketInfo, ApiError> {
        let Some(mut b) = self.bucket(bucket).await? else {
            return Err(ApiError::NoSuchBucket(bucket.into()));
        };
        if self.key_secret(key_id).await?.is_none() {
            return Err(ApiError::BadRequest(format!("no access key {key_id}")));
        }
        b.grants.set(
            key_id.to_string(),
            stamp_now(self.inner.node.id()),
            Permission { read, write },
        );
        self.inner.buckets.insert(&b).await?;
        Ok(bucket_info(&b))
    }

    /// Every key (secrets included: the admin endpoint is the operator's).
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, ApiError> {
        let rows = self
            .inner
            .keys_local
            .scan_raw(&KeyRange::all(), usize::MAX)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut out = Vec::new();
        for (_, v) in rows {
            let k = <AccessKey as shoal_table::codec::Versioned>::decode(&v)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if !k.deleted.is_set() {
                out.push(KeyInfo {
                    id: k.id.clone(),
                    name: k.name.get().clone(),
                    secret: k.secret.get().clone(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every bucket.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>, ApiError> {
        let rows = self
            .inner
            .buckets_local
            .scan_raw(&KeyRange::all(), usize::MAX)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut out = Vec::new();
        for (_, v) in rows {
            let b = <Bucket as shoal_table::codec::Versioned>::decode(&v)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if !b.deleted.is_set() {
                out.push(bucket_info(&b));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What this node's own store holds under one partition key of a bucket, read locally
    /// (no quorum): for checks of convergence and durability, which must see each replica.
    pub async fn local_items(&self, bucket: &str, pk: &str) -> Result<LocalItems, ApiError> {
        let b = self
            .bucket(bucket)
            .await?
            .ok_or_else(|| ApiError::NoSuchBucket(bucket.to_string()))?;
        let partition = K2vPartition {
            bucket: b.id.get().clone(),
            pk: pk.to_string(),
        };
        let ring_partition =
            shoal_table::PartitionHash::of(&shoal_table::KeyPart::key_bytes(&partition)).0[0];
        let table = Table::<K2vTable>::new(self.inner.store.clone());
        let items = tokio::task::spawn_blocking(move || {
            table.range(&partition, &shoal_table::RangeQuery::default())
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(LocalItems {
            partition: ring_partition,
            items: items
                .into_iter()
                .map(|i| LocalItem {
                    sk: i.sk.clone(),
                    values: i
                        .dvvs
                        .values()
                        .into_iter()
                        .map(|v| match v {
                            DvvsValue::Value(b) => Some(serde_bytes::ByteBuf::from(b.clone())),
                            DvvsValue::Deleted => None,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    pub(super) fn add_admin_endpoints(&self) -> Result<(), ApiError> {
        type Handler<T> = fn(
            Api<T>,
            Vec<u8>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Vec<u8>, RemoteError>> + Send>,
        >;
        let endpoints: [(ApiEndpoint, Handler<T>); 6] = [
            (ApiEndpoint::KeyCreate, |api, body| {
                Box::pin(async move {
                    let name: String = decode(&body)?;
                    encode(&api.create_key(&name).await)
                })
            }),
            (ApiEndpoint::KeyList, |api, _| {
                Box::pin(async move { encode(&api.list_keys()) })
            }),
            (ApiEndpoint::BucketCreate, |api, body| {
                Box::pin(async move {
                    let name: String = decode(&body)?;
                    encode(&api.create_bucket(&name).await)
                })
            }),
            (ApiEndpoint::BucketAllow, |api, body| {
                Box::pin(async move {
                    let (bucket, key, read, write): (String, String, bool, bool) = decode(&body)?;
                    encode(&api.allow(&bucket, &key, read, write).await)
                })
            }),
            (ApiEndpoint::BucketList, |api, _| {
                Box::pin(async move { encode(&api.list_buckets()) })
            }),
            (ApiEndpoint::LocalItems, |api, body| {
                Box::pin(async move {
                    let (bucket, pk): (String, String) = decode(&body)?;
                    encode(&api.local_items(&bucket, &pk).await)
                })
            }),
        ];
        for (name, handler) in endpoints {
            let api = self.clone();
            self.inner
                .node
                .add_endpoint(
                    name.name(),
                    Arc::new(move |_from, body| handler(api.clone(), body)),
                )
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        Ok(())
    }
}

/// The items one node stores locally under a partition key (`api.local.items`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalItems {
    /// The ring partition (0–255) that holds the partition key.
    pub partition: u8,
    /// Items in sort-key order.
    pub items: Vec<LocalItem>,
}

/// One locally stored item: its sort key and its concurrent values (`None`: a deletion).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalItem {
    /// Sort key.
    pub sk: String,
    /// Concurrent values.
    pub values: Vec<Option<serde_bytes::ByteBuf>>,
}

pub(super) fn decode<'a, V: Deserialize<'a>>(b: &'a [u8]) -> Result<V, RemoteError> {
    rmp_serde::from_slice(b).map_err(|e| RemoteError::malformed(format!("malformed request: {e}")))
}

fn encode<V: Serialize>(r: &Result<V, ApiError>) -> Result<Vec<u8>, RemoteError> {
    match r {
        Ok(v) => Ok(rmp_serde::to_vec_named(v).expect("replies encode")),
        Err(e) => Err(RemoteError::new(e.code(), e.to_string())),
    }
}

fn bucket_info(b: &Bucket) -> BucketInfo {
    BucketInfo {
        name: b.name.clone(),
        id: b.id.get().clone(),
        grants: b
            .grants
            .iter()
            .map(|(k, p)| (k.clone(), p.read, p.write))
            .collect(),
    }
}

/// Bucket names as S3 allows them: 3–63 characters, lowercase letters, digits, `-` and `.`.
pub fn validate_bucket_name(name: &str) -> Result<(), ApiError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid bucket name {name:?}: 3 to 63 of a-z, 0-9, '-', '.'"
        )))
    }
}

impl<T: Transport> Api<T> {
    /// The bucket's id if `key_id` may read (or write) it.
    pub async fn authorize(
        &self,
        bucket: &str,
        key_id: &str,
        write: bool,
    ) -> Result<String, ApiError> {
        let Some(b) = self.bucket_shared(bucket).await? else {
            return Err(ApiError::NoSuchBucket(bucket.into()));
        };
        let allowed = b
            .grants
            .get(&key_id.to_string())
            .is_some_and(|p| if write { p.write } else { p.read });
        if !allowed {
            return Err(ApiError::AccessDenied(format!(
                "key {key_id} may not {} bucket {bucket}",
                if write { "write to" } else { "read" }
            )));
        }
        Ok(b.id.get().clone())
    }

    /// The store (for the HTTP layer's metrics and tests).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}
