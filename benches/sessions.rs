//! Call assembly benchmarks (`cargo bench --bench sessions`):
//!
//! * replay throughput on one core: every single-call capture, parsed by the codec and fed
//!   through the session tracker (events/s), and the tracker alone on parsed events;
//! * memory per active call: 10 000 concurrent synthetic calls built from a real capture
//!   with rewritten UUIDs, held in progress (live bytes / call, measured by the allocator).
//!
//! Prints `SUMMARY` lines; the README quotes them.

use std::alloc::System;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use switchhook::esl::{EslCodec, Event, Limits, Message};
use switchhook::fake_freeswitch::load_capture;
use switchhook::session::{SessionTracker, Settings};
use tokio_util::codec::Decoder;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/freeswitch-1.10")
}

fn single_call_captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.ends_with(".esl") && !n.ends_with(".json.esl") && !n.starts_with("00-")
        })
        .collect();
    v.sort();
    v
}

fn main() {
    let settings = Arc::new(Settings::default());
    let captures = single_call_captures();
    let raw: Vec<Vec<u8>> = captures.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let total_bytes: usize = raw.iter().map(Vec::len).sum();

    // 1. Parse + assemble, end to end, one core.
    let mut best = f64::MAX;
    let mut events = 0u64;
    let mut records = 0usize;
    for _ in 0..15 {
        let started = Instant::now();
        events = 0;
        records = 0;
        for bytes in &raw {
            let mut tracker = SessionTracker::new(Arc::clone(&settings));
            let mut codec = EslCodec::new(Limits::default());
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(item)) = codec.decode(&mut buf) {
                if let Ok(Message::Event(ev)) = item {
                    events += 1;
                    records += tracker.on_event(&ev).len();
                }
            }
            records += tracker.flush("end").len();
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "SUMMARY replay parse+assemble: {} captures, {events} events, {records} CDRs, {:.1} MB, best {:.1} ms: {:.0} events/s, {:.0} MB/s",
        captures.len(),
        total_bytes as f64 / 1e6,
        best * 1e3,
        events as f64 / best,
        total_bytes as f64 / 1e6 / best
    );

    // 2. Assembly alone.
    let parsed: Vec<Vec<Event>> = captures
        .iter()
        .map(|p| {
            load_capture(p)
                .unwrap()
                .into_iter()
                .map(|f| f.event)
                .collect()
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..15 {
        let started = Instant::now();
        for evs in &parsed {
            let mut tracker = SessionTracker::new(Arc::clone(&settings));
            for ev in evs {
                std::hint::black_box(tracker.on_event(ev));
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "SUMMARY assemble only: {events} events, best {:.1} ms: {:.0} events/s",
        best * 1e3,
        events as f64 / best
    );

    // 3. Memory per active call: 10k concurrent copies of scenario 14 (attended transfer:
    // four legs, hold, the most state) stopped mid-call, UUIDs rewritten per copy.
    let calls = 10_000usize;
    let frames = load_capture(&fixtures().join("14-attended-transfer-refer-replaces.esl")).unwrap();
    let mut uuids: Vec<String> = Vec::new();
    for f in &frames {
        if let Some(u) = f.event.unique_id() {
            if !uuids.contains(&u.to_string()) {
                uuids.push(u.into_owned());
            }
        }
    }
    // The first 60 % of the frames: every leg created, the call in progress.
    let cut = frames.len() * 6 / 10;
    let prefix_len: usize = frames[..cut].iter().map(|f| f.raw.len()).sum();
    let prefix: Vec<u8> = frames[..cut].iter().flat_map(|f| f.raw.to_vec()).collect();
    assert_eq!(prefix.len(), prefix_len);
    let prefix = String::from_utf8(prefix).unwrap();
    let mut tracker = SessionTracker::new(Arc::clone(&settings));
    let region = Region::new(GLOBAL);
    let mut fed = 0u64;
    for i in 0..calls {
        // Same-length replacement keeps every Content-Length right.
        let mut copy = prefix.clone();
        for (n, u) in uuids.iter().enumerate() {
            let fresh = format!("{:08x}-{:04x}-4000-8000-{:012x}", i, n, i * 16 + n);
            copy = copy.replace(u.as_str(), &fresh);
        }
        let mut codec = EslCodec::new(Limits::default());
        let mut buf = BytesMut::from(copy.as_bytes());
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            if let Ok(Message::Event(ev)) = item {
                fed += 1;
                tracker.on_event(&ev);
            }
        }
    }
    let stats = region.change();
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
        + stats.bytes_reallocated as i64;
    let active = tracker.active();
    let legs: usize = tracker.calls().map(|c| c.leg_count()).sum();
    println!(
        "SUMMARY memory: {calls} concurrent calls ({active} sessions, {legs} legs, {fed} events fed), {:.1} MB live, {:.0} bytes/call",
        live as f64 / 1e6,
        live as f64 / calls as f64
    );
    assert!(active >= calls);

    // 4. The live page's refresh with those calls in progress: what `run`'s loop spends, 4
    // times a second, while the admin endpoint is on.
    let view = switchhook::admin::LiveView::default();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        view.refresh(tracker.calls(), &settings);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let page = view.page(Vec::new());
    assert_eq!(page.active_total, active);
    assert_eq!(page.active.len(), switchhook::admin::live::ACTIVE_SHOWN);
    println!(
        "SUMMARY live page refresh: {active} calls in progress ({} drawn), median {:.2} ms, max {:.2} ms: {:.2}% of the loop at 4 refreshes/s",
        page.active.len(),
        times[times.len() / 2] * 1e3,
        times[times.len() - 1] * 1e3,
        times[times.len() / 2] * 4.0 * 100.0
    );
}
