//! Golden tests: every real capture through call assembly, each call's CDR checked against
//! the timings the capture driver induced (fixtures README, within 0.5 s) and against
//! FreeSWITCH's own per-leg CDRs recorded beside it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::fixture;
use proptest::prelude::*;
use serde_json::Value;
use switchhook::esl::Event;
use switchhook::fake_freeswitch::load_capture;
use switchhook::replay;
use switchhook::session::{CallRecord, SessionTracker, Settings};

fn settings() -> Arc<Settings> {
    Arc::new(Settings::default())
}

async fn calls(name: &str, ext: &str) -> Vec<CallRecord> {
    let path = fixture(&format!("freeswitch-1.10/{name}{ext}"));
    replay::records(&path, settings()).await.expect("capture")
}

/// What the driver induced, per field. Seconds are checked within 0.5 s; strings exactly.
#[derive(Default, Clone)]
struct Want {
    fields: Vec<(&'static str, Value)>,
}

impl Want {
    fn s(mut self, k: &'static str, v: &str) -> Self {
        self.fields.push((k, Value::from(v)));
        self
    }
    fn n(mut self, k: &'static str, v: f64) -> Self {
        self.fields.push((k, Value::from(v)));
        self
    }
}

fn w() -> Want {
    Want::default()
}

fn check(scenario: &str, rec: &CallRecord, want: &Want) {
    let cdr = serde_json::to_value(&rec.cdr).unwrap();
    let ms = |k: &str| match k {
        "dur" => Some(rec.ms.dur),
        "ring" => Some(rec.ms.ring),
        "talk" => Some(rec.ms.talk),
        "hold" => Some(rec.ms.hold),
        "park" => Some(rec.ms.park),
        _ => None,
    };
    for (k, v) in &want.fields {
        if let Some(got_ms) = ms(k) {
            let want_s = v.as_f64().unwrap();
            let got = got_ms as f64 / 1000.0;
            assert!(
                (got - want_s).abs() <= 0.5,
                "{scenario}: {k} = {got} s, induced {want_s} s\n{cdr:#}"
            );
        } else if let Some(flat) = k.strip_prefix("flat:") {
            assert_eq!(rec.flat.get(flat), Some(v), "{scenario}: {k}\n{cdr:#}");
        } else if v.is_f64() {
            let got = cdr.get(*k).and_then(Value::as_f64);
            assert_eq!(got, v.as_f64(), "{scenario}: {k}\n{cdr:#}");
        } else {
            assert_eq!(cdr.get(*k), Some(v), "{scenario}: {k}\n{cdr:#}");
        }
    }
    // Always: a complete record whose timeline partitions the call.
    assert_eq!(rec.cdr.partial, None, "{scenario}");
    assert_eq!(rec.cdr.timelineError, None, "{scenario}");
    let sum: i64 = rec.cdr.timeline.iter().map(|s| s.end_ms - s.start_ms).sum();
    assert_eq!(
        sum, rec.ms.dur,
        "{scenario}: segments must add up to the duration"
    );
    assert!(rec.cdr.timeline.iter().all(|s| s.end_ms > s.start_ms));
}

/// Compares with FreeSWITCH's own CDR of the call's first leg (`a_<id>.cdr.json`).
fn check_against_freeswitch(scenario: &str, rec: &CallRecord) {
    let dir = fixture(&format!("freeswitch-1.10/{scenario}.cdr"));
    let a = dir.join(format!("a_{}.cdr.json", rec.cdr.id));
    let fs = common::freeswitch_cdr_vars(&a)
        .unwrap_or_else(|| panic!("{scenario}: no A-leg CDR {}", a.display()));
    let num = |v: &BTreeMap<String, String>, k: &str| -> i64 {
        v.get(k).and_then(|x| x.parse().ok()).unwrap_or(0)
    };
    let start = num(&fs, "start_uepoch");
    let end = num(&fs, "end_uepoch");
    let answer = num(&fs, "answer_uepoch");
    let dur_ms = (end - start) / 1000;
    assert!(
        (rec.ms.dur - dur_ms).abs() <= 500,
        "{scenario}: dur {} ms, FreeSWITCH {} ms",
        rec.ms.dur,
        dur_ms
    );
    let ours = rec.cdr.answer.is_some();
    assert_eq!(ours, answer > 0, "{scenario}: answered");
    // Hold: FreeSWITCH accumulates it on the leg that held.
    let mut fs_hold = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        if let Some(v) = common::freeswitch_cdr_vars(&entry.unwrap().path()) {
            fs_hold = fs_hold.max(num(&v, "hold_accum_ms"));
        }
    }
    assert!(
        (rec.ms.hold - fs_hold).abs() <= 500,
        "{scenario}: hold {} ms, FreeSWITCH {} ms",
        rec.ms.hold,
        fs_hold
    );
}

fn golden() -> Vec<(&'static str, Vec<Want>)> {
    let inbound = |cli: &str, ddi: &str| {
        w().s("cliNum", cli)
            .s("ddiNum", ddi)
            .n("dir", 2.0)
            .n("type", 2.0)
            .s("cliCtry", "GB")
            .s("cliLoc", "United Kingdom")
    };
    vec![
        (
            "01-inbound-answered",
            vec![inbound("+447700900123", "+441610001001")
                .n("ring", 3.0)
                .n("talk", 5.0)
                .n("ans", 1.0)
                .n("lost", 0.0)
                .n("short", 1.0)
                .s("cause", "NORMAL_CLEARING")
                .s("fRngDevNum", "1001")
                .s("ansDevNum", "1001")
                .s("ansUsrNum", "1001")
                .s("ansUsrName", "Alice Smith")
                .s("flat:connected", "1")
                .s("flat:cli", "+447700900123")],
        ),
        (
            "02-inbound-missed",
            vec![inbound("+447700900456", "+441610001002")
                .n("ring", 6.0)
                .n("lost", 1.0)
                .n("aban", 0.0)
                .n("ans", 0.0)
                .s("cause", "ORIGINATOR_CANCEL")
                .s("fRngDevNum", "1002")
                .s("flat:connected", "0")
                .s("outcome", "abandoned_ringing")],
        ),
        (
            "03-abandoned-short",
            vec![inbound("+447700900789", "+441610001001")
                .n("ring", 1.0)
                .n("lost", 1.0)
                .n("aban", 1.0)
                .s("outcome", "abandoned_ringing")],
        ),
        (
            "04-hold-unhold",
            vec![w()
                .n("ring", 2.0)
                .n("talk", 6.0)
                .n("hold", 3.0)
                .n("ans", 1.0)],
        ),
        (
            "04b-hold-uuid_hold",
            vec![w().n("ring", 2.0).n("talk", 6.0).n("hold", 3.0)],
        ),
        (
            "05-valet-park",
            vec![w()
                .n("ring", 2.0)
                .n("talk", 7.1)
                .n("park", 3.0)
                .s("ansDevNum", "1001")
                .s("lAnsDevNum", "1002")
                .n("lostinPark", 0.0)],
        ),
        (
            "06-ringgroup-simultaneous",
            vec![inbound("+447700900321", "+441610002001")
                .n("ring", 3.0)
                .n("talk", 4.0)
                .s("ansDevNum", "1002")
                .s("ansUsrName", "Bob Jones")
                .s("fRngGroupName", "2001")
                .s("ansGroupName", "2001")],
        ),
        (
            "07-ringgroup-sequential",
            // The 5 s leg_timeout ran 5.94 s (timeline file: 1001 ringing at +1.054 s, 1002
            // at +6.997 s), then 1002 rang 2.0 s.
            vec![w()
                .n("ring", 7.94)
                .n("talk", 4.0)
                .s("fRngDevNum", "1001")
                .s("lRngDevNum", "1002")
                .s("ansDevNum", "1002")
                .s("fRngGroupName", "2002")],
        ),
        (
            "08-queue-answered",
            vec![w()
                .n("ring", 3.0)
                .n("talk", 4.0)
                .s("ansAgtNum", "1003")
                .s("fRngAgtNum", "1003")
                .s("ansGroupName", "support@default")],
        ),
        (
            "08b-queue-abandoned",
            vec![w()
                .n("dur", 6.0)
                .n("lost", 1.0)
                .n("ans", 0.0)
                .s("fRngAgtNum", "1004")
                .s("outcome", "abandoned_in_queue")],
        ),
        (
            "09-ivr-dtmf-transfer",
            vec![inbound("+447700900900", "+441610000000")
                .n("ring", 2.0)
                .n("talk", 4.0)
                .s("ansDevNum", "1003")
                .s("flat:department-selection", "2")
                .s("outcome", "short")],
        ),
        (
            "10-voicemail",
            // Answered by voicemail (`answer` is set), not by a person.
            vec![w()
                .n("ring", 11.9)
                .n("lost", 1.0)
                .n("aban", 0.0)
                .n("ans", 0.0)
                .s("flat:voicemail", "1")
                .s("outcome", "voicemail")],
        ),
        (
            "11-outbound-carrier",
            vec![w()
                .n("dir", 3.0)
                .n("ring", 4.0)
                .n("talk", 5.0)
                .s("cliNum", "+441610000000")
                .s("cliName", "Acme Widgets Ltd")
                .s("ddiNum", "+14155550100")
                .n("lost", 0.0)
                .s("outcome", "short")],
        ),
        (
            "12-click-to-call",
            vec![w()
                .n("dir", 3.0)
                .n("ring", 5.0)
                .n("talk", 4.0)
                .s("cliNum", "+441610000000")
                .s("ddiNum", "+14155550100")
                .s("ansDevNum", "1001")],
        ),
        (
            "13-blind-transfer-refer",
            vec![w()
                .n("ring", 4.0)
                .n("talk", 7.1)
                .s("ansDevNum", "1001")
                .s("lAnsDevNum", "1003")],
        ),
        (
            "13b-blind-transfer-uuid_transfer",
            vec![w()
                .n("ring", 4.0)
                .n("talk", 7.1)
                .s("ansDevNum", "1001")
                .s("lAnsDevNum", "1003")],
        ),
        (
            "14-attended-transfer-refer-replaces",
            vec![w()
                .n("ring", 2.0)
                .n("talk", 8.0)
                .n("hold", 6.1)
                .s("ansDevNum", "1001")
                .s("lAnsDevNum", "1003")],
        ),
        (
            "15-recorded-call",
            vec![w().n("ring", 2.0).n("talk", 5.0).n("hasRec", 1.0)],
        ),
        (
            "17-outbound-socket",
            vec![w().n("ring", 2.0).n("talk", 4.0).s("ansDevNum", "1002")],
        ),
        (
            "18-rejected-busy-voicemail",
            // Busy, then voicemail: never abandoned while ringing.
            vec![w()
                .n("ring", 2.0)
                .n("lost", 1.0)
                .n("aban", 0.0)
                .s("fRngDevNum", "1003")
                .s("outcome", "voicemail")],
        ),
        (
            "19-routing-crm-ack",
            vec![w().n("ring", 2.0).n("talk", 3.0).s("ansDevNum", "1003")],
        ),
        (
            "20-routing-pin-digits",
            vec![w().n("ring", 2.0).n("talk", 3.0).s("ansDevNum", "1004")],
        ),
        // A PIN menu, then voicemail: no phone ever rang.
        (
            "21-routing-pin-timeout",
            vec![w().n("lost", 1.0).n("aban", 0.0).s("outcome", "voicemail")],
        ),
        (
            "22-routing-caller-hangup",
            vec![w()
                .n("dur", 1.5)
                .n("lost", 1.0)
                .s("cause", "ORIGINATOR_CANCEL")],
        ),
        (
            "23-routing-api-linger",
            vec![w().n("ring", 2.0).n("talk", 3.0).s("ansDevNum", "1002")],
        ),
        (
            // Withheld: flagged, and the number not passed on by default.
            "24-inbound-withheld",
            vec![w()
                .n("dir", 2.0)
                .s("ddiNum", "+441610001002")
                .n("ring", 2.0)
                .n("talk", 3.0)
                .s("ansUsrNum", "1002")
                .s("cliNum", "")
                .n("cliWithheld", 1.0)
                .s("flat:cli", "")
                .s("flat:cli-withheld", "1")],
        ),
        (
            "25-ivr-direct-extension",
            vec![inbound("+447700900250", "+441610000000")
                .n("ring", 2.06)
                .n("talk", 2.0)
                .s("fRngUsrNum", "1003")
                .s("lRngUsrNum", "1003")
                .s("ansUsrNum", "1003")
                .s("flat:department-selection", "1003")],
        ),
        (
            "26-outbound-answered",
            vec![w()
                .n("dir", 3.0)
                .n("type", 2.0)
                .n("ring", 3.0)
                .n("talk", 4.0)
                .n("ans", 1.0)
                .n("lost", 0.0)
                .s("cliNum", "+441610000000")
                .s("ddiNum", "+14155550100")
                .s("outcome", "short")],
        ),
        (
            "27-blind-transfer-1003-to-1004",
            vec![inbound("+447700900280", "+441610001003")
                .n("ring", 4.2)
                .n("talk", 5.0)
                .s("fRngUsrNum", "1003")
                .s("lRngUsrNum", "1004")
                .s("ansUsrNum", "1003")
                .s("lAnsUsrNum", "1004")
                .s("outcome", "short")],
        ),
    ]
}

#[tokio::test]
async fn every_single_call_capture_matches_its_induced_timings_and_freeswitchs_cdrs() {
    for (scenario, wants) in golden() {
        for ext in [".esl", ".json.esl"] {
            let recs = calls(scenario, ext).await;
            assert_eq!(
                recs.len(),
                wants.len(),
                "{scenario}{ext}: one record per call"
            );
            for (rec, want) in recs.iter().zip(&wants) {
                check(&format!("{scenario}{ext}"), rec, want);
                check_against_freeswitch(scenario, rec);
            }
        }
    }
}

#[tokio::test]
async fn the_concurrent_capture_yields_five_calls_like_the_single_ones() {
    let recs = calls("16-concurrent-mix", ".esl").await;
    assert_eq!(recs.len(), 5);
    let by_cli: BTreeMap<&str, &CallRecord> =
        recs.iter().map(|r| (r.cdr.cliNum.as_str(), r)).collect();
    let want: Vec<(&str, Want)> = vec![
        (
            "+447700900161",
            w().n("ring", 2.0).n("talk", 12.0).s("ansDevNum", "1001"),
        ),
        (
            "+447700900162",
            w().n("ring", 3.0)
                .n("talk", 8.0)
                .s("ansDevNum", "1002")
                .s("fRngGroupName", "2001"),
        ),
        (
            "+447700900163",
            w().n("talk", 6.0)
                .s("ansAgtNum", "1004")
                .s("ansGroupName", "support@default"),
        ),
        (
            // An outbound call: the caller ID the far end saw, not the extension.
            "+441610000000",
            w().n("dir", 3.0)
                .n("ring", 2.0)
                .n("talk", 7.0)
                .s("ddiNum", "+442079460000"),
        ),
        (
            "+447700900165",
            w().n("ring", 4.0).n("lost", 1.0).n("aban", 1.0),
        ),
    ];
    for (cli, want) in &want {
        let rec = by_cli
            .get(cli)
            .unwrap_or_else(|| panic!("no call from {cli}"));
        check("16", rec, want);
        check_against_freeswitch("16-concurrent-mix", rec);
    }
    // The json twin gives the same records.
    let json = calls("16-concurrent-mix", ".json.esl").await;
    let a: Vec<_> = recs.iter().map(|r| &r.cdr).collect();
    let b: Vec<_> = json.iter().map(|r| &r.cdr).collect();
    assert_eq!(a, b);
}

fn events(name: &str) -> Vec<Event> {
    load_capture(&fixture(&format!("freeswitch-1.10/{name}.esl")))
        .unwrap()
        .into_iter()
        .map(|f| f.event)
        .collect()
}

fn assemble(events: impl IntoIterator<Item = Event>) -> BTreeMap<String, serde_json::Value> {
    let mut t = SessionTracker::new(settings());
    let mut out = BTreeMap::new();
    for ev in events {
        for r in t.on_event(&ev) {
            out.insert(r.cdr.id.clone(), serde_json::to_value(&r.cdr).unwrap());
        }
    }
    assert_eq!(t.active(), 0, "every call ended");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Several captured calls' events, randomly interleaved (each call's own order kept),
    /// produce exactly the CDRs each capture gives alone.
    #[test]
    fn random_interleavings_give_the_same_cdrs(seed in any::<u64>()) {
        let names = ["01-inbound-answered", "05-valet-park", "08-queue-answered",
                     "12-click-to-call", "14-attended-transfer-refer-replaces"];
        let streams: Vec<Vec<Event>> = names.iter().map(|n| events(n)).collect();
        let mut want = BTreeMap::new();
        for s in &streams {
            want.extend(assemble(s.clone()));
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut cursors = vec![0usize; streams.len()];
        let mut mixed = Vec::new();
        loop {
            let open: Vec<usize> = (0..streams.len()).filter(|&i| cursors[i] < streams[i].len()).collect();
            if open.is_empty() { break; }
            let i = open[rng.usize(..open.len())];
            let take = rng.usize(1..=8).min(streams[i].len() - cursors[i]);
            mixed.extend(streams[i][cursors[i]..cursors[i] + take].iter().cloned());
            cursors[i] += take;
        }
        prop_assert_eq!(assemble(mixed), want);
    }
}

#[test]
fn a_gap_marks_the_call_partial_and_freeswitchs_figures_complete_it() {
    // Events 30..60 of scenario 01 (the answer and the bridge among them) are lost.
    let all = events("01-inbound-answered");
    let mut t = SessionTracker::new(settings());
    let mut recs = Vec::new();
    for (i, ev) in all.iter().enumerate() {
        if i == 30 {
            t.on_gap("Disconnected(\"test\")");
        }
        if (30..60).contains(&i) {
            continue;
        }
        recs.extend(t.on_event(ev));
    }
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert!(r.cdr.partial.as_deref().unwrap().contains("test"));
    assert!(r.cdr.timeline.iter().any(|s| s.kind.as_str() == "unknown"));
    assert!(r.cdr.timelineError.is_none());
    // Reconciled from billmsec / answer_uepoch of the hangup-complete events.
    assert!((r.ms.talk - 5_000).abs() <= 500, "talk {}", r.ms.talk);
    assert!(r.cdr.answer.is_some());
    assert_eq!(r.cdr.ans, Some(1));
}

#[test]
fn resync_ends_calls_that_finished_during_the_outage_and_expiry_bounds_memory() {
    let all = events("16-concurrent-mix");
    let mut t = SessionTracker::new(settings());
    for ev in &all[..150] {
        t.on_event(ev);
    }
    let active = t.active();
    assert!(active > 0);
    t.on_gap("disconnected");
    // FreeSWITCH reports no channels: every call ended while we were away.
    let recs = t.on_resync(&[]);
    assert_eq!(recs.len(), active);
    assert!(recs.iter().all(|r| r.cdr.partial.is_some()));
    assert_eq!(t.active(), 0);
    // Stragglers of finished calls do not reopen them.
    for ev in &all[150..] {
        for r in t.on_event(ev) {
            assert!(
                !recs.iter().any(|o| o.cdr.id == r.cdr.id),
                "reopened {}",
                r.cdr.id
            );
        }
    }

    // A call whose events stop is expired on the events' own clock (HEARTBEAT).
    let mut t = SessionTracker::new(settings());
    let first = events("01-inbound-answered");
    for ev in &first[..40] {
        t.on_event(ev);
    }
    assert_eq!(t.active(), 1);
    // Five hours on, HEARTBEATs keep coming every 20 s: the clock takes the jump once three
    // agree (one alone would be an outlier), and the call has expired.
    let later = first[39].timestamp_us().unwrap() + 5 * 3600 * 1_000_000;
    assert!(t.on_event(&heartbeat(later)).is_empty());
    assert!(t.on_event(&heartbeat(later + 20_000_000)).is_empty());
    let recs = t.on_event(&heartbeat(later + 40_000_000));
    assert_one_expired(&recs, &t);
}

#[tokio::test]
async fn seed_fields_are_all_present_with_their_names() {
    let recs = calls("01-inbound-answered", ".esl").await;
    let v = serde_json::to_value(&recs[0].cdr).unwrap();
    for k in [
        "id",
        "dType",
        "sVer",
        "pbxId",
        "pbxName",
        "tz",
        "start",
        "answer",
        "end",
        "dur",
        "ring",
        "talk",
        "hold",
        "park",
        "lost",
        "lostinPark",
        "aban",
        "ans",
        "short",
        "cause",
        "dir",
        "type",
        "t2t",
        "cliNum",
        "cliName",
        "cliLoc",
        "cliCtry",
        "ddiNum",
        "fRngDevNum",
        "lRngDevNum",
        "ansDevNum",
        "lAnsDevNum",
        "fRngUsrNum",
        "fRngUsrName",
        "ansUsrName",
        "hasRec",
        "rate",
        "recordingIds",
        "directoryMatches",
        "tags",
        "timeline",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v:#}");
    }
    assert_eq!(v["dType"], "CloudSessionCdr");
    assert_eq!(v["pbxName"], "pbx1.acme.example");
    assert_eq!(v["start"], "2026-11-23T15:45:06+00:00");
}

/// The routing step's decision reaches the CDR through the channel variables it set, in plain
/// and json captures alike (19-22: ACK, menu ACK, menu timeout, caller gone mid-step).
#[tokio::test]
async fn the_routing_decision_is_on_the_cdr() {
    let want: [(&str, &[(&str, &str)]); 4] = [
        (
            "19-routing-crm-ack",
            &[
                ("routeStep", "crm"),
                ("routeStatus", "ACK"),
                ("routeDest", "1003"),
                ("routeCallerName", "CRM Jo Bloggs (+447700900190)"),
            ],
        ),
        (
            "20-routing-pin-digits",
            &[
                ("routeStep", "pin"),
                ("routeStatus", "ACK"),
                ("routeDest", "1004"),
                ("routeReason", "pin"),
            ],
        ),
        (
            "21-routing-pin-timeout",
            &[
                ("routeStep", "pin"),
                ("routeStatus", "TIMEOUT"),
                ("routeReason", "no digits"),
            ],
        ),
        ("22-routing-caller-hangup", &[("routeStep", "crm")]),
    ];
    for (name, fields) in want {
        for ext in [".esl", ".json.esl"] {
            let recs = calls(name, ext).await;
            assert_eq!(recs.len(), 1, "{name}{ext}");
            let v = serde_json::to_value(&recs[0].cdr).unwrap();
            for (k, val) in fields {
                assert_eq!(v[*k], Value::from(*val), "{name}{ext} {k}");
            }
            let decided = fields.iter().any(|(k, _)| *k == "routeStatus");
            assert_eq!(v.get("routeStatus").is_some(), decided, "{name}{ext}");
        }
    }
}

/// FreeSWITCH's `show channels as json` after `events`, through the client's own parser.
fn channels_after(events: &[Event]) -> Vec<switchhook::esl::ChannelSnapshot> {
    let mut table = switchhook::fake_freeswitch::ChannelTable::default();
    for ev in events {
        table.track(ev);
    }
    switchhook::esl::parse_channels(&table.show_json())
}

/// switchhook restarts mid-capture, at 49 points of each capture (`SWITCHHOOK_RESTART_CUTS=400`
/// with `--release` cuts at every event): a new tracker adopts the calls in progress from `show
/// channels` and follows them from the next event. Every trigger it fires for them is one the
/// uninterrupted tracker fired for the same call id (so the outbox's `webhook-id` recognises
/// it; an answered call is never reported missed), each such call still gets its hangup, and
/// its partial CDR keeps the call's id and answer.
#[test]
fn a_restart_mid_call_adopts_the_calls_in_progress_and_fires_what_they_show_once() {
    let cuts: usize = std::env::var("SWITCHHOOK_RESTART_CUTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50);
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut lost_before = Vec::new();
    let mut recovered = 0;
    // Every scenario: ring groups, queues, IVR, voicemail, park, transfers, routing steps.
    for &(name, _) in common::SCENARIOS {
        let all = events(name);
        let whole = {
            let mut t = SessionTracker::new(settings()).with_moments();
            let mut moments = Vec::new();
            let mut recs = Vec::new();
            // With the index of the event that fired each moment.
            let mut at = Vec::new();
            for (i, ev) in all.iter().enumerate() {
                recs.extend(t.on_event(ev));
                for m in t.take_moments() {
                    at.push(i);
                    moments.push(m);
                }
            }
            (moments, recs, at)
        };
        let fired: std::collections::HashSet<(String, String)> = whole
            .0
            .iter()
            .map(|m| (m.call_id.clone(), m.trigger.name().to_owned()))
            .collect();
        for cut in (1..cuts).map(|k| k * all.len() / cuts) {
            let alive = channels_after(&all[..cut]);
            if alive.is_empty() {
                continue;
            }
            let mut t = SessionTracker::new(settings()).with_moments();
            let mut recs = t.on_resync(&alive);
            assert!(recs.is_empty(), "{name}@{cut}: nothing ends at adoption");
            let mut moments = t.take_moments();
            for ev in &all[cut..] {
                recs.extend(t.on_event(ev));
                moments.extend(t.take_moments());
            }
            let after: std::collections::HashSet<(String, String)> = moments
                .iter()
                .map(|m| (m.call_id.clone(), m.trigger.name().to_owned()))
                .collect();
            for key in &after {
                if !fired.contains(key) {
                    wrong.push(format!("{name}@{cut}: {key:?} is new"));
                }
            }
            // A kill loses what was not committed: every moment of an adopted call fires
            // again where the call shows it (its earlier copy, if committed, is dropped by
            // the outbox by its id). Lost: moments of the calls in progress at the cut that
            // the uninterrupted run had and the restarted one never fires.
            let adopted: std::collections::HashSet<String> = recs
                .iter()
                .filter(|r| r.cdr.partial.is_some())
                .map(|r| r.cdr.id.clone())
                .collect();
            for (m, &i) in whole.0.iter().zip(&whole.2) {
                let key = (m.call_id.clone(), m.trigger.name().to_owned());
                if adopted.contains(&m.call_id) && after.contains(&key) && i < cut {
                    recovered += 1;
                }
                if adopted.contains(&m.call_id) && !after.contains(&key) {
                    // Digits pressed before the cut went with the process that saw them.
                    if i >= cut && m.trigger.name() != "call.dtmf" {
                        wrong.push(format!("{name}@{cut}: {key:?} after the restart is lost"));
                    } else {
                        lost_before.push(format!("{name}@{cut}: {key:?}"));
                    }
                }
            }
            // The adopted calls are the partial ones (calls born after the cut are whole).
            for r in recs.iter().filter(|r| r.cdr.partial.is_some()) {
                let Some(before) = whole.1.iter().find(|w| w.cdr.id == r.cdr.id) else {
                    wrong.push(format!("{name}@{cut}: unknown call id {}", r.cdr.id));
                    continue;
                };
                if r.cdr.ans != before.cdr.ans {
                    wrong.push(format!("{name}@{cut}: {} ans {:?}", r.cdr.id, r.cdr.ans));
                }
                let hangup = |m: &&switchhook::session::Moment| {
                    m.call_id == r.cdr.id && m.trigger.name() == "call.hangup"
                };
                if !moments.iter().any(|m| hangup(&m)) {
                    wrong.push(format!("{name}@{cut}: no hangup for {}", r.cdr.id));
                }
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= 60, "only {checked} cuts had calls in progress");
    // What a kill right at the cut would lose had nothing been committed since the call's
    // moments fired: the ones the adopted call cannot show again.
    eprintln!(
        "{checked} cuts: {recovered} moments fired before a cut fire again after it; {} do not:\n{}",
        lost_before.len(),
        lost_before.join("\n")
    );
}

/// Capture 01's HEARTBEAT with its `Event-Date-Timestamp` moved to `ts` (a mutation of a
/// real event, as a glitching clock or a corrupt frame would make it).
fn assert_one_expired(recs: &[CallRecord], t: &SessionTracker) {
    assert_eq!(recs.len(), 1);
    let partial = recs[0].cdr.partial.as_deref().unwrap_or_default();
    assert!(partial.starts_with("expired"), "{partial:?}");
    assert_eq!(t.active(), 0);
}

/// A bare HEARTBEAT stamped `ts` (µs): what moves the event clock.
fn heartbeat(ts: i64) -> Event {
    Event::parse_plain(bytes::Bytes::from(format!(
        "Event-Name: HEARTBEAT\nEvent-Date-Timestamp: {ts}\n"
    )))
    .unwrap()
}

fn heartbeat_at(events: &[Event], ts: &str) -> Event {
    let hb = events
        .iter()
        .find(|e| e.name().as_deref() == Some("HEARTBEAT"))
        .expect("capture 01 has a HEARTBEAT");
    let pairs: Vec<(String, String)> = hb
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = if k == "Event-Date-Timestamp" {
                ts.to_owned()
            } else {
                v.into_owned()
            };
            (k.to_owned(), v)
        })
        .collect();
    Event::from_envelope(switchhook::esl::Headers::from_pairs(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

#[test]
fn a_far_timestamp_is_ignored_by_the_clock_and_expires_nothing() {
    let events = events("01-inbound-answered");
    let whole = assemble(events.clone());
    let answer = events
        .iter()
        .position(|e| e.name().as_deref() == Some("CHANNEL_ANSWER"))
        .unwrap();
    let eight_days = (events[answer].timestamp_us().unwrap() + 8 * 86_400 * 1_000_000).to_string();
    for far in [i64::MAX.to_string(), eight_days, "0".to_owned()] {
        // The far HEARTBEAT mid-call, then one more: before the clock ignored it, the first
        // expired the call in progress, and so would every later sweep.
        let mut mutated = events.clone();
        mutated.insert(answer + 1, heartbeat_at(&events, &far));
        mutated.insert(answer + 2, heartbeat_at(&events, &far));
        let mut t = SessionTracker::new(settings());
        let mut out = BTreeMap::new();
        for ev in &mutated {
            for r in t.on_event(ev) {
                out.insert(r.cdr.id.clone(), serde_json::to_value(&r.cdr).unwrap());
            }
        }
        assert_eq!(out, whole, "with a HEARTBEAT at {far}");
        assert_eq!(t.clock_outliers(), 2);
    }
}

/// Every moment's record says what was known then: an answered call is talking, undecided
/// verdicts are absent, durations run to the moment.
#[test]
fn a_moments_record_says_what_is_known_at_that_moment() {
    for name in [
        "01-inbound-answered",
        "02-inbound-missed",
        "26-outbound-answered",
    ] {
        let mut t = SessionTracker::new(settings()).with_moments();
        let mut moments = Vec::new();
        for ev in events(name) {
            t.on_event(&ev);
            moments.extend(t.take_moments());
        }
        assert!(!moments.is_empty(), "{name}");
        for m in &moments {
            let cdr = serde_json::to_value(&m.record.cdr).unwrap();
            let at = format!("{name} {}: {cdr:#}", m.trigger);
            if m.ended {
                for k in ["end", "lost", "aban", "ans", "short", "outcome", "cause"] {
                    assert!(cdr.get(k).is_some(), "{k} in the final record of {at}");
                }
                assert!(cdr.get("inProgress").is_none(), "{at}");
                continue;
            }
            assert_eq!(cdr["inProgress"], 1, "{at}");
            for k in [
                "end",
                "lost",
                "aban",
                "short",
                "outcome",
                "cause",
                "lostinPark",
            ] {
                assert!(cdr.get(k).is_none(), "{k} is not decided yet in {at}");
            }
            let dur_ms = (m.at_us - m.record.times.start_us) / 1000;
            assert!(
                (m.record.ms.dur - dur_ms).abs() <= 1,
                "duration so far: {at}"
            );
            let last = m.record.cdr.timeline.last().expect("a segment");
            assert_eq!(last.end_ms, m.record.ms.dur, "{at}");
            match m.trigger.name() {
                "call.received" | "call.dialed" => {
                    assert!(cdr.get("ans").is_none(), "{at}");
                    assert_eq!(m.record.ms.talk, 0, "{at}");
                }
                t if t.starts_with("call.answered") || t == "call.missed_or_answered" => {
                    assert_eq!(cdr["ans"], 1, "{at}");
                    assert_eq!(last.kind, switchhook::session::SegmentKind::Talk, "{at}");
                    assert_eq!(m.record.flat.get("connected"), Some(&Value::from("1")));
                }
                _ => {}
            }
        }
    }
}

/// A capture cut just after the bridge (every event up to and including the first
/// CHANNEL_BRIDGE): the call is talking, not ringing, and its record says it is in progress.
#[test]
fn a_call_cut_off_after_its_bridge_is_talking_and_in_progress() {
    let all = events("01-inbound-answered");
    let bridge = all
        .iter()
        .position(|e| e.name().as_deref() == Some("CHANNEL_BRIDGE"))
        .unwrap();
    let mut t = SessionTracker::new(settings());
    for ev in &all[..=bridge] {
        assert!(t.on_event(ev).is_empty());
    }
    let recs = t.flush("still in progress when the capture ended");
    assert_eq!(recs.len(), 1);
    let cdr = &recs[0].cdr;
    assert_eq!(cdr.inProgress, Some(1));
    assert_eq!(cdr.ans, Some(1));
    assert_eq!((cdr.lost, cdr.short, cdr.aban), (None, None, None));
    assert_eq!(cdr.end, None);
    let last = cdr.timeline.last().unwrap();
    assert_eq!(last.kind, switchhook::session::SegmentKind::Talk);
    assert_eq!(last.party.as_deref(), Some("1001"));
    assert!((recs[0].ms.ring - 3000).abs() <= 500, "{cdr:#?}");
}

/// Events lost without a gap being noticed (a capture with every CHANNEL_ANSWER and
/// CHANNEL_BRIDGE removed, or only the bridges): FreeSWITCH's hangup figures say the call was
/// answered and bridged, so the record says so too, reconciled from them, and is partial.
#[test]
fn answers_and_bridges_that_never_arrived_are_reconciled_from_the_hangup() {
    let removals: [&[&str]; 2] = [&["CHANNEL_ANSWER", "CHANNEL_BRIDGE"], &["CHANNEL_BRIDGE"]];
    for removed in removals {
        let kept = events("01-inbound-answered")
            .into_iter()
            .filter(|e| !removed.contains(&e.name().as_deref().unwrap_or_default()));
        let mut t = SessionTracker::new(settings()).with_moments();
        let mut recs = Vec::new();
        let mut triggers = Vec::new();
        for ev in kept {
            recs.extend(t.on_event(&ev));
            triggers.extend(t.take_moments().into_iter().map(|m| m.trigger.name()));
        }
        assert_eq!(recs.len(), 1, "{removed:?}");
        let cdr = &recs[0].cdr;
        let partial = cdr.partial.as_deref().unwrap_or_default();
        assert!(
            partial.starts_with("events missing"),
            "{removed:?}: {partial:?}"
        );
        assert_eq!((cdr.ans, cdr.lost), (Some(1), Some(0)), "{removed:?}");
        assert!(
            (recs[0].ms.talk - 5000).abs() <= 500,
            "{removed:?}: {:?}",
            recs[0].ms
        );
        assert!(
            (recs[0].ms.ring - 3000).abs() <= 500,
            "{removed:?}: {:?}",
            recs[0].ms
        );
        assert!(cdr.answer.is_some(), "{removed:?}");
        assert!(
            !triggers.contains(&"call.missed"),
            "{removed:?}: {triggers:?}"
        );
        assert!(
            triggers.contains(&"call.missed_or_answered"),
            "{removed:?}: {triggers:?}"
        );
    }
}

/// Live, a quiet call is checked with FreeSWITCH before it expires: one it still has (a long
/// hold sends nothing) stays open and ends complete when its events come; one it no longer
/// has ends, partial.
#[test]
fn a_quiet_call_freeswitch_still_has_is_kept_open() {
    let first = events("01-inbound-answered");
    let later = first[39].timestamp_us().unwrap() + 5 * 3600 * 1_000_000;
    // What FreeSWITCH lists at that point of the capture: the call's legs.
    let up: std::collections::HashSet<String> = channels_after(&first[..40])
        .into_iter()
        .map(|c| c.uuid)
        .collect();
    assert!(!up.is_empty());
    for still_up in [true, false] {
        let mut t = SessionTracker::new(settings()).ask_before_expiry();
        for ev in &first[..40] {
            t.on_event(ev);
        }
        for k in 0..3 {
            assert!(t.on_event(&heartbeat(later + k * 20_000_000)).is_empty());
        }
        let q = t
            .take_expiry_question()
            .expect("the quiet call is asked about");
        assert!(q.legs.iter().all(|l| up.contains(l)), "{q:?}");
        assert_eq!(t.take_expiry_question(), None, "asked once");
        // While the question is out, further sweeps do not ask again.
        t.on_event(&heartbeat(later + 60_000_000));
        assert_eq!(t.take_expiry_question(), None);
        let answer: std::collections::HashSet<String> = if still_up {
            up.clone()
        } else {
            Default::default()
        };
        let recs = t.settle_expiry(Some(&answer));
        if still_up {
            assert!(recs.is_empty());
            assert_eq!(t.active(), 1);
            // Its events come after all: it ends whole.
            let rest: Vec<CallRecord> = first[40..].iter().flat_map(|e| t.on_event(e)).collect();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].cdr.partial, None);
            assert_eq!(rest[0].cdr.ans, Some(1));
        } else {
            assert_one_expired(&recs, &t);
        }
    }
    // FreeSWITCH could not be asked: the call stays, and is asked about again later.
    let mut t = SessionTracker::new(settings()).ask_before_expiry();
    for ev in &first[..40] {
        t.on_event(ev);
    }
    for k in 0..3 {
        t.on_event(&heartbeat(later + k * 20_000_000));
    }
    assert!(t.take_expiry_question().is_some());
    assert!(t.settle_expiry(None).is_empty());
    assert_eq!(t.active(), 1);
    t.on_event(&heartbeat(later + 80_000_000));
    for _ in 0..4096 {
        t.on_event(&heartbeat(later + 100_000_000));
    }
    assert!(t.take_expiry_question().is_some(), "asked again");
}
