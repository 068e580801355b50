//! Publishing to NATS JetStream against a real `nats-server` (Debian's, started on a free
//! loopback port with JetStream in a temporary directory): every moment and every CDR of
//! the calls lands in the stream exactly once, in order per call, through a NATS outage and
//! kills of `run`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{messages, Nats, Stored};
use common::{eventually, fixture, ChildGuard, SCENARIOS};
use switchhook::fake_freeswitch::{Pace, PlaybackServer};
use switchhook::session::Settings;

const STREAM: &str = "SWITCHHOOK";

/// What the stream must hold for `files`: each message id with its call and, for a moment,
/// its sequence number in the call (0 for a CDR).
async fn expected(files: &[PathBuf]) -> BTreeMap<String, (String, u32)> {
    let out = std::cell::RefCell::new(BTreeMap::new());
    for f in files {
        let progress = switchhook::replay::Progress::hidden();
        switchhook::replay::records_and_moments(
            f,
            Arc::new(Settings::default()),
            &progress,
            |r| {
                out.borrow_mut()
                    .insert(switchhook::bus::cdr_id(&r.cdr.id), (r.cdr.id.clone(), 0));
            },
            |m| {
                out.borrow_mut().insert(
                    switchhook::bus::moment_id(&m.call_id, m.trigger),
                    (m.call_id.clone(), m.seq),
                );
            },
        )
        .await
        .unwrap();
    }
    out.into_inner()
}

/// Each id once, exactly the expected ones, and each call's moments in their order.
fn assert_exactly_once_in_order(got: &[Stored], want: &BTreeMap<String, (String, u32)>) {
    let ids: Vec<&str> = got.iter().map(|m| m.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a message is in the stream twice");
    let want_ids: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(unique, want_ids);
    let mut last: BTreeMap<&str, u32> = BTreeMap::new();
    for m in got {
        let (call, seq) = &want[&m.id];
        assert_eq!(m.body["callId"], call.as_str(), "{m:?}");
        assert!(m.subject.contains(&format!(".{call}")), "{}", m.subject);
        if *seq > 0 {
            let before = last.insert(call, *seq).unwrap_or(0);
            assert!(before < *seq, "call {call}: moment {seq} after {before}");
        }
    }
}

fn write_config(dir: &Path, nats: &Nats, server: &PlaybackServer, more: &str) -> PathBuf {
    let path = dir.join("switchhook.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[log]\nlevel = \"debug\"\n{}",
            dir.join("outbox.db").display().to_string(),
            server.addr().port(),
            nats.section(more)
        ),
    )
    .unwrap();
    path
}

fn spawn_run(config: &Path, password: &str, n: usize) -> ChildGuard {
    let log = std::fs::File::create(config.with_extension(format!("run{n}.log"))).unwrap();
    common::run_command(config, password)
        .stderr(log)
        .spawn()
        .map(ChildGuard)
        .unwrap()
}

/// How many messages wait in the outbox for NATS.
fn queued(outbox: &Path) -> i64 {
    rusqlite::Connection::open(outbox)
        .and_then(|c| c.query_row("SELECT count(*) FROM bus_queue", [], |r| r.get(0)))
        .unwrap_or(-1)
}

const FAULT_CAPTURES: &[&str] = &[
    "01-inbound-answered",
    "02-inbound-missed",
    "06-ringgroup-simultaneous",
    "08-queue-answered",
    "10-voicemail",
    "16-concurrent-mix",
    "18-rejected-busy-voicemail",
    "25-ivr-direct-extension",
];

#[test]
fn nats_stopped_for_30_s_during_calls_loses_nothing_and_keeps_each_call_in_order() {
    let mut nats = Nats::start();
    let files: Vec<PathBuf> = FAULT_CAPTURES
        .iter()
        .map(|n| fixture(&format!("freeswitch-1.10/{n}.esl")))
        .collect();
    let rt = common::runtime();
    rt.block_on(async {
        let want = expected(&files).await;
        // About half a minute of calls at four times real time.
        let server = common::play(&files, "nats-down", Pace::RealTime { speed: 4.0 }).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &nats, &server, "");
        let mut run = spawn_run(&cfg, "nats-down", 1);
        let js = nats.jetstream().await;
        eventually(
            Duration::from_secs(60),
            "the first message published",
            || async { !messages(&js, STREAM).await.is_empty() },
        )
        .await;
        drop(js);
        nats.stop();
        let stopped = Instant::now();
        assert!(
            server.position() < server.total_events(),
            "stopped during the calls"
        );
        eventually(Duration::from_secs(120), "every event played", || async {
            server.position() == server.total_events()
        })
        .await;
        if let Some(left) = Duration::from_secs(30).checked_sub(stopped.elapsed()) {
            tokio::time::sleep(left).await;
        }
        let outbox = dir.path().join("outbox.db");
        assert!(queued(&outbox) > 0, "messages waited in the outbox");
        nats.resume();
        let js = nats.jetstream().await;
        eventually(
            Duration::from_secs(90),
            "every message published",
            || async { messages(&js, STREAM).await.len() >= want.len() },
        )
        .await;
        eventually(Duration::from_secs(10), "the queue emptied", || async {
            queued(&outbox) == 0
        })
        .await;
        let got = messages(&js, STREAM).await;
        assert_exactly_once_in_order(&got, &want);
        // The bodies carry what consumers need: the moment's fields, or the CDR.
        let hangup = got
            .iter()
            .find(|m| m.subject.ends_with(".call.hangup"))
            .unwrap();
        assert_eq!(hangup.body["kind"], "moment");
        assert_eq!(hangup.body["moment"]["trigger"], "call.hangup");
        assert!(hangup.body["moment"]["fields"]["ddiNum"].is_string());
        let cdr = got.iter().find(|m| m.body["kind"] == "cdr").unwrap();
        assert_eq!(cdr.body["cdr"]["id"], cdr.body["callId"]);
        assert!(
            cdr.subject.starts_with("switchhook.cdr."),
            "{}",
            cdr.subject
        );
        run.kill().unwrap();
    });
}

/// A `run` killed after JetStream acknowledged messages but before it took them out of the
/// outbox publishes them again at its next start; the stream keeps one of each (its
/// duplicate window), and nothing is lost.
#[test]
fn a_kill_9_between_publish_and_dequeue_leaves_one_copy_of_each() {
    let mut nats = Nats::start();
    let files: Vec<PathBuf> = SCENARIOS
        .iter()
        .map(|(name, _)| fixture(&format!("freeswitch-1.10/{name}.esl")))
        .collect();
    let rt = common::runtime();
    rt.block_on(async {
        let want = expected(&files).await;
        let server = common::play(&files, "nats-kill", Pace::Fast).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &nats, &server, "batch_max = 1\n");
        let outbox = dir.path().join("outbox.db");
        // Everything queued while NATS is down.
        nats.stop();
        let mut first = spawn_run(&cfg, "nats-kill", 1);
        eventually(Duration::from_secs(60), "every message queued", || async {
            server.position() == server.total_events() && queued(&outbox) >= want.len() as i64
        })
        .await;
        first.kill().unwrap();
        first.wait().unwrap();
        // The queue as it was before anything was published.
        let db = rusqlite::Connection::open(&outbox).unwrap();
        let saved: Vec<(i64, String, String, i64)> = db
            .prepare("SELECT seq, msg_id, message_json, queued_ms FROM bus_queue")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        nats.resume();
        let js = nats.jetstream().await;
        // Killed while publishing one message at a time.
        let mut second = spawn_run(&cfg, "nats-kill", 2);
        eventually(Duration::from_secs(60), "publishing under way", || async {
            !messages(&js, STREAM).await.is_empty()
        })
        .await;
        second.kill().unwrap(); // SIGKILL
        second.wait().unwrap();
        // Whatever the kill left, put every row back as if no acknowledgement had been
        // recorded: the worst case of a kill between publish and dequeue.
        for (seq, id, json, at) in &saved {
            db.execute(
                "INSERT OR IGNORE INTO bus_queue (seq, msg_id, message_json, queued_ms) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![seq, id, json, at],
            )
            .unwrap();
        }
        let published_before = messages(&js, STREAM).await.len();
        assert!(published_before > 0);
        let _third = spawn_run(&cfg, "nats-kill", 3);
        eventually(Duration::from_secs(60), "the queue emptied", || async {
            queued(&outbox) == 0
        })
        .await;
        let got = messages(&js, STREAM).await;
        assert_exactly_once_in_order(&got, &want);
    });
}

#[test]
fn a_bad_nats_section_is_named_by_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[nats]\nservers = [\"nats://me:hunter2@127.0.0.1:4222\"]\nstream = \"a.b\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("nats.servers[0]"), "{text}");
    assert!(text.contains("nats.stream"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
