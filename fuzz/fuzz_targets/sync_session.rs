//! The sync protocol's decoder and state machine: arbitrary messages fed to a responder over a
//! real (memory) replica must end in an error or a valid session, never a panic, and never
//! change the replica unless they decode as well-formed items.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_sync::protocol::Message;
use shoal_sync::session::Session;

fuzz_target!(|data: &[u8]| {
    // Split the input into messages at 0xFF bytes.
    let msgs: Vec<Message> = data
        .split(|b| *b == 0xff)
        .filter_map(|chunk| Message::decode(chunk).ok())
        .collect();
    let Some((first, rest)) = msgs.split_first() else {
        return;
    };
    let store = shoal_storage::Store::memory();
    let Ok(index) = shoal_sync::index::PartitionIndex::open(
        &store,
        "kv",
        shoal_sync::ids::IdKey::insecure_default(),
    ) else {
        return;
    };
    let table = shoal_table::Table::<shoal_cluster::kv::KvTable>::new(store).with_hook(index.clone());
    let replica = shoal_sync::replica::TableReplica::new(table, index, 0);
    let Ok(mut session) = Session::respond(&replica, first.clone()) else {
        return;
    };
    for m in rest {
        if session.receive(&replica, m.clone()).is_err() {
            return;
        }
        while let Ok(Some(_)) = session.poll_send(&replica) {}
    }
});
