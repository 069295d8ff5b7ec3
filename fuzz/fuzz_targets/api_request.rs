//! The K2V API's parsers of what a client sends: the Authorization header, dates, causality
//! tokens and JSON bodies. Errors for anything malformed, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = shoal_api::sigv4::Authorization::parse(&text);
    let _ = shoal_api::sigv4::parse_amz_date(&text);
    if let Ok(ctx) = shoal_api::causality::CausalContext::decode(&text) {
        assert_eq!(
            shoal_api::causality::CausalContext::decode(&ctx.encode()).ok(),
            Some(ctx)
        );
    }
    let _ = serde_json::from_slice::<serde_json::Value>(data);
});
