//! The PostgreSQL call store against a real PostgreSQL (Debian's server, a cluster of the
//! test's own on a free loopback port): filling it from every bundled capture, the reports,
//! schema versions, and the faults it must survive (the database stopped during calls,
//! switchhook killed mid-batch).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::postgres::{Postgres, PASSWORD, PASSWORD_ENV};
use common::{eventually, fixture, ChildGuard, SCENARIOS};
use serde_json::Value;
use switchhook::fake_freeswitch::{Pace, PlaybackServer};

fn rt() -> tokio::runtime::Runtime {
    common::runtime()
}

/// `switchhook ARGS` with the database password in the environment.
fn switchhook(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .args(args)
        .env(PASSWORD_ENV, PASSWORD)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every bundled plain capture.
fn captures() -> Vec<PathBuf> {
    SCENARIOS
        .iter()
        .map(|(name, _)| fixture(&format!("freeswitch-1.10/{name}.esl")))
        .collect()
}

/// The CDRs `replay` makes of `files`: id → CDR (the last record of a call wins).
fn replayed(files: &[PathBuf]) -> HashMap<String, Value> {
    let mut args = vec!["replay".to_owned(), "--emit".into(), "cdr".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = switchhook(&args);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c))
        .collect()
}

fn write_config(dir: &Path, pg: &Postgres, more: &str) -> PathBuf {
    let path = dir.join("switchhook.toml");
    let db = dir.join("outbox.db");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n{}{more}",
            db.display().to_string(),
            pg.section()
        ),
    )
    .unwrap();
    path
}

/// NDJSON lines of a command's stdout.
fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM calls", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

#[test]
fn every_bundled_capture_fills_the_store_once_and_the_reports_answer() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let tenants = "[[tenants]]\nid = \"acme\"\nnumbers = [\"+44161000100*\"]\n";
    let cfg = write_config(dir.path(), &pg, tenants);
    let cfg_s = cfg.to_str().unwrap();
    let files = captures();
    let expected = replayed(&files);
    assert!(expected.len() >= 30, "{} calls", expected.len());

    let mut args = vec!["replay", "--emit", "store", "--config", cfg_s];
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    // Twice: the second load writes the same rows again, without duplicates.
    for _ in 0..2 {
        let out = switchhook(&args);
        assert!(out.status.success(), "{}", text(&out));
    }

    rt().block_on(async {
        let client = pg.client().await;
        assert_eq!(count(&client).await, expected.len() as i64);
        // Every column as the CDR has it: the stored CDR is the replayed one, and the
        // typed columns agree with it.
        for row in client
            .query(
                "SELECT id, cdr, ans, talk, talk_ms, cli_num, ddi_num, outcome, \
                 extract(epoch FROM start_time)::float8, legs FROM calls",
                &[],
            )
            .await
            .unwrap()
        {
            let id: String = row.get(0);
            let cdr = &expected[&id];
            let stored: Value = row.get(1);
            assert_eq!(&stored, cdr, "{id}");
            assert_eq!(
                row.get::<_, Option<bool>>(2),
                cdr["ans"].as_u64().map(|a| a == 1)
            );
            assert_eq!(row.get::<_, i32>(3) as i64, cdr["talk"].as_i64().unwrap());
            let talk_ms: i64 = row.get(4);
            assert!(
                (talk_ms - 1000 * cdr["talk"].as_i64().unwrap()).abs() <= 500,
                "{id}"
            );
            assert_eq!(row.get::<_, String>(5), cdr["cliNum"].as_str().unwrap());
            assert_eq!(row.get::<_, String>(6), cdr["ddiNum"].as_str().unwrap());
            assert_eq!(
                row.get::<_, Option<String>>(7).as_deref(),
                cdr["outcome"].as_str()
            );
            let legs: Value = row.get(9);
            assert!(!legs.as_array().unwrap().is_empty());
        }
        // Calls to the tenant's numbers are its own; the rest carry their PBX's id.
        let acme: i64 = client
            .query_one("SELECT count(*) FROM calls WHERE tenant_id = 'acme'", &[])
            .await
            .unwrap()
            .get(0);
        let inbound_to_acme: i64 = client
            .query_one(
                "SELECT count(*) FROM calls WHERE kind = 'inbound' AND ddi_num LIKE '+44161000100%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(acme >= inbound_to_acme && inbound_to_acme > 0, "{acme} {inbound_to_acme}");
        let others: i64 = client
            .query_one(
                "SELECT count(*) FROM calls WHERE tenant_id <> 'acme' AND tenant_id IS DISTINCT FROM pbx_id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(others, 0);
        let listed = switchhook(&["calls", "list", "--tenant", "acme", "--limit", "1000", "--config", cfg_s]);
        assert!(listed.status.success(), "{}", text(&listed));
        assert_eq!(json_lines(&listed).len() as i64, acme);
    });

    // The reports, over every capture's time.
    let since = ["--since", "2000-01-01T00:00:00Z"];
    let report = |name: &str| {
        let out = switchhook(
            &[
                &["calls", "report", name, "--config", cfg_s][..],
                &since[..],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", text(&out));
        json_lines(&out)
    };
    let missed = report("missed-by-did");
    let total: i64 = missed.iter().map(|r| r["calls"].as_i64().unwrap()).sum();
    assert!(total > 0 && total as usize <= expected.len(), "{missed:?}");
    let lost = expected.values().filter(|c| c["lost"] == 1).count() as i64;
    let missed_total: i64 = missed.iter().map(|r| r["missed"].as_i64().unwrap()).sum();
    assert!(missed_total > 0 && missed_total <= lost, "{missed:?}");
    let groups = report("groups");
    assert!(!groups.is_empty(), "ring groups in the captures");
    for g in &groups {
        let rate: f64 = g["answer_rate_pct"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&rate));
        assert!(g["avg_ring_s"].as_f64().is_some());
    }
    let answered_by = report("answered-by");
    let answered: i64 = answered_by
        .iter()
        .map(|r| r["calls"].as_i64().unwrap())
        .sum();
    assert_eq!(
        answered as usize,
        expected.values().filter(|c| c["ans"] == 1).count()
    );
    let outcomes = report("outcomes");
    let by_outcome: i64 = outcomes.iter().map(|r| r["calls"].as_i64().unwrap()).sum();
    assert_eq!(by_outcome as usize, expected.len());

    // list and show, by the call id and by a leg's Unique-ID.
    let (id, cdr) = expected
        .iter()
        .find(|(_, c)| c["ans"] == 1 && c["dir"] == 2)
        .unwrap();
    let out = switchhook(&[
        "calls",
        "list",
        "--config",
        cfg_s,
        "--caller",
        cdr["cliNum"].as_str().unwrap(),
        "--limit",
        "100",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = json_lines(&out);
    assert!(listed.iter().any(|r| r["id"] == id.as_str()), "{listed:?}");
    assert!(listed.iter().all(|r| r["caller"] == cdr["cliNum"]));
    let out = switchhook(&["calls", "show", "--config", cfg_s, id]);
    assert!(out.status.success(), "{}", text(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], id.as_str());
    let out = switchhook(&["calls", "show", "--config", cfg_s, "no-such-call"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // A value with SQL in it is only a value.
    let out = switchhook(&["calls", "list", "--config", cfg_s, "--did", "x' OR '1'='1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(json_lines(&out).is_empty());

    // The docs' example queries run as written.
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/call-store.md"))
            .unwrap();
    let queries: Vec<&str> = docs
        .split("```sql")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(queries.len() >= 4, "example SQL in docs/call-store.md");
    rt().block_on(async {
        let client = pg.client().await;
        for q in queries {
            client
                .batch_execute(q)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{q}"));
        }
    });
}

#[test]
fn the_schema_upgrades_from_its_first_version_and_a_newer_one_is_refused() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &pg, "");
    let cfg_s = cfg.to_str().unwrap();
    let out = switchhook(&["calls", "migrate", "--to", "1", "--config", cfg_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version 1"),
        "{}",
        text(&out)
    );
    let rt = rt();
    rt.block_on(async {
        let client = pg.client().await;
        // A row as the first version wrote it.
        client
            .execute(
                "INSERT INTO calls (id, start_time, ddi_num, cdr) VALUES ('old-call', now(), '+15551230000', '{}')",
                &[],
            )
            .await
            .unwrap();
        let indexes: i64 = client
            .query_one("SELECT count(*) FROM pg_indexes WHERE tablename = 'calls'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(indexes, 2, "the primary key and the start time");
    });
    // Any action brings it up to date; the old row stays.
    let out = switchhook(&["calls", "list", "--config", cfg_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_lines(&out)[0]["id"], "old-call");
    rt.block_on(async {
        let client = pg.client().await;
        let version: i32 = client
            .query_one("SELECT max(version) FROM switchhook_schema_history", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, 3);
        let indexes: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'calls'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(indexes > 2);
        // A newer switchhook has been here.
        client
            .execute(
                "INSERT INTO switchhook_schema_history (version, name, applied_on, checksum) \
                 VALUES (4, 'from_the_future', now()::text, '0')",
                &[],
            )
            .await
            .unwrap();
    });
    let out = switchhook(&["calls", "list", "--config", cfg_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema is version 4, newer than this switchhook knows (3)"),
        "{err}"
    );
    // run refuses to start on it rather than write into a schema it does not know.
    let run = Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .args(["run", "--config", cfg_s])
        .env(PASSWORD_ENV, PASSWORD)
        .env("SWITCHHOOK__FREESWITCH__PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("newer than this switchhook knows"),
        "{}",
        text(&run)
    );
}

/// A `run` configuration on `server` and `pg`, with more `[call_store]` keys.
fn run_config(dir: &Path, pg: &Postgres, server: &PlaybackServer, store_keys: &str) -> PathBuf {
    write_config(
        dir,
        pg,
        &format!(
            "{store_keys}[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[log]\nlevel = \"debug\"\n",
            server.addr().port()
        ),
    )
}

/// `switchhook run` on `config`, its log in a file beside it.
fn spawn_run(config: &Path, password: &str, n: usize) -> ChildGuard {
    let log = std::fs::File::create(config.with_extension(format!("run{n}.log"))).unwrap();
    common::run_command(config, password)
        .env(PASSWORD_ENV, PASSWORD)
        .stderr(log)
        .spawn()
        .map(ChildGuard)
        .unwrap()
}

/// How many records wait in the outbox for the call store.
fn queued(outbox: &Path) -> i64 {
    rusqlite::Connection::open(outbox)
        .and_then(|c| c.query_row("SELECT count(*) FROM call_store_queue", [], |r| r.get(0)))
        .unwrap_or(-1)
}

async fn stored_ids(client: &tokio_postgres::Client) -> BTreeSet<String> {
    client
        .query("SELECT id FROM calls", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// Waits until the outbox's queue for the call store is empty.
async fn queue_empties(outbox: &Path) {
    eventually(Duration::from_secs(10), "the queue emptied", || async {
        queued(outbox) == 0
    })
    .await;
}

/// Every stored row's CDR is the replayed one of its call.
async fn assert_rows_are(client: &tokio_postgres::Client, expected: &HashMap<String, Value>) {
    for row in client
        .query("SELECT id, cdr FROM calls", &[])
        .await
        .unwrap()
    {
        let id: String = row.get(0);
        let cdr: Value = row.get(1);
        let want = &expected[&id];
        let differ: Vec<String> = want
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| cdr.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k}: stored {:?}, replayed {v}", cdr.get(k.as_str())))
            .chain(
                cdr.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| want.get(k.as_str()).is_none())
                    .map(|k| format!("{k}: stored only")),
            )
            .collect();
        assert!(differ.is_empty(), "call {id}: {differ:#?}");
    }
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
fn postgres_stopped_for_30_s_during_calls_loses_nothing() {
    let pg = Postgres::start();
    let files = fault_captures();
    let expected = replayed(&files);
    let rt = rt();
    rt.block_on(async {
        // The calls play at four times real time: about half a minute of traffic.
        let server = common::play(&files, "pg-down", Pace::RealTime { speed: 4.0 }).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = run_config(dir.path(), &pg, &server, "");
        let client = pg.client().await;
        let mut run = spawn_run(&cfg, "pg-down", 1);
        eventually(Duration::from_secs(60), "the first call stored", || async {
            count(&client).await > 0
        })
        .await;
        drop(client);
        // Calls go on while the database is down.
        pg.stop();
        let stopped = Instant::now();
        assert!(
            server.position() < server.total_events(),
            "stopped during the calls"
        );
        eventually(Duration::from_secs(120), "every event played", || async {
            server.position() == server.total_events()
        })
        .await;
        // Down for 30 s in all (the fault itself, not a wait for something to happen).
        if let Some(left) = Duration::from_secs(30).checked_sub(stopped.elapsed()) {
            tokio::time::sleep(left).await;
        }
        let outbox = dir.path().join("outbox.db");
        assert!(queued(&outbox) > 0, "records waited in the outbox");
        pg.resume();
        let client = pg.client().await;
        let want: BTreeSet<String> = expected.keys().cloned().collect();
        eventually(
            Duration::from_secs(90),
            "every call stored after the database came back",
            || async { stored_ids(&client).await == want },
        )
        .await;
        queue_empties(&outbox).await;
        // Each row is the call's complete record.
        assert_rows_are(&client, &expected).await;
        run.kill().unwrap();
    });
}

#[test]
fn a_kill_9_mid_batch_leaves_no_duplicate_and_no_loss() {
    let pg = Postgres::start();
    // Every capture: the first calls play while `run` still asks FreeSWITCH which calls are
    // up at connect, and are seen from their start all the same.
    let files: Vec<PathBuf> = captures();
    let expected = replayed(&files);
    let rt = rt();
    rt.block_on(async {
        let server = common::play(&files, "pg-kill", Pace::Fast).await;
        let dir = tempfile::tempdir().unwrap();
        // Small batches: the drain is mid-way through the backlog for many round trips.
        let cfg = run_config(dir.path(), &pg, &server, "batch_max = 2\n");
        let outbox = dir.path().join("outbox.db");
        // The schema first, then a trigger that makes each row take 0.2 s to write, so the
        // drain is surely mid-way when it is killed.
        let out = switchhook(&["calls", "migrate", "--config", cfg.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        pg.client()
            .await
            .batch_execute(
                "CREATE FUNCTION slow_insert() RETURNS trigger AS $$ \
                 BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER slow_insert BEFORE INSERT ON calls \
                 FOR EACH ROW EXECUTE FUNCTION slow_insert();",
            )
            .await
            .unwrap();
        // Every call queued while the database is down.
        pg.stop();
        let mut first = spawn_run(&cfg, "pg-kill", 1);
        // Every event played and every record queued: killed before that, the calls under
        // way would be cut (the playback goes on where it was for the next connection).
        eventually(Duration::from_secs(60), "every call queued", || async {
            server.position() == server.total_events() && queued(&outbox) >= expected.len() as i64
        })
        .await;
        first.kill().unwrap();
        first.wait().unwrap();
        pg.resume();
        let client = pg.client().await;
        // Killed while draining: some rows written, others not.
        let mut second = spawn_run(&cfg, "pg-kill", 2);
        eventually(Duration::from_secs(60), "the drain under way", || async {
            count(&client).await > 0
        })
        .await;
        second.kill().unwrap(); // SIGKILL
        second.wait().unwrap();
        let written = count(&client).await;
        let left = queued(&outbox);
        assert!(
            left > 0 && written < expected.len() as i64,
            "killed mid-drain: {written} written, {left} queued"
        );
        let _third = spawn_run(&cfg, "pg-kill", 3);
        let want: BTreeSet<String> = expected.keys().cloned().collect();
        eventually(Duration::from_secs(60), "every call stored", || async {
            stored_ids(&client).await == want
        })
        .await;
        queue_empties(&outbox).await;
        assert_eq!(count(&client).await, expected.len() as i64, "no duplicate");
        assert_rows_are(&client, &expected).await;
    });
}

#[test]
fn the_live_page_starts_from_the_stores_latest_calls_and_metrics_show_the_drain() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        // A capture of no full call: the calls the page lists beside its own came from the store.
        let server = common::playback("freeswitch-1.10/00-api-session.esl", "history").await;
        let admin = common::free_addr();
        let cfg = write_config(
            dir.path(),
            &pg,
            &format!(
                "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[admin]\nlisten = \"{admin}\"\n",
                server.addr().port()
            ),
        );
        let files = [
            fixture("freeswitch-1.10/01-inbound-answered.esl"),
            fixture("freeswitch-1.10/02-inbound-missed.esl"),
        ];
        let stored = replayed(&files);
        let mut args = vec![
            "replay",
            "--emit",
            "store",
            "--config",
            cfg.to_str().unwrap(),
        ];
        let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let out = switchhook(&args);
        assert!(out.status.success(), "{}", text(&out));

        let _run = spawn_run(&cfg, "history", 1);
        let http = reqwest::Client::new();
        let get = |path: &str| {
            let http = http.clone();
            let url = format!("http://{admin}{path}");
            async move {
                match http.get(url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        };
        let end = Instant::now() + Duration::from_secs(30);
        let page = loop {
            if let Ok(v) = serde_json::from_str::<Value>(&get("/live.json").await) {
                break v;
            }
            assert!(Instant::now() < end, "the live page never came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let listed: BTreeSet<&str> = page["finished"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        let want: BTreeSet<&str> = stored.keys().map(String::as_str).collect();
        assert!(listed.is_superset(&want), "{page:#}");
        let answered = page["finished"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                stored
                    .get(c["id"].as_str().unwrap())
                    .is_some_and(|s| s["ans"] == 1)
            })
            .unwrap();
        assert_eq!(answered["answered"], true);
        assert!(!answered["segments"].as_array().unwrap().is_empty());
        // The drain reports connected and an empty backlog once it has looked.
        eventually(Duration::from_secs(30), "the drain's metrics", || async {
            let metrics = get("/metrics").await;
            metrics.contains("switchhook_call_store_connected 1")
                && metrics.contains("switchhook_call_store_backlog 0")
        })
        .await;
    });
}

#[test]
fn without_a_call_store_the_commands_say_so_and_a_bad_section_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "[sessions]\ntime_zone = \"UTC\"\n").unwrap();
    let capture = fixture("freeswitch-1.10/01-inbound-answered.esl");
    for args in [
        vec!["calls", "list", "--config", plain.to_str().unwrap()],
        vec![
            "replay",
            "--emit",
            "store",
            "--config",
            plain.to_str().unwrap(),
            capture.to_str().unwrap(),
        ],
    ] {
        let out = switchhook(&args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("[call_store] url"),
            "{}",
            text(&out)
        );
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[call_store]\nurl = \"postgresql://sh:hunter2@127.0.0.1/calls\"\nbatch_max = 0\npassword_env = \"SWITCHHOOK_TEST_NO_SUCH_VAR\"\n",
    )
    .unwrap();
    let out = switchhook(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("call_store.url") && err.contains("call_store.batch_max"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password is never repeated: {err}"
    );
}
