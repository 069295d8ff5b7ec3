//! The K2V operations' handlers: a single item's read with content negotiation, and the
//! batches (ReadBatch, InsertBatch, DeleteBatch), ReadIndex and PollRange with their JSON
//! shapes.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use shoal_net::Transport;

use super::query::{MAX_POLL_SECS, Query, check_start_in_prefix, parse_token};
use super::reply::{B64, CAUSALITY_HEADER, Ctx, Failure, json, values_json};
use crate::causality::DvvsValue;
use crate::counters::IndexQuery;
use crate::model::K2vItem;
use crate::service::{ApiError, DEFAULT_LIMIT, SortRange};

pub(super) async fn read_item<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    pk: &str,
    sk: &str,
    headers: &HeaderMap,
) -> Result<Response, Failure> {
    let item = ctx
        .api
        .read(bucket_id, pk, sk)
        .await
        .map_err(|e| ctx.fail(e))?
        .ok_or_else(|| ctx.fail(ApiError::NoSuchKey))?;
    item_response(ctx, &item, headers)
}

/// ReadItem's content negotiation, as the spec lays it out.
pub(super) fn item_response<T: Transport>(
    ctx: &Ctx<'_, T>,
    item: &K2vItem,
    headers: &HeaderMap,
) -> Result<Response, Failure> {
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    // `*/*` accepts both (curl's default): a single value comes back as its raw bytes, as
    // Garage answers.
    let any = accept.iter().any(|a| a == "*/*");
    let (json_ok, raw_ok) = if accept.is_empty() {
        (true, false)
    } else {
        (
            any || accept.iter().any(|a| a == "application/json"),
            any || accept.iter().any(|a| a == "application/octet-stream"),
        )
    };
    let token = HeaderValue::from_str(&item.dvvs.context().encode()).expect("base64 is ASCII");
    let values = item.dvvs.values();
    let mut response = if raw_ok && values.len() == 1 {
        match values[0] {
            DvvsValue::Value(b) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                b.clone(),
            )
                .into_response(),
            DvvsValue::Deleted => (
                StatusCode::NO_CONTENT,
                [(header::CONTENT_TYPE, "application/octet-stream")],
            )
                .into_response(),
        }
    } else if json_ok {
        json(StatusCode::OK, &values_json(item))
    } else if raw_ok {
        (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "application/octet-stream")],
        )
            .into_response()
    } else {
        return Err(ctx.custom(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "Accept must allow application/json or application/octet-stream".into(),
        ));
    };
    response.headers_mut().insert(CAUSALITY_HEADER, token);
    Ok(response)
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Search {
    partition_key: String,
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u64>,
    #[serde(default)]
    reverse: bool,
    #[serde(default)]
    single_item: bool,
    #[serde(default)]
    conflicts_only: bool,
    #[serde(default)]
    tombstones: bool,
}

#[derive(Serialize)]
pub(super) struct ItemJson {
    sk: String,
    ct: String,
    v: Vec<Option<String>>,
}

pub(super) fn item_json(item: &K2vItem) -> ItemJson {
    ItemJson {
        sk: item.sk.clone(),
        ct: item.dvvs.context().encode(),
        v: values_json(item),
    }
}

pub(super) fn parse_json<'a, V: Deserialize<'a>, T: Transport>(
    ctx: &Ctx<'_, T>,
    body: &'a [u8],
) -> Result<V, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| ctx.fail(ApiError::BadRequest(format!("malformed JSON body: {e}"))))
}

pub(super) async fn read_batch<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    let searches: Vec<Search> = parse_json(ctx, body)?;
    for s in &searches {
        if s.single_item
            && (s.prefix.is_some() || s.end.is_some() || s.limit.is_some() || s.reverse)
        {
            return Err(ctx.fail(ApiError::BadRequest(
                "prefix, end, limit and reverse must not be set with singleItem".into(),
            )));
        }
    }
    let mut out = Vec::with_capacity(searches.len());
    for s in searches {
        let (items, next_start) = run_search(ctx, bucket_id, &s).await?;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Result {
            #[serde(flatten)]
            search: Search,
            items: Vec<ItemJson>,
            more: bool,
            next_start: Option<String>,
        }
        out.push(Result {
            search: s,
            items: items.iter().map(item_json).collect(),
            more: next_start.is_some(),
            next_start,
        });
    }
    Ok(json(StatusCode::OK, &out))
}

pub(super) async fn run_search<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    s: &Search,
) -> Result<(Vec<K2vItem>, Option<String>), Failure> {
    if s.single_item {
        let sk = s.start.as_ref().ok_or_else(|| {
            ctx.fail(ApiError::BadRequest(
                "singleItem needs start (the sort key)".into(),
            ))
        })?;
        let item = ctx
            .api
            .read(bucket_id, &s.partition_key, sk)
            .await
            .map_err(|e| ctx.fail(e))?;
        let keep = item.filter(|i| {
            (s.tombstones || !i.dvvs.is_tombstone())
                && (!s.conflicts_only || i.dvvs.values().len() > 1)
        });
        return Ok((keep.into_iter().collect(), None));
    }
    check_start_in_prefix(s.prefix.as_deref(), s.start.as_deref())
        .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    let range = SortRange {
        prefix: s.prefix.clone(),
        start: s.start.clone(),
        end: s.end.clone(),
        reverse: s.reverse,
    };
    // No limit: every item in the range, as Garage returns them (read in pages of the
    // cluster's range reads).
    let limit = s
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let page = ctx
        .api
        .list(bucket_id, &s.partition_key, &range, limit, |i| {
            (s.tombstones || !i.dvvs.is_tombstone())
                && (!s.conflicts_only || i.dvvs.values().len() > 1)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok((page.items, page.next_start))
}

pub(super) async fn insert_batch<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    #[derive(Deserialize)]
    struct Insert {
        pk: String,
        sk: String,
        ct: Option<String>,
        v: Option<String>,
    }
    let inserts: Vec<Insert> = parse_json(ctx, body)?;
    let mut writes = Vec::with_capacity(inserts.len());
    for i in inserts {
        let context =
            i.ct.as_deref()
                .map(parse_token)
                .transpose()
                .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
        let value = match i.v {
            Some(b) => DvvsValue::Value(B64.decode(b).map_err(|_| {
                ctx.fail(ApiError::BadRequest(format!(
                    "value of {}/{} is not base64",
                    i.pk, i.sk
                )))
            })?),
            None => DvvsValue::Deleted,
        };
        writes.push((i.pk, i.sk, context, value));
    }
    ctx.api
        .insert_batch(bucket_id, writes)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn delete_batch<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    let searches: Vec<Search> = parse_json(ctx, body)?;
    for s in &searches {
        if s.single_item && (s.prefix.is_some() || s.end.is_some()) {
            return Err(ctx.fail(ApiError::BadRequest(
                "prefix and end must not be set with singleItem".into(),
            )));
        }
        check_start_in_prefix(s.prefix.as_deref(), s.start.as_deref())
            .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Deleted {
        partition_key: String,
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        single_item: bool,
        deleted_items: u64,
    }
    let mut out = Vec::new();
    for s in searches {
        let mut deleted = 0u64;
        loop {
            // Each pass deletes what it lists; listing again finds only what is left.
            let search = Search {
                partition_key: s.partition_key.clone(),
                prefix: s.prefix.clone(),
                start: s.start.clone(),
                end: s.end.clone(),
                limit: (!s.single_item).then_some(DEFAULT_LIMIT as u64),
                single_item: s.single_item,
                ..Search::default()
            };
            let (items, more) = run_search(ctx, bucket_id, &search).await?;
            for item in &items {
                ctx.api
                    .insert(
                        bucket_id,
                        &s.partition_key,
                        &item.sk,
                        Some(&item.dvvs.context()),
                        DvvsValue::Deleted,
                    )
                    .await
                    .map_err(|e| ctx.fail(e))?;
                deleted += 1;
            }
            if more.is_none() || items.is_empty() {
                break;
            }
        }
        out.push(Deleted {
            partition_key: s.partition_key,
            prefix: s.prefix,
            start: s.start,
            end: s.end,
            single_item: s.single_item,
            deleted_items: deleted,
        });
    }
    Ok(json(StatusCode::OK, &out))
}

pub(super) async fn read_index<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    query: &Query<'_>,
) -> Result<Response, Failure> {
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ctx.fail(ApiError::BadRequest(format!("limit {l}"))))?,
        ),
        None => None,
    };
    let reverse = match query.get("reverse") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ctx.fail(ApiError::BadRequest(format!("reverse {other}")))),
    };
    check_start_in_prefix(query.get("prefix"), query.get("start"))
        .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    let q = IndexQuery {
        bucket: bucket_id.to_string(),
        prefix: query.get("prefix").map(str::to_string),
        start: query.get("start").map(str::to_string),
        end: query.get("end").map(str::to_string),
        reverse,
        // No limit: every partition key, as Garage lists them.
        limit: limit.unwrap_or(usize::MAX),
    };
    let page = ctx
        .api
        .read_index(q.clone())
        .await
        .map_err(|e| ctx.fail(e))?;
    #[derive(Serialize)]
    struct Pk {
        pk: String,
        entries: i64,
        conflicts: i64,
        values: i64,
        bytes: i64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out {
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        limit: Option<usize>,
        reverse: bool,
        partition_keys: Vec<Pk>,
        more: bool,
        next_start: Option<String>,
    }
    Ok(json(
        StatusCode::OK,
        &Out {
            prefix: q.prefix,
            start: q.start,
            end: q.end,
            limit,
            reverse,
            partition_keys: page
                .keys
                .into_iter()
                .map(|(pk, c)| Pk {
                    pk,
                    entries: c.entries,
                    conflicts: c.conflicts,
                    values: c.values,
                    bytes: c.bytes,
                })
                .collect(),
            more: page.next_start.is_some(),
            next_start: page.next_start,
        },
    ))
}

pub(super) async fn poll_range<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    pk: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Poll {
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        seen_marker: Option<String>,
        timeout: Option<u64>,
    }
    let p: Poll = parse_json(ctx, body)?;
    let seen = p
        .seen_marker
        .as_deref()
        .map(parse_token)
        .transpose()
        .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    let range = SortRange {
        prefix: p.prefix,
        start: p.start,
        end: p.end,
        reverse: false,
    };
    let timeout = Duration::from_secs(p.timeout.unwrap_or(300).min(MAX_POLL_SECS));
    match ctx
        .api
        .poll_range(bucket_id, pk, &range, seen.as_ref(), timeout)
        .await
        .map_err(|e| ctx.fail(e))?
    {
        None => Ok(StatusCode::NOT_MODIFIED.into_response()),
        Some((items, marker)) => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Out {
                items: Vec<ItemJson>,
                seen_marker: String,
            }
            Ok(json(
                StatusCode::OK,
                &Out {
                    items: items.iter().map(item_json).collect(),
                    seen_marker: marker.encode(),
                },
            ))
        }
    }
}
