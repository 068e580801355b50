//! Memory of a live `switchhook run` process (`cargo bench --bench live_memory`): the real
//! binary connected to the playback server, a webhook on every trigger delivered to an axum
//! receiver on 127.0.0.1, and 2,000 concurrent copies of the attended-transfer capture (four
//! legs each, UUIDs rewritten per copy).
//!
//! The server streams the first 60 % of every copy (all calls in progress), then goes silent;
//! the process's resident memory is read from `/proc` once it reports every call in
//! progress. `run` reconnects after its silence timeout and the rest of every copy ends the
//! calls; memory is read again once every call has ended and every webhook is delivered.
//!
//! `SWITCHHOOK_LIVE_CALLS` sets the number of calls. Prints `SUMMARY` lines; the README quotes
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchhook::fake_freeswitch::{load_capture, Faults, Pace, PlaybackConfig, PlaybackServer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/freeswitch-1.10")
}

/// Writes `calls` copies of the capture's frames `[from, to)` into `out`, UUIDs rewritten
/// per copy (same length, so every Content-Length stays right).
fn write_copies(frames: &[Vec<u8>], uuids: &[String], calls: usize, out: &Path) {
    let text = String::from_utf8(frames.concat()).unwrap();
    let mut all = Vec::with_capacity(text.len() * calls);
    for i in 0..calls {
        let mut copy = text.clone();
        for (n, u) in uuids.iter().enumerate() {
            let fresh = format!("{:08x}-{:04x}-4000-8000-{:012x}", i, n, i * 16 + n);
            copy = copy.replace(u.as_str(), &fresh);
        }
        all.extend_from_slice(copy.as_bytes());
    }
    std::fs::write(out, all).unwrap();
}

/// `VmRSS` and `VmHWM` of `pid`, bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// A metric's value from `/metrics` (the first sample whose line starts with `name`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let calls: usize = std::env::var("SWITCHHOOK_LIVE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let frames = load_capture(&fixtures().join("14-attended-transfer-refer-replaces.esl")).unwrap();
    let mut uuids: Vec<String> = Vec::new();
    for f in &frames {
        if let Some(u) = f.event.unique_id() {
            if !uuids.contains(&u.to_string()) {
                uuids.push(u.into_owned());
            }
        }
    }
    let raw: Vec<Vec<u8>> = frames.iter().map(|f| f.raw.to_vec()).collect();
    let cut = frames.len() * 6 / 10;
    let (first, rest) = (dir.path().join("first.esl"), dir.path().join("rest.esl"));
    write_copies(&raw[..cut], &uuids, calls, &first);
    write_copies(&raw[cut..], &uuids, calls, &rest);

    rt.block_on(async {
        let delivered = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&delivered);
        let app = axum::Router::new().fallback(move || {
            let d = Arc::clone(&d);
            async move {
                d.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let server = PlaybackServer::start(
            "127.0.0.1:0",
            PlaybackConfig {
                password: "live-memory".into(),
                captures: vec![first, rest],
                pace: Pace::Fast,
                faults: Faults {
                    stall_after: Some(cut * calls),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_addr = admin.local_addr().unwrap();
        drop(admin);
        let triggers: Vec<String> = switchhook::session::Trigger::ALL
            .iter()
            .map(|t| format!("\"{}\"", t.name()))
            .collect();
        let config = dir.path().join("switchhook.toml");
        std::fs::write(
            &config,
            format!(
                "[freeswitch]\nport = {port}\npassword = \"live-memory\"\nsilence_timeout = \"21s\"\n\
                 [log]\nlevel = \"warn\"\n[store]\npath = {db:?}\n[admin]\nlisten = \"{admin_addr}\"\n\
                 [egress]\nallow = [\"127.0.0.1\"]\n\
                 [[webhooks]]\nname = \"all\"\ntriggers = [{triggers}]\nurl = \"http://{receiver}/hook\"\n",
                port = server.addr().port(),
                db = dir.path().join("outbox.db").display().to_string(),
                triggers = triggers.join(", "),
            ),
        )
        .unwrap();
        let child = Child(
            Command::new(env!("CARGO_BIN_EXE_switchhook"))
                .arg("run")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id();
        let scrape = || async {
            let r = reqwest::get(format!("http://{admin_addr}/metrics")).await.ok()?;
            r.text().await.ok()
        };
        let started = Instant::now();
        let (rss_up, peak_up) = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(m) = scrape().await {
                if metric(&m, "switchhook_active_calls").unwrap_or(0.0) as usize >= calls {
                    // Settled: the calls are assembled and their moments delivered.
                    let pending = metric(&m, "switchhook_outbox_depth{state=\"pending\"}");
                    if pending.unwrap_or(0.0) == 0.0 {
                        break memory(pid);
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(600), "calls never came up");
        };
        println!(
            "SUMMARY live memory with {calls} calls in progress: RSS {:.0} MB ({:.1} kB/call), peak so far {:.0} MB, after {:.1} s",
            rss_up as f64 / 1e6,
            rss_up as f64 / calls as f64 / 1e3,
            peak_up as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        // The silence timeout reconnects; the rest of every copy ends the calls.
        let (rss_end, peak) = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(m) = scrape().await {
                let active = metric(&m, "switchhook_active_calls").unwrap_or(1.0);
                let pending = metric(&m, "switchhook_outbox_depth{state=\"pending\"}").unwrap_or(0.0);
                if active == 0.0 && pending == 0.0 && server.position() >= server.total_events() {
                    break memory(pid);
                }
            }
            assert!(started.elapsed() < Duration::from_secs(900), "calls never ended");
        };
        println!(
            "SUMMARY live memory after the {calls} calls ended: RSS {:.0} MB, peak {:.0} MB, {} webhooks delivered, after {:.1} s",
            rss_end as f64 / 1e6,
            peak as f64 / 1e6,
            delivered.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        // `run` looks at its calls every 15 s and returns freed memory once many have ended.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let (rss_later, _) = memory(pid);
        println!(
            "SUMMARY live memory 20 s later: RSS {:.0} MB",
            rss_later as f64 / 1e6
        );
        drop(child);
    });
}
