//! Negentropy (range-based set reconciliation, the `negentropy` 0.5 crate) on the same
//! (key, value-hash) ids, followed by the item transfer it implies: the initiator pushes the
//! items it has and asks, by 32-byte id, for the items it needs; the responder sends those.
//! Frames are unlimited in size (the negentropy setting that uses the fewest bytes).

use std::collections::HashMap;
use std::time::Duration;

use negentropy::{Id, Negentropy, NegentropyStorageVector};
use shoal_sync::protocol::put_varint;
use shoal_sync::session::Replica;

pub struct NegTranscript {
    pub bytes_a_to_b: u64,
    pub bytes_b_to_a: u64,
    pub item_bytes: u64,
    pub round_trips: u64,
    pub identical_items: u64,
    pub time_a: Duration,
    pub time_b: Duration,
}

type IdMap = HashMap<[u8; 32], Vec<u8>>;

fn load(r: &dyn Replica) -> anyhow::Result<(NegentropyStorageVector, IdMap)> {
    let mut storage = NegentropyStorageVector::new();
    let mut by_id = HashMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = r.items_after(after.as_deref(), 4096)?;
        let full = page.len() == 4096;
        for (k, v) in page {
            let mut h = blake3::Hasher::new();
            h.update(&k);
            h.update(blake3::hash(&v).as_bytes());
            let id = *h.finalize().as_bytes();
            storage
                .insert(0, Id::from_byte_array(id))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            after = Some(k);
            by_id.insert(id, v);
        }
        if !full {
            break;
        }
    }
    storage.seal().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((storage, by_id))
}

fn items_stream(ids: &[Id], by_id: &IdMap, payload: &mut u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut out = Vec::new();
    let mut items = Vec::new();
    for id in ids {
        if let Some(v) = by_id.get(id.as_bytes()) {
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(v);
            *payload += v.len() as u64;
            items.push(v.clone());
        }
    }
    (out, items)
}

pub fn reconcile(
    a: &dyn Replica,
    b: &dyn Replica,
    clock: &dyn Fn() -> Duration,
) -> anyhow::Result<NegTranscript> {
    let mut t = NegTranscript {
        bytes_a_to_b: 0,
        bytes_b_to_a: 0,
        item_bytes: 0,
        round_trips: 0,
        identical_items: 0,
        time_a: Duration::ZERO,
        time_b: Duration::ZERO,
    };
    let c0 = clock();
    let (sa, ida) = load(a)?;
    let c1 = clock();
    let (sb, idb) = load(b)?;
    let c2 = clock();
    t.time_a += c1 - c0;
    t.time_b += c2 - c1;
    let err = |e: negentropy::Error| anyhow::anyhow!("negentropy: {e:?}");
    let mut na = Negentropy::owned(sa, 0).map_err(err)?;
    let mut nb = Negentropy::owned(sb, 0).map_err(err)?;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let c = clock();
    let mut msg = na.initiate().map_err(err)?;
    t.time_a += clock() - c;
    loop {
        t.bytes_a_to_b += msg.len() as u64;
        let c = clock();
        let resp = nb.reconcile(&msg).map_err(err)?;
        t.time_b += clock() - c;
        t.bytes_b_to_a += resp.len() as u64;
        t.round_trips += 1;
        let c = clock();
        let next = na
            .reconcile_with_ids(&resp, &mut have, &mut need)
            .map_err(err)?;
        t.time_a += clock() - c;
        match next {
            Some(m) => msg = m,
            None => break,
        }
    }
    // Transfer: A pushes what B lacks and asks for what it lacks.
    let c = clock();
    let mut push = Vec::new();
    put_varint(&mut push, need.len() as u64);
    for id in &need {
        push.extend_from_slice(id.as_bytes());
    }
    let (stream, items_for_b) = items_stream(&have, &ida, &mut t.item_bytes);
    push.extend_from_slice(&stream);
    t.time_a += clock() - c;
    if !have.is_empty() || !need.is_empty() {
        t.bytes_a_to_b += push.len() as u64;
        let c = clock();
        if !items_for_b.is_empty() {
            t.identical_items += b.apply(items_for_b)?.identical;
        }
        let (reply, items_for_a) = items_stream(&need, &idb, &mut t.item_bytes);
        t.time_b += clock() - c;
        if !need.is_empty() {
            t.bytes_b_to_a += reply.len() as u64;
            t.round_trips += 1;
            let c = clock();
            t.identical_items += a.apply(items_for_a)?.identical;
            t.time_a += clock() - c;
        } else {
            // A one-way push after the last reconcile round: half a round trip.
            t.round_trips += 1;
        }
    }
    Ok(t)
}
