//! Measured on the rig (run only when named: `cargo test --release --test freeswitch --
//! --ignored measure`): the latency from the caller's hangup to the hangup webhook, and what
//! switchhook's subscription costs the PBX in CPU time.
//!
//! Each call comes from the carrier to 1001; the SIM's phone answers, and 0.5 s later the
//! caller hangs up. The clock starts when the SIM has executed the hangup (`uuid_kill`
//! returned) and stops when the receiver has the `call.hangup` request. The PBX's CPU time is
//! `utime + stime` from `/proc/<pid>/stat` over the same calls, with no switchhook, with
//! switchhook subscribed to `ALL`, and with the events call assembly reads, in rotating
//! rounds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::receiver::{Receiver, Reply};
use crate::live::{hangup_webhook, run_config, runtime};
use crate::rig::{wait_until, Rig, Switchhook, SIM_ESL};

/// The events call assembly reads, as `freeswitch-conf/README.md` tells users to subscribe:
/// its `events = [ … ]` list, so the figure is for exactly what the documentation says.
fn needed_events() -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("freeswitch-conf/README.md"),
    )
    .unwrap();
    let start = readme
        .find("events = [")
        .expect("the documented events list")
        + 9;
    let end = start + readme[start..].find(']').unwrap() + 1;
    readme[start..end].to_owned()
}

/// The PBX's CPU time so far, in clock ticks (1/100 s).
fn pbx_cpu_ticks(rig: &Rig) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", rig.pbx_pid())).unwrap();
    // The fields after the command name (which is in parentheses): utime is the 12th, stime
    // the 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn sim_phone_ringing(rig: &Rig) -> Option<String> {
    let rows: Value = serde_json::from_str(&rig.fs_cli(SIM_ESL, "show channels as json")).ok()?;
    rows["rows"].as_array()?.iter().find_map(|r| {
        (r["dest"] == "1001" && r["application"] == "park")
            .then(|| r["uuid"].as_str().unwrap().to_owned())
    })
}

/// One call; returns when the SIM has hung the caller up (its Instant).
fn one_call(rig: &Rig, n: usize) -> (String, Instant) {
    let caller = uuid::Uuid::new_v4().to_string();
    let cli = format!("+4477009{:05}", 10_000 + n);
    let reply = rig.fs_cli(
        SIM_ESL,
        &format!(
            "bgapi originate {{origination_uuid={caller},origination_caller_id_number={cli},\
             ignore_early_media=true}}sofia/carrier/+441610001001@127.0.0.1:5080 &park"
        ),
    );
    assert!(reply.contains("+OK"), "{reply}");
    let mut phone = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            phone = sim_phone_ringing(rig);
            phone.is_some()
        }),
        "the phone did not ring"
    );
    rig.fs_cli(
        SIM_ESL,
        &format!("uuid_transfer {} talk XML sim_talk", phone.unwrap()),
    );
    // Pacing, not synchronisation: half a second of talk.
    std::thread::sleep(Duration::from_millis(500));
    let out = rig.fs_cli(SIM_ESL, &format!("uuid_kill {caller} NORMAL_CLEARING"));
    let hung_up = Instant::now();
    assert!(out.contains("+OK"), "{out}");
    (cli, hung_up)
}

/// One call's hangup-to-webhook time, and the part of it after FreeSWITCH ended the call's
/// last leg (its CDR's `end_uepoch`): event delivery, assembly, the outbox commit and the
/// HTTP request.
struct Latency {
    total: Duration,
    switchhook: Duration,
}

/// The time from the call's last leg ending (FreeSWITCH's own CDRs of its legs, which it
/// writes as the legs are reported) to `arrived`.
fn after_last_leg(rig: &Rig, id: &str, arrived: Instant) -> Duration {
    let arrived_us = (SystemTime::now() - arrived.elapsed())
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let dir = rig.dir().join("pbx/log/json_cdr");
    let mut end_us = 0;
    // The B leg names the A leg as its originator; both files are written within moments.
    assert!(wait_until(Duration::from_secs(10), || {
        let ends: Vec<i64> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| crate::common::freeswitch_cdr_vars(&e.ok()?.path()))
            .filter(|v| {
                v.get("uuid").map(String::as_str) == Some(id)
                    || v.get("originator").map(String::as_str) == Some(id)
            })
            .filter_map(|v| v.get("end_uepoch")?.parse().ok())
            .collect();
        end_us = ends.iter().copied().max().unwrap_or(0);
        ends.len() >= 2
    }));
    Duration::from_micros((arrived_us - end_us).max(0) as u64)
}

/// `calls` calls with `events` (None: no switchhook); returns the PBX's CPU ticks and the
/// hangup-to-webhook latencies.
fn batch(rig: &Rig, events: Option<&str>, calls: usize) -> (u64, Vec<Latency>) {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start(|_, _| Reply::status(200)));
    let run = events.map(|ev| {
        let run = Switchhook::start(&run_config(&hangup_webhook(&receiver)).replacen(
            "[log]",
            &format!("events = {ev}\n[log]"),
            1,
        ));
        assert!(
            run.wait_for("subscribed", 1, Duration::from_secs(30)),
            "{}",
            run.log()
        );
        run
    });
    rig.wait_idle();
    let start = pbx_cpu_ticks(rig);
    let mut latencies = Vec::new();
    for n in 0..calls {
        let (cli, hung_up) = one_call(rig, n);
        if run.is_some() {
            let find = |seen: &[crate::common::receiver::Received]| {
                seen.iter().find_map(|r| {
                    let b: Value = serde_json::from_str(&r.body).ok()?;
                    (b["cdr"]["cliNum"] == cli.as_str())
                        .then(|| (r.at, b["cdr"]["id"].as_str().unwrap_or_default().to_owned()))
                })
            };
            assert!(rt.block_on(receiver.wait_for(Duration::from_secs(30), |s| find(s).is_some())));
            let (at, id) = find(&receiver.seen()).unwrap();
            latencies.push(Latency {
                total: at - hung_up,
                switchhook: after_last_leg(rig, &id, at),
            });
        }
        rig.wait_idle();
    }
    (pbx_cpu_ticks(rig) - start, latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn measure(rig: &Rig) {
    // Rounds of three batches in a rotating order, so that a drift of the machine (or of
    // FreeSWITCH warming up) spreads over all three instead of favouring one.
    let per_batch: usize = std::env::var("SWITCHHOOK_RIG_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rounds = 3;
    let needed = needed_events();
    let configs: [(&str, Option<&str>); 3] = [
        ("no switchhook", None),
        ("subscribed to ALL", Some(r#"["ALL"]"#)),
        (
            "subscribed to the events assembly reads",
            Some(needed.as_str()),
        ),
    ];
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let mut latencies = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        for i in 0..configs.len() {
            let c = (i + round) % configs.len();
            let (ticks, lat) = batch(rig, configs[c].1, per_batch);
            cpu[c].push(ticks as f64 * 10.0 / per_batch as f64);
            latencies[c].extend(lat);
        }
    }
    println!("  {rounds} rounds of {per_batch} calls per configuration");
    for (c, (what, _)) in configs.iter().enumerate() {
        let v = &cpu[c];
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        println!("  PBX CPU {what}: {mean:.1} ms/call (rounds {lo:.1}-{hi:.1})");
    }
    for (c, (what, _)) in configs.iter().enumerate().skip(1) {
        let mut total: Vec<Duration> = latencies[c].iter().map(|l| l.total).collect();
        let mut ours: Vec<Duration> = latencies[c].iter().map(|l| l.switchhook).collect();
        total.sort();
        ours.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  hangup -> webhook, {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} calls); \
             after FreeSWITCH ended the last leg: p50 {:.1} ms, p99 {:.1} ms",
            ms(percentile(&total, 0.5)),
            ms(percentile(&total, 0.99)),
            ms(*total.last().unwrap()),
            total.len(),
            ms(percentile(&ours, 0.5)),
            ms(percentile(&ours, 0.99)),
        );
    }
}
