//! The codec gives the same items however the bytes are cut into reads.

mod common;

use bytes::BytesMut;
use common::{fixture, SCENARIOS};
use proptest::prelude::*;
use switchhook::esl::{Decoded, EslCodec, Limits, Message};
use tokio_util::codec::Decoder;

/// A comparable summary of a decoded item.
fn fingerprint(d: &Decoded) -> String {
    match d {
        Ok(Message::Event(e)) => format!(
            "event {:?} {:?} {} {:?}",
            e.name(),
            e.sequence(),
            e.headers().len(),
            e.body()
        ),
        Ok(Message::ChannelData(e)) => {
            format!("channel_data {:?} {}", e.unique_id(), e.headers().len())
        }
        Ok(Message::Reply(r)) => format!("reply {}", r.text()),
        Ok(Message::ApiResponse(a)) => format!("api {:?}", a.body()),
        Ok(Message::Disconnect(d)) => format!("disconnect {:?} {:?}", d.disposition, d.text),
        Ok(m) => m.kind().to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// Decodes `data` fed in reads of the given sizes (cycled).
fn decode_chunked(data: &[u8], sizes: &[usize]) -> Vec<String> {
    let mut codec = EslCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].max(1).min(data.len() - pos);
        buf.extend_from_slice(&data[pos..pos + n]);
        pos += n;
        i += 1;
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(fingerprint(&item));
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        out.push(fingerprint(&item));
    }
    out
}

fn all_captures() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for &(name, _) in SCENARIOS {
        for suffix in ["esl", "json.esl"] {
            let rel = format!("freeswitch-1.10/{name}.{suffix}");
            if let Ok(data) = std::fs::read(fixture(&rel)) {
                files.push((rel, data));
            }
        }
    }
    for n in [17, 19, 20, 21, 22, 23] {
        let prefix = if n == 17 {
            "17-outbound-socket".to_string()
        } else {
            format!("{n}-")
        };
        for entry in std::fs::read_dir(fixture("freeswitch-1.10")).unwrap() {
            let p = entry.unwrap().path();
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            if f.starts_with(&prefix) && f.ends_with(".fs2app.raw") {
                files.push((f.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    for f in [
        "fsock-test-data.esl",
        "neventsocket-example1.esl",
        "neventsocket-example4.esl",
    ] {
        files.push((
            f.into(),
            std::fs::read(fixture(&format!("public/{f}"))).unwrap(),
        ));
    }
    files
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn every_capture_in_random_chunks_gives_the_same_items(sizes in prop::collection::vec(1usize..9000, 1..64)) {
        for (name, data) in all_captures() {
            let whole = decode_chunked(&data, &[data.len()]);
            let chunked = decode_chunked(&data, &sizes);
            prop_assert_eq!(&whole, &chunked, "{}", name);
        }
    }

    #[test]
    fn hostile_bytes_around_real_frames_never_panic_or_grow(noise in prop::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
        let real = std::fs::read(fixture("freeswitch-1.10/01-inbound-answered.esl")).unwrap();
        let mut data = noise.clone();
        data.extend_from_slice(&real[..real.len().min(20_000)]);
        data.extend_from_slice(&noise[..cut.min(noise.len())]);
        let mut codec = EslCodec::new(Limits { max_header_block: 8192, max_body: 65536 });
        let mut buf = BytesMut::new();
        for chunk in data.chunks(512) {
            buf.extend_from_slice(chunk);
            while codec.decode(&mut buf).unwrap().is_some() {}
            prop_assert!(buf.len() <= 8192 + 65536 + 512 + 64);
        }
        while codec.decode_eof(&mut buf).unwrap().is_some() {}
    }
}

#[test]
fn every_split_point_of_the_first_frames() {
    // The head of a plain capture (reply + events) and of an outbound stream (the connect
    // reply with no Content-Length), split into two reads at every byte.
    for rel in [
        "freeswitch-1.10/12-click-to-call.esl",
        "freeswitch-1.10/19-routing-crm-ack.fs2app.raw",
        "freeswitch-1.10/00-api-session.esl",
    ] {
        let data = std::fs::read(fixture(rel)).unwrap();
        let head = &data[..data.len().min(9000)];
        let whole = decode_chunked(head, &[head.len()]);
        assert!(whole.len() >= 2, "{rel}: {whole:?}");
        for split in 1..head.len() {
            let two = decode_chunked(head, &[split, head.len()]);
            assert_eq!(whole, two, "{rel} split at {split}");
        }
    }
}

#[test]
fn one_byte_reads_of_a_whole_capture() {
    let data = std::fs::read(fixture(
        "freeswitch-1.10/14-attended-transfer-refer-replaces.esl",
    ))
    .unwrap();
    assert_eq!(
        decode_chunked(&data, &[data.len()]),
        decode_chunked(&data, &[1])
    );
}
