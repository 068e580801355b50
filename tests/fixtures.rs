//! Every real capture parses, through the replay pipeline, to the event count its README gives.

mod common;

use common::{fixture, SCENARIOS};
use futures::StreamExt;
use switchhook::esl::{Decoded, Disposition, Event, EventFormat, Limits, Message};
use switchhook::replay;

async fn decode(rel: &str) -> Vec<Decoded> {
    let mut stream = replay::open(&fixture(rel), Limits::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item.unwrap());
    }
    out
}

fn events(items: &[Decoded]) -> Vec<&Event> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(Message::Event(e)) => Some(e),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_scenario_parses_to_its_event_count_in_plain_and_json() {
    for &(name, count) in SCENARIOS {
        for (suffix, format) in [("esl", EventFormat::Plain), ("json.esl", EventFormat::Json)] {
            if name == "00-api-session" && suffix == "json.esl" {
                continue;
            }
            let items = decode(&format!("freeswitch-1.10/{name}.{suffix}")).await;
            let errors: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
            assert!(errors.is_empty(), "{name}.{suffix}: {errors:?}");
            let evs = events(&items);
            assert_eq!(evs.len(), count, "{name}.{suffix}");
            assert!(evs
                .iter()
                .all(|e| e.format() == format && e.name().is_some()));
        }
    }
}

#[tokio::test]
async fn plain_and_json_captures_agree_event_by_event() {
    for &(name, _) in SCENARIOS.iter().skip(1) {
        let plain = decode(&format!("freeswitch-1.10/{name}.esl")).await;
        let json = decode(&format!("freeswitch-1.10/{name}.json.esl")).await;
        let (plain, json) = (events(&plain), events(&json));
        for (p, j) in plain.iter().zip(&json) {
            assert_eq!(p.sequence(), j.sequence(), "{name}");
            assert_eq!(p.name(), j.name(), "{name} seq {:?}", p.sequence());
            assert_eq!(p.unique_id(), j.unique_id(), "{name}");
            assert_eq!(
                p.get("Caller-Caller-ID-Number"),
                j.get("Caller-Caller-ID-Number"),
                "{name}"
            );
            assert_eq!(p.body_text(), j.body_text(), "{name}");
        }
    }
}

#[tokio::test]
async fn capture_ends_with_bye_and_disconnect_notice() {
    let items = decode("freeswitch-1.10/01-inbound-answered.esl").await;
    let n = items.len();
    assert!(
        matches!(&items[0], Ok(Message::Reply(r)) if r.text() == "+OK event listener enabled plain")
    );
    assert!(matches!(&items[n - 2], Ok(Message::Reply(r)) if r.text() == "+OK bye"));
    match &items[n - 1] {
        Ok(Message::Disconnect(d)) => {
            assert_eq!(d.disposition, Disposition::Plain);
            assert!(d.text.starts_with("Disconnected, goodbye."));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn duplicate_headers_and_private_command_double_header_set() {
    let items = decode("freeswitch-1.10/04-hold-unhold.esl").await;
    let evs = events(&items);
    let hup = evs
        .iter()
        .find(|e| e.name().as_deref() == Some("CHANNEL_HANGUP_COMPLETE"))
        .unwrap();
    let causes = hup
        .headers()
        .iter()
        .filter(|(n, _)| *n == "Hangup-Cause")
        .count();
    assert_eq!(causes, 2);
    let pc = evs
        .iter()
        .find(|e| e.name().as_deref() == Some("PRIVATE_COMMAND"))
        .unwrap();
    // The real event is the second header set: its own timestamp, and the channel's UUID.
    assert_eq!(
        pc.headers()
            .iter()
            .filter(|(n, _)| *n == "Event-Name")
            .count(),
        2
    );
    assert!(pc.unique_id().is_some());
    assert_eq!(pc.timestamp_us(), Some(1795448749542507));
    // The same in json: duplicate keys survive.
    let items = decode("freeswitch-1.10/04-hold-unhold.json.esl").await;
    let evs = events(&items);
    let pc = evs
        .iter()
        .find(|e| e.name().as_deref() == Some("PRIVATE_COMMAND"))
        .unwrap();
    assert_eq!(
        pc.headers()
            .iter()
            .filter(|(n, _)| *n == "Event-Name")
            .count(),
        2
    );
}

#[tokio::test]
async fn background_job_body_in_plain_and_json() {
    for suffix in ["esl", "json.esl"] {
        let items = decode(&format!("freeswitch-1.10/12-click-to-call.{suffix}")).await;
        let job = events(&items)
            .into_iter()
            .find(|e| e.name().as_deref() == Some("BACKGROUND_JOB"))
            .unwrap()
            .clone();
        let body = job.body_text().unwrap();
        assert!(
            body.starts_with("+OK ") && body.ends_with('\n'),
            "{suffix}: {body:?}"
        );
        assert!(job.get("Job-UUID").is_some());
    }
}

#[tokio::test]
async fn api_session_replies_errors_and_log_data() {
    let items = decode("freeswitch-1.10/00-api-session.esl").await;
    assert!(items.iter().all(|i| i.is_ok()));
    let kinds: Vec<_> = items.iter().map(|i| i.as_ref().unwrap().kind()).collect();
    assert!(kinds.contains(&"api_response"), "{kinds:?}");
    assert!(kinds.contains(&"log_data"), "{kinds:?}");
    let api: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Ok(Message::ApiResponse(a)) => Some(a.text().into_owned()),
            _ => None,
        })
        .collect();
    assert!(
        api.iter().any(|a| a == "127.0.0.1"),
        "eval ${{domain}} has no newline: {api:?}"
    );
    let job_reply = items.iter().find_map(|i| match i {
        Ok(Message::Reply(r)) if r.job_uuid().is_some() => Some(r.clone()),
        _ => None,
    });
    assert!(job_reply.is_some());
    assert!(
        api.iter().any(|a| a == "-ERR No such channel!\n"),
        "{api:?}"
    );
    assert!(api.iter().any(|a| a == "{\"row_count\": 0}\n"), "{api:?}");
}

#[tokio::test]
async fn outbound_streams_connect_reply_linger_and_disconnect() {
    let items = decode("freeswitch-1.10/17-outbound-socket.fs2app.raw").await;
    assert!(items.iter().all(|i| i.is_ok()));
    let Ok(Message::ChannelData(cd)) = &items[0] else {
        panic!("{:?}", items[0])
    };
    assert_eq!(cd.name().unwrap(), "CHANNEL_DATA");
    assert_eq!(cd.get("Reply-Text").unwrap(), "+OK\n");
    assert!(cd.unique_id().is_some());
    let notices: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Ok(Message::Disconnect(d)) => Some(d.disposition),
            _ => None,
        })
        .collect();
    assert_eq!(notices, vec![Disposition::Linger, Disposition::Disconnect]);
    assert_eq!(events(&items).len(), 33);
    for n in [
        "19-routing-crm-ack",
        "20-routing-pin-digits",
        "21-routing-pin-timeout",
        "22-routing-caller-hangup",
        "23-routing-api-linger",
    ] {
        let items = decode(&format!("freeswitch-1.10/{n}.fs2app.raw")).await;
        assert!(items.iter().all(|i| i.is_ok()), "{n}");
        assert!(matches!(items[0], Ok(Message::ChannelData(_))), "{n}");
        assert!(
            matches!(items.last(), Some(Ok(Message::Disconnect(_)))),
            "{n}"
        );
    }
    let items = decode("freeswitch-1.10/23-routing-api-linger.fs2app.raw").await;
    let api: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Ok(Message::ApiResponse(a)) => Some(a.text().into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        api,
        vec!["crm", "+441610007100", "_undef_", "-ERR No such channel!\n"]
    );
}

#[tokio::test]
async fn public_neventsocket_captures_parse_exactly() {
    for (n, count) in [(1, 14), (2, 14), (3, 11), (4, 34)] {
        let items = decode(&format!("public/neventsocket-example{n}.esl")).await;
        let errors: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
        assert!(errors.is_empty(), "example{n}: {errors:?}");
        assert_eq!(events(&items).len(), count, "example{n}");
        assert!(
            matches!(items[0], Ok(Message::ChannelData(_))),
            "example{n}"
        );
    }
}

#[tokio::test]
async fn fsock_capture_with_a_corrupted_envelope_is_survived() {
    let items = decode("public/fsock-test-data.esl").await;
    let errors: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    let evs = events(&items);
    // One envelope ("uuid_transfer Content-Length: 720") is damaged: that event is lost and
    // reported with its offset; every other event survives.
    assert!(!errors.is_empty());
    assert!(
        errors.iter().all(|e| (91_000..93_500).contains(&e.offset)),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(evs.len(), 44);
    let heartbeats = evs
        .iter()
        .filter(|e| e.name().as_deref() == Some("HEARTBEAT"))
        .count();
    assert!(heartbeats > 0);
    assert!(evs
        .iter()
        .all(|e| e.get("Core-UUID").as_deref() == Some("792e181c-b6e6-499c-82a1-52a778e7d82d")));
}

/// Writes an event the way FreeSWITCH's `switch_event_xmlize` does: each value
/// percent-encoded then XML-escaped, array items as repeated elements, the body XML-escaped.
fn xmlize(e: &Event) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut x = String::from("<event>\n  <headers>\n");
    for (name, value) in e.headers().iter() {
        let items = switchhook::esl::split_array(&value);
        for item in items {
            x.push_str(&format!(
                "    <{name}>{}</{name}>\n",
                esc(&utf8_percent_encode(&item, NON_ALPHANUMERIC).to_string())
            ));
        }
    }
    x.push_str("  </headers>\n");
    if let Some(body) = e.body_text() {
        x.push_str(&format!(
            "  <Content-Length>{}</Content-Length>\n  <body>{}</body>\n",
            body.len(),
            esc(&body)
        ));
    }
    x.push_str("</event>");
    x
}

#[tokio::test]
async fn xml_events_decode_to_the_same_model_as_plain() {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;
    for rel in [
        "freeswitch-1.10/12-click-to-call.esl",
        "freeswitch-1.10/05-valet-park.esl",
    ] {
        let items = decode(rel).await;
        let plain = events(&items);
        let mut wire = BytesMut::new();
        for e in &plain {
            let doc = xmlize(e);
            wire.extend_from_slice(
                format!(
                    "Content-Length: {}\nContent-Type: text/event-xml\n\n{doc}",
                    doc.len()
                )
                .as_bytes(),
            );
        }
        let mut codec = switchhook::esl::EslCodec::default();
        let mut n = 0;
        while let Some(item) = codec.decode_eof(&mut wire).unwrap() {
            let Ok(Message::Event(x)) = item else {
                panic!("{item:?}")
            };
            let p = plain[n];
            assert_eq!(x.format(), EventFormat::Xml);
            let pv: Vec<_> = p
                .headers()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.into_owned()))
                .collect();
            let xv: Vec<_> = x
                .headers()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.into_owned()))
                .collect();
            assert_eq!(pv, xv, "{rel} event {n}");
            assert_eq!(p.body_text(), x.body_text());
            n += 1;
        }
        assert_eq!(n, plain.len());
    }
}
