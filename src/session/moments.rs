//! Lifecycle moments: the webhook triggers, fired once per call at the event that
//! revealed them.
//!
//! A moment carries a snapshot of the call's record as it stood then (the final record for
//! the end-of-call triggers), so a webhook for "answered" describes the call up to its answer,
//! live and in replay alike.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::call::{CallSession, Origin};
use super::cdr::CallRecord;
use super::leg::AppKind;
use super::mapping::Attr;
use super::timeline::SegmentKind;
use crate::esl::EventName;

/// Declares the triggers once: the enum, its configuration spellings and the list of all.
macro_rules! triggers {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// A lifecycle trigger.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Trigger {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl Trigger {
            /// Every trigger, in declaration order.
            pub const ALL: [Trigger; [$($name),*].len()] = [$(Trigger::$variant),*];

            /// The configuration spelling (`call.answered.queue`).
            pub fn name(self) -> &'static str {
                match self {
                    $( Trigger::$variant => $name, )*
                }
            }
        }
    };
}

triggers! {
    /// Call received on server: the call's first leg exists.
    Received = "call.received",
    /// The answered caller reached an IVR menu.
    AnsweredIvr = "call.answered.ivr",
    /// Answered by a member of a ring group.
    AnsweredRingGroup = "call.answered.ring_group",
    /// Answered by an agent of a call-center queue.
    AnsweredQueue = "call.answered.queue",
    /// Answered by an extension rung on its own.
    AnsweredExtension = "call.answered.extension",
    /// The far end answered: an outbound call, or an incoming call sent on to an outside
    /// number.
    AnsweredExternal = "call.answered.external",
    /// The call ended without anyone answering.
    Missed = "call.missed",
    /// The call ended.
    Hangup = "call.hangup",
    /// The first of: answered by a person, or ended unanswered.
    MissedOrAnswered = "call.missed_or_answered",
    /// The caller chose an option in an IVR menu.
    Dtmf = "call.dtmf",
    /// An extension, or on an outbound call the far end, started ringing.
    Dialed = "call.dialed",
    /// Click-to-call: the customer answered after the extension.
    ClickToCallAnswered = "call.click_to_call.answered",
    /// The call joined another (an attended transfer's consultation call, a parked call
    /// retrieved by another extension): `detail.into` names the call it goes on as; no more
    /// moments come under this id.
    Merged = "call.merged",
}

impl Trigger {
    /// The trigger spelled `name`.
    pub fn parse(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of triggers a call has fired: one flag per trigger, however many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fired {
    fired: [bool; Trigger::ALL.len()],
    seq: u32,
    emitted: bool,
}

impl Fired {
    /// Marks `t` fired; false if it already was.
    fn claim(&mut self, t: Trigger) -> bool {
        !std::mem::replace(&mut self.fired[t as usize], true)
    }

    /// Marks `t` as a moment that must not fire: its history is gone.
    pub(crate) fn passed(&mut self, t: Trigger) {
        self.claim(t);
    }

    /// A call adopted mid-call is numbered after any moment it can have had (each trigger
    /// fires at most once), so `sequence` keeps increasing per call across a restart; it may
    /// skip numbers.
    pub(crate) fn number_after_restart(&mut self) {
        self.seq = self.seq.max(Trigger::ALL.len() as u32);
    }

    /// Whether `t` has fired.
    pub(crate) fn has(&self, t: Trigger) -> bool {
        self.fired[t as usize]
    }

    /// Whether this process has sent a moment under the call's id.
    pub(crate) fn any(&self) -> bool {
        self.emitted
    }

    /// Takes in the triggers of a call merged into this one.
    /// The sequence stays this call's own: the other call's moments went out under its id
    /// (closed by `call.merged`).
    pub(crate) fn absorb(&mut self, other: Fired) {
        for (mine, theirs) in self.fired.iter_mut().zip(other.fired) {
            *mine |= theirs;
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.emitted = true;
        self.seq += 1;
        self.seq
    }
}

/// One trigger fired for one call.
#[derive(Debug, Clone)]
pub struct Moment {
    /// What happened.
    pub trigger: Trigger,
    /// The call's session id.
    pub call_id: String,
    /// 1, 2, 3… per call, in the order the call's moments fired.
    pub seq: u32,
    /// The event time that revealed it, µs.
    pub at_us: i64,
    /// The call's record at that moment (final for the end-of-call triggers).
    pub record: Arc<CallRecord>,
    /// Whether the call had ended (the record is final).
    pub ended: bool,
    /// What the trigger adds: `digit`, `digits` and `menu` for DTMF; `answeredBy` and `group`
    /// for answers; `dialed` for ringing extensions.
    pub detail: Map<String, Value>,
}

/// What a call revealed with its latest event, before a record is built for it.
pub(crate) type Found = Vec<(Trigger, Map<String, Value>)>;

fn detail(pairs: &[(&str, Option<String>)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), Value::String(v))))
        .collect()
}

impl CallSession {
    /// The mid-call triggers the call's state now shows and that have not fired yet; `name`
    /// is the event just applied.
    pub(crate) fn find_moments(&mut self, name: EventName) -> Found {
        let mut found = Found::new();
        // An adopted call shows what it is (whose call a leg joins, the ring group or queue
        // that answered) once each of its legs has caught up.
        if self.legs.iter().any(|l| l.catching_up) {
            return found;
        }
        if !self.fired.has(Trigger::Received) && self.is_received(name) {
            self.fired.claim(Trigger::Received);
            found.push((Trigger::Received, Map::new()));
        }
        if !self.fired.has(Trigger::Dialed) {
            // An extension ringing, or the far end of a call from a device (an outbound
            // call's dialled number); click-to-call dials its extension first.
            let caller_trunk = self.legs[0].trunk;
            let dialed = self.legs.iter().enumerate().find(|(j, l)| {
                l.outbound
                    && (!l.trunk || !caller_trunk)
                    && l.rang_us.is_some()
                    && (*j > 0 || self.origin == Origin::Originated)
            });
            if let Some((_, l)) = dialed {
                self.fired.claim(Trigger::Dialed);
                found.push((
                    Trigger::Dialed,
                    detail(&[("dialed", Some(l.label())), ("group", l.group.clone())]),
                ));
            }
        }
        // The app check first: state_now() only runs while the caller is in an IVR app.
        if !self.fired.has(Trigger::AnsweredIvr)
            && self.legs[0].app == Some(AppKind::Ivr)
            && self.legs[0].answered_us.is_some()
            && self.legs[0].is_up()
            && self.state_now().0 == SegmentKind::Ivr
        {
            self.fired.claim(Trigger::AnsweredIvr);
            found.push((
                Trigger::AnsweredIvr,
                detail(&[("menu", self.ivr_menu.clone())]),
            ));
        }
        if !self.fired.has(Trigger::Dtmf)
            && !self.ivr_digits.is_empty()
            && self.legs[0].app != Some(AppKind::Ivr)
        {
            found.extend(self.dtmf_moment());
        }
        for &j in &self.talked_with {
            let l = &self.legs[j];
            let trigger = if l.trunk {
                Some(match self.origin {
                    Origin::Originated => Trigger::ClickToCallAnswered,
                    Origin::Inbound | Origin::Internal => Trigger::AnsweredExternal,
                })
            } else if l.via_queue || l.attrs.get(Attr::AgentNumber).is_some() {
                Some(Trigger::AnsweredQueue)
            } else if l.group.is_some() {
                Some(Trigger::AnsweredRingGroup)
            } else {
                Some(Trigger::AnsweredExtension)
            };
            let d = detail(&[("answeredBy", Some(l.label())), ("group", l.group.clone())]);
            if let Some(t) = trigger.filter(|t| self.fired.claim(*t)) {
                found.push((t, d.clone()));
            }
            if self.fired.claim(Trigger::MissedOrAnswered) {
                found.push((Trigger::MissedOrAnswered, d));
            }
        }
        found
    }

    /// Whether the server has the call in hand. A leg's first events
    /// (CHANNEL_STATE CS_NEW, CHANNEL_OUTGOING) come before FreeSWITCH links it to a call, so
    /// nothing fires before its CHANNEL_CREATE;
    /// a call from a device is only known to be internal or outbound once it is routed (a
    /// second leg, or an answer).
    fn is_received(&self, name: EventName) -> bool {
        // CHANNEL_OUTGOING comes first for originated legs, and may lack the link
        // (mod_callcenter's member uuid) that CHANNEL_CREATE carries.
        let born =
            name == EventName::ChannelCreate || self.partial.is_some() || self.legs.len() > 1;
        born && match self.origin {
            // A device's call answered by an application alone is received when it is born
            // answered; adopted, its birth is history, and only a second leg shows it.
            Origin::Internal => {
                self.legs.len() > 1 || (self.legs[0].answered_us.is_some() && !self.adopted)
            }
            Origin::Inbound | Origin::Originated => true,
        }
    }

    fn dtmf_moment(&mut self) -> Option<(Trigger, Map<String, Value>)> {
        if self.ivr_digits.is_empty() || !self.fired.claim(Trigger::Dtmf) {
            return None;
        }
        let last = self.ivr_digits.chars().last().map(|c| c.to_string());
        Some((
            Trigger::Dtmf,
            detail(&[
                ("digit", last),
                ("digits", Some(self.ivr_digits.clone())),
                ("menu", self.ivr_menu.clone()),
            ]),
        ))
    }

    /// The closing moment of a call that joined call `into`, if it had fired any (a receiver
    /// holding it open learns where it went).
    pub(crate) fn merge_moment(
        &mut self,
        into: &str,
        record: impl FnOnce(&CallSession) -> CallRecord,
    ) -> Option<Moment> {
        if !self.fired.any() || self.fired.has(Trigger::Merged) {
            return None;
        }
        let record = Arc::new(record(self));
        let at = self.timeline.last_us();
        let found = vec![(Trigger::Merged, detail(&[("into", Some(into.to_owned()))]))];
        let mut moments = self.stamp_moments(found, record, at, true);
        moments.pop()
    }

    /// The end-of-call triggers, given the final record.
    pub(crate) fn final_moments(&mut self, record: &CallRecord) -> Found {
        let mut found = Found::new();
        if self.fired.claim(Trigger::Received) {
            found.push((Trigger::Received, Map::new()));
        }
        found.extend(self.dtmf_moment());
        let missed = record.cdr.ans != Some(1);
        if missed && self.fired.claim(Trigger::Missed) {
            found.push((Trigger::Missed, Map::new()));
        }
        // An answer known only from the hangup's figures (its events were lost) still
        // settles "missed or answered", late.
        if self.fired.claim(Trigger::MissedOrAnswered) {
            found.push((Trigger::MissedOrAnswered, Map::new()));
        }
        if self.fired.claim(Trigger::Hangup) {
            found.push((Trigger::Hangup, Map::new()));
        }
        found
    }

    /// Turns found triggers into moments sharing one record.
    pub(crate) fn stamp_moments(
        &mut self,
        found: Found,
        record: Arc<CallRecord>,
        at_us: i64,
        ended: bool,
    ) -> Vec<Moment> {
        found
            .into_iter()
            .map(|(trigger, detail)| Moment {
                trigger,
                call_id: self.id.clone(),
                seq: self.fired.next_seq(),
                at_us,
                record: Arc::clone(&record),
                ended,
                detail,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.name()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
        assert_eq!(Trigger::parse("call.answer"), None);
    }

    #[test]
    fn a_trigger_is_claimed_once() {
        let mut f = Fired::default();
        assert!(f.claim(Trigger::Hangup));
        assert!(!f.claim(Trigger::Hangup));
        assert!(f.has(Trigger::Hangup) && !f.has(Trigger::Missed));
    }
}
