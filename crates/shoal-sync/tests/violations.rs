//! Protocol violations and bad input give clear errors and change nothing.

use shoal_sync::protocol::{Digest, Message, PROTOCOL_VERSION, WireError, put_varint};
use shoal_sync::session::{Session, SyncError};
use shoal_table::codec::Versioned;

mod common;
use common::{Node, item, pk_in};

const P: u8 = 7;

fn node_with(n: u32) -> Node {
    let node = Node::memory();
    let pk = pk_in(P, 0);
    for i in 0..n {
        node.table
            .insert(&item(&pk, &i.to_be_bytes(), 1, 1, b"v"))
            .unwrap();
    }
    node
}

#[test]
fn a_responder_needs_hello_first() {
    let b = node_with(10);
    let before = b.dump();
    for first in [
        Message::InSync,
        Message::WantAll,
        Message::More {
            upto: 5,
            summary: None,
        },
    ] {
        let err = Session::respond(&b.replica(P), first).unwrap_err();
        assert!(
            matches!(
                err,
                SyncError::Protocol {
                    state: "awaiting hello",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert!(b.dump() == before);
}

#[test]
fn unknown_version_is_refused() {
    let mut bytes = Message::Hello {
        version: PROTOCOL_VERSION,
        digest: Digest {
            xor: 1,
            check: 2,
            count: 3,
        },
        mini: [0; 16],
    }
    .encode();
    bytes[1] = 9;
    assert_eq!(Message::decode(&bytes), Err(WireError::UnknownVersion(9)));
    let b = node_with(3);
    let err = Session::respond(
        &b.replica(P),
        Message::Hello {
            version: 9,
            digest: Digest {
                xor: 1,
                check: 2,
                count: 3,
            },
            mini: [0; 16],
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, SyncError::Wire(WireError::UnknownVersion(9))),
        "{err}"
    );
}

#[test]
fn unexpected_messages_mid_session_are_errors() {
    let (a, b) = (node_with(20), node_with(5));
    let (ra, rb) = (a.replica(P), b.replica(P));
    let mut ia = Session::initiate(&ra).unwrap();
    let hello = ia.poll_send(&ra).unwrap().unwrap();
    let mut sb = Session::respond(&rb, hello).unwrap();
    let before = (a.dump(), b.dump());
    // The initiator never receives a hello; the responder never receives in-sync.
    let err = ia
        .receive(
            &ra,
            Message::Hello {
                version: PROTOCOL_VERSION,
                digest: Digest {
                    xor: 0,
                    check: 0,
                    count: 0,
                },
                mini: [0; 16],
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, SyncError::Protocol { got: "hello", .. }),
        "{err}"
    );
    let err = sb.receive(&rb, Message::InSync).unwrap_err();
    assert!(
        matches!(err, SyncError::Protocol { got: "in-sync", .. }),
        "{err}"
    );
    // Cells out of order.
    let err = ia
        .receive(
            &ra,
            Message::Cells {
                from: 5,
                cells: vec![0; 12],
                last: true,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, SyncError::Protocol { got: "cells", .. }),
        "{err}"
    );
    assert!((a.dump(), b.dump()) == before, "violations change nothing");
}

/// An empty responder, told the initiator holds 10 items, asks for everything.
fn responder_asking_for_everything(re: &dyn shoal_sync::session::Replica) -> Session {
    let mut s = Session::respond(
        re,
        Message::Hello {
            version: PROTOCOL_VERSION,
            digest: Digest {
                xor: 5,
                check: 6,
                count: 10,
            },
            mini: [0; 16],
        },
    )
    .unwrap();
    assert_eq!(s.poll_send(re).unwrap(), Some(Message::WantAll));
    s
}

#[test]
fn items_of_another_partition_or_malformed_streams_are_refused_whole() {
    let a = node_with(10);
    let ra = a.replica(P);
    let before = a.dump();
    // The responder is empty, so it asks for everything; then a hostile "initiator" sends an
    // item of another partition next to a good one.
    let empty = Node::memory();
    let re = empty.replica(P);
    let mut s = responder_asking_for_everything(&re);
    let good = item(&pk_in(P, 0), b"good", 1, 1, b"v").encode().unwrap();
    let foreign = item(&pk_in(P + 1, 0), b"bad", 1, 1, b"v").encode().unwrap();
    let mut data = Vec::new();
    for it in [&good, &foreign] {
        put_varint(&mut data, it.len() as u64);
        data.extend_from_slice(it);
    }
    let err = s
        .receive(&re, Message::Items { data, last: true })
        .unwrap_err();
    assert!(matches!(err, SyncError::BadItem(_)), "{err}");
    assert!(
        empty.dump().is_empty(),
        "the good item of a bad batch is not applied either"
    );

    // A stream that ends inside an item.
    let mut s = responder_asking_for_everything(&re);
    let mut data = Vec::new();
    put_varint(&mut data, 1000);
    data.extend_from_slice(&[1, 2, 3]);
    let err = s
        .receive(&re, Message::Items { data, last: true })
        .unwrap_err();
    assert!(matches!(err, SyncError::BadItem(_)), "{err}");
    // An absurd length prefix is refused before anything is buffered for it (a session that
    // failed is dropped: a fresh one).
    let mut s = responder_asking_for_everything(&re);
    let mut data = Vec::new();
    put_varint(&mut data, u64::MAX >> 1);
    let err = s
        .receive(&re, Message::Items { data, last: false })
        .unwrap_err();
    assert!(matches!(err, SyncError::BadItem(_)), "{err}");
    assert!(empty.dump().is_empty());
    assert!(a.dump() == before);
    let _ = ra;
}
