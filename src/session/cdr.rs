//! The CDR of one finished call, with the field names of the CloudSessionCdr format,
//! and the flat fields (`{cli}`, `{call-duration}`…) that webhook templates use.

use std::collections::BTreeMap;

use serde::Serialize;

use super::call::{CallSession, Origin, Recording};
use super::leg::Leg;
use super::mapping::Attr;
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
    /// End time of the call session.
    pub end: String,
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
    /// Indication of whether the call was abandoned - 1/0
    pub lost: u8,
    /// Indication of whether the call was abandoned whilst parked - 1/0
    pub lostinPark: u8,
    /// Indication of whether the call was a short ringing call or not - 1/0
    pub aban: u8,
    /// Indication of whether the call was answered - 1/0
    pub ans: u8,
    /// Indication of whether the call was called as having a short duration - 1/0
    pub short: u8,
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
    /// Why the record is incomplete; absent when it is complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Set when the timeline failed its partition check (a bug to report, not silent garbage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timelineError: Option<String>,
}

/// Every field name a CDR may carry (the CloudSessionCdr names, then switchhook's extensions): what
/// webhook templates and filters may name.
#[rustfmt::skip]
pub const FIELDS: [&str; 80] = [
    "id", "dType", "sVer", "pbxId", "pbxName", "tz", "start", "answer", "end", "dur", "ring",
    "talk", "hold", "park", "lost", "lostinPark", "aban", "ans", "short", "cause", "dir", "type",
    "t2t", "cliNum", "cliName", "cliLoc", "cliArea", "cliState", "cliCtry", "ddiNum", "ddiName",
    "fRngDevNum", "fRngDevName", "lRngDevNum", "lRngDevName", "ansDevNum", "ansDevName",
    "lAnsDevNum", "lAnsDevName", "fRngUsrNum", "fRngUsrName", "lRngUsrNum", "lRngUsrName",
    "ansUsrNum", "ansUsrName", "lAnsUsrNum", "lAnsUsrName", "fRngAgtNum", "fRngAgtName",
    "lRngAgtNum", "lRngAgtName", "ansAgtNum", "ansAgtName", "lAnsAgtNum", "lAnsAgtName",
    "rteID", "rteName", "fRngGroupName", "lRngGroupName", "ansGroupName", "hasRec", "rate",
    "rateCost", "rateBand", "rateName", "recordingIds", "directoryMatches", "tags", "timeline",
    "recordings", "partial", "timelineError", "routeStep", "routeStatus", "routeDest",
    "routeCallerName", "routeReason", "routeSource", "routeLatencyMs", "routeUrl",
];

/// The first/last rung and answering device, user and agent fields.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[allow(non_snake_case)]
pub struct Parties {
    /// First rang device number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngDevNum: Option<String>,
    /// First rang device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngDevName: Option<String>,
    /// Last rang device number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngDevNum: Option<String>,
    /// Last rang device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngDevName: Option<String>,
    /// Answering device number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansDevNum: Option<String>,
    /// Answering device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansDevName: Option<String>,
    /// Last answering device number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lAnsDevNum: Option<String>,
    /// Last answering device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lAnsDevName: Option<String>,
    /// First rang user number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngUsrNum: Option<String>,
    /// First rang user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngUsrName: Option<String>,
    /// Last rang user number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngUsrNum: Option<String>,
    /// Last rang user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngUsrName: Option<String>,
    /// Answering user number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansUsrNum: Option<String>,
    /// Answering user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansUsrName: Option<String>,
    /// Last answering user number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lAnsUsrNum: Option<String>,
    /// Last answering user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lAnsUsrName: Option<String>,
    /// First rang agent number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngAgtNum: Option<String>,
    /// First rang agent name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fRngAgtName: Option<String>,
    /// Last rang agent number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngAgtNum: Option<String>,
    /// Last rang agent name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lRngAgtName: Option<String>,
    /// Answering agent number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansAgtNum: Option<String>,
    /// Answering agent name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansAgtName: Option<String>,
    /// Last answering agent number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lAnsAgtNum: Option<String>,
    /// Last answering agent name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lAnsAgtName: Option<String>,
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
}

/// A record's instants, µs since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// Where each field came from, as `explain` prints it.
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

/// Builds the record of a finished call.
pub fn build(call: &CallSession, settings: &Settings) -> CallRecord {
    let caller = &call.legs[0];
    let start_seen = call.timeline.start_us();
    let mut start_us = start_seen;
    let end_us = call.end_us();
    let mut timeline = call.timeline.clone();
    // A call joined late (after a reconnect) starts when FreeSWITCH says it did.
    if call.partial.is_some() {
        if let Some(fs_start) = caller.fs.start_us.filter(|s| *s < start_seen) {
            timeline = timeline.with_earlier_start(fs_start);
            start_us = fs_start;
        }
    }
    let (segments, verdict) = timeline.finish(end_us);
    let mut prov = Prov {
        lines: Vec::new(),
        start_us,
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
    let mut answer_us = caller.answered_us;
    if call.partial.is_some() {
        reconcile(call, &mut ms, &mut answer_us, &mut prov);
    }

    // Who rang, who answered.
    let click_to_call = call.origin == Origin::Originated;
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
    // A talk segment means a bridge with the caller; a partial call may have lost it.
    let ans = !call.talked_with.is_empty()
        || (call.partial.is_some() && ms.talk > 0)
        || call.answered_unseen;

    let caller_trunk = caller.trunk;
    let other_trunk = call.legs.iter().skip(1).any(|l| l.trunk);
    let dir = match (caller_trunk, other_trunk) {
        (true, true) => 4,
        (true, false) => 2,
        (false, true) => 3,
        (false, false) => 1,
    };
    let incoming = matches!(dir, 2 | 4);
    let lost = incoming && !ans;
    let short_call = ans && ms.talk < settings.short_talk_ms;
    let aban = lost && ms.ring < settings.abandon_ring_ms;

    // Numbers.
    let far_leg = call.legs.iter().skip(1).find(|l| l.trunk);
    let cli_raw = if click_to_call {
        caller
            .attrs
            .get(Attr::DeviceNumber)
            .unwrap_or(&caller.first_destination)
            .to_owned()
    } else {
        caller.caller_number.clone()
    };
    let ddi_raw = match (dir, far_leg) {
        (3, Some(f)) => f.first_destination.clone(),
        _ => caller
            .attrs
            .get(Attr::DdiNumber)
            .map(str::to_owned)
            .unwrap_or_else(|| caller.first_destination.clone()),
    };
    let cli = settings.numbers.read(&cli_raw);
    let ddi = settings.numbers.read(&ddi_raw);
    prov.add(
        "cliNum",
        if click_to_call {
            format!(
                "the originated leg {}'s device (click-to-call)",
                short(&caller.uuid)
            )
        } else {
            format!(
                "CHANNEL_CREATE +0.000s on leg {}: Caller-Caller-ID-Number = {:?}",
                short(&caller.uuid),
                cli_raw
            )
        },
    );
    match (dir, far_leg) {
        (3, Some(f)) => prov.add(
            "ddiNum",
            format!(
                "trunk leg {}: Caller-Destination-Number = {:?}",
                short(&f.uuid),
                ddi_raw
            ),
        ),
        _ => {
            if caller.attrs.get(Attr::DdiNumber).is_some() {
                prov.attr("ddiNum", caller, Attr::DdiNumber);
            } else {
                prov.add(
                    "ddiNum",
                    format!(
                        "CHANNEL_CREATE on leg {}: Caller-Destination-Number = {:?}",
                        short(&caller.uuid),
                        ddi_raw
                    ),
                );
            }
        }
    }
    let ddi_name = caller
        .attrs
        .get(Attr::DdiName)
        .map(str::to_owned)
        .or_else(|| settings.mapping.config.ddi_names.get(&ddi.e164).cloned());
    prov.attr("ddiName", caller, Attr::DdiName);

    // Parties.
    let mut parties = Parties::default();
    let pick = |legs: &[&Leg], attr: Attr, last: bool| -> Option<(usize, String)> {
        let mut it = legs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.value(attr).map(|v| (i, v)));
        if last {
            it.next_back()
        } else {
            it.next()
        }
    };
    let name_of = |legs: &[&Leg], i: usize, attr: Attr| legs[i].value(attr);
    macro_rules! fill {
        ($legs:expr, $last:expr, $num:ident, $name:ident, $na:expr, $nn:expr, $f1:expr, $f2:expr) => {
            if let Some((i, v)) = pick($legs, $na, $last) {
                parties.$num = Some(v);
                parties.$name = name_of($legs, i, $nn);
                prov.attr($f1, $legs[i], $na);
                prov.attr($f2, $legs[i], $nn);
            }
        };
    }
    use Attr::*;
    fill!(
        &rung,
        false,
        fRngDevNum,
        fRngDevName,
        DeviceNumber,
        DeviceName,
        "fRngDevNum",
        "fRngDevName"
    );
    fill!(
        &rung,
        true,
        lRngDevNum,
        lRngDevName,
        DeviceNumber,
        DeviceName,
        "lRngDevNum",
        "lRngDevName"
    );
    fill!(
        &answering,
        false,
        ansDevNum,
        ansDevName,
        DeviceNumber,
        DeviceName,
        "ansDevNum",
        "ansDevName"
    );
    fill!(
        &answering,
        true,
        lAnsDevNum,
        lAnsDevName,
        DeviceNumber,
        DeviceName,
        "lAnsDevNum",
        "lAnsDevName"
    );
    fill!(
        &rung,
        false,
        fRngUsrNum,
        fRngUsrName,
        UserNumber,
        UserName,
        "fRngUsrNum",
        "fRngUsrName"
    );
    fill!(
        &rung,
        true,
        lRngUsrNum,
        lRngUsrName,
        UserNumber,
        UserName,
        "lRngUsrNum",
        "lRngUsrName"
    );
    fill!(
        &answering,
        false,
        ansUsrNum,
        ansUsrName,
        UserNumber,
        UserName,
        "ansUsrNum",
        "ansUsrName"
    );
    fill!(
        &answering,
        true,
        lAnsUsrNum,
        lAnsUsrName,
        UserNumber,
        UserName,
        "lAnsUsrNum",
        "lAnsUsrName"
    );
    fill!(
        &rung,
        false,
        fRngAgtNum,
        fRngAgtName,
        AgentNumber,
        AgentName,
        "fRngAgtNum",
        "fRngAgtName"
    );
    fill!(
        &rung,
        true,
        lRngAgtNum,
        lRngAgtName,
        AgentNumber,
        AgentName,
        "lRngAgtNum",
        "lRngAgtName"
    );
    fill!(
        &answering,
        false,
        ansAgtNum,
        ansAgtName,
        AgentNumber,
        AgentName,
        "ansAgtNum",
        "ansAgtName"
    );
    fill!(
        &answering,
        true,
        lAnsAgtNum,
        lAnsAgtName,
        AgentNumber,
        AgentName,
        "lAnsAgtNum",
        "lAnsAgtName"
    );
    let groups: Vec<&str> = rung.iter().filter_map(|l| l.group.as_deref()).collect();
    let ans_group = answering
        .iter()
        .find(|l| l.outbound)
        .and_then(|l| l.group.clone());

    // Route prefix/name and tags: any leg may carry them.
    let first_attr = |a: Attr| {
        call.legs
            .iter()
            .find_map(|l| l.attrs.get(a).map(str::to_owned))
    };
    for (field, attr) in [
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
    ] {
        if let Some(leg) = call.legs.iter().find(|l| l.attrs.get(attr).is_some()) {
            prov.attr(field, leg, attr);
        }
    }
    let mut tags = BTreeMap::new();
    for l in &call.legs {
        tags.extend(l.attrs.tags.clone());
    }

    // Rating and the directory look at the outside party.
    let outside = if matches!(dir, 3) { &ddi } else { &cli };
    let rated = if dir == 1 {
        None
    } else {
        settings.rates.rate(&outside.e164, ms.talk)
    };
    let mut directory = Vec::new();
    for n in [&cli, &ddi] {
        if n.is_e164 {
            for m in settings.directory.matches(&n.e164) {
                if !directory.contains(&m) {
                    directory.push(m);
                }
            }
        }
    }

    let fmt = |us: i64| settings.format_time(us);
    prov.add(
        "start",
        format!(
            "CHANNEL_CREATE of the first leg {} (Event-Date-Timestamp)",
            short(&caller.uuid)
        ),
    );
    if answer_us.is_some() {
        prov.add(
            "answer",
            format!("CHANNEL_ANSWER of leg {}", short(&caller.uuid)),
        );
    }
    prov.add("end", "the last leg's CHANNEL_HANGUP_COMPLETE".into());
    for (f, k) in [
        ("ring", "ring"),
        ("talk", "talk"),
        ("hold", "hold"),
        ("park", "park"),
    ] {
        prov.add(f, format!("sum of the timeline's {k} segments"));
    }
    prov.add(
        "cause",
        format!("Hangup-Cause of leg {}", short(&caller.uuid)),
    );
    prov.add(
        "dir",
        format!(
            "caller leg {} a trunk, {} trunk leg (mapping.trunk_profiles / trunk_contexts)",
            if caller_trunk { "is" } else { "is not" },
            if other_trunk { "a" } else { "no" }
        ),
    );

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
        start: fmt(start_us),
        answer: answer_us.map(fmt),
        end: fmt(end_us),
        dur: secs(ms.dur),
        ring: secs(ms.ring),
        talk: secs(ms.talk),
        hold: secs(ms.hold),
        park: secs(ms.park),
        lost: lost as u8,
        lostinPark: call.hung_up_parked as u8,
        aban: aban as u8,
        ans: ans as u8,
        short: short_call as u8,
        cause: caller.cause.clone(),
        dir,
        call_type: if caller_trunk || other_trunk { 2 } else { 1 },
        t2t: (dir == 4) as u8,
        cliNum: cli.e164.clone(),
        cliName: Some(caller.caller_name.clone()).filter(|n| !n.is_empty() && !click_to_call),
        cliLoc: cli.location.clone(),
        cliArea: cli.area.clone(),
        cliState: cli.state.clone(),
        cliCtry: cli.country.clone(),
        ddiNum: ddi.e164.clone(),
        ddiName: ddi_name.clone(),
        parties,
        rteID: first_attr(Attr::RoutePrefix),
        rteName: first_attr(Attr::RouteName),
        fRngGroupName: groups.first().map(|g| g.to_string()),
        lRngGroupName: groups.last().map(|g| g.to_string()),
        ansGroupName: ans_group,
        hasRec: (!call.recordings.is_empty()) as u8,
        rate: rated.is_some() as u8,
        rateCost: rated.as_ref().map(|r| r.cost),
        rateBand: rated.as_ref().map(|r| r.rate.band.clone()),
        rateName: rated.as_ref().map(|r| r.rate.name.clone()),
        recordingIds: call.recordings.iter().map(|r| r.id.clone()).collect(),
        directoryMatches: directory,
        tags,
        routeStep: first_attr(Attr::RouteStep),
        routeStatus: first_attr(Attr::RouteStatus),
        routeDest: first_attr(Attr::RouteDestination),
        routeCallerName: first_attr(Attr::RouteCallerName),
        routeReason: first_attr(Attr::RouteReason),
        routeSource: first_attr(Attr::RouteSource),
        routeLatencyMs: first_attr(Attr::RouteLatency).and_then(|v| v.parse().ok()),
        routeUrl: first_attr(Attr::RouteUrl),
        timeline: segments,
        recordings: call.recordings.clone(),
        partial: call.partial.clone(),
        timelineError: verdict.err(),
    };
    if let Some(e) = &cdr.timelineError {
        tracing::error!(call_id = %cdr.id, error = %e, "timeline failed its partition check");
    }
    let flat = flat_fields(&cdr, &ms, call, settings, cli.is_e164);
    let kind = match (click_to_call, cdr.dir) {
        (true, _) => CallKind::ClickToCall,
        (false, 3) => CallKind::Outbound,
        (false, 1) => CallKind::Internal,
        _ => CallKind::Inbound,
    };
    CallRecord {
        cdr,
        provenance: prov.lines,
        ms,
        flat,
        times: Times {
            start_us,
            answer_us,
            end_us,
        },
        kind,
    }
}

/// Fills in from FreeSWITCH's own figures what a gap hid.
fn reconcile(call: &CallSession, ms: &mut Durations, answer_us: &mut Option<i64>, prov: &mut Prov) {
    let caller = &call.legs[0];
    if answer_us.is_none() {
        if let Some(a) = caller.fs.answer_us {
            *answer_us = Some(a);
            prov.add("answer", "reconciled: caller's answer_uepoch".into());
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
    if ring > ms.ring && call.talked_with.is_empty() {
        ms.ring = ring;
        prov.add("ring", "reconciled: legs' start..answer epochs".into());
    }
    if let (Some(s), Some(e)) = (caller.fs.start_us, caller.fs.end_us) {
        ms.dur = ms.dur.max((e - s) / 1000);
    }
}

/// The flat field names (`{cli}`, `{call-duration}`…).
pub const FLAT_FIELDS: [&str; 11] = [
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
    settings: &Settings,
    cli_is_e164: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let caller = &call.legs[0];
    let withheld = caller.number_hidden
        || cdr.cliNum.is_empty()
        || ["anonymous", "unknown", "private", "withheld"]
            .contains(&cdr.cliNum.to_ascii_lowercase().as_str());
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
    m.insert("connected".into(), b(cdr.ans == 1));
    m.insert(
        "ddi-description".into(),
        cdr.ddiName.clone().unwrap_or_default().into(),
    );
    m.insert("voicemail".into(), b(call.voicemail_left));
    m.insert("call-duration".into(), cdr.dur.into());
    m.insert("hold-time".into(), secs(ms.wait).into());
    m.insert(
        "department-selection".into(),
        call.ivr_digits
            .chars()
            .last()
            .map(|c| c.to_string())
            .unwrap_or_default()
            .into(),
    );
    m.insert("call-date".into(), cdr.start.clone().into());
    m
}
