//! The event socket codec fed in small reads (the first byte picks the read size, 1 to 64
//! bytes, so frames split anywhere), every event through call assembly with lifecycle
//! moments, every moment planned into webhook requests, every finished call's CDR serialised.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchhook::esl::{EslCodec, Limits, Message};
use switchhook::hooks::WebhookSet;
use switchhook::session::{SessionTracker, Settings};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&read, data)) = data.split_first() else {
        return;
    };
    let read = usize::from(read % 64) + 1;
    let mut codec = EslCodec::new(Limits {
        max_header_block: 64 << 10,
        max_body: 1 << 20,
    });
    let mut tracker = SessionTracker::new(Arc::new(Settings::default())).with_moments();
    let hooks = WebhookSet::example();
    let mut buf = BytesMut::new();
    for piece in data.chunks(read) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Ok(Message::Event(ev)))) => {
                    for rec in tracker.on_event(&ev) {
                        let _ = serde_json::to_string(&rec.cdr);
                    }
                    for m in tracker.take_moments() {
                        let _ = hooks.plan(&m);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    for rec in tracker.flush("the input ended") {
        let _ = serde_json::to_string(&rec.cdr);
    }
});
