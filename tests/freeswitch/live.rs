//! Live sessions and webhooks on the real PBX: what `run` sends while real calls happen is what
//! `replay` makes of the capture recorded beside it, and agrees with FreeSWITCH's own CDRs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::receiver::{Received, Receiver, Reply};
use crate::rig::{replay_cdrs, Rig, Switchhook, PBX_ESL};

/// The scenarios placed live, by the driver's ids: every one but 17, which listens on the
/// routing port itself.
const SCENARIOS: &[&str] = &[
    "01", "02", "03", "04", "04b", "05", "06", "07", "08", "08b", "09", "10", "11", "12", "13",
    "13b", "14", "15", "16", "18", "24", "25", "26", "27",
];

/// A multi-thread runtime: the receiver serves while the case blocks on the driver.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `run` on the PBX with JSON logs, an outbox in its directory and `rest` appended.
pub fn run_config(rest: &str) -> String {
    format!(
        "[freeswitch]\nhost = \"127.0.0.1\"\nport = {PBX_ESL}\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\
         [store]\npath = \"{{dir}}/outbox.db\"\n{rest}"
    )
}

/// A `call.hangup` webhook posting JSON to `receiver`'s `/hangup`.
pub fn hangup_webhook(receiver: &Receiver) -> String {
    format!(
        "[egress]\nallow = [\"127.0.0.1\"]\n[[webhooks]]\nname = \"cdr\"\ntriggers = [\"call.hangup\"]\nurl = \"{}/hangup\"\nretries = 3\n",
        receiver.base()
    )
}

/// The CDR of the hangup webhook for call `id`, waiting for it with a deadline.
pub fn hangup_cdr(rt: &tokio::runtime::Runtime, receiver: &Receiver, id: &str) -> Value {
    let find = |seen: &[Received]| {
        seen.iter().find_map(|r| {
            let body: Value = serde_json::from_str(&r.body).ok()?;
            (body["trigger"] == "call.hangup" && body["cdr"]["id"] == id)
                .then(|| body["cdr"].clone())
        })
    };
    rt.block_on(receiver.wait_for(Duration::from_secs(30), |seen| find(seen).is_some()));
    find(&receiver.seen()).unwrap_or_else(|| panic!("no hangup webhook for call {id}"))
}

pub fn live_calls_equal_their_replay_and_freeswitchs_own_cdrs(rig: &Rig) {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start(|_, _| Reply::status(200)));
    let run = Switchhook::start(&run_config(&hangup_webhook(&receiver)));
    assert!(
        run.wait_for("subscribed", 1, Duration::from_secs(30)),
        "run did not subscribe: {}",
        run.log()
    );
    // SWITCHHOOK_RIG_SCENARIOS="03 05 13b" places other driver scenarios instead.
    let chosen: Vec<String> = match std::env::var("SWITCHHOOK_RIG_SCENARIOS") {
        Ok(list) => list.split_whitespace().map(str::to_owned).collect(),
        Err(_) => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    let mut calls = 0;
    for scenario in &chosen {
        let capture = rig.driver(scenario);
        let replayed = replay_cdrs(&capture);
        assert!(!replayed.is_empty(), "{scenario}: replay found no call");
        for cdr in &replayed {
            let id = cdr["id"].as_str().unwrap();
            assert!(
                cdr.get("partial").is_none(),
                "{scenario}: the capture's call {id} is partial"
            );
            let live = hangup_cdr(&rt, &receiver, id);
            same_cdr(scenario, &live, cdr);
            agrees_with_freeswitch(scenario, &capture.with_extension("cdr"), cdr);
            calls += 1;
        }
    }
    // Every hangup webhook is one of the replayed calls: live found no call replay did not.
    let hangups = receiver
        .seen()
        .iter()
        .filter(|r| r.body.contains("\"call.hangup\""))
        .count();
    assert_eq!(hangups, calls, "hangup webhooks");
    println!("  {calls} live calls equal their replay");
}

/// The fields in seconds, which may differ by the rounding of durations 50 ms apart.
const SECONDS: &[&str] = &["dur", "ring", "talk", "hold", "park"];

/// Every field equal; durations within 50 ms (seconds within one, timeline segments within
/// 50 ms).
pub fn same_cdr(scenario: &str, live: &Value, replayed: &Value) {
    let (live, replayed) = (live.as_object().unwrap(), replayed.as_object().unwrap());
    let keys: std::collections::BTreeSet<&String> = live.keys().chain(replayed.keys()).collect();
    for k in keys {
        let (a, b) = (&live.get(k), &replayed.get(k));
        let id = &replayed["id"];
        match (k.as_str(), a, b) {
            (k, Some(a), Some(b)) if SECONDS.contains(&k) => {
                let d = (a.as_i64().unwrap() - b.as_i64().unwrap()).abs();
                assert!(d <= 1, "{scenario} {id}: {k} live {a}, replay {b}");
            }
            ("timeline", Some(a), Some(b)) => same_timeline(scenario, a, b),
            _ => assert_eq!(a, b, "{scenario} {id}: field {k} live vs replay"),
        }
    }
}

fn same_timeline(scenario: &str, live: &Value, replayed: &Value) {
    let (a, b) = (live.as_array().unwrap(), replayed.as_array().unwrap());
    assert_eq!(
        a.len(),
        b.len(),
        "{scenario}: timeline {live} vs {replayed}"
    );
    for (x, y) in a.iter().zip(b) {
        for (k, v) in x.as_object().unwrap() {
            match (v.as_i64(), y[k].as_i64()) {
                (Some(p), Some(q)) => {
                    assert!((p - q).abs() <= 50, "{scenario}: timeline {k} {p} vs {q}")
                }
                _ => assert_eq!(v, &y[k], "{scenario}: timeline {k}"),
            }
        }
    }
}

/// The call's duration, answer, billsec and hold against FreeSWITCH's CDRs of its legs.
pub fn agrees_with_freeswitch(scenario: &str, cdr_dir: &Path, cdr: &Value) {
    let id = cdr["id"].as_str().unwrap();
    let legs: Vec<BTreeMap<String, String>> = std::fs::read_dir(cdr_dir)
        .unwrap_or_else(|e| panic!("{scenario}: {}: {e}", cdr_dir.display()))
        .filter_map(|e| crate::common::freeswitch_cdr_vars(&e.unwrap().path()))
        .collect();
    let first = legs
        .iter()
        .find(|v| v.get("uuid").map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("{scenario}: FreeSWITCH has no CDR of leg {id}"));
    let num = |v: &BTreeMap<String, String>, k: &str| -> i64 {
        v.get(k).and_then(|x| x.parse().ok()).unwrap_or(0)
    };
    let ms = |k: &str| -> i64 {
        cdr["timeline"]
            .as_array()
            .map(|segs| {
                segs.iter()
                    .filter(|s| k.is_empty() || s["kind"] == k)
                    .map(|s| {
                        s["end_ms"].as_i64().unwrap_or(0) - s["start_ms"].as_i64().unwrap_or(0)
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    // duration: the first leg's life, to the second as FreeSWITCH counts it.
    let fs_ms = (num(first, "end_uepoch") - num(first, "start_uepoch")) / 1000;
    assert!(
        (ms("") - fs_ms).abs() <= 500,
        "{scenario} {id}: duration {} ms, FreeSWITCH {fs_ms} ms",
        ms("")
    );
    assert_eq!(
        cdr["answer"].is_string(),
        num(first, "answer_uepoch") > 0,
        "{scenario} {id}: answered, FreeSWITCH answer_uepoch {:?}",
        first.get("answer_uepoch")
    );
    // billsec: the first leg's answer to its end, in whole seconds as FreeSWITCH counts them.
    if let (Some(answer), Some(end)) = (cdr["answer"].as_str(), cdr["end"].as_str()) {
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_second();
        let ours = at(end) - at(answer);
        let fs_bill = num(first, "billsec");
        assert!(
            (ours - fs_bill).abs() <= 1,
            "{scenario} {id}: billed {ours} s, FreeSWITCH billsec {fs_bill}"
        );
    }
    // hold: FreeSWITCH accumulates it on the leg that held.
    let fs_hold = legs
        .iter()
        .map(|v| num(v, "hold_accum_ms"))
        .max()
        .unwrap_or(0);
    assert!(
        (ms("hold") - fs_hold).abs() <= 500,
        "{scenario} {id}: hold {} ms, FreeSWITCH {fs_hold} ms",
        ms("hold")
    );
}
