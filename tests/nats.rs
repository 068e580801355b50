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

/// An answered call, and a mix of concurrent calls.
fn answered_and_mixed() -> Vec<PathBuf> {
    vec![
        fixture("freeswitch-1.10/01-inbound-answered.esl"),
        fixture("freeswitch-1.10/16-concurrent-mix.esl"),
    ]
}

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
/// The webhook requests `replay` plans for `files` under `config`.
fn replayed(config: &Path, files: &[PathBuf]) -> Vec<serde_json::Value> {
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
        .collect()
}

/// Each planned request's webhook-id, call and sequence number.
fn planned(config: &Path, files: &[PathBuf]) -> Vec<(String, String, u64)> {
    replayed(config, files)
        .into_iter()
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
    /// One webhook, `crm`, with more keys.
    fn new(nats: &Nats, server: &PlaybackServer, receiver: &str, hook_keys: &str) -> Fleet {
        Fleet::with_hooks(
            nats,
            server,
            &format!(
                "[[webhooks]]\nname = \"crm\"\n\
                 triggers = [\"call.received\", \"call.dialed\", \"call.answered.extension\", \"call.missed\", \"call.hangup\"]\n\
                 url = \"{receiver}/hook\"\n{hook_keys}"
            ),
        )
    }

    /// The webhooks `webhooks` (TOML).
    fn with_hooks(nats: &Nats, server: &PlaybackServer, webhooks: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let hooks = format!("[egress]\nallow = [\"127.0.0.1\"]\n{webhooks}");
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
        self.worker_with(nats, name, n, "")
    }

    /// Worker `name`'s configuration file.
    fn worker_config(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.toml"))
    }

    /// Starts worker `name` (its `n`th start) with more sections (`sections`, TOML).
    fn worker_with(&self, nats: &Nats, name: &str, n: usize, sections: &str) -> ChildGuard {
        let config = self.worker_config(name);
        std::fs::write(
            &config,
            format!(
                "[store]\npath = {:?}\n[worker]\nname = {name:?}\nlease = \"3s\"\n[log]\nlevel = \"debug\"\n{sections}{}{}",
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

/// Two workers sharing the partitions, `run` publishing the fault captures, and a slow
/// receiver: every request committed to one worker's outbox or the other's, deliveries still
/// under way.
struct MidDelivery {
    receiver: common::receiver::Receiver,
    _server: PlaybackServer,
    fleet: Fleet,
    planned: Vec<(String, String, u64)>,
    w1: ChildGuard,
    _w2: ChildGuard,
    run: ChildGuard,
}

async fn mid_delivery(nats: &Nats, password: &str) -> MidDelivery {
    let files = fault_captures();
    let receiver = common::receiver::Receiver::start(|_, _| common::receiver::Reply {
        delay: Duration::from_millis(300),
        ..common::receiver::Reply::status(200)
    })
    .await;
    let server = common::play(&files, password, Pace::Fast).await;
    let fleet = Fleet::new(nats, &server, &receiver.base(), "");
    let planned = planned(&fleet.run_config, &files);
    assert!(planned.len() > 40, "{}", planned.len());
    let w1 = fleet.worker(nats, "w1", 1);
    let w2 = fleet.worker(nats, "w2", 1);
    shared_by_two(nats).await;
    let run = spawn_run(&fleet.run_config, password, 1);
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
    MidDelivery {
        receiver,
        _server: server,
        fleet,
        planned,
        w1,
        _w2: w2,
        run,
    }
}

/// Two workers share the partitions; one is killed (SIGKILL) while its deliveries are under
/// way and started again; NATS restarts meanwhile. The receiver gets every webhook, each
/// call's in order, and `run` delivers none itself.
#[test]
fn two_workers_share_the_work_and_survive_a_kill_and_a_nats_restart() {
    let mut nats = Nats::start();
    let rt = common::runtime();
    rt.block_on(async {
        let mut f = mid_delivery(&nats, "fleet").await;
        f.w1.kill().unwrap();
        f.w1.wait().unwrap();
        nats.stop();
        nats.resume();
        let _w1 = f.fleet.worker(&nats, "w1", 2);
        assert!(
            all_arrive(&f.receiver, &f.planned, Duration::from_secs(120)).await,
            "{} of {} arrived",
            f.receiver.seen().len(),
            f.planned.len()
        );
        assert_all_arrived_in_order(&f.receiver.seen(), &f.planned);
        let run_db = f.fleet.dir.path().join("run.db");
        let run_deliveries: i64 = rusqlite::Connection::open(&run_db)
            .and_then(|c| c.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)))
            .unwrap_or(0);
        assert_eq!(run_deliveries, 0, "run only publishes");
        f.run.kill().unwrap();
    });
}

/// A worker killed (SIGKILL) mid-delivery and never started again: the other takes its
/// partitions and delivers every moment it had not finished with, each call's in order.
#[test]
fn a_dead_workers_unfinished_moments_are_carried_on_by_the_other() {
    let nats = Nats::start();
    let rt = common::runtime();
    rt.block_on(async {
        let mut f = mid_delivery(&nats, "carry").await;
        let by_w1 = f.fleet.deliveries("w1");
        f.w1.kill().unwrap();
        f.w1.wait().unwrap();
        eventually(
            Duration::from_secs(30),
            "w2 holds every partition",
            || async {
                let h = holders(&nats, 8).await;
                h.len() == 8 && h.values().all(|w| w == "w2")
            },
        )
        .await;
        assert!(
            all_arrive(&f.receiver, &f.planned, Duration::from_secs(120)).await,
            "{} of {} arrived",
            f.receiver.seen().len(),
            f.planned.len()
        );
        assert_all_arrived_in_order(&f.receiver.seen(), &f.planned);
        assert!(
            f.fleet.deliveries("w2") > f.planned.len() as i64 - by_w1,
            "w2 took over moments w1 had taken"
        );
    });
}

/// A receiver answering 200, FreeSWITCH playing the concurrent calls for `password`, a
/// fleet with webhook `crm` for them, and the webhooks planned.
async fn concurrent_mix(
    nats: &Nats,
    password: &str,
) -> (
    common::receiver::Receiver,
    PlaybackServer,
    Fleet,
    Vec<(String, String, u64)>,
) {
    let files = vec![fixture("freeswitch-1.10/16-concurrent-mix.esl")];
    let receiver =
        common::receiver::Receiver::start(|_, _| common::receiver::Reply::status(200)).await;
    let server = common::play(&files, password, Pace::Fast).await;
    let fleet = Fleet::new(nats, &server, &receiver.base(), "");
    let planned = planned(&fleet.run_config, &files);
    (receiver, server, fleet, planned)
}

/// Partition `p`'s consumer: when it was made, and whether it has nothing left to deliver
/// or to be acknowledged.
async fn consumer_state(nats: &Nats, p: u32) -> Option<(String, bool)> {
    let js = nats.jetstream().await;
    let stream = js.get_stream(STREAM).await.ok()?;
    let info = stream.consumer_info(format!("deliver-p{p}")).await.ok()?;
    Some((
        format!("{:?}", info.created),
        info.num_pending == 0 && info.num_ack_pending == 0,
    ))
}

/// Waits until each of the 8 partitions' consumers was made since `made` (when each was
/// made, updated) and has nothing left to deliver or to be acknowledged.
async fn consumers_made_anew_and_finished(nats: &Nats, made: &mut BTreeMap<u32, String>) {
    for p in 0..8 {
        let before = made.get(&p).cloned();
        eventually(
            Duration::from_secs(30),
            "the consumer made anew and finished with",
            || async {
                consumer_state(nats, p)
                    .await
                    .is_some_and(|(created, done)| Some(&created) != before.as_ref() && done)
            },
        )
        .await;
        made.insert(p, consumer_state(nats, p).await.unwrap().0);
    }
}

/// Stops a child with SIGTERM and waits for it to exit.
fn terminate(child: &mut ChildGuard) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

/// Partitions handed from worker to worker (each stopped with SIGTERM before the next
/// starts, each with an outbox of its own) deliver nothing twice: each new holder starts
/// after what the last one had acknowledged, also when that holder had acknowledged nothing
/// of its own.
#[test]
fn partitions_handed_from_worker_to_worker_deliver_nothing_twice() {
    let nats = Nats::start();
    let rt = common::runtime();
    rt.block_on(async {
        let (receiver, _server, fleet, planned) = concurrent_mix(&nats, "handover").await;
        let mut w1 = fleet.worker(&nats, "w1", 1);
        let _run = spawn_run(&fleet.run_config, "handover", 1);
        assert!(
            all_arrive(&receiver, &planned, Duration::from_secs(60)).await,
            "every webhook arrived"
        );
        let mut made = BTreeMap::new();
        consumers_made_anew_and_finished(&nats, &mut made).await;
        terminate(&mut w1);

        // w2 takes every partition and has nothing to do; w3 takes them from it.
        for name in ["w2", "w3"] {
            let mut worker = fleet.worker(&nats, name, 1);
            consumers_made_anew_and_finished(&nats, &mut made).await;
            terminate(&mut worker);
        }
        let ok = receiver.seen().iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, planned.len(), "each webhook delivered once");
        assert_all_arrived_in_order(&receiver.seen(), &planned);
        assert_eq!(fleet.deliveries("w2") + fleet.deliveries("w3"), 0);
    });
}

/// One series of a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A worker's admin endpoint shows its NATS session, its partitions and its moments; a
/// change of its webhooks in the configuration file applies without a restart.
#[test]
fn a_worker_reports_on_its_admin_endpoint_and_takes_a_changed_configuration() {
    let nats = Nats::start();
    let rt = common::runtime();
    rt.block_on(async {
        let (receiver, _server, fleet, planned) = concurrent_mix(&nats, "admin").await;
        let admin = common::free_addr();
        let _w1 = fleet.worker_with(&nats, "w1", 1, &format!("[admin]\nlisten = \"{admin}\"\n"));
        let scrape = || async {
            let r = reqwest::get(format!("http://{admin}/metrics")).await.ok()?;
            r.text().await.ok()
        };
        eventually(
            Duration::from_secs(30),
            "ready, holding all 8 partitions",
            || async {
                let ready = reqwest::get(format!("http://{admin}/readyz"))
                    .await
                    .is_ok_and(|r| r.status() == 200);
                let text = scrape().await.unwrap_or_default();
                ready
                    && metric(&text, "switchhook_worker_connected") == Some(1.0)
                    && metric(&text, "switchhook_worker_partitions") == Some(8.0)
            },
        )
        .await;

        // The receiver's path changes in the file: the running worker takes it.
        let config = fleet.worker_config("w1");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replace("/hook", "/v2")).unwrap();
        let log = fleet.dir.path().join("w1.1.log");
        eventually(
            Duration::from_secs(30),
            "the configuration reloaded",
            || async {
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains("configuration reloaded"))
            },
        )
        .await;

        let _run = spawn_run(&fleet.run_config, "admin", 1);
        assert!(
            all_arrive(&receiver, &planned, Duration::from_secs(60)).await,
            "every webhook arrived"
        );
        assert!(receiver.seen().iter().all(|r| r.uri == "/v2"));
        eventually(
            Duration::from_secs(30),
            "every moment acknowledged",
            || async {
                let text = scrape().await.unwrap_or_default();
                let taken = metric(&text, "switchhook_worker_moments_taken_total");
                taken.is_some_and(|t| t > 0.0)
                    && metric(&text, "switchhook_worker_moments_acknowledged_total") == taken
                    && metric(&text, "switchhook_worker_unfinished") == Some(0.0)
            },
        )
        .await;
        assert!(metric(&scrape().await.unwrap(), "switchhook_esl_connected").is_none());
    });
}

/// With two workers, a receiver that refuses everything for five minutes loses nothing: a
/// long-outage schedule waits it out, and everything arrives once it answers.
#[test]
fn a_receiver_down_for_5_minutes_with_two_workers_loses_nothing() {
    let nats = Nats::start();
    let files = answered_and_mixed();
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
        // Down for five minutes (the fault itself, not a wait for a condition).
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(receiver.seen().iter().all(|r| r.status == 503));
        receiver.set_script(|_, _| common::receiver::Reply::status(200));
        assert!(
            all_arrive(&receiver, &planned, Duration::from_secs(90)).await,
            "everything arrived once the receiver answered"
        );
        assert_all_arrived_in_order(&receiver.seen(), &planned);
    });
}

/// The webhook-ids `replay` plans for `webhook`.
fn planned_ids(config: &Path, files: &[PathBuf], webhook: &str) -> BTreeSet<String> {
    replayed(config, files)
        .into_iter()
        .filter(|v| v["webhook"] == webhook)
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `webhook`'s row in worker `name`'s outbox: disabled, the reason, failing since.
fn webhook_state(fleet: &Fleet, name: &str, webhook: &str) -> (bool, String, Option<i64>) {
    rusqlite::Connection::open(fleet.outbox(name))
        .and_then(|c| {
            c.query_row(
                "SELECT disabled, COALESCE(reason, ''), since_ms FROM webhook_state WHERE name = ?1",
                [webhook],
                |r| Ok((r.get::<_, i64>(0)? == 1, r.get(1)?, r.get(2)?)),
            )
        })
        .unwrap_or((false, String::new(), None))
}

/// What the workers share through NATS: a webhook disabled on one (a 410) is disabled on
/// the other; enabled on either, it is enabled on both and its parked deliveries go out; a
/// failing webhook's window counts from the first failure either saw; and every dead letter
/// is announced once on `PREFIX.dead.>`, without its URL, headers or body.
#[test]
fn workers_share_disabled_and_failing_webhooks_and_announce_dead_letters() {
    use common::receiver::{Receiver, Reply};
    let nats = Nats::start();
    let files = answered_and_mixed();
    let rt = common::runtime();
    rt.block_on(async {
        // One 410 ever: whichever worker gets it disables the webhook, the other learns it.
        let receiver = Receiver::start(|path, nth| match path {
            "/gone" if nth == 1 => Reply::status(410),
            "/refuse" => Reply::status(500),
            "/flaky" => Reply::status(503),
            _ => Reply::status(200),
        })
        .await;
        let server = common::play(&files, "shared", Pace::Fast).await;
        let base = receiver.base();
        let fleet = Fleet::with_hooks(
            &nats,
            &server,
            &format!(
                "[[webhooks]]\nname = \"gone\"\ntriggers = [\"call.received\", \"call.hangup\"]\n\
                 url = \"{base}/gone\"\nretries = 0\n\
                 [[webhooks]]\nname = \"refuse\"\ntriggers = [\"call.hangup\"]\nurl = \"{base}/refuse\"\nretries = 0\n\
                 [[webhooks]]\nname = \"flaky\"\ntriggers = [\"call.hangup\"]\nurl = \"{base}/flaky\"\nretries = 10\n"
            ),
        );
        let gone = planned_ids(&fleet.run_config, &files, "gone");
        let refused = planned_ids(&fleet.run_config, &files, "refuse");
        assert!(gone.len() > 4 && refused.len() > 2, "{gone:?} {refused:?}");
        let _w1 = fleet.worker(&nats, "w1", 1);
        let _w2 = fleet.worker(&nats, "w2", 1);
        shared_by_two(&nats).await;
        let _run = spawn_run(&fleet.run_config, "shared", 1);

        eventually(Duration::from_secs(60), "gone disabled on both workers", || async {
            webhook_state(&fleet, "w1", "gone").0 && webhook_state(&fleet, "w2", "gone").0
        })
        .await;
        let told = ["w1", "w2"]
            .into_iter()
            .find(|w| webhook_state(&fleet, w, "gone").1.contains("(on worker"))
            .expect("one worker learnt it from the other");

        let js = nats.jetstream().await;
        let dead = || async {
            messages(&js, STREAM)
                .await
                .into_iter()
                .filter(|m| m.subject.starts_with("switchhook.dead."))
                .collect::<Vec<_>>()
        };
        eventually(Duration::from_secs(60), "every dead letter announced", || async {
            dead().await.len() >= refused.len()
        })
        .await;
        let announced = dead().await;
        let ids: BTreeSet<String> = announced
            .iter()
            .map(|m| m.body["webhookId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, refused, "each dead letter once");
        assert_eq!(announced.len(), refused.len());
        for m in &announced {
            assert!(m.subject.ends_with(".refuse"), "{}", m.subject);
            assert_eq!(m.body["status"], 500);
            assert!(m.body["worker"] == "w1" || m.body["worker"] == "w2");
            for private in ["url", "headers", "body"] {
                assert!(m.body.get(private).is_none(), "{}", m.body);
            }
        }

        eventually(Duration::from_secs(60), "flaky failing since the same moment on both", || async {
            let (a, b) = (
                webhook_state(&fleet, "w1", "flaky").2,
                webhook_state(&fleet, "w2", "flaky").2,
            );
            a.is_some() && a == b
        })
        .await;

        // The fleet's state from any worker's configuration, read from NATS.
        let fleet_says = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
                .args(["deliveries", "--config"])
                .arg(fleet.worker_config("w2"))
                .arg("fleet")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        };
        let of_kind = |lines: &[serde_json::Value], kind: &str| {
            lines
                .iter()
                .filter(|l| l["kind"] == kind)
                .map(|l| l["webhook"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let all = fleet_says(&["--limit", "0"]);
        assert_eq!(of_kind(&all, "disabled"), ["gone"]);
        // Nothing gets through to either: both failing (refuse's requests die at once).
        assert_eq!(of_kind(&all, "failing"), ["flaky", "refuse"]);
        let dead_ids: BTreeSet<String> = all
            .iter()
            .filter(|l| l["kind"] == "dead")
            .map(|l| l["webhookId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(dead_ids, refused, "every worker's dead letters");
        assert!(all.iter().all(|l| l["at"].is_string() || l["since"].is_string()));
        assert_eq!(of_kind(&fleet_says(&["--limit", "1"]), "dead").len(), 1);
        assert!(of_kind(&fleet_says(&["--webhook", "flaky"]), "dead").is_empty());
        assert!(of_kind(&fleet_says(&["--tenant", "nobody"]), "dead").is_empty());

        // Enabled on the worker that was told: enabled on both, and what was parked goes out.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
            .args(["deliveries", "--config"])
            .arg(fleet.dir.path().join(format!("{told}.toml")))
            .args(["enable", "gone"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        eventually(Duration::from_secs(30), "gone enabled on both workers", || async {
            !webhook_state(&fleet, "w1", "gone").0 && !webhook_state(&fleet, "w2", "gone").0
        })
        .await;
        let delivered = receiver
            .wait_for(Duration::from_secs(60), |seen| {
                seen.iter()
                    .filter(|r| r.uri == "/gone" && r.status == 200)
                    .map(|r| r.headers["webhook-id"].clone())
                    .collect::<BTreeSet<_>>()
                    == gone
            })
            .await;
        assert!(delivered, "every gone webhook delivered once enabled");
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
