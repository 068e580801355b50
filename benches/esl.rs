//! Event-socket throughput: in-process parsing of the real captures, and a loopback
//! comparison with freeswitch-esl-tokio (its parser is private, so both clients read the same
//! bytes from the same local server).
//!
//! `cargo bench --bench esl` prints criterion's figures plus a summary with events/s, MB/s
//! and allocations per event.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use switchhook::esl::{EslClient, EslCodec, EslSignal, FreeswitchConfig, Limits, Message};
use switchhook::fake_freeswitch::load_capture;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::codec::Decoder;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SCENARIOS: &[&str] = &[
    "01-inbound-answered",
    "02-inbound-missed",
    "03-abandoned-short",
    "04-hold-unhold",
    "04b-hold-uuid_hold",
    "05-valet-park",
    "06-ringgroup-simultaneous",
    "07-ringgroup-sequential",
    "08-queue-answered",
    "08b-queue-abandoned",
    "09-ivr-dtmf-transfer",
    "10-voicemail",
    "11-outbound-carrier",
    "12-click-to-call",
    "13-blind-transfer-refer",
    "13b-blind-transfer-uuid_transfer",
    "14-attended-transfer-refer-replaces",
    "15-recorded-call",
    "16-concurrent-mix",
    "17-outbound-socket",
    "18-rejected-busy-voicemail",
    "19-routing-crm-ack",
    "20-routing-pin-digits",
    "21-routing-pin-timeout",
    "22-routing-caller-hangup",
    "23-routing-api-linger",
];

fn path(name: &str, suffix: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/freeswitch-1.10/{name}.{suffix}"))
}

/// The event frames of every capture, byte for byte, concatenated.
fn corpus(suffix: &str) -> (Bytes, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for s in SCENARIOS {
        for f in load_capture(&path(s, suffix)).unwrap() {
            out.extend_from_slice(&f.raw);
            n += 1;
        }
    }
    (Bytes::from(out), n)
}

/// Decodes every frame; returns the number of events (touching each event's name, as any
/// consumer would).
fn parse_all(mut buf: BytesMut) -> usize {
    let mut codec = EslCodec::new(Limits::default());
    let mut events = 0;
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        if let Ok(Message::Event(e)) = item {
            black_box(e.headers().len());
            events += 1;
        }
    }
    events
}

fn in_process(c: &mut Criterion) {
    for suffix in ["esl", "json.esl"] {
        let (data, n) = corpus(suffix);
        let mut g = c.benchmark_group(format!("parse/{suffix}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function("codec", |b| {
            b.iter_batched(
                || BytesMut::from(&data[..]),
                |buf| assert_eq!(parse_all(buf), n),
                BatchSize::LargeInput,
            )
        });
        g.finish();
        // A summary with the figures the README reports.
        let buf = BytesMut::from(&data[..]);
        let region = Region::new(GLOBAL);
        let t = Instant::now();
        let events = parse_all(buf);
        let el = t.elapsed();
        let stats = region.change();
        let mut best = el;
        for _ in 0..20 {
            let buf = BytesMut::from(&data[..]);
            let t = Instant::now();
            parse_all(buf);
            best = best.min(t.elapsed());
        }
        println!(
            "SUMMARY parse {suffix}: {events} events, {:.1} MB, best {:.2} ms: {:.0} events/s, {:.0} MB/s, {:.2} allocations/event, {:.0} bytes allocated/event",
            data.len() as f64 / 1e6,
            best.as_secs_f64() * 1e3,
            events as f64 / best.as_secs_f64(),
            data.len() as f64 / 1e6 / best.as_secs_f64(),
            stats.allocations as f64 / events as f64,
            stats.bytes_allocated as f64 / events as f64,
        );
    }
}

/// A minimal FreeSWITCH stand-in for the loopback race: handshake, subscription, the
/// `show channels` switchhook asks for, then the payload in large writes.
async fn serve(payload: Bytes) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let payload = payload.clone();
            tokio::spawn(async move {
                sock.set_nodelay(true).unwrap();
                let (rd, mut wr) = sock.into_split();
                let mut rd = BufReader::new(rd);
                wr.write_all(b"Content-Type: auth/request\n\n")
                    .await
                    .unwrap();
                let mut subscribed = false;
                loop {
                    let mut line = String::new();
                    let next = tokio::time::timeout(
                        Duration::from_millis(if subscribed { 50 } else { 5000 }),
                        rd.read_line(&mut line),
                    )
                    .await;
                    let Ok(Ok(n)) = next else { break };
                    if n == 0 {
                        return;
                    }
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    if line.starts_with("auth") {
                        wr.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
                            .await
                            .unwrap();
                    } else if line.starts_with("event") {
                        wr.write_all(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n").await.unwrap();
                        subscribed = true;
                    } else if line.starts_with("api show channels") {
                        let body = "{\"row_count\": 0}\n";
                        wr.write_all(
                            format!(
                                "Content-Type: api/response\nContent-Length: {}\n\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await
                        .unwrap();
                        break;
                    }
                }
                for chunk in payload.chunks(256 * 1024) {
                    if wr.write_all(chunk).await.is_err() {
                        return;
                    }
                }
                // Hold the socket until the client goes.
                let mut sink = String::new();
                let _ = rd.read_line(&mut sink).await;
            });
        }
    });
    port
}

async fn switchhook_client(port: u16, n: usize) {
    let (_client, mut rx, task) = EslClient::spawn(FreeswitchConfig {
        host: "127.0.0.1".into(),
        port,
        password: "ClueCon".into(),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        ..FreeswitchConfig::default()
    });
    let mut got = 0;
    while got < n {
        if let Some(EslSignal::Event(e)) = rx.recv().await {
            black_box(e.name());
            got += 1;
        }
    }
    task.abort();
}

async fn esl_tokio_client(port: u16, n: usize) {
    use freeswitch_esl_tokio::{EslClient as Theirs, EventFormat as TheirFormat};
    let (client, mut events) = Theirs::connect("127.0.0.1", port, "ClueCon").await.unwrap();
    client
        .subscribe_events_raw(TheirFormat::Plain, "ALL")
        .await
        .unwrap();
    let mut got = 0;
    let mut errors = 0;
    while got + errors < n {
        match events.recv().await {
            Some(Ok(e)) => {
                black_box(e.event_type());
                got += 1;
            }
            Some(Err(_)) => errors += 1,
            None => break,
        }
    }
    assert_eq!(
        got, n,
        "freeswitch-esl-tokio delivered {got} of {n} events ({errors} errors)"
    );
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (one, n1) = corpus("esl");
    let reps = 3;
    let mut payload = Vec::with_capacity(one.len() * reps);
    for _ in 0..reps {
        payload.extend_from_slice(&one);
    }
    let payload = Bytes::from(payload);
    let n = n1 * reps;
    let port = rt.block_on(serve(payload.clone()));
    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    let rt = &rt;
    let timed = |which: &'static str| {
        move |iters: u64| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                rt.block_on(async {
                    match which {
                        "switchhook" => switchhook_client(port, n).await,
                        _ => esl_tokio_client(port, n).await,
                    }
                });
                total += t.elapsed();
            }
            total
        }
    };
    let switchhook_run = Arc::new(timed("switchhook"));
    let theirs_run = Arc::new(timed("freeswitch-esl-tokio"));
    {
        let f = switchhook_run.clone();
        g.bench_function("switchhook", move |b| b.iter_custom(|i| f(i)));
    }
    {
        let f = theirs_run.clone();
        g.bench_function("freeswitch-esl-tokio", move |b| b.iter_custom(|i| f(i)));
    }
    g.finish();
    let best = |f: &dyn Fn(u64) -> Duration| (0..5).map(|_| f(1)).min().unwrap();
    let ours = best(&*switchhook_run);
    let theirs = best(&*theirs_run);
    let mb = payload.len() as f64 / 1e6;
    println!(
        "SUMMARY loopback ({n} events, {mb:.1} MB): switchhook {:.0} MB/s ({:.0} events/s), freeswitch-esl-tokio {:.0} MB/s ({:.0} events/s), ratio {:.1}x",
        mb / ours.as_secs_f64(),
        n as f64 / ours.as_secs_f64(),
        mb / theirs.as_secs_f64(),
        n as f64 / theirs.as_secs_f64(),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

criterion_group!(benches, in_process, loopback);
criterion_main!(benches);
