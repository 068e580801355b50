//! Lifecycle webhooks end to end: triggers from real captures, rendering and signing, and
//! delivery through the SQLite outbox to real HTTP receivers on 127.0.0.1.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::fixture;
use common::receiver::{Receiver, Reply};
use serde_json::Value;
use switchhook::config::Config;
use switchhook::hooks::DeliveryOptions;
use switchhook::hooks::Signer;
use switchhook::hooks::{Admin, DeliveryRef, ListFilter, State};
use switchhook::hooks::{DeliveryQueue, Outbox, Request, WebhookSet};
use switchhook::pipeline::Compiled;
use switchhook::replay;
use switchhook::session::{Moment, Settings};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A configuration from TOML text.
fn config(text: &str) -> Config {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    // The receivers are on loopback, which webhooks may not reach unless allowed.
    let text = if text.contains("[egress]") {
        text.to_owned()
    } else {
        format!("[egress]\nallow = [\"127.0.0.1\"]\n{text}")
    };
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    Compiled::load(Some(f.path()))
        .unwrap_or_else(|e| panic!("{e:#?}\n{text}"))
        .0
}

fn compile(cfg: &Config) -> (Arc<Settings>, Arc<WebhookSet>) {
    let compiled = Compiled::new(cfg).unwrap();
    (compiled.settings, compiled.hooks)
}

async fn moments(capture: &str, settings: &Arc<Settings>) -> Vec<Moment> {
    let mut out = Vec::new();
    replay::moments(
        &fixture(capture),
        Arc::clone(settings),
        &replay::Progress::hidden(),
        |m| out.push(m),
    )
    .await
    .unwrap();
    out
}

async fn requests(capture: &str, settings: &Arc<Settings>, hooks: &WebhookSet) -> Vec<Request> {
    moments(capture, settings)
        .await
        .iter()
        .flat_map(|m| hooks.plan(m))
        .collect()
}

#[test]
fn every_trigger_fires_once_at_the_moment_the_session_learns_it() {
    let rt = rt();
    let settings = Arc::new(Settings::default());
    let expect: &[(&str, &[&str])] = &[
        (
            "01-inbound-answered",
            &[
                "call.received",
                "call.dialed",
                "call.answered.extension",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "02-inbound-missed",
            &[
                "call.received",
                "call.dialed",
                "call.missed",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "06-ringgroup-simultaneous",
            &[
                "call.received",
                "call.dialed",
                "call.answered.ring_group",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "08-queue-answered",
            &[
                "call.received",
                "call.dialed",
                "call.answered.queue",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "09-ivr-dtmf-transfer",
            &[
                "call.received",
                "call.answered.ivr",
                "call.dtmf",
                "call.dialed",
                "call.answered.extension",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "11-outbound-carrier",
            &[
                "call.received",
                "call.dialed",
                "call.answered.external",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            // A routing step's PIN menu is not an IVR: no answered.ivr, no dtmf.
            "20-routing-pin-digits",
            &[
                "call.received",
                "call.dialed",
                "call.answered.extension",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "25-ivr-direct-extension",
            &[
                "call.received",
                "call.answered.ivr",
                "call.dtmf",
                "call.dialed",
                "call.answered.extension",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "26-outbound-answered",
            &[
                "call.received",
                "call.dialed",
                "call.answered.external",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
        (
            "12-click-to-call",
            &[
                "call.received",
                "call.dialed",
                "call.click_to_call.answered",
                "call.missed_or_answered",
                "call.hangup",
            ],
        ),
    ];
    for (name, want) in expect {
        for suffix in [".esl", ".json.esl"] {
            let ms = rt.block_on(moments(
                &format!("freeswitch-1.10/{name}{suffix}"),
                &settings,
            ));
            let got: Vec<&str> = ms.iter().map(|m| m.trigger.name()).collect();
            assert_eq!(&got, want, "{name}{suffix}");
            let seqs: Vec<u32> = ms.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (1..=ms.len() as u32).collect::<Vec<_>>(), "{name}");
            // Mid-call moments carry the call as it stood; the end-of-call ones the final record.
            for m in &ms {
                // missed_or_answered is final only when it comes from a miss.
                let ended = match m.trigger.name() {
                    "call.hangup" | "call.missed" => true,
                    "call.missed_or_answered" => m.record.cdr.ans != Some(1),
                    _ => false,
                };
                assert_eq!(m.ended, ended, "{name}: {}", m.trigger);
            }
            let hangup = ms.last().unwrap();
            let cdrs = rt
                .block_on(replay::records(
                    &fixture(&format!("freeswitch-1.10/{name}{suffix}")),
                    Arc::clone(&settings),
                ))
                .unwrap();
            assert_eq!(
                hangup.record.cdr, cdrs[0].cdr,
                "{name}: the hangup carries the final CDR"
            );
        }
    }
    // What each trigger adds.
    let ms = rt.block_on(moments(
        "freeswitch-1.10/09-ivr-dtmf-transfer.esl",
        &settings,
    ));
    let dtmf = ms.iter().find(|m| m.trigger.name() == "call.dtmf").unwrap();
    assert_eq!(dtmf.detail["digit"], "2");
    assert_eq!(dtmf.detail["menu"], "acme_main");
    let answered = ms
        .iter()
        .find(|m| m.trigger.name() == "call.answered.extension")
        .unwrap();
    assert_eq!(answered.detail["answeredBy"], "1003");
    assert_eq!(answered.record.cdr.ans, Some(1));
    assert!(!answered.ended);
    // A direct-extension entry keeps all its digits.
    let ms = rt.block_on(moments(
        "freeswitch-1.10/25-ivr-direct-extension.esl",
        &settings,
    ));
    let dtmf = ms.iter().find(|m| m.trigger.name() == "call.dtmf").unwrap();
    assert_eq!(dtmf.detail["digits"], "1003");
    assert_eq!(dtmf.record.flat["department-selection"], "1003");
    // A routing step's PIN reaches no webhook.
    let ms = rt.block_on(moments(
        "freeswitch-1.10/20-routing-pin-digits.esl",
        &settings,
    ));
    for m in &ms {
        assert_eq!(m.record.flat["department-selection"], "", "{}", m.trigger);
    }
    let ms = rt.block_on(moments("freeswitch-1.10/08-queue-answered.esl", &settings));
    let q = ms
        .iter()
        .find(|m| m.trigger.name() == "call.answered.queue")
        .unwrap();
    assert_eq!(q.detail["group"], "support@default");
}

#[test]
fn no_trigger_fires_twice_for_a_call_in_any_capture() {
    let rt = rt();
    let settings = Arc::new(Settings::default());
    let hooks = WebhookSet::example();
    for (name, _) in common::SCENARIOS {
        let reqs = rt.block_on(requests(
            &format!("freeswitch-1.10/{name}.esl"),
            &settings,
            &hooks,
        ));
        let twin = format!("freeswitch-1.10/{name}.json.esl");
        if fixture(&twin).exists() {
            let json = rt.block_on(requests(&twin, &settings, &hooks));
            assert_eq!(reqs, json, "{name}: plain and json give the same requests");
        }
        let mut seen = HashSet::new();
        for r in &reqs {
            assert!(
                seen.insert(r.id.clone()),
                "{name}: {} fired twice for {}",
                r.trigger,
                r.call_id
            );
        }
        assert!(reqs.iter().any(|r| r.trigger == "call.hangup"), "{name}");
        // No call is left open: every call id that fired a moment gets a closing one (its
        // hangup, or the merge that names the call it joined), last, and its sequence
        // counts 1, 2, 3…
        let mut by_call: BTreeMap<&str, Vec<&Request>> = BTreeMap::new();
        for r in &reqs {
            by_call.entry(r.call_id.as_str()).or_default().push(r);
        }
        for (call, rs) in &by_call {
            let last = rs.last().unwrap();
            assert!(
                matches!(last.trigger.as_str(), "call.hangup" | "call.merged"),
                "{name}: {call} ends with {}",
                last.trigger
            );
            if last.trigger == "call.merged" {
                let body: Value = serde_json::from_str(&last.body).unwrap();
                let into = body["detail"]["into"].as_str().unwrap();
                assert!(by_call.contains_key(into), "{name}: merged into {into}");
            }
            let seqs: Vec<u32> = rs.iter().map(|r| r.seq).collect();
            assert_eq!(
                seqs,
                (1..=rs.len() as u32).collect::<Vec<_>>(),
                "{name}: {call}"
            );
        }
        if name.starts_with("14-") {
            assert!(reqs.iter().any(|r| r.trigger == "call.merged"), "{name}");
        }
    }
    // The concurrent capture: each of its five calls gets its own received and hangup.
    let reqs = rt.block_on(requests(
        "freeswitch-1.10/16-concurrent-mix.esl",
        &settings,
        &hooks,
    ));
    for t in ["call.received", "call.hangup", "call.missed_or_answered"] {
        assert_eq!(reqs.iter().filter(|r| r.trigger == t).count(), 5, "{t}");
    }
}

const CONTRACT: &str = r#"
[[webhooks]]
name = "crm"
triggers = ["call.hangup"]
url = "http://127.0.0.1:9/hook/{ddiNum}?cli={cli}"
method = "POST"
format = "json"
retries = 1
timeout = "10s"
time_zone = "America/New_York"
call_types = ["inbound"]
filters = [{ field = "dir", op = "eq", value = 2 }, { field = "talk", op = "gt", value = 0 }]
headers = { "X-Api-Key" = "key-{cliNum}" }
custom_data = { hook = "post call" }
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
body = '{"caller": "{cli}", "dur": {dur}, "trigger": "{trigger}", "start": "{start}", "tags": {tags}}'

[[webhooks]]
name = "query"
triggers = ["call.missed", "call.answered.extension"]
url = "http://127.0.0.1:9/get"
method = "GET"

[[webhooks]]
name = "mine"
triggers = ["call.received"]
url = "http://127.0.0.1:9/mine"
format = "form"
numbers = ["01610002004", "+441610001001"]

[[webhooks]]
name = "off"
triggers = ["call.hangup"]
url = "http://127.0.0.1:9/off"
enabled = false
"#;

#[test]
fn filters_call_types_numbers_templates_and_signatures() {
    let rt = rt();
    let (settings, hooks) = compile(&config(CONTRACT));
    let reqs = rt.block_on(requests(
        "freeswitch-1.10/16-concurrent-mix.esl",
        &settings,
        &hooks,
    ));
    let by = |w: &str| reqs.iter().filter(|r| r.webhook == w).collect::<Vec<_>>();

    // crm: inbound answered calls only (four inbound, one of them missed).
    let crm = by("crm");
    assert_eq!(crm.len(), 3, "{crm:#?}");
    for r in &crm {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert!(body["caller"].as_str().unwrap().starts_with("+4477009001"));
        assert!(body["dur"].as_i64().unwrap() > 0);
        assert_eq!(body["trigger"], "call.hangup");
        assert!(
            body["start"].as_str().unwrap().ends_with("-05:00"),
            "the webhook's own time zone"
        );
        assert!(body["tags"].is_object());
        assert!(
            r.url.starts_with("http://127.0.0.1:9/hook/%2B44161000"),
            "{}",
            r.url
        );
        assert!(r.url.contains("?cli=%2B4477009001"), "{}", r.url);
        let key = r.headers.iter().find(|(k, _)| k == "X-Api-Key").unwrap();
        assert!(key.1.starts_with("key-+44"));
        // Standard Webhooks: the signature verifies with the secret.
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let h = r.signature_headers(hooks.get("crm").unwrap().signer.as_ref(), 1_700_000_000);
        let sig = &h.iter().find(|(k, _)| k == "webhook-signature").unwrap().1;
        assert_eq!(*sig, signer.sign(&r.id, 1_700_000_000, r.body.as_bytes()));
    }

    // query: GET with the data in the query string, no body.
    let q = by("query");
    assert!(!q.is_empty());
    for r in &q {
        assert_eq!(r.method, "GET");
        assert!(r.body.is_empty());
        assert!(
            r.url.starts_with("http://127.0.0.1:9/get?triggerId="),
            "{}",
            r.url
        );
        assert!(
            r.url.contains("&cliNum=%2B44") || r.url.contains("&cliNum=1004"),
            "{}",
            r.url
        );
    }
    assert!(q.iter().any(|r| r.trigger == "call.missed"));

    // mine: only the two calls to my numbers (given in national and E.164 form), as a form.
    let mine = by("mine");
    let dids: HashSet<String> = mine
        .iter()
        .map(|r| form_fields(&r.body)["ddiNum"].clone())
        .collect();
    assert_eq!(
        dids,
        HashSet::from(["+441610002004".to_owned(), "+441610001001".to_owned()])
    );
    // Every key once: the envelope's `id` is the tenant, the CDR's is `cdr.id`.
    for r in &mine {
        let keys: Vec<&str> = r
            .body
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .collect();
        let unique: HashSet<&str> = keys.iter().copied().collect();
        assert_eq!(unique.len(), keys.len(), "{}", r.body);
        assert!(
            r.body.contains(&format!("cdr.id={}", r.call_id)),
            "{}",
            r.body
        );
    }
    assert!(mine[0]
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/x-www-form-urlencoded"));

    // off: disabled.
    assert!(by("off").is_empty());
}

/// "My numbers" on an outbound call match the number the far end was shown (the company's,
/// in any form), not the extension.
#[test]
fn my_numbers_match_what_an_outbound_call_presented() {
    let rt = rt();
    let (settings, hooks) = compile(&config(
        r#"
[[webhooks]]
name = "out"
triggers = ["call.dialed", "call.answered.external", "call.hangup"]
url = "http://127.0.0.1:9/out"
call_types = ["outbound"]
numbers = ["01610000000"]
"#,
    ));
    let reqs = rt.block_on(requests(
        "freeswitch-1.10/26-outbound-answered.esl",
        &settings,
        &hooks,
    ));
    let triggers: Vec<&str> = reqs.iter().map(|r| r.trigger.as_str()).collect();
    assert_eq!(
        triggers,
        ["call.dialed", "call.answered.external", "call.hangup"]
    );
    let dialed: Value = serde_json::from_str(&reqs[0].body).unwrap();
    assert_eq!(dialed["detail"]["dialed"], "+14155550100");
    assert_eq!(dialed["cdr"]["cliNum"], "+441610000000");
}

/// A withheld number reaches no receiver, unless the operator sends it on.
#[test]
fn a_withheld_number_is_sent_only_when_configured() {
    let rt = rt();
    for (setting, want_cli) in [
        ("", ""),
        ("[numbers]\nwithheld_cli = \"send\"\n", "+447700900240"),
    ] {
        let (settings, hooks) = compile(&config(&format!(
            "{setting}[[webhooks]]\nname = \"all\"\ntriggers = [\"call.received\", \"call.hangup\"]\n\
             url = \"http://127.0.0.1:9/all?cli={{cli}}\"\nformat = \"form\"\n"
        )));
        let reqs = rt.block_on(requests(
            "freeswitch-1.10/24-inbound-withheld.esl",
            &settings,
            &hooks,
        ));
        assert_eq!(reqs.len(), 2);
        for r in &reqs {
            let form = form_fields(&r.body);
            assert_eq!(form["cliNum"], want_cli, "{setting}: {}", r.body);
            assert_eq!(form["cli"], want_cli);
            assert_eq!(form["cliWithheld"], "1");
            assert_eq!(form["cli-withheld"], "1");
            assert_eq!(
                form.contains_key("cliName"),
                !want_cli.is_empty(),
                "{}",
                r.body
            );
            if want_cli.is_empty() {
                assert!(!r.body.contains("447700900240"), "{}", r.body);
                assert!(!r.url.contains("447700900240"), "{}", r.url);
            }
        }
    }
}

/// A form body's fields, decoded.
fn form_fields(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[test]
fn mistakes_in_webhooks_are_reported_with_their_key_paths() {
    let text = r#"
[[webhooks]]
name = "a"
triggers = ["call.hungup"]
url = "ftp://x/{nope}"
retries = 11
filters = [{ field = "dri", op = "eq", value = 2 }, { field = "cliNum", op = "regex", value = "(" }]
headers = { "Bad Header" = "x" }
secret = "whsec_!!"
body = '{"a": "{cli}"'

[[webhooks]]
name = "a"
triggers = ["call.hangup"]
url = "http://x/"
method = "PATCH"
"#;
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    // The second entry's type error and the first entry's meaning, in one run.
    let issues = Compiled::load(Some(f.path())).unwrap_err();
    let paths: Vec<String> = issues.iter().map(|i| i.path.clone()).collect();
    for want in [
        "webhooks[1].method",
        "webhooks[0].url",
        "webhooks[0].retries",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {issues:#?}"
        );
    }
    // Without the type error, the second entry is compiled too: its name is a duplicate.
    let text = text.replace("method = \"PATCH\"", "");
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    let issues = Compiled::load(Some(f.path())).unwrap_err();
    let paths: Vec<String> = issues.iter().map(|i| i.path.clone()).collect();
    for want in [
        "webhooks[1].name",
        "webhooks[0].triggers[0]",
        "webhooks[0].url",
        "webhooks[0].retries",
        "webhooks[0].filters[0]",
        "webhooks[0].filters[1]",
        "webhooks[0].headers.Bad Header",
        "webhooks[0].secret",
        "webhooks[0].body",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {issues:#?}"
        );
    }
    let text = format!("{issues:?}");
    assert!(text.contains("unknown placeholder {nope}"), "{text}");
    assert!(
        !text.contains("whsec_!!"),
        "secrets never appear in messages"
    );
}

/// Starts a queue over a fresh outbox in `dir`.
async fn queue(dir: &Path, hooks: &Arc<WebhookSet>) -> DeliveryQueue {
    let outbox = Outbox::open(&dir.join("outbox.db")).unwrap();
    DeliveryQueue::start(
        outbox,
        Arc::clone(hooks),
        DeliveryOptions {
            rescan_every: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn rows(dir: &Path, webhook: &str) -> Vec<switchhook::hooks::Row> {
    Admin::open(&dir.join("outbox.db"))
        .unwrap()
        .list(&ListFilter {
            webhook: Some(webhook.into()),
            ..Default::default()
        })
        .unwrap()
}

/// A webhook with `replay_dead_letters` sends its dead letters again, in order, once its
/// receiver answers again; the exponential schedule is accepted with up to 30 retries.
#[test]
fn dead_letters_go_out_again_when_the_receiver_answers_again() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(500)).await;
        let (settings, hooks) = compile(&config(&format!(
            "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.received\", \"call.hangup\"]\n\
             url = \"{}/crm\"\nretries = 0\nreplay_dead_letters = true\n\n\
             [[webhooks]]\nname = \"patient\"\ntriggers = [\"call.missed\"]\nurl = \"{}/patient\"\n\
             backoff = \"exponential\"\nbackoff_max = \"2h\"\nretries = 30\n",
            receiver.base(),
            receiver.base()
        )));
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), &hooks).await;
        // The receiver is down: the first call's requests go to the dead letters.
        q.submit(requests("freeswitch-1.10/01-inbound-answered.esl", &settings, &hooks).await);
        let dead = async {
            while rows(dir.path(), "crm").iter().filter(|r| r.state == "dead").count() < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), dead).await.expect("dead letters");
        // It answers again: the next call's requests succeed, and the dead letters follow.
        receiver.set_script(|_, _| Reply::status(200));
        q.submit(requests("freeswitch-1.10/02-inbound-missed.esl", &settings, &hooks).await);
        let all_delivered = async {
            while rows(dir.path(), "crm").iter().any(|r| r.state != "delivered") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all_delivered)
            .await
            .unwrap_or_else(|_| panic!("{:#?}", rows(dir.path(), "crm")));
        // The first call's two requests arrived twice (refused, then delivered), in order.
        let seen = receiver.seen();
        let first: Vec<String> = requests("freeswitch-1.10/01-inbound-answered.esl", &settings, &hooks)
            .await
            .into_iter()
            .map(|r| r.id)
            .collect();
        let arrivals: Vec<&str> = seen
            .iter()
            .map(|r| r.headers["webhook-id"].as_str())
            .filter(|id| first.iter().any(|f| f == id))
            .collect();
        assert_eq!(arrivals.len(), 4, "{arrivals:?}");
        assert_eq!(arrivals[2..], [first[0].as_str(), first[1].as_str()]);
        // The patient webhook's requests carry its schedule; more retries than it allows
        // are refused by key path.
        let patient = requests("freeswitch-1.10/02-inbound-missed.esl", &settings, &hooks)
            .await
            .into_iter()
            .find(|r| r.webhook == "patient")
            .unwrap();
        assert_eq!(
            patient.schedule,
            switchhook::hooks::Schedule::Exponential { max_ms: 7_200_000 }
        );
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(
            &mut f,
            b"[[webhooks]]\nname = \"a\"\ntriggers = [\"call.hangup\"]\nurl = \"https://crm.example/a\"\nretries = 11\n\
              [[webhooks]]\nname = \"b\"\ntriggers = [\"call.hangup\"]\nurl = \"https://crm.example/b\"\nretries = 31\nbackoff = \"exponential\"\n",
        )
        .unwrap();
        let problems = Compiled::load(Some(f.path())).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["webhooks[0].retries", "webhooks[1].retries"]);
    });
}

/// `deliveries retry --render` sends a dead letter again as the webhook is configured now
/// (a corrected URL and template), rendered from the call's data as it was at that moment,
/// under the same webhook-id; what cannot be rendered again is left dead and said why.
#[test]
fn a_dead_letter_is_rendered_again_under_the_configuration_of_today() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|path, _| {
            Reply::status(if path.starts_with("/fixed/") { 200 } else { 500 })
        })
        .await;
        let (settings, hooks) = compile(&config(&format!(
            "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.received\", \"call.hangup\"]\n\
             url = \"{0}/broken\"\nretries = 0\n\n\
             [[webhooks]]\nname = \"gone\"\ntriggers = [\"call.hangup\"]\nurl = \"{0}/gone\"\nretries = 0\n",
            receiver.base()
        )));
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("outbox.db");
        let q = queue(dir.path(), &hooks).await;
        let capture = "freeswitch-1.10/01-inbound-answered.esl";
        let first = requests(capture, &settings, &hooks).await;
        q.submit(first.clone());
        let dead = async {
            while ["crm", "gone"]
                .iter()
                .flat_map(|w| rows(dir.path(), w))
                .filter(|r| r.state == "dead")
                .count()
                < 3
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), dead).await.expect("dead letters");

        // The fix: another path and a body of the receiver's own shape.
        let fixed = dir.path().join("fixed.toml");
        std::fs::write(
            &fixed,
            format!(
                "[egress]\nallow = [\"127.0.0.1\"]\n[[webhooks]]\nname = \"crm\"\n\
                 triggers = [\"call.received\", \"call.hangup\"]\nurl = \"{}/fixed/{{trigger}}\"\n\
                 body = '{{\"caller\": \"{{cliNum}}\", \"did\": \"{{ddiNum}}\", \"seq\": {{sequence}}}}'\n",
                receiver.base()
            ),
        )
        .unwrap();
        let cli = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
                .arg("deliveries")
                .args(args)
                .arg("--config")
                .arg(&fixed)
                .arg("--db")
                .arg(&db)
                .output()
                .unwrap()
        };
        let out = cli(&["retry", "--render", "--webhook", "crm"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "2 delivery(ies) rendered again and queued"
        );
        let delivered = async {
            while rows(dir.path(), "crm").iter().any(|r| r.state != "delivered") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), delivered)
            .await
            .unwrap_or_else(|_| panic!("{:#?}", rows(dir.path(), "crm")));
        let cdr = &moments(capture, &settings).await[0].record.cdr;
        let got: Vec<(String, String, Value)> = receiver
            .seen()
            .into_iter()
            .filter(|r| r.uri.starts_with("/fixed/"))
            .map(|r| {
                (r.uri.clone(), r.headers["webhook-id"].clone(), serde_json::from_str(&r.body).unwrap())
            })
            .collect();
        let crm: Vec<&Request> = first.iter().filter(|r| r.webhook == "crm").collect();
        assert_eq!(got.len(), 2, "{got:?}");
        for ((uri, id, body), old) in got.iter().zip(&crm) {
            assert_eq!(uri, &format!("/fixed/{}", old.trigger));
            assert_eq!(id, &old.id, "the same webhook-id, so receivers de-duplicate");
            assert_eq!(body["caller"], cdr.cliNum.as_str());
            assert_eq!(body["did"], cdr.ddiNum.as_str());
            assert_eq!(body["seq"], old.seq, "the moment's own data, not the call's end");
        }
        // A webhook no longer configured is left dead, and the command says so.
        let out = cli(&["retry", "--render", "--webhook", "gone"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("webhook \"gone\" is not in the configuration"), "{err}");
        assert!(rows(dir.path(), "gone").iter().all(|r| r.state == "dead"));
        q.close().await;
    });
}

/// `[[tenants]]` put each call with its customer by number (a prefix, a range); a webhook
/// scoped to tenants fires only for their calls, and every payload carries the call's tenant
/// (its PBX's id when it has none).
#[test]
fn tenants_by_number_scope_webhooks_and_fill_tenant_id() {
    let rt = rt();
    rt.block_on(async {
        let (settings, hooks) = compile(&config(
            "[[tenants]]\nid = \"acme\"\nnumbers = [\"+44161000100*\"]\n\
             [[tenants]]\nid = \"globex\"\nnumbers = [\"+441610002000-+441610002999\"]\n\
             [[webhooks]]\nname = \"acme-crm\"\ntriggers = [\"call.hangup\"]\nurl = \"http://127.0.0.1:9/acme\"\ntenants = [\"acme\"]\n\
             [[webhooks]]\nname = \"globex-crm\"\ntriggers = [\"call.hangup\"]\nurl = \"http://127.0.0.1:9/globex\"\ntenants = [\"globex\"]\n\
             [[webhooks]]\nname = \"all\"\ntriggers = [\"call.hangup\"]\nurl = \"http://127.0.0.1:9/all\"\n",
        ));
        let reqs = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let seen: Vec<(String, String, String)> = reqs
            .iter()
            .map(|r| {
                let body: Value = serde_json::from_str(&r.body).unwrap();
                (
                    r.webhook.clone(),
                    body["cdr"]["ddiNum"].as_str().unwrap().to_owned(),
                    body["tenantId"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let of = |w: &str| -> Vec<(String, String)> {
            let mut v: Vec<_> = seen
                .iter()
                .filter(|(h, _, _)| h == w)
                .map(|(_, d, t)| (d.clone(), t.clone()))
                .collect();
            v.sort();
            v
        };
        let acme = |d: &str| (d.to_owned(), "acme".to_owned());
        let globex = |d: &str| (d.to_owned(), "globex".to_owned());
        assert_eq!(of("acme-crm"), [acme("+441610001001"), acme("+441610001003")]);
        assert_eq!(of("globex-crm"), [globex("+441610002001"), globex("+441610002004")]);
        let all = of("all");
        assert_eq!(all.len(), 5);
        // The outbound call presents a number of no tenant's: its PBX stands for it.
        let pbx = moments("freeswitch-1.10/16-concurrent-mix.esl", &settings).await[0]
            .record
            .cdr
            .pbxId
            .clone();
        assert!(all.contains(&("+442079460000".to_owned(), pbx)), "{all:?}");
    });
}

#[test]
fn retry_rules_against_a_real_receiver() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|path, nth| match (path, nth) {
            ("/ok", _) => Reply::status(204),
            ("/flaky", 1) => Reply::status(500),
            ("/flaky", _) => Reply::status(200),
            ("/limited", 1) => Reply {
                retry_after: Some("1".into()),
                ..Reply::status(429)
            },
            ("/limited", _) => Reply::status(202),
            ("/bad", _) => Reply::status(400),
            ("/hang", 1) => Reply {
                delay: Duration::from_secs(3),
                ..Reply::status(200)
            },
            ("/hang", _) => Reply::status(200),
            ("/gone", _) => Reply::status(410),
            _ => Reply::status(404),
        })
        .await;
        let mut text = String::new();
        for (name, retries) in [("ok", 1), ("flaky", 1), ("limited", 1), ("bad", 5), ("hang", 1), ("gone", 3)] {
            text.push_str(&format!(
                "[[webhooks]]\nname = \"{name}\"\ntriggers = [\"call.hangup\"]\nurl = \"{}/{name}\"\nretries = {retries}\ntimeout = \"500ms\"\n",
                receiver.base()
            ));
        }
        let (settings, hooks) = compile(&config(&text));
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), &hooks).await;
        q.submit(requests("freeswitch-1.10/01-inbound-answered.esl", &settings, &hooks).await);
        if tokio::time::timeout(Duration::from_secs(30), q.idle()).await.is_err() {
            let st = q.stats();
            panic!("not settled: {} in memory; {:?}", q.in_memory(), (st.enqueued.load(std::sync::atomic::Ordering::Relaxed), st.attempts.load(std::sync::atomic::Ordering::Relaxed), st.delivered.load(std::sync::atomic::Ordering::Relaxed)));
        }

        let one = |w: &str| {
            let r = rows(dir.path(), w);
            assert_eq!(r.len(), 1, "{w}: {r:#?}");
            r.into_iter().next().unwrap()
        };
        let ok = one("ok");
        assert_eq!((ok.state.as_str(), ok.attempts, ok.last_status), ("delivered", 1, Some(204)));
        let flaky = one("flaky");
        assert_eq!((flaky.state.as_str(), flaky.attempts), ("delivered", 2));
        let limited = one("limited");
        assert_eq!((limited.state.as_str(), limited.attempts, limited.last_status), ("delivered", 2, Some(202)));
        let bad = one("bad");
        assert_eq!((bad.state.as_str(), bad.attempts, bad.last_status), ("dead", 1, Some(400)), "4xx is not retried");
        let hang = one("hang");
        assert_eq!((hang.state.as_str(), hang.attempts), ("delivered", 2), "a hang past the timeout is retried");
        let gone = one("gone");
        assert_eq!(gone.state, "parked", "410 parks the webhook's deliveries");
        let admin = Admin::open(&dir.path().join("outbox.db")).unwrap();
        let disabled = admin.disabled().unwrap();
        assert_eq!(disabled.len(), 1);
        assert_eq!(disabled[0].0, "gone");
        // Every attempt is kept, not only the last.
        let shown = admin.show(&DeliveryRef::Row(flaky.rowid)).unwrap().unwrap();
        let history: Vec<(u32, Option<u16>, &str)> = shown
            .history
            .iter()
            .map(|a| (a.attempt, a.status, a.outcome.as_str()))
            .collect();
        assert_eq!(history, [(1, Some(500), "retry"), (2, Some(200), "delivered")]);

        // The receiver saw the same webhook-id on every attempt, and the 429 was honoured.
        let seen = receiver.seen();
        let limited_hits: Vec<_> = seen.iter().filter(|r| r.uri.starts_with("/limited")).collect();
        assert_eq!(limited_hits.len(), 2);
        assert_eq!(limited_hits[0].headers["webhook-id"], limited_hits[1].headers["webhook-id"]);
        assert!(limited_hits[1].at - limited_hits[0].at >= Duration::from_millis(950));
        let flaky_hits: Vec<_> = seen.iter().filter(|r| r.uri.starts_with("/flaky")).collect();
        assert!(flaky_hits[1].at - flaky_hits[0].at >= Duration::from_millis(1900), "attempt 1 x 2 s");

        // Enabling the webhook again replays its parked delivery.
        receiver.set_script(|_, _| Reply::status(200));
        assert_eq!(admin.enable("gone").unwrap(), Some(1));
        let delivered = async {
            loop {
                if one("gone").state == "delivered" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), delivered).await.expect("replayed after enable");
        // A dead letter can be sent again by hand.
        assert_eq!(admin.retry(Some(&DeliveryRef::Row(bad.rowid)), None).unwrap(), 1);
        let resent = async {
            loop {
                if one("bad").state == "delivered" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), resent).await.expect("retried by hand");
        q.close().await;
    });
}

#[test]
fn a_webhook_failing_for_its_whole_window_is_disabled_and_its_deliveries_parked() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(500)).await;
        let text = format!(
            "[[webhooks]]\nname = \"flaky\"\ntriggers = [\"call.received\", \"call.hangup\"]\nurl = \"{}/x\"\nretries = 10\ndisable_after = \"3s\"\n",
            receiver.base()
        );
        let (settings, hooks) = compile(&config(&text));
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), &hooks).await;
        q.submit(requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await);
        tokio::time::timeout(Duration::from_secs(20), q.idle())
            .await
            .expect("parked");
        let admin = Admin::open(&dir.path().join("outbox.db")).unwrap();
        let disabled = admin.disabled().unwrap();
        assert_eq!(disabled.len(), 1, "{disabled:?}");
        assert!(disabled[0].1.starts_with("no successful delivery for"), "{disabled:?}");
        let r = rows(dir.path(), "flaky");
        assert_eq!(r.len(), 10);
        assert!(r.iter().all(|r| r.state == "parked"), "{r:#?}");
        // Re-enabled: replayed in commit order, so each call's received comes before its hangup.
        receiver.set_script(|_, _| Reply::status(200));
        assert_eq!(admin.enable("flaky").unwrap(), Some(10));
        let ok = receiver
            .wait_for(Duration::from_secs(10), |s| s.iter().filter(|r| r.status == 200).count() == 10)
            .await;
        assert!(ok);
        let mut last: HashMap<String, u64> = HashMap::new();
        for r in receiver.seen().iter().filter(|r| r.status == 200) {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let seq = body["sequence"].as_u64().unwrap();
            let prev = last.insert(body["cdr"]["id"].as_str().unwrap().to_owned(), seq);
            assert!(prev.is_none_or(|p| p < seq));
        }
        q.close().await;
    });
}

#[test]
fn the_failing_window_survives_a_restart() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(500)).await;
        let text = format!(
            "[[webhooks]]\nname = \"down\"\ntriggers = [\"call.hangup\"]\nurl = \"{}/x\"\nretries = 10\ndisable_after = \"2s\"\n",
            receiver.base()
        );
        let (settings, hooks) = compile(&config(&text));
        let dir = tempfile::tempdir().unwrap();
        {
            let q = queue(dir.path(), &hooks).await;
            q.submit(requests("freeswitch-1.10/01-inbound-answered.esl", &settings, &hooks).await);
            assert!(receiver.wait_for(Duration::from_secs(5), |s| !s.is_empty()).await);
            q.close().await;
        }
        // Past the window while switchhook was down: the first failure after the restart
        // disables the webhook, instead of a fresh 2 s window starting.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let q = queue(dir.path(), &hooks).await;
        let admin = Admin::open(&dir.path().join("outbox.db")).unwrap();
        let disabled = async {
            while admin.disabled().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_millis(1500), disabled)
            .await
            .expect("disabled on the first failure after the restart");
        assert_eq!(receiver.seen().len(), 2);
        q.close().await;
    });
}

#[test]
fn calls_stay_in_order_and_a_dead_endpoint_delays_nobody_else() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|path, nth| match path {
            // Jitter so that, were order not kept, it would show.
            "/crm" => Reply {
                delay: Duration::from_millis((nth as u64 * 7919) % 25),
                ..Reply::status(200)
            },
            _ => Reply {
                delay: Duration::from_secs(30),
                ..Reply::status(200)
            },
        })
        .await;
        let all = all_triggers();
        let text = format!(
            "[[webhooks]]\nname = \"crm\"\ntriggers = [{all}]\nurl = \"{0}/crm\"\n\n\
             [[webhooks]]\nname = \"dead\"\ntriggers = [{all}]\nurl = \"{0}/dead\"\nretries = 3\ntimeout = \"300ms\"\n",
            receiver.base()
        );
        let (settings, hooks) = compile(&config(&text));
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path(), &hooks).await;
        let reqs = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let crm_total = reqs.iter().filter(|r| r.webhook == "crm").count();
        q.submit(reqs);
        let started = std::time::Instant::now();
        assert!(
            receiver
                .wait_for(Duration::from_secs(10), |seen| seen.iter().filter(|r| r.uri == "/crm").count() == crm_total)
                .await
        );
        assert!(started.elapsed() < Duration::from_secs(3), "crm waited on the dead endpoint");
        // The receiver has seen the last request; the worker records the 2xx a moment later.
        let recorded = async {
            while !rows(dir.path(), "crm").iter().all(|r| r.state == "delivered") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), recorded)
            .await
            .unwrap_or_else(|_| panic!("not all delivered: {:#?}", rows(dir.path(), "crm")));
        assert!(rows(dir.path(), "dead").iter().all(|r| r.state == "pending"));
        // Per call, the receiver got the moments in sequence.
        let mut last: HashMap<String, u64> = HashMap::new();
        for r in receiver.seen().iter().filter(|r| r.uri == "/crm") {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let call = body["cdr"]["id"].as_str().unwrap().to_owned();
            let seq = body["sequence"].as_u64().unwrap();
            let prev = last.insert(call.clone(), seq).unwrap_or(0);
            assert!(seq > prev, "call {call}: {seq} after {prev}");
        }
        assert_eq!(last.len(), 5);
        q.close().await;
    });
}

#[test]
fn a_restart_resumes_pending_deliveries_and_never_enqueues_twice() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(503)).await;
        let text = format!(
            "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.received\", \"call.hangup\"]\nurl = \"{}/crm\"\nretries = 10\n",
            receiver.base()
        );
        let (settings, hooks) = compile(&config(&text));
        let dir = tempfile::tempdir().unwrap();
        let reqs = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        assert_eq!(reqs.len(), 10);
        {
            let q = queue(dir.path(), &hooks).await;
            q.submit(reqs.clone());
            assert!(receiver.wait_for(Duration::from_secs(10), |s| s.len() >= 5).await);
            q.close().await;
        }
        assert_eq!(
            Admin::open(&dir.path().join("outbox.db")).unwrap().list(&ListFilter { state: Some(State::Pending), ..Default::default() }).unwrap().len(),
            10
        );
        receiver.set_script(|_, _| Reply::status(200));
        let q = queue(dir.path(), &hooks).await;
        // The same calls seen again (a replayed stream) add nothing.
        q.submit(reqs);
        tokio::time::timeout(Duration::from_secs(20), q.idle()).await.expect("settles");
        let delivered: HashSet<String> = receiver
            .seen()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        assert_eq!(delivered.len(), 10);
        assert_eq!(rows(dir.path(), "crm").len(), 10);
        q.close().await;
    });
}

/// Every trigger name, quoted, for a TOML list.
fn all_triggers() -> String {
    switchhook::session::Trigger::ALL
        .map(|t| format!("\"{}\"", t.name()))
        .join(", ")
}

/// The `trigger` of a received webhook's JSON body.
fn trigger_of(r: &common::receiver::Received) -> String {
    let body: Value = serde_json::from_str(&r.body).unwrap();
    body["trigger"].as_str().unwrap().to_owned()
}

/// Waits until every row of the outbox `db` is delivered (the outbox records each answer just
/// after the receiver has it, so a late duplicate would show); false after `limit`.
async fn all_delivered(db: &Path, limit: Duration) -> bool {
    let settled = async {
        loop {
            let counts = Admin::open(db).and_then(|a| a.counts()).unwrap_or_default();
            if counts.len() == 1 && counts[0].0 == "delivered" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(limit, settled).await.is_ok()
}

/// A webhook named `crm` on every trigger, posting to `receiver`'s `/crm`.
fn crm_on_every_trigger(receiver: &Receiver) -> String {
    format!(
        "[[webhooks]]\nname = \"crm\"\ntriggers = [{}]\nurl = \"{}/crm\"\n",
        all_triggers(),
        receiver.base()
    )
}

/// Per call, the requests among `reqs` whose ids arrived (in `ids`' order) came in sequence.
fn assert_in_order_per_call(ids: &[&str], reqs: &[Request]) {
    for call in reqs.iter().map(|r| &r.call_id).collect::<HashSet<_>>() {
        let sent: Vec<u32> = ids
            .iter()
            .filter_map(|id| reqs.iter().find(|r| r.id == *id && &r.call_id == call))
            .map(|r| r.seq)
            .collect();
        assert!(sent.windows(2).all(|w| w[0] < w[1]), "{call}: {sent:?}");
    }
}

/// Writes a `run` configuration into `dir`: the playback server on `port`, JSON logs at
/// debug level, the outbox `dir/outbox.db`, then `webhooks`. Returns its path, the outbox's
/// and the text.
fn run_config(
    dir: &Path,
    port: u16,
    webhooks: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let db = dir.join("outbox.db");
    let text = format!(
        "[freeswitch]\nhost = \"127.0.0.1\"\nport = {port}\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\
         [store]\npath = {db:?}\n[egress]\nallow = [\"127.0.0.1\"]\n\n{webhooks}",
        db = db.display().to_string(),
    );
    let path = dir.join("switchhook.toml");
    std::fs::write(&path, &text).unwrap();
    (path, db, text)
}

/// Runs `switchhook run` with `config`; its log goes to a file in the config's directory.
fn spawn_run(config: &Path, password: &str) -> common::ChildGuard {
    let log = std::fs::File::create(config.with_extension(format!("log.{}", std::process::id())))
        .unwrap();
    common::run_command(config, password)
        .stderr(log)
        .spawn()
        .map(common::ChildGuard)
        .unwrap()
}

#[test]
fn sigkill_with_deliveries_pending_loses_nothing() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply {
            retry_after: Some("1".into()),
            ..Reply::status(503)
        })
        .await;
        let server =
            common::playback("freeswitch-1.10/16-concurrent-mix.esl", "kill-9-test").await;
        let dir = tempfile::tempdir().unwrap();
        let all = all_triggers();
        let (cfg_path, db, text) = run_config(
            dir.path(),
            server.addr().port(),
            &format!(
                "[[webhooks]]\nname = \"crm\"\ntriggers = [{all}]\nurl = \"{base}/crm\"\nretries = 10\n\n\
                 [[webhooks]]\nname = \"signed\"\ntriggers = [\"call.hangup\"]\nurl = \"{base}/signed\"\nretries = 10\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
                base = receiver.base(),
            ),
        );
        // What must arrive: every request replay computes for the capture.
        let (settings, hooks) = compile(&config(&text));
        let expected = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let expected_ids: HashSet<String> = expected.iter().map(|r| r.id.clone()).collect();
        // 25 moments of five calls (the outbound one: dialled and answered by the far end too),
        // and five hangups signed.
        assert_eq!(expected.len(), 25 + 5);

        let mut first = spawn_run(&cfg_path, "kill-9-test");
        // Wait until every request is committed (and being refused).
        let committed = async {
            loop {
                if db.exists() {
                    if let Ok(admin) = Admin::open(&db) {
                        let n = admin.list(&ListFilter::default()).map(|r| r.len()).unwrap_or(0);
                        if n == expected.len() && receiver.seen().len() >= 10 {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), committed).await.expect("all requests committed");
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        let refused = receiver.seen().len();
        assert!(receiver.seen().iter().all(|r| r.status == 503));

        receiver.set_script(|_, _| Reply::status(200));
        let mut second = spawn_run(&cfg_path, "kill-9-test");
        let arrived = receiver
            .wait_for(Duration::from_secs(60), |seen| {
                let ok: HashSet<&str> = seen
                    .iter()
                    .filter(|r| r.status == 200)
                    .map(|r| r.headers["webhook-id"].as_str())
                    .collect();
                ok.len() == expected_ids.len()
            })
            .await;
        // The receiver has them; the outbox records each answer just after.
        let all_done = async {
            let want = vec![("delivered".to_owned(), expected.len() as i64)];
            while Admin::open(&db).and_then(|a| a.counts()).ok() != Some(want.clone()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let recorded = tokio::time::timeout(Duration::from_secs(10), all_done).await.is_ok();
        second.kill().unwrap();
        second.wait().unwrap();
        assert!(recorded, "{:?}", Admin::open(&db).unwrap().counts());
        let seen = receiver.seen();
        assert!(arrived, "{} of {} arrived", seen.iter().filter(|r| r.status == 200).count(), expected_ids.len());
        let delivered: Vec<_> = seen[refused..].iter().filter(|r| r.status == 200).collect();
        let ids: HashSet<String> = delivered.iter().map(|r| r.headers["webhook-id"].clone()).collect();
        assert_eq!(ids, expected_ids, "exactly the expected requests, de-duplicable by webhook-id");
        // In order per call and webhook.
        let mut last: HashMap<(String, String), u64> = HashMap::new();
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        for r in &delivered {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let key = (r.uri.clone(), body["cdr"]["id"].as_str().unwrap().to_owned());
            let seq = body["sequence"].as_u64().unwrap();
            let prev = last.insert(key.clone(), seq).unwrap_or(0);
            assert!(seq > prev, "{key:?}: {seq} after {prev}");
            if r.uri == "/signed" {
                let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
                assert_eq!(
                    r.headers["webhook-signature"],
                    signer.sign(&r.headers["webhook-id"], ts, r.body.as_bytes())
                );
            }
        }
    });
}

#[test]
fn a_config_edit_applies_live_and_a_bad_edit_keeps_the_running_one() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let server = switchhook::fake_freeswitch::PlaybackServer::start(
            "127.0.0.1:0",
            switchhook::fake_freeswitch::PlaybackConfig {
                password: "reload-test".into(),
                captures: vec![fixture("freeswitch-1.10/16-concurrent-mix.esl")],
                pace: switchhook::fake_freeswitch::Pace::RealTime { speed: 1.0 },
                faults: Default::default(),
            },
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let head = format!(
            "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n[log]\nformat = \"json\"\n[store]\npath = {:?}\n[egress]\nallow = [\"127.0.0.1\"]\n",
            server.addr().port(),
            dir.path().join("outbox.db").display().to_string()
        );
        let cfg_path = dir.path().join("switchhook.toml");
        let hook = |name: &str, trigger: &str| {
            format!(
                "[[webhooks]]\nname = \"{name}\"\ntriggers = [\"{trigger}\"]\nurl = \"{}/{name}\"\nsecret = \"whsec_c2VjcmV0LW5ldmVyLWxvZ2dlZC0wMTIz\"\n",
                receiver.base()
            )
        };
        std::fs::write(&cfg_path, format!("{head}{}", hook("a", "call.received"))).unwrap();
        let log_path = cfg_path.with_extension(format!("log.{}", std::process::id()));
        let mut child = spawn_run(&cfg_path, "reload-test");
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let wait_log = |needle: &'static str| {
            let log = &log;
            async move {
                for _ in 0..200 {
                    if log().contains(needle) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                false
            }
        };
        assert!(receiver.wait_for(Duration::from_secs(10), |s| s.iter().any(|r| r.uri == "/a")).await);
        // A bad edit: logged, and the running configuration stays.
        std::fs::write(&cfg_path, format!("{head}[[webhooks]]\nname = 1\n")).unwrap();
        assert!(wait_log("configuration change rejected").await, "{}", log());
        // A good edit: a new webhook on hangups, live.
        std::fs::write(&cfg_path, format!("{head}{}", hook("b", "call.hangup"))).unwrap();
        assert!(wait_log("configuration reloaded").await, "{}", log());
        let got_b = receiver
            .wait_for(Duration::from_secs(20), |s| s.iter().any(|r| r.uri == "/b"))
            .await;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(got_b, "no hangup webhook after the reload\n{}", log());
        let b: Vec<_> = receiver.seen().into_iter().filter(|r| r.uri == "/b").collect();
        assert!(b.iter().all(|r| r.body.contains("\"trigger\":\"call.hangup\"")));
        let log = log();
        assert!(!log.contains("c2VjcmV0LW5ldmVyLWxvZ2dlZC0wMTIz"), "a secret reached the log");
        assert!(!log.contains("reload-test"), "the ESL password reached the log");
    });
}

/// A call that is up while switchhook restarts (SIGTERM, then a new process on the same outbox
/// and the same FreeSWITCH): the new process finds it through `show channels` and follows it
/// to its hangup. No webhook reaches the receiver twice (the one in flight at the SIGTERM is
/// answered and recorded before the process exits), each trigger fires at most once for the
/// call, every request is one replay computes for the capture, and the hangup arrives.
#[test]
fn a_call_up_across_a_restart_gets_each_webhook_once() {
    use switchhook::fake_freeswitch::{Pace, PlaybackConfig, PlaybackServer};
    let rt = rt();
    rt.block_on(async {
        // The fourth request (call.missed_or_answered, sent with the answer) takes 1.5 s: it
        // is in flight when the SIGTERM comes.
        let receiver = Receiver::start(|_, nth| Reply {
            delay: Duration::from_millis(if nth == 4 { 1500 } else { 0 }),
            ..Reply::status(200)
        })
        .await;
        let capture = "freeswitch-1.10/04-hold-unhold.esl";
        // At twice real speed: answered after about 1.5 s, hung up after about 6 s.
        let server = PlaybackServer::start(
            "127.0.0.1:0",
            PlaybackConfig {
                password: "restart-test".into(),
                captures: vec![fixture(capture)],
                pace: Pace::RealTime { speed: 2.0 },
                faults: Default::default(),
            },
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cfg_path, db, text) = run_config(
            dir.path(),
            server.addr().port(),
            &format!(
                "[[webhooks]]\nname = \"crm\"\ntriggers = [{all}]\nurl = \"{base}/crm\"\nretries = 10\n",
                all = all_triggers(),
                base = receiver.base(),
            ),
        );
        let (settings, hooks) = compile(&config(&text));
        let expected: HashSet<String> =
            requests(capture, &settings, &hooks).await.into_iter().map(|r| r.id).collect();

        let mut first = spawn_run(&cfg_path, "restart-test");
        let answered = receiver
            .wait_for(Duration::from_secs(30), |seen| {
                seen.iter().any(|r| trigger_of(r) == "call.answered.extension")
            })
            .await;
        let in_flight = async {
            while receiver.arrived("/crm") < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let in_flight = tokio::time::timeout(Duration::from_secs(10), in_flight).await.is_ok();
        let _ = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status();
        let status = first.wait().unwrap();
        assert!(answered, "{:?}", receiver.seen().iter().map(trigger_of).collect::<Vec<_>>());
        assert!(in_flight, "the fourth request was sent before the stop");
        assert!(status.success(), "SIGTERM ends run cleanly: {status:?}");
        let before = receiver.seen().len();
        assert!(server.position() < server.total_events(), "the call was still up at the stop");

        let mut second = spawn_run(&cfg_path, "restart-test");
        let hung_up = receiver
            .wait_for(Duration::from_secs(60), |seen| seen.iter().any(|r| trigger_of(r) == "call.hangup"))
            .await;
        // The outbox records each answer just after the receiver has it: wait until nothing is
        // left to send, so a late duplicate would show.
        let settled = all_delivered(&db, Duration::from_secs(10)).await;
        second.kill().unwrap();
        second.wait().unwrap();
        let seen = receiver.seen();
        let triggers: Vec<String> = seen.iter().map(trigger_of).collect();
        assert!(hung_up, "{triggers:?}");
        assert!(settled, "{:?}", Admin::open(&db).unwrap().counts());
        assert!(seen.len() > before, "the second process delivered the rest: {triggers:?}");
        let ids: Vec<&str> = seen.iter().map(|r| r.headers["webhook-id"].as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "a webhook arrived twice: {triggers:?}");
        // Nor was one sent twice and dropped half way (an abandoned attempt).
        assert_eq!(receiver.arrived("/crm"), ids.len(), "{triggers:?}");
        let fired: HashSet<&String> = triggers.iter().collect();
        assert_eq!(fired.len(), triggers.len(), "a trigger fired twice: {triggers:?}");
        assert_eq!(triggers.iter().filter(|t| *t == "call.hangup").count(), 1);
        for id in &unique {
            assert!(expected.contains(*id), "{id} is not a request replay computes: {triggers:?}");
        }
        // `sequence` keeps increasing across the restart, in the order the receiver got them.
        let sequences: Vec<u64> = seen
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["sequence"].as_u64().unwrap())
            .collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?} for {triggers:?}");
    });
}

/// `headers_env`: a token from the environment reaches the receiver on every attempt, and
/// neither the outbox file nor the log ever holds it.
#[test]
fn a_header_from_the_environment_is_sent_but_never_stored() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let server = common::playback("freeswitch-1.10/03-abandoned-short.esl", "env-header").await;
        let dir = tempfile::tempdir().unwrap();
        let (cfg_path, db, _) = run_config(
            dir.path(),
            server.addr().port(),
            &format!(
                "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.received\", \"call.hangup\"]\nurl = \"{base}/crm\"\n\
                 headers = {{ \"X-Call\" = \"{{id}}\" }}\nheaders_env = {{ \"Authorization\" = \"CRM_TOKEN\" }}\n",
                base = receiver.base(),
            ),
        );
        let token = "Bearer tok_3f9a1c77e2b54d0e";
        let log_path = dir.path().join("run.log");
        let mut child = common::run_command(&cfg_path, "env-header")
            .env("CRM_TOKEN", token)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .map(common::ChildGuard)
            .unwrap();
        let arrived = receiver.wait_for(Duration::from_secs(30), |s| s.len() >= 2).await;
        let recorded = async {
            let want = vec![("delivered".to_owned(), 2)];
            while Admin::open(&db).and_then(|a| a.counts()).ok() != Some(want.clone()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let recorded = tokio::time::timeout(Duration::from_secs(10), recorded).await.is_ok();
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().unwrap();
        assert!(arrived && recorded, "{:?}", receiver.seen());
        for r in receiver.seen() {
            assert_eq!(r.headers["authorization"], token);
            assert!(!r.headers["x-call"].is_empty());
        }
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("outbox.db") {
                stored.extend(std::fs::read(&path).unwrap());
            }
        }
        assert!(!stored.is_empty());
        let secret = &token.as_bytes()[7..];
        assert!(!stored.windows(secret.len()).any(|w| w == secret), "the token is in the outbox");
        // The request itself is there (the outbox was read, not an empty file).
        assert!(stored.windows(6).any(|w| w == b"X-Call"));
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(!log.contains(&token[7..]), "the token is in the log");
    });
}

/// A real small filesystem: a tmpfs mounted on a temporary directory and unmounted by this
/// guard, also when the test fails. Mounting needs root, as CI runs.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {size} tmpfs failed: this test needs root (as CI runs)"
        );
        SmallDisk(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file until the filesystem has no room left.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        for chunk in [64 << 10, 4 << 10, 1] {
            let bytes = vec![0u8; chunk];
            while matches!(f.write(&bytes), Ok(n) if n > 0) {}
        }
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
async fn until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[test]
fn a_full_disk_holds_webhooks_in_memory_and_neither_loses_nor_repeats_one() {
    let rt = rt();
    rt.block_on(async {
        let disk = SmallDisk::mount("4m");
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let text = crm_on_every_trigger(&receiver);
        let (settings, hooks) = compile(&config(&text));
        let first = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let mut later = Vec::new();
        for capture in [
            "01-inbound-answered",
            "06-ringgroup-simultaneous",
            "04-hold-unhold",
        ] {
            let path = format!("freeswitch-1.10/{capture}.esl");
            later.extend(requests(&path, &settings, &hooks).await);
        }
        let calls: HashSet<&str> = first.iter().map(|r| r.call_id.as_str()).collect();
        let outbox = disk.path().join("outbox.db");
        let stats;
        {
            let q = DeliveryQueue::start(
                Outbox::open(&outbox).unwrap(),
                Arc::clone(&hooks),
                DeliveryOptions::default(),
            )
            .await
            .unwrap();
            stats = q.shared_stats();
            // Committed while there is room; the receiver holds the first of each call while
            // the disk fills, so their outcomes cannot be recorded when it answers.
            receiver.hold();
            q.submit(first.clone());
            assert!(
                until(Duration::from_secs(20), || receiver.arrived("/crm")
                    >= calls.len())
                .await
            );
            disk.fill();
            receiver.release();
            assert!(
                until(Duration::from_secs(20), || stats
                    .unrecorded
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0)
                .await,
                "an answered attempt waits to be recorded"
            );
            // New requests while the disk is full wait in memory, and none is sent.
            q.submit(later.clone());
            assert!(
                until(Duration::from_secs(20), || stats
                    .held
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0)
                .await,
                "the requests are held"
            );
            let problem = stats
                .outbox_problem()
                .expect("the outbox problem is reported");
            assert!(problem.contains("outbox cannot commit"), "{problem}");
            let seen: HashSet<String> = receiver
                .seen()
                .iter()
                .map(|r| r.headers["webhook-id"].clone())
                .collect();
            assert!(
                later.iter().all(|r| !seen.contains(&r.id)),
                "nothing is sent before it is committed"
            );
            // Room again: everything goes out, in order per call, once.
            disk.free();
            tokio::time::timeout(Duration::from_secs(60), q.idle())
                .await
                .expect("settles");
            assert_eq!(stats.outbox_problem(), None);
            q.close().await;
        }
        let total = first.len() + later.len();
        let arrived = receiver.arrived("/crm");
        let ids: HashSet<String> = receiver
            .seen()
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        assert_eq!((arrived, ids.len()), (total, total), "every request once");
        assert_eq!(stats.lost.load(std::sync::atomic::Ordering::Relaxed), 0);
        let seen = receiver.seen();
        let ids: Vec<&str> = seen
            .iter()
            .map(|r| r.headers["webhook-id"].as_str())
            .collect();
        assert_in_order_per_call(&ids, &later);
        // Restarted, the outbox holds nothing to send again: every outcome was recorded.
        let q = DeliveryQueue::start(
            Outbox::open(&outbox).unwrap(),
            Arc::clone(&hooks),
            DeliveryOptions::default(),
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), q.idle())
            .await
            .expect("settles");
        q.close().await;
        assert_eq!(
            receiver.arrived("/crm"),
            total,
            "nothing sent twice after the restart"
        );
        let delivered = Admin::open(&outbox)
            .unwrap()
            .list(&ListFilter {
                state: Some(State::Delivered),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(delivered.len(), total);
    });
}

#[test]
fn past_its_memory_bound_a_full_disk_gives_requests_up_and_counts_them() {
    let rt = rt();
    rt.block_on(async {
        let disk = SmallDisk::mount("2m");
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let text = crm_on_every_trigger(&receiver);
        let (settings, hooks) = compile(&config(&text));
        let reqs = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let outbox = disk.path().join("outbox.db");
        let q = DeliveryQueue::start(
            Outbox::open(&outbox).unwrap(),
            Arc::clone(&hooks),
            // Room for one request at a time.
            DeliveryOptions {
                hold_max_bytes: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let stats = q.shared_stats();
        disk.fill();
        q.submit(reqs.clone());
        let lost = reqs.len() as u64 - 1;
        assert!(
            until(Duration::from_secs(20), || {
                stats.lost.load(std::sync::atomic::Ordering::Relaxed) == lost
                    && stats.held.load(std::sync::atomic::Ordering::Relaxed) == 1
            })
            .await
        );
        disk.free();
        tokio::time::timeout(Duration::from_secs(20), q.idle())
            .await
            .expect("settles");
        q.close().await;
        let seen = receiver.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].headers["webhook-id"], reqs[0].id,
            "the oldest is kept"
        );
    });
}

/// The memory bound is for requests the outbox cannot take: a burst larger than it, handed
/// over while the outbox commits, is committed in turn and loses nothing.
#[test]
fn a_burst_beyond_the_memory_bound_is_committed_while_the_outbox_works() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let (settings, hooks) = compile(&config(&crm_on_every_trigger(&receiver)));
        let reqs = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let dir = tempfile::tempdir().unwrap();
        let q = DeliveryQueue::start(
            Outbox::open(&dir.path().join("outbox.db")).unwrap(),
            Arc::clone(&hooks),
            DeliveryOptions {
                hold_max_bytes: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let stats = q.shared_stats();
        q.submit(reqs.clone());
        tokio::time::timeout(Duration::from_secs(30), q.idle())
            .await
            .expect("settles");
        q.close().await;
        assert_eq!(stats.lost.load(std::sync::atomic::Ordering::Relaxed), 0);
        let ids: HashSet<String> = receiver
            .seen()
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        assert_eq!(ids.len(), reqs.len());
    });
}

/// `run` is killed with SIGKILL mid-call, and the call is answered while it is down: the
/// restarted process adopts the call and fires what the call shows (answered, and
/// missed-or-answered), so the receiver gets every webhook the uninterrupted run sends,
/// each once.
#[test]
fn moments_that_pass_while_run_is_killed_are_fired_after_the_restart() {
    use switchhook::fake_freeswitch::{Faults, Pace, PlaybackConfig, PlaybackServer};
    use switchhook::session::SessionTracker;
    let rt = rt();
    rt.block_on(async {
        let capture = "freeswitch-1.10/04-hold-unhold.esl";
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let dir = tempfile::tempdir().unwrap();
        // The event index that reveals each trigger in an uninterrupted run.
        let text = crm_on_every_trigger(&receiver);
        let (settings, hooks) = compile(&config(&text));
        let mut events = Vec::new();
        let mut stream = replay::open(&fixture(capture), Default::default())
            .await
            .unwrap();
        while let Some(item) = futures::StreamExt::next(&mut stream).await {
            if let Ok(Ok(switchhook::esl::Message::Event(ev))) = item {
                events.push(ev);
            }
        }
        let mut tracker = SessionTracker::new(Arc::clone(&settings)).with_moments();
        let mut revealed: HashMap<&'static str, usize> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            tracker.on_event(ev);
            for m in tracker.take_moments() {
                revealed.entry(m.trigger.name()).or_insert(i);
            }
        }
        let (dialed, answered) = (revealed["call.dialed"], revealed["call.answered.extension"]);
        assert!(dialed < answered);
        // The first connection goes silent once the dialled moment's event is sent; the
        // answer happens while switchhook is down.
        let server = PlaybackServer::start(
            "127.0.0.1:0",
            PlaybackConfig {
                password: "kill-9-moments".into(),
                captures: vec![fixture(capture)],
                pace: Pace::RealTime { speed: 4.0 },
                faults: Faults {
                    stall_after: Some(dialed + 1),
                    outage_events: answered + 2 - (dialed + 1),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
        let (cfg_path, db, _) = run_config(dir.path(), server.addr().port(), &text);
        let expected: HashSet<String> = requests(capture, &settings, &hooks)
            .await
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut first = spawn_run(&cfg_path, "kill-9-moments");
        let before = receiver
            .wait_for(Duration::from_secs(30), |seen| {
                seen.iter().any(|r| trigger_of(r) == "call.dialed")
            })
            .await;
        first.kill().unwrap();
        first.wait().unwrap();
        assert!(
            before,
            "{:?}",
            receiver.seen().iter().map(trigger_of).collect::<Vec<_>>()
        );
        assert!(
            !receiver
                .seen()
                .iter()
                .any(|r| trigger_of(r).starts_with("call.answered")),
            "the answer came after the kill"
        );

        let mut second = spawn_run(&cfg_path, "kill-9-moments");
        let hung_up = receiver
            .wait_for(Duration::from_secs(60), |seen| {
                seen.iter().any(|r| trigger_of(r) == "call.hangup")
            })
            .await;
        let settled = all_delivered(&db, Duration::from_secs(10)).await;
        second.kill().unwrap();
        second.wait().unwrap();
        let seen = receiver.seen();
        let triggers: Vec<String> = seen.iter().map(trigger_of).collect();
        assert!(hung_up && settled, "{triggers:?}");
        let ids: Vec<String> = seen
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        let unique: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "a webhook arrived twice: {triggers:?}"
        );
        assert_eq!(unique, expected, "every webhook of the call: {triggers:?}");
    });
}

/// A host name is checked when it is resolved, at each attempt: `localhost` resolves to
/// loopback, which the default `[egress]` refuses, so the receiver there gets nothing and the
/// delivery says why; allowed by name, it goes through.
#[test]
fn a_name_that_resolves_to_loopback_is_refused_at_the_attempt() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let hook = format!(
            "[[webhooks]]\nname = \"crm\"\ntriggers = [\"call.hangup\"]\nurl = \"http://localhost:{}/crm\"\nretries = 0\n",
            receiver.addr.port()
        );
        for (egress, delivered) in [("[egress]\n", false), ("[egress]\nallow = [\"localhost\"]\n", true)] {
            let (settings, hooks) = compile(&config(&format!("{egress}{hook}")));
            let reqs = requests("freeswitch-1.10/01-inbound-answered.esl", &settings, &hooks).await;
            assert_eq!(reqs.len(), 1);
            let dir = tempfile::tempdir().unwrap();
            let q = queue(dir.path(), &hooks).await;
            q.submit(reqs);
            tokio::time::timeout(Duration::from_secs(20), q.idle()).await.expect("settles");
            q.close().await;
            let row = &rows(dir.path(), "crm")[0];
            if delivered {
                assert_eq!(row.state, "delivered", "{row:?}");
            } else {
                assert_eq!(row.state, "dead", "{row:?}");
                let error = row.last_error.clone().unwrap_or_default();
                assert!(error.contains("egress") && error.contains("loopback"), "{error}");
            }
        }
        assert_eq!(receiver.arrived("/crm"), 1, "only the allowed one arrived");
    });
}

/// Past `pending_memory_bytes`, pending requests wait in the outbox alone and are read back
/// when their turn comes: with no room at all, every request of a capture still goes out
/// once, in order per call, and memory holds none of them.
#[test]
fn a_backlog_beyond_its_memory_bound_waits_in_the_outbox_and_goes_out_in_order() {
    let rt = rt();
    rt.block_on(async {
        let receiver = Receiver::start(|_, _| Reply::status(200)).await;
        let text = crm_on_every_trigger(&receiver);
        let (settings, hooks) = compile(&config(&text));
        let reqs = requests("freeswitch-1.10/16-concurrent-mix.esl", &settings, &hooks).await;
        let dir = tempfile::tempdir().unwrap();
        let q = DeliveryQueue::start(
            Outbox::open(&dir.path().join("outbox.db")).unwrap(),
            Arc::clone(&hooks),
            DeliveryOptions {
                pending_memory_bytes: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        q.submit(reqs.clone());
        let mut most = 0;
        let settled = async {
            loop {
                most = most.max(q.pending_memory());
                if q.in_memory() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), settled)
            .await
            .expect("settles");
        q.close().await;
        assert_eq!(most, 0, "no request was held in memory");
        let seen = receiver.seen();
        let ids: Vec<&str> = seen
            .iter()
            .map(|r| r.headers["webhook-id"].as_str())
            .collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!((ids.len(), unique.len()), (reqs.len(), reqs.len()));
        assert_in_order_per_call(&ids, &reqs);
    });
}
