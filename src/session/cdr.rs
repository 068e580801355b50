//! The CDR of one finished call, with the field names of the CloudSessionCdr format,
//! and the flat fields (`{cli}`, `{call-duration}`…) that webhook templates use.

use std::collections::BTreeMap;

use serde::Serialize;

use super::call::{CallSession, Origin, Recording};
use super::leg::{Leg, Seen};
use super::mapping::Attr;
use super::numbers::NumberInfo;
use super::numbers::WithheldCli;
use super::outcome::OutcomeFacts;
use super::timeline::{Segment, SegmentKind};
use super::Settings;

/// One call's record. `Option` fields are left out when unknown, as in the format's documented example.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[allow(non_snake_case)]
pub struct Cdr {
    /// The session id for the CDR record.
    pub id: String,
    /// CDR record type - "CloudSessionCdr"
    pub dType: &'static str,
    /// CDR version - 1
    pub sVer: u32,
    /// ~.Dimensions.~ id for the communications platform the CDR is from (e.g. ~.pbx.kazoo.name.~)
    pub pbxId: String,
    /// The configured name of the communications platform
    pub pbxName: String,
    /// TZ identifier for the call times.
    pub tz: String,
    /// Start time of the call session.
    pub start: String,
    /// Time the calls was first answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// End time of the call session; absent while the call is in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Duration of the call in seconds.
    pub dur: i64,
    /// Ring time of the call in seconds.
    pub ring: i64,
    /// Talk time of the call in seconds.
    pub talk: i64,
    /// Hold time of the call in seconds.
    pub hold: i64,
    /// Park time of the call in seconds.
    pub park: i64,
    /// Indication of whether the call was abandoned - 1/0 (absent until the call ends)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u8>,
    /// Indication of whether the call was abandoned whilst parked - 1/0 (absent until the call ends)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lostinPark: Option<u8>,
    /// Indication of whether the call was a short ringing call or not - 1/0 (absent until the call ends)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aban: Option<u8>,
    /// Indication of whether the call was answered - 1/0 (in progress: 1 once answered, else absent)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ans: Option<u8>,
    /// Indication of whether the call was called as having a short duration - 1/0 (absent until the call ends)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short: Option<u8>,
    /// How the call went, named by the first `[[outcomes]]` rule it matches (absent until the call ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Clear down cause for the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Call direction. 0 - Unknown, 1 - Internal, 2 - Incoming, 3 - Outgoing, 4 - Both
    pub dir: u8,
    /// Call type. 0 - Unknown, 1 - Internal, 2 - External
    #[serde(rename = "type")]
    pub call_type: u8,
    /// Indication of whether the call was a trunk to trunk call - 1/0
    pub t2t: u8,
    /// Caller Id (CLI) number in E.164 format.
    pub cliNum: String,
    /// Caller name
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliName: Option<String>,
    /// CLI Location
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliLoc: Option<String>,
    /// CLI area code
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliArea: Option<String>,
    /// CLI state (US-Only)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliState: Option<String>,
    /// CLI country
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliCtry: Option<String>,
    /// The caller withheld the number - 1/0 (the CLI fields are then empty unless `[numbers] withheld_cli = "send"`).
    pub cliWithheld: u8,
    /// DID number in E.164 format.
    pub ddiNum: String,
    /// DID name
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddiName: Option<String>,
    /// First/last rung and (last) answering device, user and agent.
    #[serde(flatten)]
    pub parties: Parties,
    /// Prefix number. Any number added to the CLI as prefix during routing through the communications platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rteID: Option<String>,
    /// Prefix name. Any string added to the Caller Name as prefix during routing through the communications platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rteName: Option<String>,
    /// First rang group name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngGroupName: Option<String>,
    /// Last rang group name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngGroupName: Option<String>,
    /// Answering group name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansGroupName: Option<String>,
    /// Indication of whether the call was recorded - 1/0
    pub hasRec: u8,
    /// Indication of whether the call has been rated - 1/0
    pub rate: u8,
    /// The rate cost (double).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rateCost: Option<f64>,
    /// The band name for the rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rateBand: Option<String>,
    /// The name of the rate applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rateName: Option<String>,
    /// String array of Ids for any recordings associated with this call session.
    pub recordingIds: Vec<String>,
    /// Contact directory item Array of any contacts matched to the call.
    pub directoryMatches: Vec<serde_json::Value>,
    /// Array containing a key/value pair of any tags applied to the call.
    pub tags: BTreeMap<String, String>,
    /// The routing step (`[[routes]]` name) the call went through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeStep: Option<String>,
    /// What the routing step decided: ACK, NAK, ERR, TIMEOUT or INVALID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeStatus: Option<String>,
    /// The destination the routing step returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeDest: Option<String>,
    /// The caller name the routing step set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeCallerName: Option<String>,
    /// Why the routing step decided so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeReason: Option<String>,
    /// Where the decision came from: server, cache, circuit_open, menu, switchhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeSource: Option<String>,
    /// Milliseconds spent asking the routing server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeLatencyMs: Option<u64>,
    /// The routing URL asked: scheme, host and path (the query and credentials may hold keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routeUrl: Option<String>,
    /// The millisecond timeline (switchhook's extension).
    pub timeline: Vec<Segment>,
    /// The recordings' manifest: path, offset in the call, length.
    pub recordings: Vec<Recording>,
    /// 1 while the call is in progress (a mid-call moment's record, or a call cut off by the
    /// end of a capture or a shutdown); absent once it has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inProgress: Option<u8>,
    /// Why the record is incomplete; absent when it is complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Set when the timeline failed its partition check (a bug to report, not silent garbage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timelineError: Option<String>,
}

impl Cdr {
    /// Every field name a CDR may carry, in order (the CloudSessionCdr names, then
    /// switchhook's extensions): what webhook templates and filters may name. Derived from
    /// the record itself, so a field added to it is known here.
    pub fn field_names() -> &'static [String] {
        static FIELDS: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| match serde_json::to_value(Cdr::with_every_field()) {
                Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
                _ => Vec::new(),
            });
        &FIELDS
    }

    /// A record with every field present (no `None`): the source of [`Cdr::field_names`]. Every field
    /// is named here, so the compiler asks for a new one.
    fn with_every_field() -> Cdr {
        let text = || Some(String::new());
        Cdr {
            id: String::new(),
            dType: "CloudSessionCdr",
            sVer: 1,
            pbxId: String::new(),
            pbxName: String::new(),
            tz: String::new(),
            start: String::new(),
            answer: text(),
            end: text(),
            dur: 0,
            ring: 0,
            talk: 0,
            hold: 0,
            park: 0,
            lost: Some(0),
            lostinPark: Some(0),
            aban: Some(0),
            ans: Some(0),
            short: Some(0),
            outcome: text(),
            cause: text(),
            dir: 0,
            call_type: 0,
            t2t: 0,
            cliNum: String::new(),
            cliName: text(),
            cliLoc: text(),
            cliArea: text(),
            cliState: text(),
            cliCtry: text(),
            cliWithheld: 0,
            ddiNum: String::new(),
            ddiName: text(),
            parties: Parties(
                PARTY_FIELDS
                    .iter()
                    .flat_map(|p| {
                        [
                            (p.number_field, String::new()),
                            (p.name_field, String::new()),
                        ]
                    })
                    .collect(),
            ),
            rteID: text(),
            rteName: text(),
            fRngGroupName: text(),
            lRngGroupName: text(),
            ansGroupName: text(),
            hasRec: 0,
            rate: 0,
            rateCost: Some(0.0),
            rateBand: text(),
            rateName: text(),
            recordingIds: Vec::new(),
            directoryMatches: Vec::new(),
            tags: BTreeMap::new(),
            routeStep: text(),
            routeStatus: text(),
            routeDest: text(),
            routeCallerName: text(),
            routeReason: text(),
            routeSource: text(),
            routeLatencyMs: Some(0),
            routeUrl: text(),
            timeline: Vec::new(),
            recordings: Vec::new(),
            inProgress: Some(0),
            partial: text(),
            timelineError: text(),
        }
    }
}

/// A finished call: its CDR, the flat fields, and where every field came from.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The CDR.
    pub cdr: Cdr,
    /// For each field, the event and header that set it (what `explain` prints).
    pub provenance: Vec<(String, String)>,
    /// Exact figures in ms (the CDR rounds to seconds).
    pub ms: Durations,
    /// The flat fields.
    pub flat: serde_json::Map<String, serde_json::Value>,
    /// Start, answer and end as µs since the epoch (to render in another time zone).
    pub times: Times,
    /// The call type webhooks filter on.
    pub kind: CallKind,
    /// Every leg's `Unique-ID`, the caller's first (what FreeSWITCH's logs name).
    pub leg_ids: Vec<String>,
    /// The customer it belongs to (`[mapping] tenant`, `[[tenants]]`), if one is set.
    pub tenant: Option<String>,
}

impl CallRecord {
    /// The tenant records and messages carry: the call's, else its PBX's id.
    pub fn tenant_id(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.cdr.pbxId)
    }
}

/// A record's instants, µs since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Times {
    /// `start`.
    pub start_us: i64,
    /// `answer`.
    pub answer_us: Option<i64>,
    /// `end`.
    pub end_us: i64,
}

/// The call types webhooks filter on (inbound, outbound, click-to-call, and internal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// From a trunk (`dir` 2 or 4).
    #[default]
    Inbound,
    /// From a device to a trunk (`dir` 3).
    Outbound,
    /// Device to device (`dir` 1).
    Internal,
    /// Originated by FreeSWITCH: the extension first, then the customer.
    ClickToCall,
}

impl CallKind {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Inbound => "inbound",
            CallKind::Outbound => "outbound",
            CallKind::Internal => "internal",
            CallKind::ClickToCall => "click_to_call",
        }
    }
}

/// Durations in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durations {
    /// Whole call.
    pub dur: i64,
    /// Ringing.
    pub ring: i64,
    /// Talking.
    pub talk: i64,
    /// On hold.
    pub hold: i64,
    /// Parked.
    pub park: i64,
    /// Waiting before a person or voicemail took the call (or the caller gave up).
    pub wait: i64,
}

fn secs(ms: i64) -> i64 {
    (ms + 500).div_euclid(1000)
}

/// Where each field came from, as `explain` prints it. A line cites an event that arrived
/// (its name, its time from the start, its leg), or says what else the value came from.
struct Prov {
    lines: Vec<(String, String)>,
    start_us: i64,
}

impl Prov {
    fn at(&self, us: i64) -> String {
        format!("+{:.3}s", (us - self.start_us) as f64 / 1e6)
    }

    fn add(&mut self, field: &str, source: String) {
        self.lines.push((field.to_owned(), source));
    }

    /// `field` came from what `seen` revealed on `leg`.
    fn seen(&mut self, field: &str, seen: Seen, leg: &Leg, what: &str) {
        let line = format!(
            "{} {} on leg {}: {what}",
            seen.by,
            self.at(seen.at_us),
            short(&leg.uuid)
        );
        self.add(field, line);
    }

    /// `field` came from a mapped attribute of `leg`.
    fn attr(&mut self, field: &str, leg: &Leg, attr: Attr) {
        if let Some(s) = leg.attrs.sourced(attr) {
            let line = format!(
                "{} {} on leg {}: {} = {:?} (mapping.{})",
                s.event.0,
                self.at(s.event.1),
                short(&leg.uuid),
                s.header,
                s.value,
                attr.key()
            );
            self.add(field, line);
        }
    }
}

fn short(uuid: &str) -> &str {
    uuid.get(..8).unwrap_or(uuid)
}

/// Whether a record is the final one of its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The call has ended: every verdict is decided.
    Ended,
    /// The call goes on: durations run to its latest event, the open segment is last, and
    /// what the end decides (`lost`, `aban`, `short`, `outcome`, `end`, `cause`) is absent.
    InProgress,
}

/// Builds the record of a call at `stage`.
pub(crate) fn build(call: &CallSession, settings: &Settings, stage: Stage) -> CallRecord {
    let ended = stage == Stage::Ended;
    let mut prov = Prov {
        lines: Vec::new(),
        start_us: call.timeline.start_us(),
    };
    // Events that went missing without a gap being noticed: FreeSWITCH's own account at
    // the hangup contradicts what arrived. The record is then partial and reconciled.
    let partial = call.partial.clone().or_else(|| unseen_events(call));
    let clock = clock(call, stage, partial.is_some(), &mut prov);
    let verdicts = verdicts(call, &clock, partial.is_some(), settings, &mut prov);
    let numbers = numbers(call, &verdicts, settings, &mut prov);
    let people = people(call, verdicts.click_to_call, &mut prov);
    let route = |a: Attr| route_attr(call, a);
    for (field, attr) in ROUTE_FIELDS {
        if let Some(leg) = call.legs.iter().find(|l| l.attrs.get(attr).is_some()) {
            prov.attr(field, leg, attr);
        }
    }
    let mut tags = BTreeMap::new();
    for l in &call.legs {
        tags.extend(l.attrs.tags.clone());
    }
    // Rating and the directory look at the outside party.
    let outside = if verdicts.dir == 3 {
        &numbers.ddi
    } else {
        &numbers.cli
    };
    let rated = if verdicts.dir == 1 {
        None
    } else {
        settings.rates.rate(&outside.e164, clock.ms.talk)
    };
    let mut directory = Vec::new();
    for n in [&numbers.cli, &numbers.ddi] {
        if n.is_e164 {
            for m in settings.directory.matches(&n.e164) {
                if !directory.contains(&m) {
                    directory.push(m);
                }
            }
        }
    }
    let caller = &call.legs[0];
    let ms = clock.ms;
    let fmt = |us: i64| settings.format_time(us);
    let decided = |v: bool| ended.then_some(v as u8);
    let outcome = ended
        .then(|| {
            settings
                .outcomes
                .name(&outcome_facts(call, &clock, &verdicts))
        })
        .flatten()
        .map(str::to_owned);
    let cdr = Cdr {
        id: call.id.clone(),
        dType: "CloudSessionCdr",
        sVer: 1,
        pbxId: settings
            .pbx_id
            .clone()
            .unwrap_or_else(|| call.pbx.0.clone()),
        pbxName: settings
            .pbx_name
            .clone()
            .unwrap_or_else(|| call.pbx.1.clone()),
        tz: settings.tz_name.clone(),
        start: fmt(clock.start_us),
        answer: clock.answer_us.map(fmt),
        end: ended.then(|| fmt(clock.end_us)),
        dur: secs(ms.dur),
        ring: secs(ms.ring),
        talk: secs(ms.talk),
        hold: secs(ms.hold),
        park: secs(ms.park),
        lost: decided(verdicts.lost),
        lostinPark: decided(call.hung_up_parked),
        aban: decided(verdicts.aban),
        // Answered is known the moment it happens; not answered only at the end.
        ans: (ended || verdicts.ans).then_some(verdicts.ans as u8),
        short: decided(verdicts.short),
        outcome,
        cause: caller.cause.clone().filter(|_| ended),
        dir: verdicts.dir,
        call_type: verdicts.call_type,
        t2t: (verdicts.dir == 4) as u8,
        cliNum: numbers.cli.e164.clone(),
        cliName: numbers.cli_name.clone(),
        cliLoc: numbers.cli.location.clone(),
        cliArea: numbers.cli.area.clone(),
        cliState: numbers.cli.state.clone(),
        cliCtry: numbers.cli.country.clone(),
        cliWithheld: numbers.withheld as u8,
        ddiNum: numbers.ddi.e164.clone(),
        ddiName: numbers.ddi_name,
        parties: people.parties,
        rteID: route(Attr::RoutePrefix),
        rteName: route(Attr::RouteName),
        fRngGroupName: people.first_group,
        lRngGroupName: people.last_group,
        ansGroupName: people.answering_group,
        hasRec: (!call.recordings.is_empty()) as u8,
        rate: rated.is_some() as u8,
        rateCost: rated.as_ref().map(|r| r.cost),
        rateBand: rated.as_ref().map(|r| r.rate.band.clone()),
        rateName: rated.as_ref().map(|r| r.rate.name.clone()),
        recordingIds: call.recordings.iter().map(|r| r.id.clone()).collect(),
        directoryMatches: directory,
        tags,
        routeStep: route(Attr::RouteStep),
        routeStatus: route(Attr::RouteStatus),
        routeDest: route(Attr::RouteDestination),
        routeCallerName: route(Attr::RouteCallerName),
        routeReason: route(Attr::RouteReason),
        routeSource: route(Attr::RouteSource),
        routeLatencyMs: route(Attr::RouteLatency).and_then(|v| v.parse().ok()),
        routeUrl: route(Attr::RouteUrl),
        timeline: clock.segments,
        recordings: call.recordings.clone(),
        inProgress: (!ended).then_some(1),
        partial,
        timelineError: clock.verdict.err().map(|e| e.to_string()),
    };
    if let Some(e) = &cdr.timelineError {
        tracing::error!(call_id = %cdr.id, error = %e, "timeline failed its partition check");
    }
    let flat = flat_fields(&cdr, &ms, call, numbers.cli.is_e164, settings);
    // Our number is the DID on an inbound call and the one presented on an outbound call.
    let ours: &[&str] = match cdr.dir {
        3 => &[&cdr.cliNum],
        1 => &[&cdr.cliNum, &cdr.ddiNum],
        _ => &[&cdr.ddiNum],
    };
    let tenant = caller
        .attrs
        .get(Attr::Tenant)
        .map(str::to_owned)
        .or_else(|| {
            let domain = caller.attrs.get(Attr::Domain);
            settings.tenants.of(domain, ours).map(str::to_owned)
        });
    let kind = match (verdicts.click_to_call, cdr.dir) {
        (true, _) => CallKind::ClickToCall,
        (false, 3) => CallKind::Outbound,
        (false, 1) => CallKind::Internal,
        _ => CallKind::Inbound,
    };
    CallRecord {
        leg_ids: call.legs.iter().map(|l| l.uuid.clone()).collect(),
        cdr,
        provenance: prov.lines,
        ms,
        flat,
        times: Times {
            start_us: clock.start_us,
            answer_us: clock.answer_us,
            end_us: clock.end_us,
        },
        kind,
        tenant,
    }
}

/// The call's instants, its timeline and its durations.
struct Clock {
    start_us: i64,
    answer_us: Option<i64>,
    end_us: i64,
    segments: Vec<Segment>,
    verdict: Result<(), super::timeline::PartitionError>,
    ms: Durations,
}

/// `start`, `answer`, `end` and the durations, from the timeline; a partial call is
/// completed from FreeSWITCH's own figures where they say more.
fn clock(call: &CallSession, stage: Stage, partial: bool, prov: &mut Prov) -> Clock {
    let caller = &call.legs[0];
    let start_seen = call.timeline.start_us();
    let end_us = call.end_us();
    let mut start_us = start_seen;
    let mut timeline = call.timeline.clone();
    // A call joined late (after a reconnect) starts when FreeSWITCH says it did.
    let fs_start = caller.fs.start_us.filter(|s| partial && *s < start_seen);
    if let Some(fs_start) = fs_start {
        timeline = timeline.with_earlier_start(fs_start);
        start_us = fs_start;
    }
    prov.start_us = start_us;
    match fs_start {
        Some(_) => prov.add(
            "start",
            format!(
                "reconciled: start_uepoch of leg {} (its hangup)",
                short(&caller.uuid)
            ),
        ),
        None => prov.seen(
            "start",
            caller.seen.first,
            caller,
            "the call's first event (Event-Date-Timestamp)",
        ),
    }
    let (last, leg) = call.last_event;
    match call.legs.get(leg).filter(|_| last.at_us == end_us) {
        Some(leg) => prov.seen(
            "end",
            last,
            leg,
            "the call's last event (Event-Date-Timestamp)",
        ),
        None => prov.add("end", "the latest event time seen for the call".into()),
    }
    let (segments, verdict) = match stage {
        Stage::Ended => timeline.finish(end_us),
        Stage::InProgress => timeline.so_far(end_us),
    };
    let sum = |k: SegmentKind| {
        segments
            .iter()
            .filter(|s| s.kind == k)
            .map(Segment::ms)
            .sum::<i64>()
    };
    let mut ms = Durations {
        dur: (end_us.max(start_us) - start_us) / 1000,
        ring: sum(SegmentKind::Ring),
        talk: sum(SegmentKind::Talk),
        hold: sum(SegmentKind::Hold),
        park: sum(SegmentKind::Park),
        wait: segments
            .iter()
            .take_while(|s| !matches!(s.kind, SegmentKind::Talk | SegmentKind::Voicemail))
            .map(Segment::ms)
            .sum(),
    };
    for (f, k) in [
        ("ring", "ring"),
        ("talk", "talk"),
        ("hold", "hold"),
        ("park", "park"),
    ] {
        prov.add(f, format!("sum of the timeline's {k} segments"));
    }
    let mut answer_us = caller.answered_us;
    if let Some(seen) = caller.seen.answered.filter(|_| answer_us.is_some()) {
        prov.seen("answer", seen, caller, "the caller's leg answered");
    }
    if partial {
        reconcile(call, &mut ms, &mut answer_us, prov);
    }
    Clock {
        start_us,
        answer_us,
        end_us,
        segments,
        verdict,
        ms,
    }
}

/// What kind of call it was and how it went.
struct Verdicts {
    click_to_call: bool,
    dir: u8,
    call_type: u8,
    ans: bool,
    lost: bool,
    aban: bool,
    short: bool,
}

fn verdicts(
    call: &CallSession,
    clock: &Clock,
    partial: bool,
    settings: &Settings,
    prov: &mut Prov,
) -> Verdicts {
    let caller = &call.legs[0];
    let ms = &clock.ms;
    // A talk segment means a bridge with the caller; a partial call may have lost it.
    let ans = !call.talked_with.is_empty() || (partial && ms.talk > 0) || call.answered_unseen;
    let caller_trunk = caller.trunk;
    let other_trunk = call.legs.iter().skip(1).any(|l| l.trunk);
    let dir = match (caller_trunk, other_trunk) {
        (true, true) => 4,
        (true, false) => 2,
        (false, true) => 3,
        (false, false) => 1,
    };
    prov.add(
        "dir",
        format!(
            "caller leg {} a trunk, {} trunk leg (mapping.trunk_profiles / trunk_contexts)",
            if caller_trunk { "is" } else { "is not" },
            if other_trunk { "a" } else { "no" }
        ),
    );
    if let Some(seen) = caller.seen.cause {
        prov.seen("cause", seen, caller, "Hangup-Cause");
    }
    let lost = matches!(dir, 2 | 4) && !ans;
    // Abandoned: the caller gave up while a phone rang, before it had rung long. A call that
    // ended in an IVR, a queue or voicemail, or never rang, is not a short-ringing call.
    let ended_ringing = clock
        .segments
        .last()
        .is_some_and(|s| s.kind == SegmentKind::Ring);
    let aban = lost && ended_ringing && ms.ring < settings.abandon_ring_ms;
    let short = ans && ms.talk < settings.short_talk_ms;
    prov.add(
        "ans",
        if ans {
            "a person or the far end was bridged with the caller".into()
        } else {
            "nobody was bridged with the caller (an IVR or voicemail answer is not a person)".into()
        },
    );
    prov.add(
        "lost",
        format!(
            "an incoming call ({}) that nobody answered ({})",
            matches!(dir, 2 | 4),
            !ans
        ),
    );
    prov.add(
        "aban",
        format!(
            "lost ({lost}), ended while ringing ({ended_ringing}), rang {} ms < [sessions] abandon_ring {} ms",
            ms.ring, settings.abandon_ring_ms
        ),
    );
    prov.add(
        "short",
        format!(
            "answered ({ans}), talked {} ms < [sessions] short_talk {} ms",
            ms.talk, settings.short_talk_ms
        ),
    );
    Verdicts {
        click_to_call: call.origin == Origin::Originated,
        dir,
        call_type: if caller_trunk || other_trunk { 2 } else { 1 },
        ans,
        lost,
        aban,
        short,
    }
}

/// What the `[[outcomes]]` rules look at.
fn outcome_facts(call: &CallSession, clock: &Clock, v: &Verdicts) -> OutcomeFacts {
    let mut causes: Vec<String> = call
        .legs
        .iter()
        .enumerate()
        .filter(|(j, l)| *j == 0 || l.rang_us.is_some())
        .filter_map(|(_, l)| l.cause.clone())
        .collect();
    causes.dedup();
    OutcomeFacts {
        answered: v.ans,
        short: v.short,
        abandoned: v.aban,
        voicemail: call.voicemail_left
            || clock
                .segments
                .iter()
                .any(|s| s.kind == SegmentKind::Voicemail),
        rang: call.legs.iter().skip(1).any(|l| l.rang_us.is_some()),
        queued: call.legs.iter().any(|l| l.via_queue)
            || clock.segments.iter().any(|s| s.kind == SegmentKind::Queue),
        ended_in: clock
            .segments
            .last()
            .map(|s| s.kind)
            .unwrap_or(SegmentKind::Setup),
        causes,
        direction: v.dir,
    }
}

/// The caller's and the dialled number, read.
struct Numbers {
    cli: NumberInfo,
    cli_name: Option<String>,
    withheld: bool,
    ddi: NumberInfo,
    ddi_name: Option<String>,
}

/// Caller ID numbers that mean "no number".
const NO_NUMBER: [&str; 5] = ["", "anonymous", "unknown", "private", "withheld"];

fn numbers(call: &CallSession, v: &Verdicts, settings: &Settings, prov: &mut Prov) -> Numbers {
    let caller = &call.legs[0];
    let far_leg = call
        .legs
        .iter()
        .skip(1)
        .find(|l| l.trunk)
        .filter(|_| v.dir == 3);
    // The caller ID is what the far end saw: on an outbound call (click-to-call too) the
    // number the trunk leg presented, not the extension (which the device and user fields
    // name).
    let (cli_raw, cli_name) = if let Some(f) = far_leg {
        let what = format!(
            "Caller-Caller-ID-Number = {:?}, what the far end was shown",
            f.caller_number
        );
        prov.seen("cliNum", f.seen.identity, f, &what);
        (f.caller_number.clone(), f.caller_name.clone())
    } else if v.click_to_call {
        prov.add(
            "cliNum",
            format!(
                "the originated leg {}'s device (click-to-call)",
                short(&caller.uuid)
            ),
        );
        let device = caller
            .attrs
            .get(Attr::DeviceNumber)
            .unwrap_or(&caller.first_destination)
            .to_owned();
        (device, String::new())
    } else {
        let what = format!("Caller-Caller-ID-Number = {:?}", caller.caller_number);
        prov.seen("cliNum", caller.seen.identity, caller, &what);
        (caller.caller_number.clone(), caller.caller_name.clone())
    };
    let withheld = far_leg.is_none()
        && !v.click_to_call
        && (caller.number_hidden || NO_NUMBER.contains(&cli_raw.to_ascii_lowercase().as_str()));
    let hide = withheld && settings.withheld_cli == WithheldCli::Hide;
    if hide {
        prov.add(
            "cliNum",
            "withheld by the caller (Caller-Privacy-Hide-Number); not sent ([numbers] withheld_cli = \"hide\")".into(),
        );
    }
    let ddi_raw = match far_leg {
        Some(f) => {
            let what = format!("Caller-Destination-Number = {:?}", f.first_destination);
            prov.seen("ddiNum", f.seen.identity, f, &what);
            f.first_destination.clone()
        }
        None => match caller.attrs.get(Attr::DdiNumber) {
            Some(mapped) => {
                prov.attr("ddiNum", caller, Attr::DdiNumber);
                mapped.to_owned()
            }
            None => {
                let what = format!("Caller-Destination-Number = {:?}", caller.first_destination);
                prov.seen("ddiNum", caller.seen.identity, caller, &what);
                caller.first_destination.clone()
            }
        },
    };
    let cli = if hide {
        NumberInfo::default()
    } else {
        settings.numbers.read(&cli_raw)
    };
    let cli_name = Some(cli_name).filter(|n| !n.is_empty() && !hide);
    let ddi = settings.numbers.read(&ddi_raw);
    let ddi_name = caller
        .attrs
        .get(Attr::DdiName)
        .map(str::to_owned)
        .or_else(|| settings.mapping.config.ddi_names.get(&ddi.e164).cloned());
    prov.attr("ddiName", caller, Attr::DdiName);
    Numbers {
        cli,
        cli_name,
        withheld,
        ddi,
        ddi_name,
    }
}

/// Which legs a party field looks among.
#[derive(Clone, Copy)]
enum Among {
    /// Legs that rang (extensions, agents; not trunks), in the order they rang.
    Rung,
    /// Legs the caller talked with, in order.
    Answering,
}

/// One pair of party fields: a number and a name, read from the first or last leg among
/// some that has the number.
struct PartyField {
    among: Among,
    last: bool,
    number: Attr,
    name: Attr,
    number_field: &'static str,
    name_field: &'static str,
}

macro_rules! party_fields {
    ($( ($among:ident, $last:expr, $role:ident, $num:literal, $name:literal) ),* $(,)?) => {
        [$(
            PartyField {
                among: Among::$among,
                last: $last,
                number: party_attr!(number $role),
                name: party_attr!(name $role),
                number_field: $num,
                name_field: $name,
            }
        ),*]
    };
}

macro_rules! party_attr {
    (number Dev) => {
        Attr::DeviceNumber
    };
    (name Dev) => {
        Attr::DeviceName
    };
    (number Usr) => {
        Attr::UserNumber
    };
    (name Usr) => {
        Attr::UserName
    };
    (number Agt) => {
        Attr::AgentNumber
    };
    (name Agt) => {
        Attr::AgentName
    };
}

/// The first/last rung and answering device, user and agent fields, in the order the CDR
/// lists them.
const PARTY_FIELDS: [PartyField; 12] = party_fields![
    (Rung, false, Dev, "fRngDevNum", "fRngDevName"),
    (Rung, true, Dev, "lRngDevNum", "lRngDevName"),
    (Answering, false, Dev, "ansDevNum", "ansDevName"),
    (Answering, true, Dev, "lAnsDevNum", "lAnsDevName"),
    (Rung, false, Usr, "fRngUsrNum", "fRngUsrName"),
    (Rung, true, Usr, "lRngUsrNum", "lRngUsrName"),
    (Answering, false, Usr, "ansUsrNum", "ansUsrName"),
    (Answering, true, Usr, "lAnsUsrNum", "lAnsUsrName"),
    (Rung, false, Agt, "fRngAgtNum", "fRngAgtName"),
    (Rung, true, Agt, "lRngAgtNum", "lRngAgtName"),
    (Answering, false, Agt, "ansAgtNum", "ansAgtName"),
    (Answering, true, Agt, "lAnsAgtNum", "lAnsAgtName"),
];

/// The first/last rung and answering device, user and agent: the fields of
/// [`PARTY_FIELDS`] that are known, in its order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parties(Vec<(&'static str, String)>);

impl Parties {
    /// The value of a party field (`ansDevNum`).
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Parties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Who rang and who answered.
struct People {
    parties: Parties,
    first_group: Option<String>,
    last_group: Option<String>,
    answering_group: Option<String>,
}

fn people(call: &CallSession, click_to_call: bool, prov: &mut Prov) -> People {
    let caller = &call.legs[0];
    let mut rung: Vec<&Leg> = call
        .legs
        .iter()
        .filter(|l| l.outbound && !l.trunk && l.rang_us.is_some())
        .collect();
    rung.sort_by_key(|l| l.rang_us);
    let mut answering: Vec<&Leg> = call
        .talked_with
        .iter()
        .map(|&j| &call.legs[j])
        .filter(|l| !l.trunk)
        .collect();
    if click_to_call && caller.answered_us.is_some() {
        answering.insert(0, caller);
    }
    let mut parties = Vec::new();
    for p in &PARTY_FIELDS {
        let legs = match p.among {
            Among::Rung => &rung,
            Among::Answering => &answering,
        };
        let mut with_number = legs
            .iter()
            .filter_map(|l| l.value(p.number).map(|v| (l, v)));
        let found = if p.last {
            with_number.next_back()
        } else {
            with_number.next()
        };
        if let Some((leg, number)) = found {
            parties.push((p.number_field, number));
            prov.attr(p.number_field, leg, p.number);
            if let Some(name) = leg.value(p.name) {
                parties.push((p.name_field, name));
                prov.attr(p.name_field, leg, p.name);
            }
        }
    }
    let groups: Vec<&str> = rung.iter().filter_map(|l| l.group.as_deref()).collect();
    People {
        parties: Parties(parties),
        first_group: groups.first().map(|g| g.to_string()),
        last_group: groups.last().map(|g| g.to_string()),
        answering_group: answering
            .iter()
            .find(|l| l.outbound)
            .and_then(|l| l.group.clone()),
    }
}

/// The routing step's fields, and the mapped attributes they are read from.
const ROUTE_FIELDS: [(&str, Attr); 10] = [
    ("rteID", Attr::RoutePrefix),
    ("rteName", Attr::RouteName),
    ("routeStep", Attr::RouteStep),
    ("routeStatus", Attr::RouteStatus),
    ("routeDest", Attr::RouteDestination),
    ("routeCallerName", Attr::RouteCallerName),
    ("routeReason", Attr::RouteReason),
    ("routeSource", Attr::RouteSource),
    ("routeLatencyMs", Attr::RouteLatency),
    ("routeUrl", Attr::RouteUrl),
];

/// A route attribute: any leg may carry it (the first that does).
fn route_attr(call: &CallSession, attr: Attr) -> Option<String> {
    call.legs
        .iter()
        .find_map(|l| l.attrs.get(attr).map(str::to_owned))
}

/// What FreeSWITCH's hangup figures say happened that no event showed: an answer of the
/// caller's leg, a bridge of any leg. None when the events and the figures agree.
fn unseen_events(call: &CallSession) -> Option<String> {
    let caller = &call.legs[0];
    if caller.fs.answer_us.is_some() && caller.answered_us.is_none() {
        return Some(format!(
            "events missing: leg {}'s hangup says it was answered; no answer event arrived",
            short(&caller.uuid)
        ));
    }
    let unseen_bridge = call
        .legs
        .iter()
        .find(|l| l.fs.bridged && !l.was_bridged && !l.catching_up);
    unseen_bridge.map(|l| {
        format!(
            "events missing: leg {}'s hangup says it was bridged; no bridge event arrived",
            short(&l.uuid)
        )
    })
}

/// Fills in from FreeSWITCH's own figures what a gap hid.
fn reconcile(call: &CallSession, ms: &mut Durations, answer_us: &mut Option<i64>, prov: &mut Prov) {
    let caller = &call.legs[0];
    if answer_us.is_none() {
        if let Some(a) = caller.fs.answer_us {
            *answer_us = Some(a);
            prov.add(
                "answer",
                format!(
                    "reconciled: answer_uepoch of leg {} (its hangup)",
                    short(&caller.uuid)
                ),
            );
        }
    }
    let hold = call
        .legs
        .iter()
        .filter_map(|l| l.fs.hold_ms)
        .max()
        .unwrap_or(0);
    if hold > ms.hold {
        ms.hold = hold;
        prov.add("hold", "reconciled: hold_accum_ms".into());
    }
    // A bridged person's billmsec is their talk plus hold.
    let talk = call
        .legs
        .iter()
        .skip(1)
        .filter(|l| l.outbound)
        .filter_map(|l| l.fs.bill_ms.map(|b| b - l.fs.hold_ms.unwrap_or(0)))
        .max()
        .unwrap_or(0);
    if talk > ms.talk {
        ms.talk = talk;
        prov.add(
            "talk",
            "reconciled: billmsec - hold_accum_ms of the answering leg".into(),
        );
    }
    let ring = call
        .legs
        .iter()
        .skip(1)
        .filter(|l| l.outbound)
        .filter_map(|l| match (l.fs.start_us, l.fs.answer_us, l.fs.end_us) {
            (Some(s), Some(a), _) => Some((a - s) / 1000),
            (Some(s), None, Some(e)) => Some((e - s) / 1000),
            _ => None,
        })
        .sum::<i64>();
    // Without the bridge the timeline rang on to the end: FreeSWITCH's figure is the ring.
    let bridge_unseen = call.talked_with.is_empty() && ms.talk > 0;
    if call.talked_with.is_empty() && ring > 0 && (ring > ms.ring || bridge_unseen) {
        ms.ring = ring;
        prov.add("ring", "reconciled: legs' start..answer epochs".into());
    }
    if let (Some(s), Some(e)) = (caller.fs.start_us, caller.fs.end_us) {
        ms.dur = ms.dur.max((e - s) / 1000);
    }
}

/// The flat field names (`{cli}`, `{call-duration}`…).
pub(crate) const FLAT_FIELDS: [&str; 11] = [
    "cli",
    "cli-withheld",
    "ddi",
    "international",
    "connected",
    "ddi-description",
    "voicemail",
    "call-duration",
    "hold-time",
    "department-selection",
    "call-date",
];

fn flat_fields(
    cdr: &Cdr,
    ms: &Durations,
    call: &CallSession,
    cli_is_e164: bool,
    settings: &Settings,
) -> serde_json::Map<String, serde_json::Value> {
    let ended = cdr.inProgress.is_none();
    let withheld = cdr.cliWithheld == 1;
    let international = cli_is_e164
        && cdr
            .cliCtry
            .as_deref()
            .is_some_and(|c| !c.eq_ignore_ascii_case(&settings.home_region));
    let b = |v: bool| serde_json::Value::from(if v { "1" } else { "0" });
    let mut m = serde_json::Map::new();
    m.insert("cli".into(), cdr.cliNum.clone().into());
    m.insert("cli-withheld".into(), b(withheld));
    m.insert("ddi".into(), cdr.ddiNum.clone().into());
    m.insert("international".into(), b(international));
    // Not connected (and no voicemail) is known only at the end.
    if ended || cdr.ans == Some(1) {
        m.insert("connected".into(), b(cdr.ans == Some(1)));
    }
    m.insert(
        "ddi-description".into(),
        cdr.ddiName.clone().unwrap_or_default().into(),
    );
    if ended || call.voicemail_left {
        m.insert("voicemail".into(), b(call.voicemail_left));
    }
    m.insert("call-duration".into(), cdr.dur.into());
    m.insert("hold-time".into(), secs(ms.wait).into());
    // The whole menu choice (`1003` for a direct extension), not its last digit.
    m.insert(
        "department-selection".into(),
        call.ivr_digits.clone().into(),
    );
    m.insert("call-date".into(), cdr.start.clone().into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_list_is_the_records_own_fields_in_order() {
        let f = Cdr::field_names();
        assert_eq!(f.len(), 83, "{f:?}");
        assert_eq!(f[0], "id");
        assert_eq!(f[22], "type", "serde's name for call_type");
        for p in &PARTY_FIELDS {
            assert!(f.iter().any(|x| x == p.number_field), "{}", p.number_field);
            assert!(f.iter().any(|x| x == p.name_field), "{}", p.name_field);
        }
        for (field, _) in ROUTE_FIELDS {
            assert!(f.iter().any(|x| x == field), "{field}");
        }
        // Every field of a real record is one of them.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/freeswitch-1.10/16-concurrent-mix.esl"
        );
        let frames = crate::fake_freeswitch::load_capture(std::path::Path::new(path)).unwrap();
        let mut tracker = crate::session::SessionTracker::new(Default::default());
        let mut records: Vec<CallRecord> = frames
            .iter()
            .flat_map(|f| tracker.on_event(&f.event))
            .collect();
        records.extend(tracker.flush("end"));
        assert_eq!(records.len(), 5);
        for rec in records {
            let value = serde_json::to_value(&rec.cdr).unwrap();
            for k in value.as_object().unwrap().keys() {
                assert!(f.contains(k), "{k}");
            }
        }
    }
}
