//! Call store benchmarks (`cargo bench --bench call_store`), everything real: a PostgreSQL
//! cluster of the bench's own (Debian's server, a temporary directory, a free loopback port)
//! and the SQLite outbox in a temporary directory.
//!
//! * writes: 20 000 distinct call records (the real records of every bundled capture, given
//!   fresh ids) written in batches of 1, 50 and 500; calls/s;
//! * cost to event processing: every bundled capture parsed and assembled, 20 times over,
//!   with the call store off (records dropped) and on (each record's parts copied and handed
//!   to the outbox queue, whose thread makes the row and commits it), alternated five times;
//!   events/s;
//! * a row: what making one record's row and its JSON text costs the queue's thread.
//!
//! Prints `SUMMARY` lines; the README quotes them.

#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchhook::call_store::{CallStoreConfig, Database, RowSource};
use switchhook::relay::Queue;
use switchhook::session::Settings;

fn captures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/freeswitch-1.10");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".esl") && !name.ends_with(".json.esl")
        })
        .collect();
    files.sort();
    files
}

async fn rows(files: &[PathBuf]) -> Vec<Value> {
    let mut out = Vec::new();
    for f in files {
        for rec in switchhook::replay::records(f, Arc::new(Settings::default()))
            .await
            .unwrap()
        {
            out.push(switchhook::call_store::row(&rec));
        }
    }
    out
}

/// `n` rows made from `real`, each with a fresh id.
fn distinct(real: &[Value], n: usize, round: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = real[i % real.len()].clone();
            r["id"] = format!("bench-{round}-{i}").into();
            r
        })
        .collect()
}

async fn writes(cfg: &CallStoreConfig, real: &[Value]) {
    const N: usize = 20_000;
    let mut db = Database::connect(cfg).await.unwrap();
    for (round, batch) in [1usize, 50, 500].into_iter().enumerate() {
        let all = distinct(real, N, round);
        let t = Instant::now();
        for chunk in all.chunks(batch) {
            db.write(chunk).await.unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "SUMMARY call store writes: {N} calls in batches of {batch}: {s:.2} s, {:.0} calls/s",
            N as f64 / s
        );
    }
}

async fn assemble_all(files: &[PathBuf], queue: Option<&Queue<RowSource>>) -> (u64, usize) {
    let mut events = 0;
    let mut records = 0;
    for f in files {
        let report = switchhook::replay::assemble(
            f,
            Arc::new(Settings::default()),
            &switchhook::replay::Progress::hidden(),
            |rec| {
                records += 1;
                if let Some(q) = queue {
                    q.push(RowSource::new(&rec));
                }
            },
        )
        .await
        .unwrap();
        events += report.events;
    }
    (events, records)
}

/// What making rows costs alone, per record.
async fn row_cost(files: &[PathBuf]) {
    let mut records = Vec::new();
    for f in files {
        records.extend(
            switchhook::replay::records(f, Arc::new(Settings::default()))
                .await
                .unwrap(),
        );
    }
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..200 {
        for r in &records {
            bytes += switchhook::call_store::row(r).to_string().len();
        }
    }
    let n = 200 * records.len();
    let per_row = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    let mut legs = 0;
    for _ in 0..200 {
        for r in &records {
            legs += std::hint::black_box(switchhook::call_store::RowSource::new(r))
                .id()
                .len();
        }
    }
    let per_copy = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    assert!(legs > 0);
    println!(
        "SUMMARY call store row: {per_row:.1} us per record on the queue's thread ({} bytes of JSON on average); the event loop's copy {per_copy:.2} us",
        bytes / n
    );
}

async fn cost(files: &[PathBuf]) {
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut queue = switchhook::call_store::open_queue(
        &dir.path().join("outbox.db"),
        Arc::new(tokio::sync::Notify::new()),
    )
    .unwrap();
    let mut best_off = Duration::MAX;
    let mut best_on = Duration::MAX;
    let mut events = 0;
    let mut records = 0;
    for _ in 0..5 {
        for on in [false, true] {
            let t = Instant::now();
            for _ in 0..ROUNDS {
                let (e, r) = assemble_all(files, on.then_some(&queue)).await;
                events = e;
                records = r;
            }
            let d = t.elapsed();
            if on {
                best_on = best_on.min(d);
            } else {
                best_off = best_off.min(d);
            }
        }
    }
    queue.close();
    let rate = |d: Duration| (events as f64 * ROUNDS as f64) / d.as_secs_f64();
    println!(
        "SUMMARY call store cost: {} captures x {ROUNDS} ({} events, {} records each round): off {:.0} events/s, on {:.0} events/s ({:+.1}%)",
        files.len(),
        events,
        records,
        rate(best_off),
        rate(best_on),
        (rate(best_on) / rate(best_off) - 1.0) * 100.0
    );
}

fn main() {
    // Before any thread: the password reaches the call store from the environment.
    std::env::set_var(postgres::PASSWORD_ENV, postgres::PASSWORD);
    let pg = postgres::Postgres::start();
    let cfg = CallStoreConfig {
        url: pg.url(),
        password_env: postgres::PASSWORD_ENV.into(),
        ..CallStoreConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let files = captures();
        let real = rows(&files).await;
        writes(&cfg, &real).await;
        row_cost(&files).await;
        cost(&files).await;
    });
}
