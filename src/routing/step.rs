//! One routing step, from FreeSWITCH's `connect` to switchhook's `exit`:
//! channel data → route → (digit menu) → routing server → channel variables → dial plan.

use std::time::Duration;

use serde_json::Value;

use super::config::{CallerIdForwarding, CallerNameMode, MenuConfig};
use super::lookup::{Answer, Question, Route, Source};
use super::reply::{clean_name, Decision, ReplyRules, RoutingStatus};
use super::server::Router;
use super::socket::{App, OutboundSocket, SocketError};
use crate::esl::{Command, Event, EventFormat, EventName};

/// The variable `play_and_get_digits` stores the code in.
pub(crate) const CODE_VARIABLE: &str = "switchhook_code";

/// What became of one step (logged, counted, returned to tests).
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The channel's `Unique-ID`.
    pub call_id: String,
    /// The route named by `switchhook_route`.
    pub route: Option<String>,
    /// The decision and how it was reached, if the step got that far.
    pub answer: Option<Answer>,
    /// The code from the menu.
    pub code: Option<String>,
    /// Why the step ended early (the caller hung up, the socket failed).
    pub aborted: Option<SocketError>,
}

/// Runs the whole step on an accepted connection.
pub(crate) async fn run(mut sock: OutboundSocket, data: Event, router: &Router) -> StepReport {
    let mut report = StepReport {
        call_id: sock.uuid().to_owned(),
        route: None,
        answer: None,
        code: None,
        aborted: None,
    };
    if let Err(e) = converse(&mut sock, &data, router, &mut report).await {
        report.aborted = Some(e);
    }
    report
}

async fn converse(
    sock: &mut OutboundSocket,
    data: &Event,
    router: &Router,
    report: &mut StepReport,
) -> Result<(), SocketError> {
    // Events first, so a hangup during any later wait is seen at once. Their replies are
    // checked before the first application is sent; the HTTP call does not wait for them.
    let subscribe = subscription(sock.uuid());
    sock.send_early(subscribe).await?;
    let table = router.table();
    let named = data.var("switchhook_route").map(|r| r.into_owned());
    let route = named.as_deref().and_then(|n| table.route(n));
    let Some(route) = route else {
        let why = match named.as_deref() {
            None => "the channel has no switchhook_route variable".to_owned(),
            Some(n) if is_plain_name(n) => format!("no route named {n:?} is configured"),
            Some(_) => "switchhook_route is not a valid route name".to_owned(),
        };
        let answer = Answer {
            decision: Decision::bare(RoutingStatus::Err, why),
            source: Source::Switchhook,
            latency: Duration::ZERO,
            attempts: 0,
        };
        apply(sock, data, None, &answer, table.rules()).await?;
        report.answer = Some(answer);
        return sock.exit().await;
    };
    report.route = Some(route.config.name.clone());

    let mut q = question(data, route);
    let menu = &route.config.menu;
    if !menu.enabled {
        let answer = sock
            .while_connected(router.asker().ask(route, &q, table.rules()))
            .await?;
        apply(sock, data, Some(route), &answer, table.rules()).await?;
        report.answer = Some(answer);
        return sock.exit().await;
    }
    // The menu's attempts cover both kinds of wrong entry: one play_and_get_digits rejects
    // (too short, not digits, nothing in time), and a code the routing server refuses (NAK),
    // after which the error message is played and the caller asked again. A code counts as
    // one attempt (FreeSWITCH does not say how many tries it took).
    let mut left = menu.attempts.max(1);
    let answer = loop {
        let Some(code) = collect_code(sock, data, menu, left).await? else {
            break Answer {
                decision: Decision::bare(RoutingStatus::Timeout, "no digits"),
                source: Source::Menu,
                latency: Duration::ZERO,
                attempts: 0,
            };
        };
        left -= 1;
        q.code = code.clone();
        report.code = Some(code);
        let answer = sock
            .while_connected(router.asker().ask(route, &q, table.rules()))
            .await?;
        if answer.decision.status != RoutingStatus::Nak || left == 0 {
            break answer;
        }
        let limit = menu.timeout + Duration::from_secs(60);
        sock.execute("playback", menu.error_message.clone(), limit)
            .await?;
    };
    apply(sock, data, Some(route), &answer, table.rules()).await?;
    report.answer = Some(answer);
    sock.exit().await
}

/// The events a step needs: its applications' completions and the hangup. Capture 23 shows
/// FreeSWITCH honouring `filter Unique-ID` + `event plain …` on an outbound socket; compared
/// with `myevents` it leaves out CHANNEL_EXECUTE and the other channel events (about 6 kB
/// each) that FreeSWITCH would otherwise build and switchhook parse. The filter goes first so
/// no other channel's events ever arrive. A Unique-ID that is not a plain UUID (a custom
/// `origination_uuid`) never reaches a command line: that channel gets `myevents`.
pub(crate) fn subscription(uuid: &str) -> Vec<(Command, &'static str)> {
    const EVENTS: [EventName; 3] = [
        EventName::ChannelExecuteComplete,
        EventName::ChannelHangup,
        EventName::ChannelHangupComplete,
    ];
    let names: Vec<String> = EVENTS.iter().map(|e| e.as_str().to_owned()).collect();
    let filtered = uuid::Uuid::try_parse(uuid)
        .ok()
        .filter(|u| u.hyphenated().to_string() == uuid.to_ascii_lowercase())
        .and_then(|_| Command::filter("Unique-ID", uuid).ok())
        .zip(Command::event(EventFormat::Plain, &names).ok());
    match filtered {
        Some((filter, event)) => vec![(filter, "filter"), (event, "event")],
        None => vec![(Command::MyEvents(None), "myevents")],
    }
}

fn is_plain_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The values the routing server is asked with, from the channel data.
fn question(data: &Event, route: &Route) -> Question {
    let get = |h: &str| data.get(h).map(|v| v.into_owned()).unwrap_or_default();
    let mut extra = serde_json::Map::new();
    for f in route.channel_fields() {
        extra.insert(f.to_owned(), Value::String(get(f)));
    }
    Question {
        code: String::new(),
        did: did_of(data),
        callerid: get("Caller-Caller-ID-Number"),
        callername: get("Caller-Caller-ID-Name"),
        extra,
    }
}

/// The number the caller dialled: `inbound_did` (exported by the DID's dial plan), else the
/// destination number.
fn did_of(data: &Event) -> String {
    data.var("inbound_did")
        .filter(|v| !v.is_empty())
        .or_else(|| data.get("Caller-Destination-Number"))
        .map(|v| v.into_owned())
        .unwrap_or_default()
}

/// Plays the menu and returns the code, or None when every try failed (the timeout message
/// has then been played).
async fn collect_code(
    sock: &mut OutboundSocket,
    data: &Event,
    menu: &MenuConfig,
    tries: u32,
) -> Result<Option<String>, SocketError> {
    let short = Duration::from_secs(10);
    if data.get("Answer-State").as_deref() != Some("answered") {
        sock.execute("answer", String::new(), short).await?;
    }
    if menu.share_digits {
        // Read by call assembly from the menu's CHANNEL_EXECUTE: these digits are a choice
        // webhooks may see.
        sock.execute("set", "switchhook_share_digits=true".into(), short)
            .await?;
    }
    // min max tries timeout terminators file invalid_file var_name regexp: every piece is
    // from the checked configuration; none comes from the call.
    let arg = format!(
        "{} {} {} {} {} {} {} {} ^\\d{{{},{}}}$",
        menu.min_digits,
        menu.max_digits,
        tries,
        menu.timeout.as_millis(),
        if menu.terminators.is_empty() {
            "none"
        } else {
            &menu.terminators
        },
        menu.start_message,
        menu.error_message,
        CODE_VARIABLE,
        menu.min_digits,
        menu.max_digits,
    );
    // Each try is the prompt, the wait and the error message: bound the whole menu generously.
    let limit = (menu.timeout + Duration::from_secs(60)) * tries;
    let done = sock.execute("play_and_get_digits", arg, limit).await?;
    // The result comes only as variables on the completion. After failed tries `read_result`
    // is `failure` and the code variable is absent. A code ended by the digit timeout instead
    // of a terminator is a success for play_and_get_digits (it matches the regex and is set),
    // but `read_result` keeps the `timeout` of the last read (switch_ivr_play_say.c).
    let ok = matches!(
        done.var("read_result").as_deref(),
        Some("success") | Some("timeout")
    );
    let code = done.var(CODE_VARIABLE).map(|c| c.into_owned()).filter(|c| {
        ok && (menu.min_digits as usize..=menu.max_digits as usize).contains(&c.len())
            && c.bytes().all(|b| b.is_ascii_digit())
    });
    if code.is_none() {
        sock.execute("playback", menu.timeout_message.clone(), limit)
            .await?;
    }
    Ok(code)
}

/// A value safe inside a `set` argument: FreeSWITCH expands `${…}` in application arguments,
/// so those characters (and control characters) never get through.
fn safe(v: &str) -> String {
    clean_name(v, 256)
}

/// The applications that hand the decision to the dial plan, in order.
pub(crate) fn decision_apps(
    data: &Event,
    route: Option<&Route>,
    answer: &Answer,
    rules: &ReplyRules,
) -> Vec<App> {
    let d = &answer.decision;
    let mut apps: Vec<App> = vec![("set", format!("switchhook_status={}", d.status.as_str()))];
    if let Some(dest) = &d.destination {
        apps.push(("set", format!("switchhook_destination={dest}")));
    }
    let callername = route.and_then(|r| final_name(data, r, d, rules.callername_max()));
    if let Some(name) = &callername {
        apps.push(("set", format!("switchhook_callername={name}")));
    }
    apps.push(("set", format!("switchhook_reason={}", safe(&d.reason))));
    apps.push((
        "set",
        format!("switchhook_source={}", answer.source.as_str()),
    ));
    apps.push((
        "set",
        format!("switchhook_latency_ms={}", answer.latency.as_millis()),
    ));
    let Some(route) = route else {
        return apps;
    };
    apps.push(("set", format!("switchhook_url={}", safe(&route.shown_url))));
    if d.status.is_success() {
        if let Some(name) = &callername {
            apps.push(("set", format!("effective_caller_id_name={name}")));
        }
        // The prefix the route put before the caller's name is the record's `rteName`.
        let text = safe(route.config.caller_name_text.trim());
        if route.config.caller_name == CallerNameMode::Prepend && !text.is_empty() {
            apps.push(("set", format!("switchhook_route_name={text}")));
        }
    }
    // Caller-ID forwarding is the route's, whichever branch the call takes: the failure
    // branch (voicemail, an operator) shows the same number the success branch would.
    match route.config.caller_id_forwarding {
        CallerIdForwarding::Caller => {}
        CallerIdForwarding::Called => {
            let did = safe(&did_of(data));
            if !did.is_empty() && !did.contains(' ') {
                apps.push(("set", format!("effective_caller_id_number={did}")));
            }
        }
        CallerIdForwarding::Suppressed => apps.push(("privacy", "number".into())),
    }
    let target = if d.status.is_success() {
        &route.config.on_success
    } else {
        &route.config.on_failure
    };
    if !target.is_empty() {
        apps.push(("transfer", target.clone()));
    }
    apps
}

/// The caller name the callee is offered, per the route's mode; None on failure.
/// The caller name the step sets: the reply's (already cleaned and bounded), or the route's
/// text before or instead of the caller's own, cleaned and cut to `max` characters like a
/// reply's.
fn final_name(data: &Event, route: &Route, d: &Decision, max: usize) -> Option<String> {
    if !d.status.is_success() {
        return None;
    }
    let text = route.config.caller_name_text.trim();
    let caller = data
        .get("Caller-Caller-ID-Name")
        .map(|v| v.into_owned())
        .unwrap_or_default();
    let name = match route.config.caller_name {
        CallerNameMode::Webhook => d.callername.clone().unwrap_or_default(),
        CallerNameMode::Prepend => format!("{text} {caller}"),
        CallerNameMode::Replace => text.to_owned(),
    };
    Some(clean_name(&name, max)).filter(|n| !n.is_empty())
}

async fn apply(
    sock: &mut OutboundSocket,
    data: &Event,
    route: Option<&Route>,
    answer: &Answer,
    rules: &ReplyRules,
) -> Result<(), SocketError> {
    let apps = decision_apps(data, route, answer, rules);
    sock.execute_all(&apps, Duration::from_secs(10)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esl::Headers;

    fn data() -> Event {
        Event::from_envelope(Headers::from_pairs([
            ("Caller-Caller-ID-Name", "${system(x)} Jo"),
            ("Caller-Destination-Number", "7100"),
            ("variable_inbound_did", "+441610007100"),
        ]))
    }

    fn route(v: serde_json::Value) -> Route {
        Route::new(serde_json::from_value(v).unwrap())
    }

    fn answer(d: Decision) -> Answer {
        Answer {
            decision: d,
            source: Source::Server,
            latency: Duration::from_millis(12),
            attempts: 1,
        }
    }

    #[test]
    fn the_subscription_filters_on_a_real_uuid_and_falls_back_to_myevents() {
        let lines = |uuid: &str| -> Vec<(String, &'static str)> {
            subscription(uuid)
                .into_iter()
                .map(|(c, what)| {
                    let mut b = bytes::BytesMut::new();
                    c.write_to(&mut b);
                    (String::from_utf8(b.to_vec()).unwrap(), what)
                })
                .collect()
        };
        assert_eq!(
            lines("01884eef-59e4-49f9-a552-67a3aa1aa47c"),
            vec![
                (
                    "filter Unique-ID 01884eef-59e4-49f9-a552-67a3aa1aa47c\n\n".to_owned(),
                    "filter"
                ),
                (
                    "event plain CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE\n\n"
                        .to_owned(),
                    "event"
                ),
            ]
        );
        // A custom origination_uuid is not put on a command line.
        for odd in ["call 1", "x\nexit", "", "01884eef59e449f9a55267a3aa1aa47c"] {
            assert_eq!(lines(odd), vec![("myevents\n\n".to_owned(), "myevents")]);
        }
    }

    #[test]
    fn the_failure_branch_sets_no_name_or_destination_and_transfers_on_failure() {
        let r = route(serde_json::json!({
            "name": "crm", "url": "http://x/", "on_success": "ok", "on_failure": "switchhook-failed",
            "caller_id_forwarding": "suppressed",
        }));
        let apps = decision_apps(
            &data(),
            Some(&r),
            &answer(Decision::bare(
                RoutingStatus::Nak,
                "the routing server answered NAK",
            )),
            &ReplyRules::default(),
        );
        let want: Vec<App> = vec![
            ("set", "switchhook_status=NAK".into()),
            (
                "set",
                "switchhook_reason=the routing server answered NAK".into(),
            ),
            ("set", "switchhook_source=server".into()),
            ("set", "switchhook_latency_ms=12".into()),
            ("set", "switchhook_url=http://x/".into()),
            // The route's caller-ID forwarding holds on the failure branch too.
            ("privacy", "number".into()),
            ("transfer", "switchhook-failed".into()),
        ];
        assert_eq!(apps, want);
    }

    #[test]
    fn a_prepended_name_is_cut_at_callername_max() {
        let ack = Decision {
            status: RoutingStatus::Ack,
            destination: Some("1003".into()),
            callername: None,
            reason: "ok".into(),
        };
        let prepend = route(serde_json::json!({
            "name": "crm", "url": "http://x/", "caller_name": "prepend", "caller_name_text": "VIP",
        }));
        let rules = ReplyRules::new(r"[0-9]+", 8).unwrap();
        let apps = decision_apps(&data(), Some(&prepend), &answer(ack), &rules);
        assert!(
            apps.contains(&("set", "effective_caller_id_name=VIP syst".into())),
            "{apps:?}"
        );
    }

    #[test]
    fn a_replaced_or_prepended_name_is_cleaned_like_a_reply() {
        let ack = Decision {
            status: RoutingStatus::Ack,
            destination: Some("1003".into()),
            callername: Some("ignored".into()),
            reason: "ok".into(),
        };
        let prepend = route(serde_json::json!({
            "name": "crm", "url": "http://x/", "caller_name": "prepend", "caller_name_text": "VIP",
        }));
        let apps = decision_apps(
            &data(),
            Some(&prepend),
            &answer(ack.clone()),
            &ReplyRules::default(),
        );
        // The caller's own name came from the network: its ${...} is defused too.
        assert!(apps.contains(&("set", "effective_caller_id_name=VIP system(x) Jo".into())));
        let replace = route(serde_json::json!({
            "name": "crm", "url": "http://x/", "caller_name": "replace", "caller_name_text": "Sales line",
        }));
        let apps = decision_apps(
            &data(),
            Some(&replace),
            &answer(ack.clone()),
            &ReplyRules::default(),
        );
        assert!(apps.contains(&("set", "switchhook_callername=Sales line".into())));
        assert!(apps.contains(&("set", "effective_caller_id_name=Sales line".into())));
        assert!(apps
            .iter()
            .all(|(_, a)| !a.contains('$') && !a.contains('{')));
    }
}
