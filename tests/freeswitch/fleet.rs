//! Two `run` instances on the real PBX, both publishing to one NATS JetStream stream (a real
//! Debian `nats-server`): each moment lands in the stream once, and when one is killed in
//! the middle of a call the other carries that call on to its end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::nats::{messages, Nats, Stored};
use crate::failures::call_in_progress;
use crate::live::{run_config, runtime};
use crate::rig::{wait_until, Rig, Switchhook, SIM_ESL};

const STREAM: &str = "SWITCHHOOK";

/// The message ids `replay` makes of a capture: each moment's and each CDR's.
fn replayed_ids(rt: &tokio::runtime::Runtime, capture: &Path) -> BTreeSet<String> {
    let ids = std::cell::RefCell::new(BTreeSet::new());
    let progress = switchhook::replay::Progress::hidden();
    rt.block_on(switchhook::replay::records_and_moments(
        capture,
        Arc::new(switchhook::session::Settings::default()),
        &progress,
        |r| {
            ids.borrow_mut().insert(switchhook::bus::cdr_id(&r.cdr.id));
        },
        |m| {
            ids.borrow_mut()
                .insert(switchhook::bus::moment_id(&m.call_id, m.trigger));
        },
    ))
    .unwrap();
    ids.into_inner()
}

/// The stream's messages, waiting (with a deadline) until `done` holds for them.
fn stream_until(
    rt: &tokio::runtime::Runtime,
    nats: &Nats,
    what: &str,
    done: impl Fn(&[Stored]) -> bool,
) -> Vec<Stored> {
    let js = rt.block_on(nats.jetstream());
    let ok = wait_until(Duration::from_secs(60), || {
        done(&rt.block_on(messages(&js, STREAM)))
    });
    let all = rt.block_on(messages(&js, STREAM));
    assert!(ok, "{what}: {} messages", all.len());
    all
}

pub fn two_runs_on_the_real_pbx_publish_each_moment_once_and_one_may_die(rig: &Rig) {
    let rt = runtime();
    let nats = Nats::start();
    let config = run_config(&nats.section("webhooks = \"workers\"\n"));
    let mut first = Switchhook::start(&config);
    let second = Switchhook::start(&config);
    for run in [&first, &second] {
        assert!(
            run.wait_for("subscribed", 1, Duration::from_secs(30)),
            "{}",
            run.log()
        );
    }

    // A call ringing a phone while both follow the PBX; the first dies during it.
    call_in_progress(rig, "+447700900701", "+441610001001");
    let received = stream_until(&rt, &nats, "the call's call.received", |all| {
        all.iter().any(|m| m.subject.ends_with(".call.received"))
    });
    let call = received
        .iter()
        .find(|m| m.subject.ends_with(".call.received"))
        .map(|m| m.body["callId"].as_str().unwrap().to_owned())
        .unwrap();
    first.kill();
    let _ = rig.fs_cli(SIM_ESL, "hupall NORMAL_CLEARING");
    let cdr = switchhook::bus::cdr_id(&call);
    stream_until(
        &rt,
        &nats,
        "the killed run's call ended by the other",
        |all| all.iter().any(|m| m.id == cdr),
    );

    // A whole call after it: exactly what its replay makes, once each.
    let capture = rig.driver("01");
    let want = replayed_ids(&rt, &capture);
    let all = stream_until(&rt, &nats, "every message of the next call", |all| {
        let got: BTreeSet<&str> = all.iter().map(|m| m.id.as_str()).collect();
        want.iter().all(|id| got.contains(id.as_str()))
    });

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &all {
        *seen.entry(m.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "in the stream more than once: {twice:?}");
    let of_call: Vec<&Stored> = all.iter().filter(|m| m.body["callId"] == call).collect();
    for trigger in ["call.received", "call.hangup"] {
        assert!(
            of_call
                .iter()
                .any(|m| m.subject.ends_with(&format!(".{trigger}"))),
            "{trigger} of the call the first run died in: {of_call:?}"
        );
    }
    let next: BTreeSet<String> = all
        .iter()
        .filter(|m| m.body["callId"] != call)
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(next, want, "the next call's messages are its replay's");
}
