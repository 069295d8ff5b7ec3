//! The cases, in the specification's order: single items, content negotiation, causality,
//! batches, the index, polls, keys, authentication and errors.

use base64::Engine;
use serde_json::{Value, json};

use crate::client::{Reply, Req, Signing, enc};
use crate::{Case, Ctx};

/// Cases of the property test on keys, by default.
pub const KEY_CASES: u32 = 256;

const TOKEN: &str = "x-garage-causality-token";

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn expect(r: &Reply, status: u16, what: &str) -> Result<(), String> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!("{what}: expected {status}, got {}", r.describe()))
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn sort_key_query(sk: &str) -> String {
    format!("sort_key={}", enc(sk))
}

fn put(c: &Ctx, pk: &str, sk: &str, value: &[u8], token: Option<&str>) -> Result<Reply, String> {
    let mut req = Req::item("PUT", pk, &sort_key_query(sk)).body(value.to_vec());
    if let Some(t) = token {
        req = req.header(TOKEN, t);
    }
    c.target.send(&req)
}

fn put_ok(c: &Ctx, pk: &str, sk: &str, value: &[u8], token: Option<&str>) -> Result<(), String> {
    expect(&put(c, pk, sk, value, token)?, 204, "InsertItem")
}

fn get(c: &Ctx, pk: &str, sk: &str, accept: Option<&str>) -> Result<Reply, String> {
    let mut req = Req::item("GET", pk, &sort_key_query(sk));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    c.target.send(&req)
}

fn token_of(r: &Reply) -> Result<String, String> {
    r.header(TOKEN)
        .map(str::to_string)
        .ok_or_else(|| format!("no causality token in {}", r.describe()))
}

/// The values of a JSON ReadItem answer.
fn values(r: &Reply) -> Result<Vec<Option<String>>, String> {
    serde_json::from_slice(&r.body)
        .map_err(|e| format!("not a JSON list of values ({e}): {}", r.describe()))
}

fn post_json(c: &Ctx, query: &str, body: &Value) -> Result<Reply, String> {
    c.target
        .send(&Req::bucket("POST", query).body(serde_json::to_vec(body).expect("JSON")))
}

fn insert_batch(c: &Ctx, items: Value) -> Result<(), String> {
    expect(&post_json(c, "", &items)?, 204, "InsertBatch")
}

fn read_batch(c: &Ctx, searches: Value) -> Result<Value, String> {
    let r = post_json(c, "search", &searches)?;
    expect(&r, 200, "ReadBatch")?;
    Ok(r.json())
}

fn sks(result: &Value) -> Vec<String> {
    result["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["sk"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `n` items `k000…` under `pk`, value `v…`, in one InsertBatch.
fn fill(c: &Ctx, pk: &str, n: usize) -> Result<(), String> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"pk": pk, "sk": format!("k{i:04}"), "ct": null, "v": b64(format!("v{i}").as_bytes())}))
        .collect();
    for chunk in items.chunks(500) {
        insert_batch(c, Value::Array(chunk.to_vec()))?;
    }
    Ok(())
}

// ---- single items ------------------------------------------------------------------------

fn insert_then_read_as_json(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("json");
    put_ok(c, &pk, "a", b"hello", None)?;
    let r = get(c, &pk, "a", None)?;
    expect(&r, 200, "ReadItem")?;
    ensure(r.header("content-type") == Some("application/json"), || {
        format!(
            "without Accept, JSON is answered: {:?}",
            r.header("content-type")
        )
    })?;
    token_of(&r)?;
    ensure(values(&r)? == vec![Some(b64(b"hello"))], || r.describe())
}

fn read_as_octet_stream(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("raw");
    put_ok(c, &pk, "a", b"\x00\xffbinary", None)?;
    let r = get(c, &pk, "a", Some("application/octet-stream"))?;
    expect(&r, 200, "ReadItem")?;
    ensure(
        r.header("content-type") == Some("application/octet-stream"),
        || format!("content-type {:?}", r.header("content-type")),
    )?;
    token_of(&r)?;
    ensure(r.body == b"\x00\xffbinary", || r.describe())
}

fn accept_any_gets_raw_bytes(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("any");
    put_ok(c, &pk, "a", b"hello", None)?;
    let r = get(c, &pk, "a", Some("*/*"))?;
    expect(&r, 200, "ReadItem with Accept: */*")?;
    ensure(r.body == b"hello", || {
        format!("a single value as raw bytes: {}", r.describe())
    })
}

fn both_accepted_falls_back_to_json_for_siblings(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("both");
    put_ok(c, &pk, "a", b"one", None)?;
    let accept = "application/octet-stream, application/json";
    let r = get(c, &pk, "a", Some(accept))?;
    ensure(r.status == 200 && r.body == b"one", || r.describe())?;
    put_ok(c, &pk, "a", b"two", None)?;
    let r = get(c, &pk, "a", Some(accept))?;
    expect(&r, 200, "ReadItem of siblings")?;
    let mut v = values(&r)?;
    v.sort();
    ensure(v == vec![Some(b64(b"one")), Some(b64(b"two"))], || {
        r.describe()
    })
}

fn siblings_as_octet_stream_conflict(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("conflict");
    put_ok(c, &pk, "a", b"one", None)?;
    put_ok(c, &pk, "a", b"two", None)?;
    let r = get(c, &pk, "a", Some("application/octet-stream"))?;
    expect(&r, 409, "siblings as raw bytes")?;
    token_of(&r).map(|_| ())
}

fn unacceptable_accept_is_406(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("406");
    put_ok(c, &pk, "a", b"x", None)?;
    expect(
        &get(c, &pk, "a", Some("text/plain"))?,
        406,
        "Accept: text/plain",
    )
}

fn missing_item_is_404(c: &Ctx) -> Result<(), String> {
    let r = get(c, &c.pk("missing"), "nothing", None)?;
    expect(&r, 404, "ReadItem of nothing")?;
    ensure(r.code() == "NoSuchKey", || r.describe())
}

fn empty_value_round_trips(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("empty");
    put_ok(c, &pk, "a", b"", None)?;
    let r = get(c, &pk, "a", None)?;
    ensure(values(&r)? == vec![Some(String::new())], || r.describe())?;
    let r = get(c, &pk, "a", Some("application/octet-stream"))?;
    ensure(r.status == 200 && r.body.is_empty(), || r.describe())
}

// ---- causality ---------------------------------------------------------------------------

fn a_token_supersedes_what_it_saw(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("supersede");
    put_ok(c, &pk, "a", b"v1", None)?;
    let t = token_of(&get(c, &pk, "a", None)?)?;
    put_ok(c, &pk, "a", b"v2", Some(&t))?;
    let r = get(c, &pk, "a", None)?;
    ensure(values(&r)? == vec![Some(b64(b"v2"))], || r.describe())
}

fn writes_without_token_are_siblings(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("siblings");
    put_ok(c, &pk, "a", b"v1", None)?;
    put_ok(c, &pk, "a", b"v2", None)?;
    let r = get(c, &pk, "a", None)?;
    ensure(values(&r)?.len() == 2, || {
        format!("two siblings: {}", r.describe())
    })?;
    // A write that saw both replaces both.
    put_ok(c, &pk, "a", b"v3", Some(&token_of(&r)?))?;
    let r = get(c, &pk, "a", None)?;
    ensure(values(&r)? == vec![Some(b64(b"v3"))], || r.describe())
}

fn a_stale_token_supersedes_only_what_it_saw(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("stale");
    put_ok(c, &pk, "a", b"v1", None)?;
    let old = token_of(&get(c, &pk, "a", None)?)?;
    put_ok(c, &pk, "a", b"v2", None)?;
    put_ok(c, &pk, "a", b"v3", Some(&old))?;
    let mut v = values(&get(c, &pk, "a", None)?)?;
    v.sort();
    ensure(v == vec![Some(b64(b"v2")), Some(b64(b"v3"))], || {
        format!("{v:?}")
    })
}

fn delete_with_token_leaves_a_tombstone(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("delete");
    put_ok(c, &pk, "a", b"v1", None)?;
    let t = token_of(&get(c, &pk, "a", None)?)?;
    let r = c
        .target
        .send(&Req::item("DELETE", &pk, &sort_key_query("a")).header(TOKEN, &t))?;
    expect(&r, 204, "DeleteItem")?;
    let r = get(c, &pk, "a", None)?;
    expect(&r, 200, "ReadItem of a tombstone")?;
    ensure(values(&r)? == vec![None], || {
        format!("[null]: {}", r.describe())
    })?;
    let r = get(c, &pk, "a", Some("application/octet-stream"))?;
    expect(&r, 204, "a tombstone as raw bytes")?;
    token_of(&r).map(|_| ())
}

fn delete_without_token_is_concurrent(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("blind-delete");
    put_ok(c, &pk, "a", b"v1", None)?;
    let r = c
        .target
        .send(&Req::item("DELETE", &pk, &sort_key_query("a")))?;
    expect(&r, 204, "DeleteItem without a token")?;
    let mut v = values(&get(c, &pk, "a", None)?)?;
    v.sort();
    ensure(v == vec![None, Some(b64(b"v1"))], || {
        format!("the value and a concurrent tombstone: {v:?}")
    })
}

fn a_bad_token_is_400(c: &Ctx) -> Result<(), String> {
    let r = put(c, &c.pk("badtoken"), "a", b"x", Some("!!not base64!!"))?;
    expect(&r, 400, "InsertItem with a malformed token")
}

// ---- batches -----------------------------------------------------------------------------

fn insert_batch_then_read_batch(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("batch");
    insert_batch(
        c,
        json!([
            {"pk": pk, "sk": "a", "ct": null, "v": b64(b"1")},
            {"pk": pk, "sk": "b", "ct": null, "v": b64(b"2")},
            {"pk": pk, "sk": "c", "ct": null, "v": null},
        ]),
    )?;
    let out = read_batch(c, json!([{"partitionKey": pk}]))?;
    let r = &out[0];
    ensure(sks(r) == ["a", "b"], || {
        format!("tombstones hidden by default: {r}")
    })?;
    ensure(r["items"][0]["v"] == json!([b64(b"1")]), || r.to_string())?;
    ensure(r["items"][0]["ct"].is_string(), || r.to_string())?;
    ensure(
        r["more"] == json!(false) && r["nextStart"].is_null(),
        || r.to_string(),
    )?;
    for (field, value) in [
        ("partitionKey", json!(pk)),
        ("prefix", Value::Null),
        ("start", Value::Null),
        ("end", Value::Null),
        ("limit", Value::Null),
        ("reverse", json!(false)),
        ("singleItem", json!(false)),
        ("conflictsOnly", json!(false)),
        ("tombstones", json!(false)),
    ] {
        ensure(r[field] == value, || format!("{field} echoed: {r}"))?;
    }
    let out = read_batch(c, json!([{"partitionKey": pk, "tombstones": true}]))?;
    ensure(sks(&out[0]) == ["a", "b", "c"], || out.to_string())?;
    ensure(out[0]["items"][2]["v"] == json!([null]), || out.to_string())
}

fn read_batch_by_search_method(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("search-method");
    fill(c, &pk, 3)?;
    let body = serde_json::to_vec(&json!([{"partitionKey": pk}])).expect("JSON");
    let r = c.target.send(&Req::bucket("SEARCH", "").body(body))?;
    expect(&r, 200, "SEARCH /bucket")?;
    ensure(sks(&r.json()[0]) == ["k0000", "k0001", "k0002"], || {
        r.describe()
    })
}

fn read_batch_pages(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("pages");
    fill(c, &pk, 25)?;
    let first = read_batch(c, json!([{"partitionKey": pk, "limit": 10}]))?;
    ensure(
        sks(&first[0]).len() == 10
            && first[0]["more"] == json!(true)
            && first[0]["nextStart"] == json!("k0010"),
        || first.to_string(),
    )?;
    let second = read_batch(
        c,
        json!([{"partitionKey": pk, "start": "k0010", "limit": 20}]),
    )?;
    ensure(
        sks(&second[0]).len() == 15 && second[0]["more"] == json!(false),
        || second.to_string(),
    )
}

fn read_batch_without_limit_returns_everything(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("unbounded");
    fill(c, &pk, 1234)?;
    let out = read_batch(c, json!([{"partitionKey": pk}]))?;
    ensure(
        sks(&out[0]).len() == 1234 && out[0]["more"] == json!(false),
        || format!("{} items, more {}", sks(&out[0]).len(), out[0]["more"]),
    )
}

fn read_batch_ranges(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("ranges");
    fill(c, &pk, 30)?;
    let out = read_batch(
        c,
        json!([
            {"partitionKey": pk, "start": "k0005", "end": "k0008"},
            {"partitionKey": pk, "prefix": "k001"},
            {"partitionKey": pk, "reverse": true, "limit": 3},
            {"partitionKey": pk, "reverse": true, "start": "k0020", "end": "k0017"},
            {"partitionKey": pk, "prefix": "k002", "reverse": true, "limit": 2},
        ]),
    )?;
    let want: [&[&str]; 5] = [
        &["k0005", "k0006", "k0007"],
        &[
            "k0010", "k0011", "k0012", "k0013", "k0014", "k0015", "k0016", "k0017", "k0018",
            "k0019",
        ],
        &["k0029", "k0028", "k0027"],
        &["k0020", "k0019", "k0018"],
        &["k0029", "k0028"],
    ];
    for (i, w) in want.iter().enumerate() {
        ensure(sks(&out[i]) == *w, || format!("search {i}: {}", out[i]))?;
    }
    ensure(
        out[2]["more"] == json!(true) && out[2]["nextStart"] == json!("k0026"),
        || out[2].to_string(),
    )
}

fn read_batch_single_item(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("single");
    fill(c, &pk, 3)?;
    let out = read_batch(
        c,
        json!([
            {"partitionKey": pk, "start": "k0001", "singleItem": true},
            {"partitionKey": pk, "start": "nothing", "singleItem": true},
        ]),
    )?;
    ensure(sks(&out[0]) == ["k0001"], || out.to_string())?;
    ensure(sks(&out[1]).is_empty(), || out.to_string())
}

fn read_batch_inconsistent_searches_are_400(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("bad-search");
    for (what, search) in [
        ("no partitionKey", json!([{"prefix": "a"}])),
        (
            "singleItem with end",
            json!([{"partitionKey": pk, "start": "a", "end": "b", "singleItem": true}]),
        ),
        (
            "singleItem with limit",
            json!([{"partitionKey": pk, "start": "a", "limit": 3, "singleItem": true}]),
        ),
        (
            "singleItem without start",
            json!([{"partitionKey": pk, "singleItem": true}]),
        ),
        (
            "start outside prefix",
            json!([{"partitionKey": pk, "prefix": "a", "start": "b"}]),
        ),
        ("not JSON", Value::String("{".into())),
    ] {
        let body = match &search {
            Value::String(s) => s.clone().into_bytes(),
            v => serde_json::to_vec(v).expect("JSON"),
        };
        let r = c.target.send(&Req::bucket("POST", "search").body(body))?;
        expect(&r, 400, what)?;
    }
    Ok(())
}

fn read_batch_conflicts_only(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("conflicts");
    put_ok(c, &pk, "calm", b"1", None)?;
    put_ok(c, &pk, "torn", b"1", None)?;
    put_ok(c, &pk, "torn", b"2", None)?;
    let out = read_batch(c, json!([{"partitionKey": pk, "conflictsOnly": true}]))?;
    ensure(sks(&out[0]) == ["torn"], || out.to_string())
}

fn delete_batch_ranges_and_single_items(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("delete-batch");
    fill(c, &pk, 12)?;
    let r = post_json(
        c,
        "delete",
        &json!([
            {"partitionKey": pk, "start": "k0000", "end": "k0005"},
            {"partitionKey": pk, "start": "k0010", "singleItem": true},
        ]),
    )?;
    expect(&r, 200, "DeleteBatch")?;
    let out = r.json();
    ensure(
        out[0]["deletedItems"] == json!(5) && out[1]["deletedItems"] == json!(1),
        || out.to_string(),
    )?;
    let left = read_batch(c, json!([{"partitionKey": pk}]))?;
    ensure(
        sks(&left[0]) == ["k0005", "k0006", "k0007", "k0008", "k0009", "k0011"],
        || left.to_string(),
    )
}

fn a_delete_through_another_node_hides_the_item_at_once(c: &Ctx) -> Result<(), String> {
    if c.target.others.len() < 2 {
        return Err("needs the addresses of two other nodes".into());
    }
    let (b, third) = (c.target.via(0), c.target.via(1));
    let pk = c.pk("delete-elsewhere");
    fill(c, &pk, 5)?;
    let r = b.send(&Req::item("GET", &pk, &sort_key_query("k0002")))?;
    expect(&r, 200, "ReadItem through a second node")?;
    let t = token_of(&r)?;
    let r = b.send(&Req::item("DELETE", &pk, &sort_key_query("k0002")).header(TOKEN, &t))?;
    expect(&r, 204, "DeleteItem through a second node")?;
    // Acknowledged means visible: a range read through a third node, right after, agrees.
    let body = serde_json::to_vec(&json!([{"partitionKey": pk}])).expect("JSON");
    let r = third.send(&Req::bucket("POST", "search").body(body))?;
    expect(&r, 200, "ReadBatch through a third node")?;
    let out = r.json();
    ensure(sks(&out[0]) == ["k0000", "k0001", "k0003", "k0004"], || {
        format!("the deleted item must not be listed: {out}")
    })
}

// ---- the index -------------------------------------------------------------------------------

fn read_index_counts_and_pages(c: &Ctx) -> Result<(), String> {
    let base = c.pk("index");
    for (i, n) in [3usize, 1, 2].iter().enumerate() {
        fill(c, &format!("{base}/{i}"), *n)?;
    }
    let prefix = format!("{base}/");
    let query = format!("prefix={}", enc(&prefix));
    // The counts are kept asynchronously: wait for them, briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        let r = c.target.send(&Req::bucket("GET", &query))?;
        expect(&r, 200, "ReadIndex")?;
        let out = r.json();
        let entries: Vec<i64> = out["partitionKeys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["entries"].as_i64().unwrap_or(-1))
                    .collect()
            })
            .unwrap_or_default();
        if entries == [3, 1, 2] {
            break out;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("entries 3, 1, 2 expected: {out}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    ensure(
        out["partitionKeys"][0]["pk"] == json!(format!("{base}/0")),
        || out.to_string(),
    )?;
    ensure(
        out["prefix"] == json!(prefix) && out["more"] == json!(false),
        || out.to_string(),
    )?;
    let r = c
        .target
        .send(&Req::bucket("GET", &format!("{query}&limit=2")))?;
    let page = r.json();
    ensure(
        page["partitionKeys"].as_array().map(Vec::len) == Some(2)
            && page["more"] == json!(true)
            && page["nextStart"] == json!(format!("{base}/2")),
        || page.to_string(),
    )?;
    let r = c.target.send(&Req::bucket(
        "GET",
        &format!("{query}&reverse=true&limit=1"),
    ))?;
    ensure(
        r.json()["partitionKeys"][0]["pk"] == json!(format!("{base}/2")),
        || r.describe(),
    )
}

fn read_index_start_outside_prefix_is_400(c: &Ctx) -> Result<(), String> {
    let r = c.target.send(&Req::bucket("GET", "prefix=a&start=b"))?;
    expect(&r, 400, "ReadIndex with start outside prefix")
}

// ---- polls ---------------------------------------------------------------------------------

fn poll_item_times_out_then_sees_a_write(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("poll");
    put_ok(c, &pk, "a", b"v1", None)?;
    let t = token_of(&get(c, &pk, "a", None)?)?;
    let query = format!(
        "{}&causality_token={}&timeout=1",
        sort_key_query("a"),
        enc(&t)
    );
    let r = c.target.send(&Req::item("GET", &pk, &query))?;
    expect(&r, 304, "PollItem with nothing new")?;
    put_ok(c, &pk, "a", b"v2", Some(&t))?;
    let r = c.target.send(&Req::item("GET", &pk, &query))?;
    expect(&r, 200, "PollItem after a write")?;
    ensure(values(&r)? == vec![Some(b64(b"v2"))], || r.describe())
}

fn poll_range_returns_news_then_waits(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("poll-range");
    fill(c, &pk, 2)?;
    let poll = |body: Value, method: &str| -> Result<Reply, String> {
        let body = serde_json::to_vec(&body).expect("JSON");
        let req = match method {
            "SEARCH" => Req::item("SEARCH", &pk, "poll_range").body(body),
            _ => Req::item("POST", &pk, "poll_range").body(body),
        };
        c.target.send(&req)
    };
    let r = poll(json!({"timeout": 1}), "POST")?;
    expect(&r, 200, "PollRange without a marker")?;
    let first = r.json();
    ensure(sks(&first).len() == 2, || first.to_string())?;
    let marker = first["seenMarker"]
        .as_str()
        .ok_or_else(|| format!("no seenMarker: {first}"))?
        .to_string();
    let r = poll(json!({"seenMarker": marker, "timeout": 1}), "SEARCH")?;
    expect(&r, 304, "PollRange (SEARCH) with nothing new")?;
    put_ok(c, &pk, "k9999", b"new", None)?;
    let r = poll(json!({"seenMarker": marker, "timeout": 5}), "POST")?;
    expect(&r, 200, "PollRange after a write")?;
    ensure(sks(&r.json()) == ["k9999"], || r.describe())
}

// ---- keys ------------------------------------------------------------------------------------

/// Keys that need escaping: a slash, spaces, `+ & = ? # %`, non-ASCII.
pub const HARD_KEYS: &[&str] = &[
    "user/42",
    "profile v1",
    "a+b",
    "a&b=c?d#e%f",
    "%2F",
    "é",
    "日本",
    "emoji 🦀",
    "trailing/",
    "~tilde-._",
];

fn hard_keys_round_trip(c: &Ctx) -> Result<(), String> {
    for (i, key) in HARD_KEYS.iter().enumerate() {
        let pk = format!("{}-{key}", c.pk("hard"));
        let value = format!("value {i}");
        put_ok(c, &pk, key, value.as_bytes(), None).map_err(|e| format!("{key:?}: {e}"))?;
        let r = get(c, &pk, key, Some("application/octet-stream"))?;
        ensure(r.status == 200 && r.body == value.as_bytes(), || {
            format!("{key:?}: {}", r.describe())
        })?;
        let out = read_batch(
            c,
            json!([{"partitionKey": pk, "start": key, "singleItem": true}]),
        )?;
        ensure(sks(&out[0]) == [*key], || format!("{key:?}: {out}"))?;
    }
    Ok(())
}

fn any_utf8_keys_round_trip(c: &Ctx) -> Result<(), String> {
    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: c.key_cases,
        failure_persistence: None,
        ..Config::default()
    });
    // Any Unicode scalar values but NUL (which no HTTP client can put in a header-safe way
    // and K2V's keys, as C-compatible strings, exclude), 1 to 12 of them.
    let key = proptest::collection::vec(proptest::char::any(), 1..12)
        .prop_map(|cs| cs.into_iter().filter(|c| *c != '\0').collect::<String>())
        .prop_filter("non-empty", |s| !s.is_empty());
    let n = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&(key.clone(), key), |(pk, sk)| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The case's number in the key: shrinking replays similar keys, which must not
            // meet the items of earlier cases.
            let pk = format!("{}-{i}-{pk}", c.pk("utf8"));
            let value = format!("v{i}");
            let fail = |e: String| TestCaseError::fail(format!("pk {pk:?} sk {sk:?}: {e}"));
            put_ok(c, &pk, &sk, value.as_bytes(), None).map_err(fail)?;
            let r = get(c, &pk, &sk, Some("application/octet-stream")).map_err(fail)?;
            if r.status != 200 || r.body != value.as_bytes() {
                return Err(fail(r.describe()));
            }
            let out = read_batch(c, json!([{"partitionKey": pk}])).map_err(fail)?;
            if sks(&out[0]) != [sk.clone()] {
                return Err(fail(out.to_string()));
            }
            Ok(())
        })
        .map_err(|e| format!("{e}"))?;
    ensure(n.into_inner() >= c.key_cases, || "too few cases ran".into())
}

// ---- authentication and errors -----------------------------------------------------------

fn unsigned_and_forged_requests_are_refused(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("auth");
    let req = Req::item("PUT", &pk, &sort_key_query("a")).body(b"x".to_vec());
    expect(&c.target.send_as(&req, Signing::None)?, 403, "unsigned")?;
    expect(
        &c.target.send_as(&req, Signing::WrongSecret)?,
        403,
        "wrong secret",
    )?;
    expect(
        &c.target.send_as(&req, Signing::WrongRegion)?,
        400,
        "another region",
    )?;
    expect(
        &get(c, &pk, "a", None)?,
        404,
        "nothing written by refused requests",
    )
}

fn error_bodies_are_json_with_a_code(c: &Ctx) -> Result<(), String> {
    let r = get(c, &c.pk("err"), "none", None)?;
    let body = r.json();
    ensure(
        body["code"].is_string() && body["message"].is_string(),
        || format!("a JSON error body with code and message: {}", r.describe()),
    )
}

fn malformed_requests_are_400(c: &Ctx) -> Result<(), String> {
    let pk = c.pk("malformed");
    let t = c.target;
    let cases = [
        ("InsertItem without sort_key", Req::item("PUT", &pk, "")),
        ("ReadItem without sort_key", Req::item("GET", &pk, "")),
        (
            "InsertItem without a partition key",
            Req::bucket("PUT", "sort_key=a").body(b"x".to_vec()),
        ),
        (
            "a repeated query parameter",
            Req::item("GET", &pk, "sort_key=a&sort_key=b"),
        ),
        (
            "InsertBatch of a non-base64 value",
            Req::bucket("POST", "").body(
                serde_json::to_vec(&json!([{"pk": pk, "sk": "a", "ct": null, "v": "!!"}]))
                    .expect("JSON"),
            ),
        ),
    ];
    for (what, req) in cases {
        expect(&t.send(&req)?, 400, what)?;
    }
    Ok(())
}

fn unknown_bucket_is_404(c: &Ctx) -> Result<(), String> {
    let mut other = c.target.clone();
    other.bucket = format!("{}-no-such-bucket", c.run);
    let r = other.send(&Req::item("GET", "pk", "sort_key=a"))?;
    ensure(r.status == 404 || r.status == 403, || {
        format!("an unknown bucket: {}", r.describe())
    })
}

/// Every case, in order.
pub fn all() -> Vec<Case> {
    macro_rules! case {
        ($f:ident) => {
            Case {
                name: stringify!($f),
                note: None,
                check: $f,
            }
        };
        ($f:ident, $note:expr) => {
            Case {
                name: stringify!($f),
                note: Some($note),
                check: $f,
            }
        };
    }
    vec![
        case!(insert_then_read_as_json),
        case!(read_as_octet_stream),
        case!(accept_any_gets_raw_bytes),
        case!(both_accepted_falls_back_to_json_for_siblings),
        case!(siblings_as_octet_stream_conflict),
        case!(unacceptable_accept_is_406),
        case!(missing_item_is_404),
        case!(empty_value_round_trips),
        case!(a_token_supersedes_what_it_saw),
        case!(writes_without_token_are_siblings),
        case!(a_stale_token_supersedes_only_what_it_saw),
        case!(delete_with_token_leaves_a_tombstone),
        case!(delete_without_token_is_concurrent),
        case!(a_bad_token_is_400),
        case!(insert_batch_then_read_batch),
        case!(read_batch_by_search_method),
        case!(read_batch_pages),
        case!(read_batch_without_limit_returns_everything),
        case!(read_batch_ranges),
        case!(read_batch_single_item),
        case!(read_batch_inconsistent_searches_are_400),
        case!(read_batch_conflicts_only),
        case!(
            delete_batch_ranges_and_single_items,
            "Garage 2.5 has been seen, in some runs, to list items right after a DeleteBatch \
             that reported them deleted; an acknowledged delete must hide its items from the \
             next read"
        ),
        case!(
            a_delete_through_another_node_hides_the_item_at_once,
            "Garage has been seen listing an item deleted through another node in a range read \
             right after the delete was acknowledged; a quorum read must see every write \
             acknowledged before it began, deletes included"
        ),
        case!(read_index_counts_and_pages),
        case!(read_index_start_outside_prefix_is_400),
        case!(poll_item_times_out_then_sees_a_write),
        case!(poll_range_returns_news_then_waits),
        case!(hard_keys_round_trip),
        case!(any_utf8_keys_round_trip),
        case!(unsigned_and_forged_requests_are_refused),
        case!(error_bodies_are_json_with_a_code),
        case!(malformed_requests_are_400),
        case!(unknown_bucket_is_404),
    ]
}
