//! The inbound client against a real TCP FreeSWITCH stand-in streaming real captures.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fixture;
use switchhook::esl::{
    ClientError, EslClient, EslSignal, EventFormat, Filter, FreeswitchConfig, GapReason, Overflow,
};
use switchhook::fake_freeswitch::{load_capture, Faults, Pace, PlaybackConfig, PlaybackServer};
use tokio::sync::mpsc::Receiver;

const PASSWORD: &str = "ClueCon-test-secret";

async fn server(capture: &str, faults: Faults) -> PlaybackServer {
    PlaybackServer::start(
        "127.0.0.1:0",
        PlaybackConfig {
            password: PASSWORD.into(),
            captures: vec![fixture(capture)],
            pace: Pace::Fast,
            faults,
        },
    )
    .await
    .unwrap()
}

fn client_cfg(s: &PlaybackServer) -> FreeswitchConfig {
    FreeswitchConfig {
        host: s.addr().ip().to_string(),
        port: s.addr().port(),
        password: PASSWORD.into(),
        format: EventFormat::Plain,
        events: vec!["ALL".into()],
        filters: vec![],
        nixevents: vec![],
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        silence_timeout: Duration::from_secs(30),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        queue: 1024,
        queue_bytes: 256 << 20,
        overflow: Overflow::Block,
        ..FreeswitchConfig::default()
    }
}

/// Everything a consumer saw, in order.
#[derive(Debug, Default)]
struct Seen {
    connected: Vec<u64>,
    resyncs: Vec<BTreeSet<String>>,
    events: Vec<(Option<u64>, String)>,
    gaps: Vec<GapReason>,
    order: Vec<&'static str>,
}

async fn collect_until(rx: &mut Receiver<EslSignal>, events: usize, within: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + within;
    while seen.events.len() < events {
        let sig = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; saw {seen:?}"))
            .expect("channel open");
        match sig {
            EslSignal::Connected { connection } => {
                seen.connected.push(connection);
                seen.order.push("connected");
            }
            EslSignal::Resync { channels, .. } => {
                seen.resyncs
                    .push(channels.into_iter().map(|c| c.uuid).collect());
                seen.order.push("resync");
            }
            EslSignal::Event(e) => {
                seen.events
                    .push((e.sequence(), e.name().unwrap_or_default().into_owned()));
                if seen.order.last() != Some(&"event") {
                    seen.order.push("event");
                }
            }
            EslSignal::Gap(g) => {
                seen.gaps.push(g);
                seen.order.push("gap");
            }
        }
    }
    seen
}

#[tokio::test]
async fn streams_a_capture_after_auth_and_subscribe() {
    let s = server("freeswitch-1.10/01-inbound-answered.esl", Faults::default()).await;
    let (_client, mut rx, _task) = EslClient::spawn(client_cfg(&s));
    let seen = collect_until(&mut rx, 83, Duration::from_secs(10)).await;
    assert_eq!(seen.connected, vec![1]);
    assert_eq!(seen.order, vec!["connected", "resync", "event"]);
    assert!(seen.resyncs[0].is_empty());
    assert_eq!(seen.events.len(), 83);
    assert_eq!(
        s.commands()[0],
        vec!["auth ****", "event plain ALL", "api show channels as json"]
    );
}

#[tokio::test]
async fn json_subscription_receives_the_json_capture() {
    let s = server("freeswitch-1.10/02-inbound-missed.esl", Faults::default()).await;
    let mut cfg = client_cfg(&s);
    cfg.format = EventFormat::Json;
    cfg.events = vec!["CHANNEL_CREATE".into(), "CUSTOM callcenter::info".into()];
    cfg.filters = vec![Filter {
        header: "Caller-Context".into(),
        value: "public".into(),
    }];
    let (_client, mut rx, _task) = EslClient::spawn(cfg);
    let seen = collect_until(&mut rx, 67, Duration::from_secs(10)).await;
    assert_eq!(seen.events.len(), 67);
    let cmds = &s.commands()[0];
    assert_eq!(
        cmds[1],
        "event json CHANNEL_CREATE CUSTOM callcenter::info HEARTBEAT"
    );
    assert_eq!(cmds[2], "filter Caller-Context public");
}

#[tokio::test]
async fn userauth_is_supported() {
    let s = server("freeswitch-1.10/03-abandoned-short.esl", Faults::default()).await;
    let mut cfg = client_cfg(&s);
    cfg.user = Some("switchhook@default".into());
    let (_client, mut rx, _task) = EslClient::spawn(cfg);
    let seen = collect_until(&mut rx, 69, Duration::from_secs(10)).await;
    assert_eq!(seen.connected, vec![1]);
    assert_eq!(s.commands()[0][0], "userauth ****");
}

/// A `tracing` writer into a shared buffer, to check what was logged.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn wrong_password_is_refused_retried_and_never_logged() {
    let logs = LogBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = server("freeswitch-1.10/01-inbound-answered.esl", Faults::default()).await;
    let mut cfg = client_cfg(&s);
    cfg.password = "wrong-Pa55word".into();
    let (client, mut rx, _task) = EslClient::spawn(cfg);
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.stats().connect_failures.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        rx.try_recv().is_err(),
        "no signal without a successful login"
    );
    assert!(matches!(
        client.api("status").await,
        Err(ClientError::NotConnected)
    ));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("authentication refused"), "{text}");
    assert!(
        !text.contains("wrong-Pa55word") && !text.contains(PASSWORD),
        "{text}"
    );
}

#[tokio::test]
async fn acl_rejection_is_reported_as_access_denied() {
    let logs = LogBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = server(
        "freeswitch-1.10/01-inbound-answered.esl",
        Faults {
            deny: true,
            ..Default::default()
        },
    )
    .await;
    let (client, _rx, _task) = EslClient::spawn(client_cfg(&s));
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.stats().connect_failures.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(client.stats().connects.load(Ordering::Relaxed), 0);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("access denied by the event socket ACL: Access Denied, go away."),
        "{text}"
    );
}

/// The channels alive after the first `n` event frames of a capture, computed independently
/// from CHANNEL_CREATE / CHANNEL_DESTROY.
fn alive_after(capture: &str, n: usize) -> BTreeSet<String> {
    let mut alive = BTreeSet::new();
    for f in load_capture(&fixture(capture)).unwrap().iter().take(n) {
        let uuid = f.event.unique_id().unwrap_or_default().into_owned();
        match f.event.name().as_deref() {
            Some("CHANNEL_CREATE") => {
                alive.insert(uuid);
            }
            Some("CHANNEL_DESTROY") => {
                alive.remove(&uuid);
            }
            _ => {}
        }
    }
    alive
}

#[tokio::test]
async fn dropped_socket_reconnects_resubscribes_and_resyncs_channels_in_progress() {
    let capture = "freeswitch-1.10/16-concurrent-mix.esl";
    let s = server(
        capture,
        Faults {
            drop_after: Some(100),
            outage_events: 20,
            ..Default::default()
        },
    )
    .await;
    let (client, mut rx, _task) = EslClient::spawn(client_cfg(&s));
    let seen = collect_until(&mut rx, 419 - 20, Duration::from_secs(10)).await;
    assert_eq!(seen.connected, vec![1, 2]);
    assert_eq!(
        seen.order,
        vec![
            "connected",
            "resync",
            "event",
            "gap",
            "connected",
            "resync",
            "event"
        ]
    );
    assert!(matches!(&seen.gaps[0], GapReason::Disconnected(_)));
    // The resync lists exactly the channels FreeSWITCH had once the 20 lost events happened.
    let expected = alive_after(capture, 120);
    assert!(!expected.is_empty());
    assert_eq!(seen.resyncs[1], expected);
    // Exactly the capture's frames 0..100, then 120.. (the outage's 20 are lost): none
    // repeated, none reordered.
    let frames = load_capture(&fixture(capture)).unwrap();
    let want: Vec<Option<u64>> = frames[..100]
        .iter()
        .chain(&frames[120..])
        .map(|f| f.event.sequence())
        .collect();
    let got: Vec<Option<u64>> = seen.events.iter().map(|(s, _)| *s).collect();
    assert_eq!(got, want);
    assert_eq!(
        s.commands()[1],
        vec!["auth ****", "event plain ALL", "api show channels as json"]
    );
    assert_eq!(client.stats().connects.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn silent_socket_trips_the_heartbeat_watchdog() {
    let s = server(
        "freeswitch-1.10/05-valet-park.esl",
        Faults {
            stall_after: Some(10),
            ..Default::default()
        },
    )
    .await;
    let mut cfg = client_cfg(&s);
    cfg.silence_timeout = Duration::from_millis(300);
    let (_client, mut rx, _task) = EslClient::spawn(cfg);
    let seen = collect_until(&mut rx, 158, Duration::from_secs(10)).await;
    assert_eq!(seen.connected, vec![1, 2]);
    assert!(
        matches!(&seen.gaps[0], GapReason::Disconnected(r) if r.contains("watchdog")),
        "{:?}",
        seen.gaps
    );
}

#[tokio::test]
async fn disconnect_notice_ends_the_connection_and_the_client_comes_back() {
    let s = server(
        "freeswitch-1.10/06-ringgroup-simultaneous.esl",
        Faults {
            notice_after: Some(50),
            ..Default::default()
        },
    )
    .await;
    let (_client, mut rx, _task) = EslClient::spawn(client_cfg(&s));
    let seen = collect_until(&mut rx, 113, Duration::from_secs(10)).await;
    assert_eq!(seen.connected, vec![1, 2]);
    assert!(matches!(&seen.gaps[0], GapReason::Disconnected(r) if r.contains("disconnect notice")));
}

#[tokio::test]
async fn lost_events_notice_is_a_gap_before_the_reconnect() {
    let s = server(
        "freeswitch-1.10/08-queue-answered.esl",
        Faults {
            notice_after: Some(40),
            notice_text: Some("killed listener because of lost events\n".into()),
            ..Default::default()
        },
    )
    .await;
    let (_client, mut rx, _task) = EslClient::spawn(client_cfg(&s));
    let seen = collect_until(&mut rx, 94, Duration::from_secs(10)).await;
    assert_eq!(seen.gaps[0], GapReason::LostEvents);
    assert!(matches!(&seen.gaps[1], GapReason::Disconnected(_)));
    assert_eq!(
        seen.order,
        vec![
            "connected",
            "resync",
            "event",
            "gap",
            "gap",
            "connected",
            "resync",
            "event"
        ]
    );
}

#[tokio::test]
async fn api_and_bgapi_are_answered_while_events_flow() {
    let s = PlaybackServer::start(
        "127.0.0.1:0",
        PlaybackConfig {
            password: PASSWORD.into(),
            captures: vec![fixture("freeswitch-1.10/16-concurrent-mix.esl")],
            pace: Pace::RealTime { speed: 50.0 },
            faults: Faults::default(),
        },
    )
    .await
    .unwrap();
    let (client, mut rx, _task) = EslClient::spawn(client_cfg(&s));
    let consumer =
        tokio::spawn(async move { collect_until(&mut rx, 419, Duration::from_secs(30)).await });
    // Wait until events are flowing, then ask.
    while client.stats().events.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let api = client.api("eval ${domain}").await.unwrap();
    assert_eq!(api.text(), "127.0.0.1");
    let err = client.api("no_such_command").await.unwrap();
    assert!(err.is_err());
    let job = client
        .bgapi("show channels as json", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(job.name().unwrap(), "BACKGROUND_JOB");
    assert!(job.body_text().unwrap().contains("row_count"));
    let (a, b) = tokio::join!(
        client.bgapi("eval ${domain}", Duration::from_secs(5)),
        client.bgapi("status", Duration::from_secs(5))
    );
    assert_eq!(a.unwrap().body_text().unwrap(), "127.0.0.1");
    assert!(b.unwrap().body_text().unwrap().starts_with("-ERR status"));
    assert!(matches!(
        client.api("bad\ncommand").await,
        Err(ClientError::Command(_))
    ));
    let seen = consumer.await.unwrap();
    assert_eq!(
        seen.events
            .iter()
            .filter(|(_, n)| n == "BACKGROUND_JOB")
            .count(),
        3
    );
}

#[tokio::test]
async fn drop_policy_counts_dropped_events_and_signals_a_gap() {
    let s = server("freeswitch-1.10/16-concurrent-mix.esl", Faults::default()).await;
    let mut cfg = client_cfg(&s);
    cfg.queue = 8;
    cfg.overflow = Overflow::Drop;
    let (client, mut rx, _task) = EslClient::spawn(cfg);
    // Let the queue overflow while nobody reads, until the client has taken in every event
    // the server sent: each is either waiting in the channel or counted as dropped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let stats = Arc::clone(client.stats());
    let taken_in =
        || stats.events.load(Ordering::Relaxed) + stats.dropped_events.load(Ordering::Relaxed);
    while s.position() < s.total_events() || taken_in() < 419 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} sent, {} taken in",
            s.position(),
            s.total_events(),
            taken_in()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut events = 0u64;
    let mut gap_total = 0u64;
    while let Ok(sig) = rx.try_recv() {
        match sig {
            EslSignal::Event(_) => events += 1,
            EslSignal::Gap(GapReason::Dropped(n)) => gap_total += n,
            _ => {}
        }
    }
    let dropped = client.stats().dropped_events.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert_eq!(events + dropped, 419);
    // The gap signal reports drops once room frees up; events dropped after the last signal
    // are still counted in the stats.
    assert!(gap_total <= dropped);
}

#[tokio::test]
async fn shutdown_sends_exit_and_stops_reconnecting() {
    let s = server("freeswitch-1.10/03-abandoned-short.esl", Faults::default()).await;
    let (client, mut rx, task) = EslClient::spawn(client_cfg(&s));
    collect_until(&mut rx, 69, Duration::from_secs(10)).await;
    client.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.commands()[0].last().unwrap(), "exit");
    assert_eq!(s.connections(), 1);
}

#[tokio::test]
async fn events_racing_the_subscription_survive_a_drop_before_show_channels_answers() {
    // The server streams the moment `event` is acknowledged and cuts the socket three frames
    // in, before the client has its `show channels` answer: those three are still delivered.
    let capture = "freeswitch-1.10/16-concurrent-mix.esl";
    let s = server(
        capture,
        Faults {
            drop_after: Some(3),
            eager: true,
            ..Default::default()
        },
    )
    .await;
    let (_client, mut rx, _task) = EslClient::spawn(client_cfg(&s));
    let seen = collect_until(&mut rx, 419, Duration::from_secs(10)).await;
    let frames = load_capture(&fixture(capture)).unwrap();
    let want: Vec<Option<u64>> = frames.iter().map(|f| f.event.sequence()).collect();
    let got: Vec<Option<u64>> = seen.events.iter().map(|(s, _)| *s).collect();
    assert_eq!(got, want);
    assert_eq!(seen.gaps.len(), 1);
    assert_eq!(seen.order.first(), Some(&"connected"));
}

/// One signal as a test keeps it: an event's sequence only, so the event itself (and the
/// budget it holds) is let go at once, as a consumer does.
#[derive(Debug)]
enum Sig {
    Resync,
    Event(Option<u64>),
    Gap(GapReason),
    Connected,
}

/// Every signal until `last` (an event sequence) has arrived.
async fn signals_until(rx: &mut Receiver<EslSignal>, last: Option<u64>) -> Vec<Sig> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sig = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {out:?}"))
            .expect("channel open");
        let sig = match sig {
            EslSignal::Connected { .. } => Sig::Connected,
            EslSignal::Resync { .. } => Sig::Resync,
            EslSignal::Event(e) => Sig::Event(e.sequence()),
            EslSignal::Gap(g) => Sig::Gap(g),
        };
        let done = matches!(&sig, Sig::Event(s) if *s == last);
        out.push(sig);
        if done {
            return out;
        }
    }
}

#[tokio::test]
async fn events_racing_the_subscription_are_held_within_the_byte_budget() {
    // FreeSWITCH streams the moment `event` is acknowledged; the client holds what arrives
    // before `show channels` answers and hands it over before the resync (it happened before
    // the list was made). With a budget of one small event, the rest of them are dropped,
    // counted, and a gap follows the resync; the stream after it is whole (the consumer frees
    // the budget as it goes).
    let capture = "freeswitch-1.10/16-concurrent-mix.esl";
    let s = server(
        capture,
        Faults {
            eager: true,
            ..Default::default()
        },
    )
    .await;
    let frames = load_capture(&fixture(capture)).unwrap();
    let (client, mut rx, _task) = EslClient::spawn(FreeswitchConfig {
        queue_bytes: 1024,
        ..client_cfg(&s)
    });
    let signals = signals_until(&mut rx, frames.last().unwrap().event.sequence()).await;
    let dropped = client.stats().dropped_events.load(Ordering::Relaxed);
    assert!(dropped > 0, "events raced the subscription");
    let gap = signals
        .iter()
        .position(|s| matches!(s, Sig::Gap(GapReason::Dropped(n)) if *n == dropped))
        .expect("a gap names the dropped events");
    let resync = signals
        .iter()
        .position(|s| matches!(s, Sig::Resync))
        .unwrap();
    assert!(resync < gap);
    let events: Vec<u64> = signals
        .iter()
        .filter_map(|s| match s {
            Sig::Event(seq) => *seq,
            _ => None,
        })
        .collect();
    assert_eq!(events.len() as u64 + dropped, frames.len() as u64);
    // In the capture's order, with one run of dropped events right after the kept early ones.
    let want: Vec<u64> = frames.iter().filter_map(|f| f.event.sequence()).collect();
    // The early events kept come before the resync (they happened before its list).
    assert!(signals[resync..gap]
        .iter()
        .all(|s| !matches!(s, Sig::Event(_))));
    let kept = signals[..gap]
        .iter()
        .filter(|s| matches!(s, Sig::Event(_)))
        .count();
    let mut expected = want[..kept].to_vec();
    expected.extend_from_slice(&want[kept + dropped as usize..]);
    assert_eq!(events, expected);
}

#[tokio::test]
async fn a_slow_consumer_is_bounded_by_bytes_and_loses_nothing_when_blocking() {
    let capture = "freeswitch-1.10/16-concurrent-mix.esl";
    let frames = load_capture(&fixture(capture)).unwrap();
    for overflow in [Overflow::Block, Overflow::Drop] {
        let s = server(capture, Faults::default()).await;
        // Room for about one event at a time, however many the count allows.
        let (client, mut rx, _task) = EslClient::spawn(FreeswitchConfig {
            queue_bytes: 4096,
            overflow,
            ..client_cfg(&s)
        });
        // The consumer lags: it holds each event a moment before taking the next.
        let mut events = 0u64;
        let mut gaps = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let dropped = || client.stats().dropped_events.load(Ordering::Relaxed);
        while events + dropped() < frames.len() as u64 {
            let sig = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{overflow:?}: stuck after {events} events"))
                .unwrap();
            match sig {
                EslSignal::Event(e) => {
                    events += 1;
                    tokio::task::yield_now().await;
                    drop(e);
                }
                EslSignal::Gap(GapReason::Dropped(n)) => gaps += n,
                _ => {}
            }
        }
        let dropped = dropped();
        match overflow {
            Overflow::Block => assert_eq!((events, dropped), (frames.len() as u64, 0)),
            Overflow::Drop => {
                assert!(
                    dropped > 0,
                    "the byte budget, not the count, made room run out"
                );
                assert!(gaps <= dropped);
            }
        }
    }
}

/// Stopping while a connection attempt hangs (FreeSWITCH accepted the TCP connection but
/// never greets) ends the client at once, not after the connect timeout and a backoff.
#[tokio::test]
async fn shutdown_during_a_connection_attempt_stops_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, _rx, task) = EslClient::spawn(FreeswitchConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        connect_timeout: Duration::from_secs(60),
        command_timeout: Duration::from_secs(60),
        ..FreeswitchConfig::default()
    });
    // The attempt is under way: the silent server has its connection.
    let (_silent, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        client.shutdown().await;
        task.await.unwrap();
    })
    .await
    .expect("the client stops without waiting out its 60 s connect timeout");
}
