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

fn fault_captures() -> Vec<PathBuf> {
    FAULT_CAPTURES
        .iter()
        .map(|n| fixture(&format!("freeswitch-1.10/{n}.esl")))
        .collect()
}

#[test]
fn nats_stopped_for_30_s_during_calls_loses_nothing_and_keeps_each_call_in_order() {
    let mut nats = Nats::start();
    let files = fault_captures();
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

/// The webhooks every trigger of `files` makes under `config`: (webhook-id, call, sequence).
fn planned(config: &Path, files: &[PathBuf]) -> Vec<(String, String, u64)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .args(["replay", "--emit", "webhooks", "--config"])
        .arg(config)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["call_id"].as_str().unwrap().to_owned(),
                v["sequence"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until every planned webhook has been answered with 200 once.
async fn all_arrive(
    receiver: &common::receiver::Receiver,
    planned: &[(String, String, u64)],
    limit: Duration,
) -> bool {
    receiver
        .wait_for(limit, |seen| {
            seen.iter()
                .filter(|r| r.status == 200)
                .map(|r| r.headers["webhook-id"].clone())
                .collect::<BTreeSet<_>>()
                .len()
                >= planned.len()
        })
        .await
}

/// Every planned webhook arrived, and each call's first arrivals are in moment order.
fn assert_all_arrived_in_order(
    seen: &[common::receiver::Received],
    planned: &[(String, String, u64)],
) {
    let by_id: BTreeMap<&str, (&str, u64)> = planned
        .iter()
        .map(|(id, call, seq)| (id.as_str(), (call.as_str(), *seq)))
        .collect();
    let mut first = BTreeSet::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for r in seen.iter().filter(|r| r.status == 200) {
        let id = r.headers["webhook-id"].as_str();
        let Some((call, seq)) = by_id.get(id) else {
            panic!("an unplanned webhook {id}");
        };
        if first.insert(id) {
            let before = last.insert(call, *seq).unwrap_or(0);
            assert!(before <= *seq, "call {call}: moment {seq} after {before}");
        }
    }
    assert_eq!(first.len(), by_id.len(), "every webhook arrived");
}

/// Two `run` instances on one FreeSWITCH (each fed the same event stream, as FreeSWITCH
/// sends every subscriber the same events): each moment and CDR lands in the stream once;
/// one is killed mid-call and the other carries every call on.
#[test]
fn two_runs_on_one_freeswitch_publish_each_moment_once_and_one_may_die() {
    let nats = Nats::start();
    let files = fault_captures();
    let rt = common::runtime();
    rt.block_on(async {
        let want = expected(&files).await;
        let pace = Pace::RealTime { speed: 4.0 };
        let (a, b) = (
            common::play(&files, "twin", pace).await,
            common::play(&files, "twin", pace).await,
        );
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut run_a = spawn_run(&write_config(dir_a.path(), &nats, &a, ""), "twin", 1);
        let _run_b = spawn_run(&write_config(dir_b.path(), &nats, &b, ""), "twin", 1);
        let js = nats.jetstream().await;
        eventually(Duration::from_secs(60), "the first messages", || async {
            messages(&js, STREAM).await.len() > 5
        })
        .await;
        run_a.kill().unwrap(); // SIGKILL, calls under way
        run_a.wait().unwrap();
        assert!(a.position() < a.total_events(), "killed during the calls");
        eventually(
            Duration::from_secs(120),
            "every message published",
            || async { messages(&js, STREAM).await.len() >= want.len() },
        )
        .await;
        eventually(
            Duration::from_secs(10),
            "the second run's queue emptied",
            || async { queued(&dir_b.path().join("outbox.db")) == 0 },
        )
        .await;
        assert_exactly_once_in_order(&messages(&js, STREAM).await, &want);
    });
}

/// Which worker holds each of the `n` partitions' leases.
async fn holders(nats: &Nats, n: u32) -> BTreeMap<u32, String> {
    let js = nats.jetstream().await;
    let Ok(kv) = js.get_key_value(format!("{STREAM}_leases")).await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for p in 0..n {
        if let Ok(Some(v)) = kv.get(format!("p.{p}")).await {
            out.insert(p, String::from_utf8_lossy(&v).into_owned());
        }
    }
    out
}

/// Waits until both workers hold half of the 8 partitions each.
async fn shared_by_two(nats: &Nats) {
    eventually(
        Duration::from_secs(30),
        "the partitions shared by the two workers",
        || async {
            let h = holders(nats, 8).await;
            h.len() == 8 && h.values().filter(|w| *w == "w1").count() == 4
        },
    )
    .await;
}

/// A fleet: `run` publishing only, and webhook workers (`deliver`) sharing the partitions.
struct Fleet {
    dir: tempfile::TempDir,
    run_config: PathBuf,
    hooks: String,
}

impl Fleet {
    fn new(nats: &Nats, server: &PlaybackServer, receiver: &str, hook_keys: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let hooks = format!(
            "[egress]\nallow = [\"127.0.0.1\"]\n[[webhooks]]\nname = \"crm\"\n\
             triggers = [\"call.received\", \"call.dialed\", \"call.answered.extension\", \"call.missed\", \"call.hangup\"]\n\
             url = \"{receiver}/hook\"\n{hook_keys}"
        );
        let run_config = dir.path().join("run.toml");
        std::fs::write(
            &run_config,
            format!(
                "[store]\npath = {:?}\n[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n{}{hooks}",
                dir.path().join("run.db").display().to_string(),
                server.addr().port(),
                nats.section("webhooks = \"workers\"\npartitions = 8\n"),
            ),
        )
        .unwrap();
        Fleet {
            dir,
            run_config,
            hooks,
        }
    }

    /// Worker `name`'s outbox.
    fn outbox(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.db"))
    }

    /// Starts worker `name` (its `n`th start).
    fn worker(&self, nats: &Nats, name: &str, n: usize) -> ChildGuard {
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[store]\npath = {:?}\n[worker]\nname = {name:?}\nlease = \"3s\"\n[log]\nlevel = \"debug\"\n{}{}",
                self.outbox(name).display().to_string(),
                nats.section("partitions = 8\n"),
                self.hooks
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.{n}.log"))).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
            .args(["deliver", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map(ChildGuard)
            .unwrap()
    }

    /// How many deliveries worker `name`'s outbox holds.
    fn deliveries(&self, name: &str) -> i64 {
        rusqlite::Connection::open(self.outbox(name))
            .and_then(|c| c.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)))
            .unwrap_or(0)
    }
}

/// Two workers share the partitions; one is killed (SIGKILL) while its deliveries are under
/// way and started again; NATS restarts meanwhile. The receiver gets every webhook, each
/// call's in order, and `run` delivers none itself.
#[test]
fn two_workers_share_the_work_and_survive_a_kill_and_a_nats_restart() {
    let mut nats = Nats::start();
    let files = fault_captures();
    let rt = common::runtime();
    rt.block_on(async {
        // A slow receiver: deliveries are still under way when a worker is killed.
        let receiver = common::receiver::Receiver::start(|_, _| common::receiver::Reply {
            delay: Duration::from_millis(300),
            ..common::receiver::Reply::status(200)
        })
        .await;
        let server = common::play(&files, "fleet", Pace::Fast).await;
        let fleet = Fleet::new(&nats, &server, &receiver.base(), "");
        let planned = planned(&fleet.run_config, &files);
        assert!(planned.len() > 40, "{}", planned.len());
        let mut w1 = fleet.worker(&nats, "w1", 1);
        let _w2 = fleet.worker(&nats, "w2", 1);
        shared_by_two(&nats).await;
        let mut run = spawn_run(&fleet.run_config, "fleet", 1);
        // Every moment consumed: its requests committed to one worker's outbox or the other's.
        eventually(
            Duration::from_secs(60),
            "every request committed by a worker",
            || async { fleet.deliveries("w1") + fleet.deliveries("w2") == planned.len() as i64 },
        )
        .await;
        assert!(
            fleet.deliveries("w1") > 0 && fleet.deliveries("w2") > 0,
            "both worked"
        );
        assert!(
            receiver.seen().len() < planned.len(),
            "deliveries still under way"
        );
        w1.kill().unwrap();
        w1.wait().unwrap();
        nats.stop();
        nats.resume();
        let _w1 = fleet.worker(&nats, "w1", 2);
        assert!(
            all_arrive(&receiver, &planned, Duration::from_secs(120)).await,
            "{} of {} arrived",
            receiver.seen().len(),
            planned.len()
        );
        assert_all_arrived_in_order(&receiver.seen(), &planned);
        let run_db = fleet.dir.path().join("run.db");
        let run_deliveries: i64 = rusqlite::Connection::open(&run_db)
            .and_then(|c| c.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)))
            .unwrap_or(0);
        assert_eq!(run_deliveries, 0, "run only publishes");
        run.kill().unwrap();
    });
}

/// With two workers, a receiver that refuses everything for five minutes loses nothing: a
/// long-outage schedule waits it out, and everything arrives once it answers.
#[test]
fn a_receiver_down_for_5_minutes_with_two_workers_loses_nothing() {
    let nats = Nats::start();
    let files = vec![
        fixture("freeswitch-1.10/01-inbound-answered.esl"),
        fixture("freeswitch-1.10/16-concurrent-mix.esl"),
    ];
    let rt = common::runtime();
    rt.block_on(async {
        let receiver =
            common::receiver::Receiver::start(|_, _| common::receiver::Reply::status(503)).await;
        let server = common::play(&files, "down", Pace::Fast).await;
        let fleet = Fleet::new(
            &nats,
            &server,
            &receiver.base(),
            "backoff = \"exponential\"\nbackoff_max = \"20s\"\nretries = 30\n",
        );
        let planned = planned(&fleet.run_config, &files);
        let _w1 = fleet.worker(&nats, "w1", 1);
        let _w2 = fleet.worker(&nats, "w2", 1);
        shared_by_two(&nats).await;
        let _run = spawn_run(&fleet.run_config, "down", 1);
        eventually(
            Duration::from_secs(60),
            "every request committed",
            || async { fleet.deliveries("w1") + fleet.deliveries("w2") == planned.len() as i64 },
        )
        .await;
        // Down for five minutes from the first refusal (the fault itself).
        let down = Instant::now();
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(down.elapsed() >= Duration::from_secs(300));
        assert!(receiver.seen().iter().all(|r| r.status == 503));
        receiver.set_script(|_, _| common::receiver::Reply::status(200));
        assert!(
            all_arrive(&receiver, &planned, Duration::from_secs(90)).await,
            "everything arrived once the receiver answered"
        );
        assert_all_arrived_in_order(&receiver.seen(), &planned);
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
