//! Length-delimited frames from arbitrary bytes: never panics, never yields a frame over the
//! maximum, never buffers for an oversized length prefix.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

fuzz_target!(|data: &[u8]| {
    let mut codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(shoal_net::noise::MAX_FRAME)
        .new_codec();
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.len() <= shoal_net::noise::MAX_FRAME);
    }
});
