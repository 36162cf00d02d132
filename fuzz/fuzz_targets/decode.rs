//! Decode arbitrary bytes: frame check, header and AVP decoding, dictionary validation,
//! the error answer and the describer must never panic, and whatever decodes re-encodes to
//! a frame that decodes again.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate_codec::{check_frame, describe, Dictionary, Limits, Message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = check_frame(data, limits.max_message_len);
    let frame = Bytes::copy_from_slice(data);
    match Message::decode_with(&frame, &limits) {
        Ok(m) => {
            let dict = Dictionary::builtin();
            if let Err(e) = dict.validate(&m, &limits) {
                let _ = Message::error_answer(&m.header, None, &e, "h", "r").to_bytes();
            }
            let _ = describe::render(dict, &m);
            let again = Message::decode_with(&m.to_bytes(), &limits).expect("re-encoded frame decodes");
            assert_eq!(again.avps, m.avps);
        }
        Err(e) => {
            if let Some(h) = e.header {
                let _ = Message::error_answer(&h, None, &e.error, "h", "r").to_bytes();
            }
        }
    }
});
