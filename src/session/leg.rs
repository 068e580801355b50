//! One channel (leg) of a call, as its events describe it.

use super::mapping::{Attr, LegAttrs, MappingConfig};
use crate::esl::{Event, EventName};

/// Where a leg is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegState {
    /// Created, not yet alerting.
    Down,
    /// Alerting (outbound legs: the device or far end rings).
    Ringing,
    /// Answered.
    Answered,
    /// Hung up (CHANNEL_HANGUP seen).
    HungUp,
    /// Its CHANNEL_HANGUP_COMPLETE arrived: nothing more will change.
    Complete,
}

/// What application the leg is in, as far as the timeline cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppKind {
    /// `ivr`, `play_and_get_digits`, `read`.
    Ivr,
    /// `play_and_get_digits` or `read` run by a routing step (inside the `socket`
    /// application): a code such as a PIN, not an IVR choice, so its digits stay private.
    RouteMenu,
    /// `voicemail`.
    Voicemail,
    /// `callcenter`, `fifo`.
    Queue,
    /// `park` (valet parking is tracked by its own events).
    Park,
}

impl AppKind {
    /// The kind of a dial-plan application, if it matters to the timeline.
    pub(crate) fn of(app: &str) -> Option<AppKind> {
        Some(match app {
            "ivr" | "play_and_get_digits" | "read" => AppKind::Ivr,
            "voicemail" => AppKind::Voicemail,
            "callcenter" | "fifo" => AppKind::Queue,
            // valet_park first announces the slot; the park itself starts with its
            // valet_parking::info hold event.
            "park" => AppKind::Park,
            _ => return None,
        })
    }

    /// The kind of `app` running on a leg: a code menu (`play_and_get_digits`, `read`) on a
    /// channel an outbound socket controls is a routing step's, unless the step shares its
    /// digits (`switchhook_share_digits`, read from `ev`).
    pub(crate) fn of_running(app: &str, in_socket: bool, ev: &Event) -> Option<AppKind> {
        let kind = AppKind::of(app)?;
        let private = kind == AppKind::Ivr
            && app != "ivr"
            && in_socket
            && ev.var("switchhook_share_digits").as_deref() != Some("true");
        Some(if private { AppKind::RouteMenu } else { kind })
    }
}

/// FreeSWITCH's own figures from a CHANNEL_HANGUP_COMPLETE, used to reconcile partial calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsFigures {
    /// `start_uepoch`.
    pub(crate) start_us: Option<i64>,
    /// `answer_uepoch`.
    pub(crate) answer_us: Option<i64>,
    /// `end_uepoch`.
    pub(crate) end_us: Option<i64>,
    /// `billmsec`.
    pub(crate) bill_ms: Option<i64>,
    /// `last_bridge_to` was set: the leg was bridged.
    pub(crate) bridged: bool,
    /// `hold_accum_ms`.
    pub(crate) hold_ms: Option<i64>,
}

impl FsFigures {
    /// Reads the figures from a CHANNEL_HANGUP_COMPLETE.
    pub(crate) fn read(ev: &Event) -> Self {
        let num = |name: &str| {
            ev.var(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| *v > 0)
        };
        FsFigures {
            start_us: num("start_uepoch"),
            answer_us: num("answer_uepoch"),
            end_us: num("end_uepoch"),
            bill_ms: num("billmsec"),
            hold_ms: num("hold_accum_ms"),
            bridged: ev.var("last_bridge_to").is_some_and(|v| !v.is_empty()),
        }
    }
}

/// The event that revealed a fact, and when: what `explain` cites. Kept small (16 bytes):
/// every leg holds four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The event's time, µs.
    pub(crate) at_us: i64,
    /// What revealed it.
    pub(crate) by: SeenBy,
}

/// What revealed a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeenBy {
    /// The event itself.
    Event(EventName),
    /// The `Caller-Channel-Answered-Time` header of an event (the first one seen of a leg
    /// that was answered before switchhook saw it).
    AnsweredTimeIn(EventName),
    /// FreeSWITCH's channel list (`show channels`: a leg adopted after a restart).
    ChannelList,
}

impl Seen {
    /// The event `name` at `at_us` revealed it.
    pub(crate) fn event(name: EventName, at_us: i64) -> Seen {
        Seen {
            at_us,
            by: SeenBy::Event(name),
        }
    }

    /// FreeSWITCH's channel list revealed it (a leg adopted after a restart or reconnect).
    pub(crate) fn snapshot(at_us: i64) -> Seen {
        Seen {
            at_us,
            by: SeenBy::ChannelList,
        }
    }
}

impl std::fmt::Display for SeenBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeenBy::Event(name) => write!(f, "{name}"),
            SeenBy::AnsweredTimeIn(name) => write!(f, "{name} (Caller-Channel-Answered-Time)"),
            SeenBy::ChannelList => f.write_str("show channels"),
        }
    }
}

/// Where a leg's facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LegSeen {
    /// The leg's first event.
    pub(crate) first: Seen,
    /// The event its caller ID and first dialled number were read from (the first event,
    /// unless that one lacked them).
    pub(crate) identity: Seen,
    /// The event that set [`Leg::answered_us`].
    pub(crate) answered: Option<Seen>,
    /// The event that set [`Leg::cause`].
    pub(crate) cause: Option<Seen>,
}

/// One leg.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    /// `Unique-ID`.
    pub(crate) uuid: String,
    /// When it was created (or first seen), µs.
    pub(crate) created_us: i64,
    /// Whether FreeSWITCH originated it (`Call-Direction: outbound`).
    pub(crate) outbound: bool,
    /// Whether it is a trunk (carrier) leg.
    pub(crate) trunk: bool,
    /// `Caller-Caller-ID-Number` when first seen.
    pub(crate) caller_number: String,
    /// `Caller-Caller-ID-Name` when first seen.
    pub(crate) caller_name: String,
    /// `Caller-Destination-Number` when first seen (the DID on an inbound trunk leg).
    pub(crate) first_destination: String,
    /// `Caller-Destination-Number` now (changes on transfer).
    pub(crate) destination: String,
    /// Whether the caller asked for privacy on the number.
    pub(crate) number_hidden: bool,
    /// Inside the `socket` application (an outbound-socket controller, such as a routing
    /// step, runs its applications).
    pub(crate) in_socket: bool,
    /// Life cycle.
    pub(crate) state: LegState,
    /// First alerting, µs (outbound legs only).
    pub(crate) rang_us: Option<i64>,
    /// Answer, µs.
    pub(crate) answered_us: Option<i64>,
    /// Hangup, µs.
    pub(crate) hungup_us: Option<i64>,
    /// The leg it is bridged with.
    pub(crate) bridged_to: Option<String>,
    /// A bridge of this leg was seen (FreeSWITCH's hangup figures say whether there was one).
    pub(crate) was_bridged: bool,
    /// Holding or held.
    pub(crate) held: bool,
    /// The application it is in.
    pub(crate) app: Option<AppKind>,
    /// Parked by valet parking.
    pub(crate) parked: bool,
    /// The ring group or queue it was rung for.
    pub(crate) group: Option<String>,
    /// Rung by a call-center queue (its `group` is the queue).
    pub(crate) via_queue: bool,
    /// `Hangup-Cause`.
    pub(crate) cause: Option<String>,
    /// Mapped attributes.
    pub(crate) attrs: LegAttrs,
    /// FreeSWITCH's own figures, once hung up.
    pub(crate) fs: FsFigures,
    /// First seen mid-call (switchhook started or reconnected while it was up): its next
    /// event's headers say what it missed (see [`super::CallSession::catch_up`]).
    pub(crate) catching_up: bool,
    /// Which events revealed what.
    pub(crate) seen: LegSeen,
}

impl Leg {
    /// A leg from its first event, `first`.
    pub(crate) fn new(uuid: String, ev: &Event, first: Seen, mapping: &MappingConfig) -> Self {
        let get = |h: &str| ev.get(h).map(|v| v.into_owned()).unwrap_or_default();
        let outbound = ev
            .get("Call-Direction")
            .or_else(|| ev.get("Caller-Direction"))
            .is_some_and(|d| d == "outbound");
        let destination = get("Caller-Destination-Number");
        Leg {
            uuid,
            created_us: first.at_us,
            outbound,
            trunk: is_trunk(ev, outbound, mapping),
            caller_number: get("Caller-Caller-ID-Number"),
            caller_name: get("Caller-Caller-ID-Name"),
            first_destination: destination.clone(),
            destination,
            in_socket: false,
            number_hidden: ev
                .get("Caller-Privacy-Hide-Number")
                .is_some_and(|v| v == "true"),
            state: LegState::Down,
            rang_us: None,
            answered_us: None,
            hungup_us: None,
            bridged_to: None,
            was_bridged: false,
            held: false,
            app: None,
            parked: false,
            group: None,
            via_queue: false,
            cause: None,
            attrs: LegAttrs::default(),
            fs: FsFigures::default(),
            catching_up: false,
            seen: LegSeen {
                first,
                identity: first,
                answered: None,
                cause: None,
            },
        }
    }

    /// Records the answer, the first time one is seen.
    pub(crate) fn answer(&mut self, seen: Seen) {
        if self.answered_us.is_none() {
            self.answered_us = Some(seen.at_us);
            self.seen.answered = Some(seen);
        }
    }

    /// Fills in identity fields an earlier, sparser event (CHANNEL_STATE CS_NEW) lacked;
    /// `seen` is this event.
    pub(crate) fn refresh_identity(&mut self, ev: &Event, seen: Seen, mapping: &MappingConfig) {
        let mut filled = false;
        let mut fill = |field: &mut String, h: &str| {
            if field.is_empty() {
                if let Some(v) = ev.get(h) {
                    *field = v.into_owned();
                    filled = true;
                }
            }
        };
        fill(&mut self.caller_number, "Caller-Caller-ID-Number");
        fill(&mut self.caller_name, "Caller-Caller-ID-Name");
        fill(&mut self.first_destination, "Caller-Destination-Number");
        if filled {
            self.seen.identity = seen;
        }
        self.trunk |= is_trunk(ev, self.outbound, mapping);
        self.number_hidden |= ev
            .get("Caller-Privacy-Hide-Number")
            .is_some_and(|v| v == "true");
    }

    /// Still up (not hung up).
    pub(crate) fn is_up(&self) -> bool {
        !matches!(self.state, LegState::HungUp | LegState::Complete)
    }

    /// Alerting and not yet answered: an outbound leg ringing a device or the far end.
    pub(crate) fn is_ringing(&self) -> bool {
        self.outbound && self.is_up() && self.answered_us.is_none()
    }

    /// A mapped attribute; a device leg that called in (not rung) is its caller's number.
    pub(crate) fn value(&self, attr: Attr) -> Option<String> {
        self.attrs
            .get(attr)
            .map(str::to_owned)
            .or_else(|| match attr {
                Attr::DeviceNumber if !self.outbound && !self.trunk => {
                    Some(self.caller_number.clone()).filter(|n| !n.is_empty())
                }
                _ => None,
            })
    }

    /// How the leg is named in timelines: its device number (or the dialled number for
    /// trunks).
    pub(crate) fn label(&self) -> String {
        if !self.trunk {
            if let Some(v) = self
                .value(Attr::AgentNumber)
                .or_else(|| self.value(Attr::DeviceNumber))
            {
                return v;
            }
        }
        if self.outbound {
            self.first_destination.clone()
        } else {
            self.caller_number.clone()
        }
    }
}

/// A trunk leg: on a trunk profile, through a gateway, or arriving in a trunk context.
fn is_trunk(ev: &Event, outbound: bool, mapping: &MappingConfig) -> bool {
    if ev.var("sip_gateway_name").is_some() {
        return true;
    }
    let channel = ev.get("Channel-Name").unwrap_or_default();
    let mut parts = channel.split('/');
    let tech = parts.next().unwrap_or("");
    let profile = ev
        .var("sofia_profile_name")
        .map(|p| p.into_owned())
        .or_else(|| (tech == "sofia").then(|| parts.next().unwrap_or("").to_owned()))
        .unwrap_or_default();
    if profile == "gateway" || mapping.trunk_profiles.contains(&profile) {
        return true;
    }
    !outbound
        && ev
            .get("Caller-Context")
            .is_some_and(|c| mapping.trunk_contexts.iter().any(|t| *t == *c))
}
