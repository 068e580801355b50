//! Fleet benchmarks (`cargo bench --bench fleet`), everything real: Debian's `nats-server`
//! with JetStream in a temporary directory, the outbox (SQLite), `switchhook deliver` worker
//! processes, and an axum receiver on 127.0.0.1.
//!
//! * publish: lifecycle moments per second through the outbox into JetStream (20 000
//!   moments: a capture's real moments under fresh call ids), from the first hand-over until
//!   the stream holds the last;
//! * latency: one call's hangup at a time, from the hand-over until the receiver has the
//!   request, in a single process (the durable outbox and its delivery) and through
//!   JetStream with 1, 2 and 4 workers; p50 and p99;
//! * workers' throughput: 4 000 hangups of distinct calls at once, deliveries per second until
//!   the receiver has them all, with 1, 2 and 4 workers.
//!
//! Prints `SUMMARY` lines; the README quotes them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchhook::bus::{NatsConfig, Publisher};
use switchhook::hooks::{DeliveryOptions, DeliveryQueue, Outbox, WebhookSet};
use switchhook::session::{Moment, Settings};

const PARTITIONS: u32 = 8;

/// A nats-server, killed when dropped.
struct Nats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nats-server (apt-get install nats-server)");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker process, stopped (SIGTERM, so it hands its partitions back) when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Counts each webhook-id once: a moment a worker hands over before it has acknowledged it
/// is delivered again by the next holder (at least once), and a second copy is not a delivery.
struct Receiver {
    count: AtomicUsize,
    again: AtomicUsize,
    seen: Mutex<std::collections::HashSet<String>>,
    last: Mutex<Option<Instant>>,
}

async fn receiver() -> (std::net::SocketAddr, Arc<Receiver>) {
    let state = Arc::new(Receiver {
        count: AtomicUsize::new(0),
        again: AtomicUsize::new(0),
        seen: Mutex::new(std::collections::HashSet::new()),
        last: Mutex::new(None),
    });
    let s = Arc::clone(&state);
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let s = Arc::clone(&s);
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if s.seen.lock().unwrap().insert(id) {
                *s.last.lock().unwrap() = Some(Instant::now());
                s.count.fetch_add(1, Ordering::SeqCst);
            } else {
                s.again.fetch_add(1, Ordering::SeqCst);
            }
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

/// The configuration every part shares: the stream, and one webhook on hangups.
fn config_text(nats: &Nats, addr: std::net::SocketAddr) -> String {
    format!(
        "[nats]\nservers = [\"{}\"]\npartitions = {PARTITIONS}\nwebhooks = \"workers\"\n\
         [egress]\nallow = [\"127.0.0.1\"]\n[log]\nlevel = \"warn\"\n\
         [[webhooks]]\nname = \"bench\"\ntriggers = [\"call.hangup\"]\nurl = \"http://{addr}/hook\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        nats.url()
    )
}

fn load(dir: &Path, text: &str) -> switchhook::pipeline::Compiled {
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).unwrap();
    switchhook::pipeline::Compiled::load(Some(&path)).unwrap().1
}

fn nats_config(nats: &Nats) -> NatsConfig {
    NatsConfig {
        servers: vec![nats.url()],
        partitions: PARTITIONS,
        ..NatsConfig::default()
    }
}

/// The real moments of a capture.
async fn capture_moments() -> Vec<Moment> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/freeswitch-1.10/01-inbound-answered.esl");
    let mut out = Vec::new();
    switchhook::replay::moments(
        &path,
        Arc::new(Settings::default()),
        &switchhook::replay::Progress::hidden(),
        |m| out.push(m),
    )
    .await
    .unwrap();
    out
}

fn renamed(m: &Moment, call: String) -> Moment {
    let mut m = m.clone();
    m.call_id = call;
    m
}

/// Hands a moment over, waiting while the outbox's hand-over is full.
async fn publish(p: &Publisher, m: &Moment) {
    while !p.moment(m) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn stream_messages(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One call's hangup at a time: the hand-over (`send`) until the receiver has it.
async fn latency<F: std::future::Future<Output = ()>>(
    recv: &Receiver,
    calls: usize,
    mut send: impl FnMut(usize) -> F,
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls {
        let before = recv.count.load(Ordering::SeqCst);
        let t0 = Instant::now();
        send(i).await;
        while recv.count.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
        }
        lat.push(recv.last.lock().unwrap().unwrap() - t0);
    }
    lat.sort();
    lat
}

/// Starts `n` workers and waits until they share the partitions.
async fn workers(nats: &Nats, dir: &Path, base: &str, n: usize, round: usize) -> Vec<Worker> {
    let mut out = Vec::new();
    for w in 0..n {
        let name = format!("r{round}w{w}");
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "{base}[worker]\nname = \"{name}\"\nlease = \"3s\"\n[store]\npath = {:?}\n",
                dir.join(format!("{name}.db")).display().to_string()
            ),
        )
        .unwrap();
        out.push(Worker(
            Command::new(env!("CARGO_BIN_EXE_switchhook"))
                .args(["deliver", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the workers did not share the partitions"
        );
        if let Ok(kv) = js.get_key_value("SWITCHHOOK_leases").await {
            let mut holders = std::collections::BTreeMap::<String, u32>::new();
            for p in 0..PARTITIONS {
                if let Ok(Some(v)) = kv.get(format!("p.{p}")).await {
                    *holders
                        .entry(String::from_utf8_lossy(&v).into_owned())
                        .or_default() += 1;
                }
            }
            let ours = holders
                .keys()
                .filter(|k| k.starts_with(&format!("r{round}w")))
                .count();
            if holders.values().sum::<u32>() == PARTITIONS && ours == n && holders.len() == n {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nats = Nats::start();
        let (addr, recv) = receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let base = config_text(&nats, addr);
        let compiled = load(dir.path(), &base);
        let real = capture_moments().await;
        let hangup = real
            .iter()
            .find(|m| m.trigger.name() == "call.hangup")
            .unwrap()
            .clone();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);

        // 1. Publishing through the outbox into JetStream (a stream of its own: the workers
        // below must not find these moments).
        let alone = NatsConfig {
            stream: "PUBLISH".into(),
            subject_prefix: "publish".into(),
            ..nats_config(&nats)
        };
        let solo = Publisher::start(&alone, &dir.path().join("solo.db")).unwrap();
        let n = 20_000usize;
        let started = Instant::now();
        for i in 0..n {
            let m = &real[i % real.len()];
            publish(&solo, &renamed(m, format!("pub-{}", i / real.len()))).await;
        }
        while stream_messages(&js, "PUBLISH").await < n as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "SUMMARY fleet publish: {n} moments through the outbox into JetStream (acknowledged) in {secs:.2} s = {:.0} moments/s",
            n as f64 / secs
        );
        solo.close(Duration::from_secs(5)).await;
        let publisher = Publisher::start(&nats_config(&nats), &dir.path().join("run.db")).unwrap();

        // 2. Latency, single process: the outbox and its delivery, no bus.
        let single = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&single.path().join("outbox.db")).unwrap();
        let queue = DeliveryQueue::start(outbox, Arc::clone(&compiled.hooks), DeliveryOptions::default())
            .await
            .unwrap();
        let hooks: &WebhookSet = &compiled.hooks;
        let lat = latency(&recv, 1000, |i| {
            let reqs = hooks.plan(&renamed(&hangup, format!("single-{i}")));
            queue.submit(reqs);
            async {}
        })
        .await;
        println!(
            "SUMMARY fleet latency single process (hangup -> receiver): p50 {:.2} ms, p99 {:.2} ms over {} calls",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            lat.len()
        );
        queue.close().await;

        // 3. Through JetStream, with 1, 2 and 4 workers.
        for (round, count) in [1usize, 2, 4].into_iter().enumerate() {
            let running = workers(&nats, dir.path(), &base, count, round).await;
            let lat = latency(&recv, 500, |i| {
                let m = renamed(&hangup, format!("lat{round}-{i}"));
                let p = &publisher;
                async move { publish(p, &m).await }
            })
            .await;
            println!(
                "SUMMARY fleet latency {count} worker(s) (hangup -> JetStream -> worker -> receiver): p50 {:.2} ms, p99 {:.2} ms over {} calls",
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                lat.len()
            );
            let total = 4_000usize;
            let before = recv.count.load(Ordering::SeqCst);
            let started = Instant::now();
            for i in 0..total {
                publish(&publisher, &renamed(&hangup, format!("tp{round}-{i}"))).await;
            }
            while recv.count.load(Ordering::SeqCst) < before + total {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "SUMMARY fleet throughput {count} worker(s): {total} hangups delivered in {secs:.2} s = {:.0} deliveries/s ({} delivered again so far, at hand-overs)",
                total as f64 / secs,
                recv.again.load(Ordering::SeqCst)
            );
            drop(running);
        }
        publisher.close(Duration::from_secs(5)).await;
    });
}
