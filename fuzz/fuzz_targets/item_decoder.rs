//! Stored items as the table decodes them (version marker, migrations, named fields): an error
//! for anything malformed, never a panic; what decodes re-encodes and decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_table::codec::Versioned;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = shoal_cluster::kv::KvItem::decode(data) {
        let again = item.encode().expect("a decoded item encodes");
        assert_eq!(shoal_cluster::kv::KvItem::decode(&again).ok(), Some(item));
    }
    let _ = shoal_api::model::K2vItem::decode(data);
});
