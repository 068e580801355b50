//! Webhook delivery benchmarks (`cargo bench --bench webhooks`), everything real: the
//! SQLite outbox in a temporary directory (WAL, group commit), reqwest, and an axum receiver
//! on 127.0.0.1.
//!
//! * throughput: 20 000 requests for 2 000 calls (10 moments each, in order per call)
//!   submitted at once; deliveries/s until the receiver has all of them;
//! * latency: the hangup of one call at a time (the real hangup moment of a capture, planned
//!   by a real webhook), from the moment `submit` is called until the receiver has the
//!   request: committed to the outbox first, then sent; p50 and p99 over 2 000 calls.
//!
//! Prints `SUMMARY` lines; the README quotes them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchhook::hooks::DeliveryOptions;
use switchhook::hooks::{DeliveryQueue, Outbox, Request, WebhookSet};
use switchhook::session::Settings;

struct Receiver {
    count: AtomicUsize,
    arrivals: Mutex<Vec<(String, Instant)>>,
}

async fn receiver() -> (std::net::SocketAddr, Arc<Receiver>) {
    let state = Arc::new(Receiver {
        count: AtomicUsize::new(0),
        arrivals: Mutex::new(Vec::new()),
    });
    let s = Arc::clone(&state);
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, _body: axum::body::Bytes| {
            let s = Arc::clone(&s);
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                s.arrivals.lock().unwrap().push((id, Instant::now()));
                s.count.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

fn hooks(addr: std::net::SocketAddr) -> Arc<WebhookSet> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.toml");
    std::fs::write(
        &path,
        format!(
            "[egress]\nallow = [\"127.0.0.1\"]\n[[webhooks]]\nname = \"bench\"\ntriggers = [\"call.hangup\", \"call.received\", \"call.dialed\", \"call.answered.extension\", \"call.missed_or_answered\"]\nurl = \"http://{addr}/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        ),
    )
    .unwrap();
    let (_, compiled) = switchhook::pipeline::Compiled::load(Some(&path)).unwrap();
    compiled.hooks
}

/// The real requests of one capture, made into `n` distinct calls (fresh ids and call ids).
async fn templates(hooks: &WebhookSet) -> Vec<Request> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/freeswitch-1.10/01-inbound-answered.esl");
    let mut out = Vec::new();
    switchhook::replay::moments(
        &path,
        Arc::new(Settings::default()),
        &switchhook::replay::Progress::hidden(),
        |m| out.extend(hooks.plan(&m)),
    )
    .await
    .unwrap();
    out
}

fn copy(r: &Request, call: usize, k: usize) -> Request {
    let mut r = r.clone();
    r.call_id = format!("bench-call-{call}");
    r.id = format!("msg_bench_{call}_{k}");
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (addr, recv) = receiver().await;
        let hooks = hooks(addr);
        let base = templates(&hooks).await;
        assert_eq!(base.len(), 5);

        // 1. Throughput.
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let q = DeliveryQueue::start(outbox, Arc::clone(&hooks), DeliveryOptions::default()).await.unwrap();
        let calls = 2_000;
        let per_call = 10;
        let mut reqs = Vec::with_capacity(calls * per_call);
        for k in 0..per_call {
            for c in 0..calls {
                reqs.push(copy(&base[k % base.len()], c, k));
            }
        }
        let total = reqs.len();
        let started = Instant::now();
        q.submit(reqs);
        while recv.count.load(Ordering::SeqCst) < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "SUMMARY webhooks throughput: {total} deliveries ({calls} calls x {per_call}, in order per call, signed, committed to SQLite before sending) in {secs:.2} s = {:.0} deliveries/s",
            total as f64 / secs
        );
        q.idle().await;
        q.close().await;

        // 2. Latency, one hangup at a time.
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let q = DeliveryQueue::start(outbox, Arc::clone(&hooks), DeliveryOptions::default()).await.unwrap();
        let hangup = base.iter().find(|r| r.trigger == "call.hangup").unwrap().clone();
        let mut lat = Vec::new();
        for i in 0..2_000 {
            let r = copy(&hangup, 1_000_000 + i, 0);
            let id = r.id.clone();
            let seen_before = recv.count.load(Ordering::SeqCst);
            let t0 = Instant::now();
            q.submit(vec![r]);
            while recv.count.load(Ordering::SeqCst) == seen_before {
                tokio::task::yield_now().await;
            }
            let arrivals = recv.arrivals.lock().unwrap();
            let (got, at) = arrivals.last().unwrap();
            assert_eq!(*got, id);
            lat.push(*at - t0);
        }
        lat.sort();
        println!(
            "SUMMARY webhooks latency (hangup moment -> request at the receiver, durable outbox): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} calls",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3,
            lat.len()
        );
        q.close().await;
    });
}
