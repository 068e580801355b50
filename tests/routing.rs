//! The routing step end to end: a fake FreeSWITCH made of the captured outbound-socket
//! conversations (19-23) connects over real TCP to the routing server, which asks a real HTTP
//! routing server on 127.0.0.1; the tests check the exact commands switchhook sends back.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_fs::{call, conversation, FakeOptions, Transcript};
use common::receiver::{Receiver, Reply};
use switchhook::hooks::Signer;
use switchhook::routing::{
    RouteConfig, RouteTable, Router, RoutingConfig, RoutingServer, StepReport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Rig {
    addr: SocketAddr,
    router: Arc<Router>,
    reports: mpsc::UnboundedReceiver<StepReport>,
    stop: CancellationToken,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn route(v: serde_json::Value) -> RouteConfig {
    serde_json::from_value(v).unwrap()
}

async fn rig(routing: RoutingConfig, routes: Vec<RouteConfig>) -> Rig {
    let table = RouteTable::compile(&routing, &routes).expect("valid routes");
    let router = Arc::new(Router::new(&routing, Arc::new(table)));
    let mut server = RoutingServer::bind("127.0.0.1:0", Arc::clone(&router))
        .await
        .unwrap();
    let (tx, reports) = mpsc::unbounded_channel();
    server.report_to(tx);
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone()));
    Rig {
        addr,
        router,
        reports,
        stop,
    }
}

impl Rig {
    async fn report(&mut self) -> StepReport {
        tokio::time::timeout(Duration::from_secs(30), self.reports.recv())
            .await
            .expect("a step report")
            .unwrap()
    }
}

fn crm(base: &str, path: &str) -> RouteConfig {
    route(serde_json::json!({
        "name": "crm",
        "url": format!("{base}{path}?code={{code}}&did={{did}}&callerid={{callerid}}&callername={{callername}}"),
        "deadline": "1s",
    }))
}

fn sendmsg(app: &str, arg: &str) -> String {
    let arg = if arg.is_empty() {
        String::new()
    } else {
        format!("\nexecute-app-arg: {arg}")
    };
    format!(
        "sendmsg\ncall-command: execute\nexecute-app-name: {app}{arg}\nEvent-UUID: <uuid>\nevent-lock: true\n"
    )
}

/// The step's opening: `connect`, then the subscription capture 23 shows.
fn opening(uuid: &str) -> Vec<String> {
    vec![
        "connect\n".to_owned(),
        format!("filter Unique-ID {uuid}\n"),
        "event plain CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE\n".to_owned(),
    ]
}

fn sets(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, v)| sendmsg("set", &format!("{k}={v}")))
        .collect()
}

/// The `set` arguments switchhook sent, as (name, value).
fn set_args(t: &Transcript) -> Vec<(String, String)> {
    t.commands
        .iter()
        .filter_map(|c| {
            let arg = c
                .text
                .lines()
                .find_map(|l| l.strip_prefix("execute-app-arg: "))?;
            c.text
                .contains("execute-app-name: set")
                .then(|| arg.split_once('=').unwrap())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn var(t: &Transcript, name: &str) -> Option<String> {
    set_args(t)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn seed_ack() -> Reply {
    Reply::body(
        "application/x-www-form-urlencoded",
        "status=ACK&destination=1003&callername=CRM%20Jo%20Bloggs%20(%2B447700900190)",
    )
}

#[tokio::test]
async fn an_ack_hands_the_captured_call_its_destination_and_name() {
    let http = Receiver::start(|_, _| seed_ack()).await;
    let mut rig = rig(RoutingConfig::default(), vec![crm(&http.base(), "/route")]).await;
    let conv = conversation(&["19-routing-crm-ack"]);
    let t = call(rig.addr, &conv, FakeOptions::default()).await;
    let report = rig.report().await;

    let mut want = opening("ad08414e-a9a9-4ca2-9f6b-2f2f4ea18e10");
    want.extend(sets(&[
        ("switchhook_status", "ACK"),
        ("switchhook_destination", "1003"),
        ("switchhook_callername", "CRM Jo Bloggs (+447700900190)"),
        ("switchhook_reason", "the routing server answered ACK"),
        ("switchhook_source", "server"),
        ("switchhook_latency_ms", "<ms>"),
        // The URL without its query (which may carry keys).
        ("switchhook_url", &format!("{}/route", http.base())),
        ("effective_caller_id_name", "CRM Jo Bloggs (+447700900190)"),
    ]));
    want.push("exit\n".to_owned());
    assert_eq!(t.normalized(), want);
    assert!(t.exited && t.unknown.is_empty() && t.after_hangup.is_empty());

    // Every variable the captured stand-in set, switchhook sets to the same value.
    let captured = std::fs::read_to_string(common::fixture(
        "freeswitch-1.10/19-routing-crm-ack.app2fs.raw",
    ))
    .unwrap();
    let ours = set_args(&t);
    for arg in captured
        .lines()
        .filter_map(|l| l.strip_prefix("execute-app-arg: "))
    {
        let (k, v) = arg.split_once('=').unwrap();
        assert!(
            ours.contains(&(k.to_owned(), v.to_owned())),
            "{arg} missing from {ours:?}"
        );
    }

    // The routing server was asked with the channel data's values, percent-encoded.
    let seen = http.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].uri,
        "/route?code=&did=%2B441610007100&callerid=%2B447700900190&callername=Jo%20Bloggs"
    );
    assert_eq!(report.call_id, "ad08414e-a9a9-4ca2-9f6b-2f2f4ea18e10");
    assert_eq!(report.route.as_deref(), Some("crm"));
    assert!(report.aborted.is_none(), "{report:?}");
}

#[tokio::test]
async fn the_digit_menu_collects_the_code_as_the_capture_did() {
    let http = Receiver::start(|_, _| {
        Reply::body(
            "application/json",
            r#"{"status":"ACK","destination":"1004","callername":"PIN caller"}"#,
        )
    })
    .await;
    let pin = route(serde_json::json!({
        "name": "pin",
        "url": format!("{}/pin?code={{code}}&did={{did}}", http.base()),
        "menu": {
            "enabled": true, "timeout": "5s", "attempts": 2, "min_digits": 1, "max_digits": 4,
            "start_message": "ivr/ivr-enter_ext_pound.wav",
            "error_message": "ivr/ivr-that_was_an_invalid_entry.wav",
        },
    }));
    let mut rig = rig(RoutingConfig::default(), vec![pin]).await;
    let conv = conversation(&["20-routing-pin-digits", "19-routing-crm-ack"]);
    let t = call(
        rig.addr,
        &conv,
        FakeOptions {
            speed: 4.0,
            ..Default::default()
        },
    )
    .await;
    let report = rig.report().await;
    let n = t.normalized();
    // The same answer and play_and_get_digits the captured stand-in sent, byte for byte
    // (but the event-lock).
    assert_eq!(n[3], sendmsg("answer", ""));
    assert_eq!(
        n[4],
        sendmsg(
            "play_and_get_digits",
            r"1 4 2 5000 # ivr/ivr-enter_ext_pound.wav ivr/ivr-that_was_an_invalid_entry.wav switchhook_code ^\d{1,4}$"
        )
    );
    assert_eq!(report.code.as_deref(), Some("1004"));
    assert_eq!(http.seen()[0].uri, "/pin?code=1004&did=%2B441610007101");
    assert_eq!(var(&t, "switchhook_status").as_deref(), Some("ACK"));
    assert_eq!(var(&t, "switchhook_destination").as_deref(), Some("1004"));
    assert_eq!(
        var(&t, "effective_caller_id_name").as_deref(),
        Some("PIN caller")
    );
    assert_eq!(n.last().unwrap(), "exit\n");
}

/// A code the routing server refuses (NAK) plays the error message and asks again, until the
/// menu's attempts are used; then the failure branch.
#[tokio::test]
async fn a_refused_code_asks_again_until_the_attempts_are_used() {
    for (accept_on, want_asks, want_status) in [(2, 2, "ACK"), (9, 3, "NAK")] {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&asked);
        let http = Receiver::start(move |_, _| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if n >= accept_on {
                Reply::body("text/plain", "status=ACK&destination=1004")
            } else {
                Reply::body("text/plain", "status=NAK")
            }
        })
        .await;
        let mut pin = route(serde_json::json!({
            "name": "pin",
            "url": format!("{}/pin?code={{code}}", http.base()),
            "menu": {
                "enabled": true, "timeout": "5s", "attempts": 3, "min_digits": 1, "max_digits": 4,
                "error_message": "ivr/ivr-that_was_an_invalid_entry.wav",
                "share_digits": accept_on == 9,
            },
        }));
        pin.on_failure = "switchhook-failed".into();
        let mut rig = rig(RoutingConfig::default(), vec![pin]).await;
        let conv = conversation(&[
            "20-routing-pin-digits",
            "21-routing-pin-timeout",
            "19-routing-crm-ack",
        ]);
        let t = call(
            rig.addr,
            &conv,
            FakeOptions {
                speed: 20.0,
                ..Default::default()
            },
        )
        .await;
        let report = rig.report().await;
        let n = t.normalized();
        assert_eq!(http.seen().len(), want_asks, "{n:#?}");
        let menus: Vec<&String> = n
            .iter()
            .filter(|c| c.contains("execute-app-name: play_and_get_digits"))
            .collect();
        assert_eq!(menus.len(), want_asks);
        // Each round offers the tries left.
        for (i, m) in menus.iter().enumerate() {
            assert!(
                m.contains(&format!("execute-app-arg: 1 4 {} 5000 #", 3 - i)),
                "{m}"
            );
        }
        let errors = n
            .iter()
            .filter(|c| **c == sendmsg("playback", "ivr/ivr-that_was_an_invalid_entry.wav"))
            .count();
        assert_eq!(
            errors,
            want_asks - 1,
            "the error message before each new try"
        );
        assert_eq!(var(&t, "switchhook_status").as_deref(), Some(want_status));
        // Only a route that shares its digits tells call assembly so.
        assert_eq!(
            n.contains(&sendmsg("set", "switchhook_share_digits=true")),
            accept_on == 9
        );
        if want_status == "NAK" {
            assert!(n.contains(&sendmsg("transfer", "switchhook-failed")));
        } else {
            assert_eq!(var(&t, "switchhook_destination").as_deref(), Some("1004"));
        }
        assert!(report.aborted.is_none(), "{report:?}");
    }
}

#[tokio::test]
async fn a_menu_without_digits_plays_the_timeout_message_and_fails() {
    let http = Receiver::start(|_, _| seed_ack()).await;
    let pin = route(serde_json::json!({
        "name": "pin",
        "url": format!("{}/pin?code={{code}}", http.base()),
        "menu": {"enabled": true, "attempts": 2, "max_digits": 4},
    }));
    let mut rig = rig(RoutingConfig::default(), vec![pin]).await;
    let conv = conversation(&["21-routing-pin-timeout", "19-routing-crm-ack"]);
    let t = call(
        rig.addr,
        &conv,
        FakeOptions {
            speed: 20.0,
            ..Default::default()
        },
    )
    .await;
    let report = rig.report().await;
    let n = t.normalized();
    assert_eq!(n[5], sendmsg("playback", "ivr/ivr-no_valid_entry.wav"));
    assert_eq!(
        &n[6..9],
        &sets(&[
            ("switchhook_status", "TIMEOUT"),
            ("switchhook_reason", "no digits"),
            ("switchhook_source", "menu"),
        ])[..]
    );
    assert!(http.seen().is_empty(), "no code, no question to the server");
    assert_eq!(report.code, None);
    assert!(report.aborted.is_none(), "{report:?}");
}

#[tokio::test]
async fn a_caller_hanging_up_mid_step_ends_it_and_nothing_more_is_sent() {
    // The routing server takes 3 s; the caller hangs up after 300 ms.
    let http = Receiver::start(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..seed_ack()
    })
    .await;
    let mut rig = rig(
        RoutingConfig::default(),
        vec![route(serde_json::json!({
            "name": "crm", "url": format!("{}/slow", http.base()), "deadline": "5s",
        }))],
    )
    .await;
    let conv = conversation(&["22-routing-caller-hangup", "19-routing-crm-ack"]);
    let started = Instant::now();
    let t = call(
        rig.addr,
        &conv,
        FakeOptions {
            hangup_after: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    )
    .await;
    let report = rig.report().await;
    let took = started.elapsed();
    assert_eq!(t.normalized(), opening(&report.call_id));
    assert!(t.after_hangup.is_empty(), "{:?}", t.after_hangup);
    assert!(!t.exited);
    assert_eq!(
        report.aborted,
        Some(switchhook::routing::SocketError::HungUp {
            cause: "ORIGINATOR_CANCEL".into()
        })
    );
    assert!(report.answer.is_none());
    assert!(
        took < Duration::from_secs(2),
        "the step ended with the call, not with the server: {took:?}"
    );
}

#[tokio::test]
async fn hostile_and_broken_replies_take_the_failure_branch_and_inject_nothing() {
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("semicolon", Reply::body("text/plain", "status=ACK&destination=1003;hangup"), "INVALID"),
        ("expansion", Reply::body("text/plain", "status=ACK&destination=%24%7Bsystem(reboot)%7D"), "INVALID"),
        ("space", Reply::body("text/plain", "status=ACK&destination=1003%20XML%20evil"), "INVALID"),
        ("overlong", Reply::body("text/plain", format!("status=ACK&destination={}", "9".repeat(40))), "INVALID"),
        ("chained status", Reply::body("text/plain", "status=ACK%26transfer"), "INVALID"),
        ("html", Reply::body("text/html", "<html>oops</html>"), "INVALID"),
        ("server error", Reply { status: 500, ..Reply::body("text/plain", "status=ACK&destination=1003") }, "ERR"),
        ("json nak", Reply::body("application/json", r#"{"status":"NAK"}"#), "NAK"),
        ("err", Reply::body("text/plain", "status=ERR"), "ERR"),
        (
            "hostile name",
            Reply::body(
                "text/plain",
                "status=ACK&destination=%2B441610000000&callername=%24%7Bsystem(x)%7D%20Bob%0Aexecute-app-name%3A%20hangup",
            ),
            "ACK",
        ),
    ];
    for (name, reply, want) in cases {
        let http = Receiver::start(move |_, _| reply.clone()).await;
        let mut rig = rig(RoutingConfig::default(), vec![crm(&http.base(), "/r")]).await;
        let conv = conversation(&["19-routing-crm-ack"]);
        let t = call(rig.addr, &conv, FakeOptions::default()).await;
        rig.report().await;
        assert_eq!(
            var(&t, "switchhook_status").as_deref(),
            Some(want),
            "{name}"
        );
        for c in &t.commands {
            // Every sendmsg has exactly its six lines: nothing was smuggled in.
            if c.text.starts_with("sendmsg") {
                assert_eq!(c.text.trim_end().lines().count(), 6, "{name}: {:?}", c.text);
            }
            assert!(!c.text.contains("${"), "{name}: {:?}", c.text);
        }
        if want == "ACK" {
            assert_eq!(
                var(&t, "switchhook_callername").as_deref(),
                Some("system(x) Bob execute-app-name: hangup")
            );
            assert_eq!(
                var(&t, "switchhook_destination").as_deref(),
                Some("+441610000000")
            );
        } else {
            assert_eq!(var(&t, "switchhook_destination"), None, "{name}");
            assert_eq!(var(&t, "effective_caller_id_name"), None, "{name}");
        }
    }
}

#[tokio::test]
async fn a_slow_server_times_out_within_the_deadline() {
    let http = Receiver::start(|_, _| Reply {
        delay: Duration::from_secs(5),
        ..seed_ack()
    })
    .await;
    let mut r = crm(&http.base(), "/slow");
    r.deadline = Duration::from_millis(300);
    let mut rig = rig(RoutingConfig::default(), vec![r]).await;
    let conv = conversation(&["19-routing-crm-ack"]);
    let t = call(rig.addr, &conv, FakeOptions::default()).await;
    let report = rig.report().await;
    assert_eq!(var(&t, "switchhook_status").as_deref(), Some("TIMEOUT"));
    assert_eq!(
        var(&t, "switchhook_reason").as_deref(),
        Some("no answer within 300ms")
    );
    let status_at = t.commands[2].at;
    assert!(
        status_at < 0.8,
        "status set {status_at} s after connect (deadline 0.3 s)"
    );
    let latency = report.answer.unwrap().latency;
    assert!(latency >= Duration::from_millis(300) && latency < Duration::from_millis(500));
}

#[tokio::test]
async fn an_outage_opens_the_breaker_and_the_cache_keeps_known_callers_routed() {
    let http = Receiver::start(|_, nth| {
        if nth == 1 {
            seed_ack()
        } else {
            Reply::status(503)
        }
    })
    .await;
    let mut r = crm(&http.base(), "/r");
    r.cache_ttl = Duration::from_secs(60);
    r.retries = 0;
    let routing = RoutingConfig {
        breaker_failures: 2,
        breaker_cooldown: Duration::from_secs(60),
        ..Default::default()
    };
    let mut rig = rig(routing, vec![r]).await;
    let known = conversation(&["19-routing-crm-ack"]);
    let other = conversation(&["23-routing-api-linger", "19-routing-crm-ack"]);

    // 1: the server answers; the ACK is kept.
    let t = call(rig.addr, &known, FakeOptions::default()).await;
    rig.report().await;
    assert_eq!(var(&t, "switchhook_source").as_deref(), Some("server"));
    // 2, 3: the server fails; the known caller is still routed, from the cache.
    for _ in 0..2 {
        let t = call(rig.addr, &known, FakeOptions::default()).await;
        rig.report().await;
        assert_eq!(var(&t, "switchhook_status").as_deref(), Some("ACK"));
        assert_eq!(var(&t, "switchhook_destination").as_deref(), Some("1003"));
        assert_eq!(var(&t, "switchhook_source").as_deref(), Some("cache"));
    }
    assert_eq!(http.seen().len(), 3);
    // The breaker is open now: another caller is not even asked about.
    let t = call(rig.addr, &other, FakeOptions::default()).await;
    let report = rig.report().await;
    assert_eq!(var(&t, "switchhook_status").as_deref(), Some("ERR"));
    assert_eq!(
        var(&t, "switchhook_source").as_deref(),
        Some("circuit_open")
    );
    assert_eq!(http.seen().len(), 3, "no request while the breaker is open");
    assert_eq!(report.answer.unwrap().latency, Duration::ZERO);
    let stats = rig.router.stats();
    assert_eq!(
        stats.from_cache.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn route_options_shape_the_commands() {
    let http = Receiver::start(|_, _| seed_ack()).await;
    let mut vip = crm(&http.base(), "/r");
    vip.method = "POST".into();
    vip.caller_name = switchhook::routing::CallerNameMode::Prepend;
    vip.caller_name_text = "VIP".into();
    vip.caller_id_forwarding = switchhook::routing::CallerIdForwarding::Called;
    vip.on_success = "switchhook-ACK".into();
    let mut rig = rig(RoutingConfig::default(), vec![vip]).await;
    let conv = conversation(&["19-routing-crm-ack"]);
    let t = call(rig.addr, &conv, FakeOptions::default()).await;
    rig.report().await;
    let n = t.normalized();
    let tail = &n[n.len() - 5..];
    assert_eq!(
        tail,
        &[
            sendmsg("set", "effective_caller_id_name=VIP Jo Bloggs"),
            // The prefix is the record's rteName.
            sendmsg("set", "switchhook_route_name=VIP"),
            sendmsg("set", "effective_caller_id_number=+441610007100"),
            sendmsg("transfer", "switchhook-ACK"),
            "exit\n".to_owned(),
        ]
    );
    let seen = http.seen();
    assert_eq!(seen[0].method, "POST");
    assert!(
        seen[0].body.contains("did=%2B441610007100")
            && seen[0].body.contains("callername=Jo+Bloggs"),
        "{}",
        seen[0].body
    );

    // Suppressed caller ID: FreeSWITCH's privacy application.
    let mut hide = crm(&http.base(), "/r");
    hide.caller_id_forwarding = switchhook::routing::CallerIdForwarding::Suppressed;
    let table = RouteTable::compile(&RoutingConfig::default(), &[hide]).unwrap();
    rig.router.set_routes(Arc::new(table));
    let t = call(rig.addr, &conv, FakeOptions::default()).await;
    rig.report().await;
    assert!(t.normalized().contains(&sendmsg("privacy", "number")));
}

#[tokio::test]
async fn a_refused_subscription_fails_the_step_before_any_decision_is_set() {
    let http = Receiver::start(|_, _| seed_ack()).await;
    let mut rig = rig(RoutingConfig::default(), vec![crm(&http.base(), "/r")]).await;
    let conv = conversation(&["19-routing-crm-ack"]);
    // FreeSWITCH's own `-ERR command not found` (capture 23) answers the filter.
    let t = call(
        rig.addr,
        &conv,
        FakeOptions {
            refuse: vec!["filter"],
            ..Default::default()
        },
    )
    .await;
    let report = rig.report().await;
    assert_eq!(
        report.aborted,
        Some(switchhook::routing::SocketError::Refused {
            what: "filter".into(),
            text: "command not found".into(),
        })
    );
    // The subscription was pipelined with the HTTP call, but nothing was set on the channel.
    assert_eq!(t.normalized(), opening(&report.call_id));
    assert!(!t.exited);
}

#[tokio::test]
async fn an_unknown_route_fails_without_asking_anyone() {
    let http = Receiver::start(|_, _| seed_ack()).await;
    let mut other = crm(&http.base(), "/r");
    other.name = "billing".into();
    let mut rig = rig(RoutingConfig::default(), vec![other]).await;
    let conv = conversation(&["19-routing-crm-ack"]);
    let t = call(rig.addr, &conv, FakeOptions::default()).await;
    rig.report().await;
    assert_eq!(var(&t, "switchhook_status").as_deref(), Some("ERR"));
    assert_eq!(
        var(&t, "switchhook_reason").as_deref(),
        Some("no route named crm is configured")
    );
    assert!(http.seen().is_empty());
}

#[tokio::test]
async fn many_calls_at_once_each_get_their_own_answer() {
    let http = Receiver::start(|_, nth| Reply {
        delay: Duration::from_millis((nth as u64 * 37) % 50),
        ..seed_ack()
    })
    .await;
    let mut rig = rig(RoutingConfig::default(), vec![crm(&http.base(), "/r")]).await;
    let conv = Arc::new(conversation(&["19-routing-crm-ack"]));
    let mut calls = Vec::new();
    for _ in 0..40 {
        let conv = Arc::clone(&conv);
        let addr = rig.addr;
        calls.push(tokio::spawn(async move {
            call(addr, &conv, FakeOptions::default()).await
        }));
    }
    for c in calls {
        let t = c.await.unwrap();
        assert_eq!(var(&t, "switchhook_status").as_deref(), Some("ACK"));
        assert!(t.exited);
    }
    for _ in 0..40 {
        assert!(rig.report().await.aborted.is_none());
    }
    assert_eq!(http.seen().len(), 40);
}

/// `switchhook run` as a process: FreeSWITCH's inbound socket (capture 19's event stream,
/// played back) and its outbound `socket` call (capture 19's conversation) reach the same
/// process. The step is answered from the routing server, and a webhook filtered on the CDR's
/// `routeStatus` fires for the call.
#[test]
fn a_running_process_routes_calls_and_its_webhooks_see_the_decision() {
    use std::process::Stdio;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (http, hooks, playback) = rt.block_on(async {
        let http = Receiver::start(|_, _| seed_ack()).await;
        let hooks = Receiver::start(|_, _| Reply::status(204)).await;
        let playback =
            common::playback("freeswitch-1.10/19-routing-crm-ack.esl", "s3cret-routing").await;
        (http, hooks, playback)
    });
    let (addr, admin) = (common::free_addr(), common::free_addr());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchhook.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[freeswitch]
host = "127.0.0.1"
port = {fs}
[log]
format = "json"
[store]
path = {db:?}
[routing]
listen = "{addr}"
[admin]
listen = "{admin}"
[egress]
allow = ["127.0.0.1"]
[[routes]]
name = "crm"
url = "{base}/route?did={{did}}&callerid={{callerid}}"
[[webhooks]]
name = "routed"
triggers = ["call.hangup"]
url = "{hooks}/routed"
secret_env = "ROUTED_HOOK_SECRET"
filters = [{{ field = "routeStatus", op = "eq", value = "ACK" }}]
"#,
            fs = playback.addr().port(),
            db = dir.path().join("outbox.db").display().to_string(),
            base = http.base(),
            hooks = hooks.base(),
        ),
    )
    .unwrap();
    // The webhook's secret comes from the environment, as from deploy/'s secrets.env.
    let secret = "whsec_c3dpdGNoaG9vay1yb3V0aW5nLXRlc3Qtc2VjcmV0";
    let mut child = common::run_command(&cfg, "s3cret-routing")
        .env("ROUTED_HOOK_SECRET", secret)
        .stderr(Stdio::piped())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let mut log = common::LogTail::follow(&mut child);
    let limit = Duration::from_secs(30);
    assert!(
        log.wait_for("routing server listening", limit),
        "{}",
        log.text()
    );
    let conv = conversation(&["19-routing-crm-ack"]);
    let t = rt.block_on(call(addr, &conv, FakeOptions::default()));
    assert_eq!(var(&t, "switchhook_status").as_deref(), Some("ACK"));
    assert_eq!(var(&t, "switchhook_destination").as_deref(), Some("1003"));
    assert!(
        log.wait_for("routing step decided", limit),
        "{}",
        log.text()
    );
    let arrived = rt.block_on(hooks.wait_for(Duration::from_secs(30), |s| !s.is_empty()));
    // The decision's latency and the delivery's outcome reach /metrics (the outbox records
    // the 2xx just after the receiver has it).
    let wanted = [
        "switchhook_routing_latency_seconds_count{status=\"ACK\"} 1",
        "switchhook_webhook_deliveries_total{webhook=\"routed\",outcome=\"delivered\"} 1",
        "switchhook_webhook_latency_seconds_count{webhook=\"routed\"} 1",
    ];
    let metrics = rt.block_on(async {
        let mut text = String::new();
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("http://{admin}/metrics")).await {
                text = r.text().await.unwrap_or_default();
                if wanted.iter().all(|w| text.contains(w)) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        text
    });
    terminate(child.id());
    let status = child.wait().unwrap();
    let logs = log.finish(std::time::Duration::from_secs(10));
    assert!(arrived, "{logs}");
    let body: serde_json::Value = serde_json::from_str(&hooks.seen()[0].body).unwrap();
    assert_eq!(body["cdr"]["routeStatus"], "ACK");
    assert_eq!(body["cdr"]["routeDest"], "1003");
    let signed = &hooks.seen()[0];
    let ts: i64 = signed.headers["webhook-timestamp"].parse().unwrap();
    assert_eq!(
        signed.headers["webhook-signature"],
        Signer::new(secret).unwrap().sign(
            &signed.headers["webhook-id"],
            ts,
            signed.body.as_bytes()
        )
    );
    assert_eq!(http.seen().len(), 1);
    assert_eq!(
        http.seen()[0].uri,
        "/route?did=%2B441610007100&callerid=%2B447700900190"
    );
    for w in wanted {
        assert!(metrics.contains(w), "{w} missing:\n{metrics}");
    }
    assert!(status.success(), "SIGTERM ends run cleanly: {status:?}");
    assert!(!logs.contains("s3cret-routing"));
    assert!(!logs.contains("c3dpdGNoaG9vay1yb3V0aW5nLXRlc3Qtc2VjcmV0"));
    // JSON lines; every line about a call names it.
    let mut about_calls = 0;
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let message = v["message"].as_str().unwrap_or_default();
        if message.contains("call") || message.contains("routing step") {
            about_calls += 1;
            assert!(v["call_id"].is_string(), "no call_id: {line}");
        }
    }
    assert!(about_calls >= 2, "{logs}");
    drop(playback);
}

/// SIGTERM, through kill(1).
fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn a_peer_that_connects_and_leaves_before_the_channel_data_ends_its_step() {
    // A health probe, a port scan, or a channel gone before FreeSWITCH sent its data: the
    // step must end (and free its task) instead of polling the closed socket for ever.
    use tokio::io::AsyncReadExt;
    let mut rig = rig(RoutingConfig::default(), vec![]).await;
    for _ in 0..3 {
        let mut probe = tokio::net::TcpStream::connect(rig.addr).await.unwrap();
        let mut connect = [0u8; 9];
        probe.read_exact(&mut connect).await.unwrap();
        assert_eq!(&connect, b"connect\n\n");
        drop(probe);
        let report = rig.report().await;
        assert!(
            matches!(
                report.aborted,
                Some(switchhook::routing::SocketError::Closed)
            ),
            "{:?}",
            report.aborted
        );
        assert!(report.answer.is_none());
    }
}
