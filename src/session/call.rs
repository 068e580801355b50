//! One call: every leg that belongs to it, and its timeline.

use super::leg::{AppKind, FsFigures, Leg, LegState, Seen, SeenBy};
use super::mapping::{Attr, Mapper};
use super::moments::Trigger;
use super::timeline::{SegmentKind, Timeline};
use crate::esl::{Event, EventName};

/// A recording made during the call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recording {
    /// Its id (the file name without directory and extension).
    pub id: String,
    /// `Record-File-Path`.
    pub path: String,
    /// Start, ms after the call started.
    pub offset_ms: i64,
    /// Length in ms (0 while still recording).
    pub length_ms: i64,
    #[serde(skip)]
    started_us: i64,
}

/// How the call began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The first leg came in from a trunk.
    Inbound,
    /// The first leg came in from a device.
    Internal,
    /// The first leg was originated by FreeSWITCH (`originate`: click-to-call).
    Originated,
}

/// The call being assembled.
#[derive(Debug, Clone)]
pub struct CallSession {
    /// The session id: the first leg's `Unique-ID`.
    pub id: String,
    /// Every leg, the first (the caller's, or the originated leg) first.
    pub(crate) legs: Vec<Leg>,
    /// The segment timeline.
    pub timeline: Timeline,
    /// Why the record is incomplete, if it is.
    pub partial: Option<String>,
    /// The ring group or queue legs created now are rung for.
    group_now: Option<String>,
    /// In a call-center queue (member-queue-start … member-queue-end).
    pub in_queue: bool,
    /// Recordings.
    pub recordings: Vec<Recording>,
    /// A voicemail message was left.
    pub voicemail_left: bool,
    /// DTMF digits the caller pressed in an IVR.
    pub ivr_digits: String,
    /// Legs the caller talked with, in order (indexes into `legs`).
    pub talked_with: Vec<usize>,
    /// Adopted mid-call already bridged: answered before switchhook saw it.
    pub answered_unseen: bool,
    /// Adopted from `show channels` after a restart or a reconnect.
    pub adopted: bool,
    /// The caller's leg hung up while parked.
    pub hung_up_parked: bool,
    /// `Core-UUID` and `FreeSWITCH-Switchname` of the first event.
    pub pbx: (String, String),
    /// How the call began.
    pub origin: Origin,
    /// The IVR menu the caller is in or was last in (`ivr` application data).
    pub ivr_menu: Option<String>,
    /// Which lifecycle triggers have fired (see [`super::moments`]).
    pub(crate) fired: super::moments::Fired,
    /// The latest event applied to the call, and the index of its leg: what its end time
    /// comes from.
    pub(crate) last_event: (Seen, usize),
    /// When FreeSWITCH last confirmed the quiet call is still up (event clock, µs): expiry
    /// counts from here or the last event, whichever is later.
    pub(crate) quiet_since: Option<i64>,
}

/// Events after which the mapped attributes of a leg are read again. The rest (executes,
/// state changes, codecs) repeat what these carry.
fn maps_attrs(name: EventName) -> bool {
    matches!(
        name,
        EventName::ChannelCreate
            | EventName::ChannelAnswer
            | EventName::ChannelBridge
            | EventName::ChannelHangupComplete
            | EventName::ChannelProgress
            | EventName::ChannelProgressMedia
    )
}

/// Whether a bridge dial string rings several targets at once or in turn.
fn is_multi_target(data: &str) -> bool {
    // Strip {…} and […] variable blocks, whose values may contain commas.
    let mut depth = 0i32;
    let mut plain = String::with_capacity(data.len());
    for c in data.chars() {
        match c {
            '{' | '[' | '<' => depth += 1,
            '}' | ']' | '>' => depth -= 1,
            _ if depth <= 0 => plain.push(c),
            _ => {}
        }
    }
    plain.contains(',') || plain.contains('|') || plain.contains(":_:")
}

impl CallSession {
    /// A call whose first leg is `leg`.
    pub(crate) fn new(leg: Leg, ev: &Event) -> Self {
        let origin = if leg.outbound {
            Origin::Originated
        } else if leg.trunk {
            Origin::Inbound
        } else {
            Origin::Internal
        };
        let get = |h: &str| ev.get(h).map(|v| v.into_owned()).unwrap_or_default();
        CallSession {
            last_event: (leg.seen.first, 0),
            id: leg.uuid.clone(),
            timeline: Timeline::new(leg.created_us),
            legs: vec![leg],
            partial: None,
            group_now: None,
            in_queue: false,
            recordings: Vec::new(),
            voicemail_left: false,
            ivr_digits: String::new(),
            talked_with: Vec::new(),
            answered_unseen: false,
            adopted: false,
            hung_up_parked: false,
            pbx: (get("Core-UUID"), get("FreeSWITCH-Switchname")),
            origin,
            ivr_menu: None,
            fired: Default::default(),
            quiet_since: None,
        }
    }

    /// How many legs the call has had.
    pub fn leg_count(&self) -> usize {
        self.legs.len()
    }

    /// Every leg's `Unique-ID`, the caller's first.
    pub fn leg_ids(&self) -> impl Iterator<Item = &str> {
        self.legs.iter().map(|l| l.uuid.as_str())
    }

    /// The caller's number as FreeSWITCH gave it (`Caller-Caller-ID-Number` of the first leg).
    pub fn caller_number(&self) -> &str {
        &self.legs[0].caller_number
    }

    /// The number the caller dialled: `[mapping] ddi_number` once known, else the first
    /// leg's first destination.
    pub fn dialled(&self) -> &str {
        let caller = &self.legs[0];
        caller
            .attrs
            .get(Attr::DdiNumber)
            .unwrap_or(&caller.first_destination)
    }

    fn leg_index(&self, uuid: &str) -> Option<usize> {
        self.legs.iter().position(|l| l.uuid == uuid)
    }

    /// Adds a leg that belongs to this call (rung for the current group, if any).
    pub(crate) fn add_leg(&mut self, mut leg: Leg) {
        if leg.outbound && leg.group.is_none() {
            leg.group = self.group_now.clone();
            leg.via_queue = self.in_queue;
        }
        // Most calls have two or three legs: grow by one rather than doubling, since a
        // leg is large and every call in progress holds its spare slots.
        self.legs.reserve_exact(1);
        self.legs.push(leg);
    }

    /// Whether every leg is complete.
    pub fn is_over(&self) -> bool {
        self.legs.iter().all(|l| l.state == LegState::Complete)
    }

    /// Marks the call partial (the first reason is kept) and its current stretch unknown.
    pub fn mark_gap(&mut self, reason: &str) {
        self.partial.get_or_insert_with(|| reason.to_owned());
        let at = self.timeline.last_us();
        self.timeline.enter(SegmentKind::Unknown, None, at);
    }

    /// Takes in `other`, a call bridged to this one (valet retrieval, attended transfer) or
    /// a leg that turned out to belong here. Legs rung for a group keep it.
    pub fn absorb(&mut self, mut other: CallSession) {
        for leg in other.legs.iter_mut() {
            // As for a leg added directly (an adopted queue agent's leg arrives this way).
            if leg.outbound && leg.group.is_none() {
                leg.group = self.group_now.clone();
                leg.via_queue |= self.in_queue;
            }
        }
        self.timeline.tick(other.timeline.last_us());
        if self.partial.is_none() {
            self.partial = other.partial;
        }
        self.recordings.extend(other.recordings);
        self.voicemail_left |= other.voicemail_left;
        self.fired.absorb(other.fired);
        let base = self.legs.len();
        if other.last_event.0.at_us > self.last_event.0.at_us {
            self.last_event = (other.last_event.0, other.last_event.1 + base);
        }
        self.legs.reserve_exact(other.legs.len());
        self.legs.extend(other.legs);
        self.talked_with
            .extend(other.talked_with.into_iter().map(|i| i + base));
        self.answered_unseen |= other.answered_unseen;
    }

    /// Brings a leg first seen mid-call up to date from the channel state every channel
    /// event carries: its creation, progress and answer times, the bridge, hold. Runs once,
    /// on the leg's first event; the call is partial (its earlier history is unknown), but
    /// it is neither missed nor a new call, and its triggers come out as the ones an
    /// uninterrupted switchhook fired, so the outbox recognises them by their `webhook-id`.
    pub fn catch_up(&mut self, uuid: &str, name: EventName, ev: &Event, mapper: &Mapper) {
        let Some(i) = self.leg_index(uuid).filter(|&i| self.legs[i].catching_up) else {
            return;
        };
        // A leg in the middle of an application says so in every event: a caller waiting in
        // a queue is in it again, and the ring group a bridge rings is learned as from the
        // bridge's own CHANNEL_EXECUTE and given to the rung legs.
        let app = ev.var("current_application").unwrap_or_default();
        // Whether an outbound socket controls the channel: the `socket` application's start
        // is history, but its host variable stays (its end, if still to come, clears it).
        self.legs[i].in_socket = ev.var("socket_host").is_some();
        if let Some(kind) = AppKind::of_running(&app, self.legs[i].in_socket, ev) {
            self.legs[i].app = Some(kind);
            if kind == AppKind::Queue {
                self.in_queue = true;
                self.group_now = ev
                    .var("current_application_data")
                    .map(|q| q.into_owned())
                    .filter(|q| !q.is_empty());
            }
        }
        // A queue agent's leg: mod_callcenter names the member it serves.
        if self.legs[i].outbound && ev.var("cc_member_session_uuid").is_some() {
            self.legs[i].via_queue = true;
        }
        if app == "bridge" {
            let at = self.timeline.last_us();
            mapper.apply(ev, name, at, &mut self.legs[i].attrs);
            let data = ev.var("current_application_data").unwrap_or_default();
            self.learn_group(i, &data, ev);
            let group = self.group_now.clone();
            for (j, l) in self.legs.iter_mut().enumerate() {
                if j != i && l.outbound && !l.trunk && l.group.is_none() {
                    l.group = group.clone();
                }
            }
        }
        let time = |h: &str| {
            ev.get(h)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|t| *t > 0)
        };
        let call_state = ev.get("Channel-Call-State").unwrap_or_default();
        let leg = &mut self.legs[i];
        leg.catching_up = false;
        if matches!(
            name,
            EventName::ChannelHangup | EventName::ChannelHangupComplete | EventName::ChannelDestroy
        ) && leg.outbound
        {
            // Caught up by its hangup: whether an earlier run saw it ring (and told
            // receivers it was dialled) is history that is gone.
            self.fired.passed(Trigger::Dialed);
        }
        if let Some(created) = time("Caller-Channel-Created-Time") {
            leg.created_us = created;
            if i == 0 {
                self.timeline.refine_start(created);
            }
        }
        if leg.outbound && leg.rang_us.is_none() {
            leg.rang_us = time("Caller-Channel-Progress-Time")
                .or_else(|| time("Caller-Channel-Progress-Media-Time"));
            if leg.rang_us.is_some() && leg.state == LegState::Down {
                leg.state = LegState::Ringing;
            }
        }
        if let Some(answered) = time("Caller-Channel-Answered-Time") {
            // Not the answer itself: the first event seen after it, which says when it was.
            leg.answer(Seen {
                at_us: answered,
                by: SeenBy::AnsweredTimeIn(name),
            });
            if leg.outbound {
                leg.rang_us.get_or_insert(answered);
            }
            if leg.is_up() {
                leg.state = LegState::Answered;
            }
        }
        leg.held = call_state == "HELD";
        let answered = self.legs[i].answered_us.is_some();
        let bridged = answered && matches!(&*call_state, "ACTIVE" | "HELD");
        if let Some(other) = ev.get("Other-Leg-Unique-ID").filter(|_| bridged) {
            if let Some(j) = self.leg_index(&other) {
                self.legs[i].bridged_to = Some(other.into_owned());
                self.legs[j]
                    .bridged_to
                    .get_or_insert_with(|| uuid.to_owned());
                self.legs[i].was_bridged = true;
                self.legs[j].was_bridged = true;
            }
        }
        // Bridged now, or earlier (a bridging leg keeps its bridge time into the hangup).
        let talked = (bridged && ev.get("Other-Leg-Unique-ID").is_some())
            || (answered && time("Caller-Channel-Bridged-Time").is_some());
        if talked {
            // Answered before switchhook saw it: the CDR says answered. Its answer trigger
            // fires when the call is seen talking (the bridge still up shows who answered and
            // how); a bridge already over took that history with it.
            self.answered_unseen = true;
        }
    }

    /// A call adopted from `show channels`. The moments it shows to have passed (received,
    /// dialled, answered) fire again as it catches up: the ones an earlier run committed
    /// carry the same `webhook-id` and the outbox drops them, and the ones it never
    /// committed (killed first, or stopped while they happened) are not lost.
    pub fn adopted(&mut self) {
        self.adopted = true;
        self.fired.number_after_restart();
    }

    /// Applies one event about leg `uuid` (already part of this call) at `at_us`.
    pub fn apply(&mut self, uuid: &str, name: EventName, ev: &Event, at_us: i64, mapper: &Mapper) {
        let at = self.timeline.tick(at_us);
        let Some(i) = self.leg_index(uuid) else {
            return;
        };
        if at >= self.last_event.0.at_us {
            self.last_event = (Seen::event(name, at), i);
        }
        if maps_attrs(name) {
            let leg = &mut self.legs[i];
            mapper.apply(ev, name, at, &mut leg.attrs);
            if let Some(d) = ev.get("Caller-Destination-Number") {
                if leg.destination != *d {
                    leg.destination = d.into_owned();
                }
            }
        }
        match name {
            EventName::ChannelCreate => {
                let seen = Seen::event(name, at);
                self.legs[i].refresh_identity(ev, seen, &mapper.config)
            }
            EventName::ChannelProgress | EventName::ChannelProgressMedia => {
                let leg = &mut self.legs[i];
                if leg.outbound && leg.rang_us.is_none() {
                    leg.rang_us = Some(at);
                    if leg.state == LegState::Down {
                        leg.state = LegState::Ringing;
                    }
                }
            }
            EventName::ChannelAnswer => {
                let leg = &mut self.legs[i];
                if leg.answered_us.is_none() {
                    leg.answer(Seen::event(name, at));
                    if leg.outbound {
                        leg.rang_us.get_or_insert(at);
                    }
                }
                if leg.is_up() {
                    leg.state = LegState::Answered;
                }
            }
            EventName::ChannelBridge => {
                if let Some(other) = ev.get("Other-Leg-Unique-ID") {
                    let other = other.into_owned();
                    self.legs[i].bridged_to = Some(other.clone());
                    self.legs[i].was_bridged = true;
                    if let Some(j) = self.leg_index(&other) {
                        self.legs[j].bridged_to = Some(uuid.to_owned());
                        self.legs[j].was_bridged = true;
                    }
                }
            }
            EventName::ChannelUnbridge => {
                if let Some(other) = self.legs[i].bridged_to.take() {
                    if let Some(j) = self.leg_index(&other) {
                        if self.legs[j].bridged_to.as_deref() == Some(uuid) {
                            self.legs[j].bridged_to = None;
                        }
                    }
                }
            }
            EventName::ChannelHold => self.legs[i].held = true,
            EventName::ChannelUnhold => self.legs[i].held = false,
            EventName::ChannelExecute => self.on_execute(i, name, ev, at, mapper),
            EventName::ChannelExecuteComplete => {
                let app = ev.get("Application");
                if app.as_deref() == Some("socket") {
                    self.legs[i].in_socket = false;
                }
                if let Some(kind) = app.as_deref().and_then(AppKind::of) {
                    let leg = &mut self.legs[i];
                    let route_menu = kind == AppKind::Ivr && leg.app == Some(AppKind::RouteMenu);
                    if leg.app == Some(kind) || route_menu {
                        leg.app = None;
                    }
                }
            }
            EventName::ChannelHangup => self.on_hangup(i, name, ev, at),
            EventName::ChannelHangupComplete => {
                self.on_hangup(i, name, ev, at);
                let leg = &mut self.legs[i];
                leg.state = LegState::Complete;
                leg.fs = FsFigures::read(ev);
                if let Some(c) = ev.get("Hangup-Cause") {
                    leg.cause = Some(c.into_owned());
                    leg.seen.cause = Some(Seen::event(name, at));
                }
            }
            EventName::ChannelDestroy => {
                // A destroy without a hangup-complete (filtered subscriptions) still ends it.
                self.on_hangup(i, name, ev, at);
                self.legs[i].state = LegState::Complete;
            }
            EventName::Custom => self.on_custom(i, ev),
            EventName::Dtmf
                if self.legs[i].app == Some(AppKind::Ivr)
                    || self.legs[0].app == Some(AppKind::Ivr) =>
            {
                if let Some(d) = ev.get("DTMF-Digit") {
                    self.ivr_digits.push_str(&d);
                }
            }
            EventName::RecordStart if self.legs[i].app != Some(AppKind::Voicemail) => {
                if let Some(path) = ev.get("Record-File-Path") {
                    let id = std::path::Path::new(path.as_ref())
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.to_string());
                    let offset_ms = (at - self.timeline.start_us()) / 1000;
                    self.recordings.push(Recording {
                        id,
                        path: path.into_owned(),
                        offset_ms,
                        length_ms: 0,
                        started_us: at,
                    });
                }
            }
            EventName::RecordStop => {
                if let Some(path) = ev.get("Record-File-Path") {
                    if let Some(r) = self
                        .recordings
                        .iter_mut()
                        .rev()
                        .find(|r| r.path == *path && r.length_ms == 0)
                    {
                        r.length_ms = (at - r.started_us) / 1000;
                    }
                }
            }
            _ => {}
        }
        self.update_timeline(at);
    }

    fn on_execute(&mut self, i: usize, name: EventName, ev: &Event, at: i64, mapper: &Mapper) {
        let Some(app) = ev.get("Application") else {
            return;
        };
        if app == "socket" {
            self.legs[i].in_socket = true;
        }
        if let Some(kind) = AppKind::of_running(&app, self.legs[i].in_socket, ev) {
            self.legs[i].app = Some(kind);
            if kind == AppKind::Ivr {
                self.ivr_menu = ev.get("Application-Data").map(|d| d.into_owned());
            }
        }
        if app == "bridge" {
            // The dial plan sets group variables just before the bridge: read the mapping
            // on the bridge itself, not only on the lifecycle events.
            mapper.apply(ev, name, at, &mut self.legs[i].attrs);
            let data = ev.get("Application-Data").unwrap_or_default();
            self.learn_group(i, &data, ev);
        }
    }

    /// The ring group leg `i` is bridging to: the mapped group variable, or, for a bridge to
    /// several targets, the number dialled.
    fn learn_group(&mut self, i: usize, bridge_data: &str, ev: &Event) {
        let leg = &self.legs[i];
        self.group_now = if let Some(g) = leg.attrs.get(Attr::Group) {
            Some(g.to_owned())
        } else if is_multi_target(bridge_data) {
            let dest = ev
                .get("Caller-Destination-Number")
                .map(|d| d.into_owned())
                .unwrap_or_else(|| leg.destination.clone());
            Some(dest)
        } else {
            None
        };
    }

    fn on_hangup(&mut self, i: usize, name: EventName, ev: &Event, at: i64) {
        let leg = &mut self.legs[i];
        if leg.hungup_us.is_none() {
            leg.hungup_us = Some(at);
            if i == 0 && (leg.parked || leg.app == Some(AppKind::Park)) {
                self.hung_up_parked = true;
            }
        }
        if leg.cause.is_none() {
            leg.cause = ev.get("Hangup-Cause").map(|c| c.into_owned());
            if leg.cause.is_some() {
                leg.seen.cause = Some(Seen::event(name, at));
            }
        }
        if leg.state != LegState::Complete {
            leg.state = LegState::HungUp;
        }
        leg.held = false;
    }

    fn on_custom(&mut self, i: usize, ev: &Event) {
        let Some(sub) = ev.subclass() else { return };
        match sub.as_ref() {
            "callcenter::info" => match ev.get("CC-Action").as_deref() {
                Some("member-queue-start") => {
                    self.in_queue = true;
                    if let Some(q) = ev.get("CC-Queue") {
                        self.group_now = Some(q.into_owned());
                    }
                }
                Some("member-queue-end") => self.in_queue = false,
                _ => {}
            },
            "valet_parking::info" => match ev.get("Action").as_deref() {
                Some("hold") => self.legs[i].parked = true,
                Some("bridge") | Some("exit") => self.legs[i].parked = false,
                _ => {}
            },
            "vm::maintenance" if ev.get("VM-Action").as_deref() == Some("leave-message") => {
                self.voicemail_left = true;
            }
            _ => {}
        }
    }

    /// What the caller is doing now, from the legs' states.
    pub fn state_now(&self) -> (SegmentKind, Option<usize>) {
        let caller = &self.legs[0];
        if let Some(j) = caller.bridged_to.as_deref().and_then(|b| self.leg_index(b)) {
            let kind = if caller.held || self.legs[j].held {
                SegmentKind::Hold
            } else {
                SegmentKind::Talk
            };
            return (kind, Some(j));
        }
        if caller.parked || caller.app == Some(AppKind::Park) {
            return (SegmentKind::Park, None);
        }
        if caller.app == Some(AppKind::Voicemail) {
            return (SegmentKind::Voicemail, None);
        }
        // Ringing, or answered and about to be bridged (the 20 ms between a device's answer
        // and the bridge are still the ring, not a new segment).
        if let Some(j) = self
            .legs
            .iter()
            .enumerate()
            .filter(|(j, l)| {
                l.is_ringing()
                    || (*j != 0
                        && l.outbound
                        && l.is_up()
                        && l.bridged_to.is_none()
                        && l.answered_us.is_some())
            })
            .max_by_key(|(_, l)| l.created_us)
            .map(|(j, _)| j)
        {
            return (SegmentKind::Ring, Some(j));
        }
        if self.in_queue || caller.app == Some(AppKind::Queue) {
            return (SegmentKind::Queue, None);
        }
        if matches!(caller.app, Some(AppKind::Ivr | AppKind::RouteMenu)) {
            return (SegmentKind::Ivr, None);
        }
        (SegmentKind::Setup, None)
    }

    fn update_timeline(&mut self, at: i64) {
        if !self.legs[0].is_up() {
            // The caller is gone: the last stretch runs to the end of the call.
            return;
        }
        let (kind, party) = self.state_now();
        if kind == SegmentKind::Talk {
            if let Some(j) = party {
                if !self.talked_with.contains(&j) {
                    self.talked_with.push(j);
                }
            }
        }
        let label = party.map(|j| {
            let l = &self.legs[j];
            match (&l.group, kind) {
                (Some(g), SegmentKind::Ring) => format!("group:{g}"),
                _ => l.label(),
            }
        });
        let label = match kind {
            SegmentKind::Queue => self.group_now.as_ref().map(|q| format!("queue:{q}")),
            _ => label,
        };
        self.timeline.enter(kind, label, at);
    }

    /// When the call ended: its last event (the last leg's hangup), µs.
    pub fn end_us(&self) -> i64 {
        self.timeline.last_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_target_dial_strings() {
        assert!(is_multi_target(
            "user/1001@127.0.0.1,user/1002@127.0.0.1,user/1003@127.0.0.1"
        ));
        assert!(is_multi_target(
            "[leg_timeout=5]user/1001@127.0.0.1|[leg_timeout=15]user/1002@127.0.0.1"
        ));
        assert!(!is_multi_target("{a=1,b=2}user/1001@127.0.0.1"));
        assert!(!is_multi_target("sofia/gateway/carrier/+14155550100"));
    }

    #[test]
    fn app_kinds() {
        assert_eq!(AppKind::of("ivr"), Some(AppKind::Ivr));
        assert_eq!(AppKind::of("voicemail"), Some(AppKind::Voicemail));
        assert_eq!(AppKind::of("bridge"), None);
    }
}
