//! Call assembly: channel events in, one session and one CDR per call out.
//!
//! [`SessionTracker`] groups legs into calls ([`CallSession`]) by `Unique-ID`,
//! `Other-Leg-Unique-ID`, `Channel-Call-UUID` and mod_callcenter's member session, merges
//! calls that get bridged together (valet retrieval, attended transfer), keeps a segment
//! timeline per call from the events' own timestamps, and builds the CDR ([`cdr::build`]) when
//! the last leg is gone. Nothing here reads the wall clock, so a replay yields exactly what
//! the live run did.

pub(crate) mod call;
pub(crate) mod cdr;
mod clock;
pub(crate) mod directory;
pub(crate) mod leg;
pub(crate) mod mapping;
pub(crate) mod moments;
pub(crate) mod numbers;
pub(crate) mod outcome;
pub(crate) mod rates;
pub(crate) mod tenants;
pub(crate) mod timeline;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use call::CallSession;
pub(crate) use cdr::Stage;
pub use cdr::{CallRecord, Cdr};
use clock::EventClock;
pub(crate) use leg::{Leg, LegState, Seen};
pub use moments::{Moment, Trigger};
pub use timeline::{Segment, SegmentKind};

use crate::esl::{ChannelSnapshot, Event, EventName, Headers};
use crate::problem::{Problem, Problems};
use directory::Directory;
use mapping::Mapper;
use numbers::{NumberReader, WithheldCli};
use outcome::Outcomes;
use rates::RateTable;

/// `[sessions]`: thresholds and how records are labelled.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// A lost call that rang less than this is `aban` (abandoned).
    #[serde(with = "humantime_serde")]
    pub abandon_ring: Duration,
    /// An answered call that talked less than this is `short`.
    #[serde(with = "humantime_serde")]
    pub short_talk: Duration,
    /// A call with no event for this long is emitted as partial (lost events must not grow
    /// memory forever). Measured on the events' own clock (HEARTBEAT keeps it moving). `run`
    /// first asks FreeSWITCH (`show channels`) and keeps a call it still has for another
    /// period.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// IANA time zone for `start`/`answer`/`end` and `tz`.
    pub time_zone: String,
    /// `pbxId`; FreeSWITCH's `Core-UUID` when unset.
    pub pbx_id: Option<String>,
    /// `pbxName`; FreeSWITCH's `FreeSWITCH-Switchname` when unset.
    pub pbx_name: Option<String>,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            abandon_ring: Duration::from_secs(5),
            short_talk: Duration::from_secs(10),
            expire_after: Duration::from_secs(4 * 3600),
            time_zone: "UTC".into(),
            pbx_id: None,
            pbx_name: None,
        }
    }
}

/// Everything call assembly needs, compiled from the configuration.
#[derive(Debug)]
pub struct Settings {
    /// The compiled `[mapping]`.
    pub mapping: Mapper,
    /// `[numbers]`.
    pub numbers: NumberReader,
    /// `[directory]`.
    pub directory: Directory,
    /// `[rates]`.
    pub rates: RateTable,
    tz: jiff::tz::TimeZone,
    /// The time zone's name.
    pub tz_name: String,
    /// `aban` threshold, ms.
    pub abandon_ring_ms: i64,
    /// `short` threshold, ms.
    pub short_talk_ms: i64,
    /// Expiry, µs.
    pub expire_after_us: i64,
    /// Fixed `pbxId`.
    pub pbx_id: Option<String>,
    /// Fixed `pbxName`.
    pub pbx_name: Option<String>,
    /// The home country (`international` is a caller from elsewhere).
    pub home_region: String,
    /// What becomes of a withheld caller's number.
    pub withheld_cli: WithheldCli,
    /// The `[[outcomes]]` rules.
    pub outcomes: Outcomes,
    /// The `[[tenants]]`.
    pub tenants: tenants::Tenants,
}

/// The configuration sections call assembly is compiled from.
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    /// `[sessions]`.
    pub sessions: &'a SessionsConfig,
    /// `[mapping]`.
    pub mapping: &'a mapping::MappingConfig,
    /// `[numbers]`.
    pub numbers: &'a numbers::NumbersConfig,
    /// `[directory]`.
    pub directory: &'a directory::DirectoryConfig,
    /// `[rates]`.
    pub rates: &'a rates::RatesConfig,
    /// `[[outcomes]]`.
    pub outcomes: &'a [outcome::OutcomeRule],
    /// `[[tenants]]`.
    pub tenants: &'a [tenants::TenantConfig],
}

impl SessionsConfig {
    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Problems::default();
        if jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            bad.add(
                "sessions.time_zone",
                format!(
                    "{:?} is not an IANA time zone (like Europe/London)",
                    self.time_zone
                ),
            );
        }
        if self.expire_after < Duration::from_secs(60) {
            bad.add("sessions.expire_after", "must be at least 1 minute");
        }
        bad.into_vec()
    }
}

impl Settings {
    /// Compiles the session sections (loading the directory and rate files); every problem
    /// found comes back by key path.
    pub fn new(cfg: Sections<'_>) -> Result<Settings, Vec<Problem>> {
        let mut bad = Problems::default();
        bad.extend(cfg.sessions.check());
        bad.extend(cfg.numbers.check());
        bad.extend(cfg.mapping.check());
        let numbers = NumberReader::new(cfg.numbers);
        let directory = Directory::load(cfg.directory, &numbers)
            .map_err(|e| bad.add("directory.path", e.message))
            .unwrap_or_default();
        let rates = RateTable::load(cfg.rates)
            .map_err(|e| bad.add("rates.path", e))
            .unwrap_or_default();
        let outcomes = Outcomes::new(cfg.outcomes)
            .map_err(|p| bad.extend(p))
            .unwrap_or_default();
        let tenants = tenants::Tenants::new(cfg.tenants, &numbers)
            .map_err(|p| bad.extend(p))
            .unwrap_or_default();
        let tz =
            jiff::tz::TimeZone::get(&cfg.sessions.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let s = cfg.sessions;
        bad.or(Settings {
            mapping: Mapper::new(cfg.mapping),
            numbers,
            directory,
            rates,
            tz,
            tz_name: s.time_zone.clone(),
            abandon_ring_ms: s.abandon_ring.as_millis() as i64,
            short_talk_ms: s.short_talk.as_millis() as i64,
            expire_after_us: s.expire_after.as_micros().min(i64::MAX as u128) as i64,
            pbx_id: s.pbx_id.clone(),
            pbx_name: s.pbx_name.clone(),
            home_region: cfg.numbers.default_region.to_ascii_uppercase(),
            withheld_cli: cfg.numbers.withheld_cli,
            outcomes,
            tenants,
        })
    }

    /// Renders an event time (µs) in the configured zone: `2026-11-23T15:45:06+00:00`.
    pub fn format_time(&self, us: i64) -> String {
        match jiff::Timestamp::from_microsecond(us) {
            Ok(ts) => ts
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => String::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(Sections {
            sessions: &SessionsConfig::default(),
            mapping: &Default::default(),
            numbers: &Default::default(),
            directory: &Default::default(),
            rates: &Default::default(),
            outcomes: &[],
            tenants: &[],
        })
        .expect("the defaults are valid")
    }
}

/// Uuids of legs whose call is finished, so their stragglers (CHANNEL_DESTROY after the
/// record) do not open a new call. Bounded: the oldest are forgotten first.
#[derive(Debug, Default)]
pub(crate) struct RecentlyFinished {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentlyFinished {
    const CAPACITY: usize = 16_384;

    pub(crate) fn insert(&mut self, uuid: String) {
        if self.set.insert(uuid.clone()) {
            self.order.push_back(uuid);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub(crate) fn contains(&self, uuid: &str) -> bool {
        self.set.contains(uuid)
    }
}

/// Assembles calls from a stream of events (live or replayed) and emits their records.
#[derive(Debug)]
pub struct SessionTracker {
    settings: Arc<Settings>,
    calls: HashMap<u64, CallSession>,
    legs: HashMap<String, u64>,
    finished: RecentlyFinished,
    next_key: u64,
    /// The stream's time: what expiry measures against.
    clock: EventClock,
    since_sweep: u32,
    /// Moments found and not yet taken; `None` when nobody asked for them.
    moments: Option<Vec<Moment>>,
    /// Legs first seen mid-call whose next event has not come yet (so the per-event path
    /// looks for them only while there are any).
    catching_up: usize,
    /// Whether a quiet call is checked with FreeSWITCH before it expires (live), and the
    /// calls whose check is under way.
    expiry: Expiry,
}

/// How `expire_after` ends a quiet call.
#[derive(Debug, Default)]
struct Expiry {
    /// Ask first (see [`SessionTracker::ask_before_expiry`]).
    ask: bool,
    /// Calls asked about and not yet answered for: (call key, its legs still up).
    asked: Vec<(u64, Vec<String>)>,
    /// Questions not yet taken by the asker.
    questions: Vec<(u64, Vec<String>)>,
}

/// Quiet calls to check with FreeSWITCH before they expire: the `Unique-ID`s of their legs
/// still up. Answer with [`SessionTracker::settle_expiry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryQuestion {
    /// Leg uuids to look for among FreeSWITCH's channels.
    pub legs: Vec<String>,
}

/// A `show channels` row as the headers a channel event would carry, for [`Leg::new`].
fn snapshot_event(c: &ChannelSnapshot) -> Event {
    let col = |k: &str| match c.row.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let pairs = [
        ("Unique-ID", c.uuid.clone()),
        ("Channel-Call-UUID", c.call_uuid.clone().unwrap_or_default()),
        ("Call-Direction", col("direction")),
        ("Channel-Name", col("name")),
        ("Caller-Caller-ID-Number", col("cid_num")),
        ("Caller-Caller-ID-Name", col("cid_name")),
        ("Caller-Destination-Number", col("dest")),
        ("Caller-Context", col("context")),
        ("FreeSWITCH-Hostname", col("hostname")),
    ];
    Event::from_envelope(Headers::from_pairs(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.as_str())),
    ))
}

/// A `show channels` row's `created_epoch` (seconds), in µs.
fn snapshot_created_us(c: &ChannelSnapshot) -> Option<i64> {
    let epoch = match c.row.get("created_epoch") {
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    epoch.filter(|e| *e > 0).map(|e| e * 1_000_000)
}

/// Events that start a channel's life (a leg first seen with another is joined late).
/// FreeSWITCH fires CHANNEL_STATE CS_NEW/CS_INIT before CHANNEL_CREATE.
fn is_birth(name: EventName, ev: &Event) -> bool {
    match name {
        EventName::ChannelCreate | EventName::ChannelOutgoing | EventName::ChannelOriginate => true,
        EventName::ChannelState => ev
            .get("Channel-State")
            .is_some_and(|s| s == "CS_NEW" || s == "CS_INIT"),
        _ => false,
    }
}

impl SessionTracker {
    /// A tracker with `settings`.
    pub fn new(settings: Arc<Settings>) -> Self {
        SessionTracker {
            settings,
            calls: HashMap::new(),
            legs: HashMap::new(),
            finished: RecentlyFinished::default(),
            next_key: 0,
            clock: EventClock::default(),
            since_sweep: 0,
            moments: None,
            catching_up: 0,
            expiry: Expiry::default(),
        }
    }

    /// Checks a quiet call with FreeSWITCH before expiring it: instead of ending it,
    /// `expire_after` asks ([`SessionTracker::take_expiry_question`]), and a call FreeSWITCH
    /// still has stays open (a long call on hold sends no event for hours). For the live
    /// pipeline; a replay has nobody to ask.
    pub fn ask_before_expiry(mut self) -> Self {
        self.expiry.ask = true;
        self
    }

    /// The legs of the quiet calls to look for, if any call is due: answer with
    /// [`SessionTracker::settle_expiry`].
    pub fn take_expiry_question(&mut self) -> Option<ExpiryQuestion> {
        if self.expiry.questions.is_empty() {
            return None;
        }
        let asked = std::mem::take(&mut self.expiry.questions);
        let legs = asked.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
        self.expiry.asked.extend(asked);
        Some(ExpiryQuestion { legs })
    }

    /// FreeSWITCH's answer: `alive` holds the channels it has (`None` when it could not be
    /// asked: the calls stay open and are asked about again). A call with a leg still up is
    /// kept, and quiet for another `expire_after`; the others end, partial.
    pub fn settle_expiry(&mut self, alive: Option<&HashSet<String>>) -> Vec<CallRecord> {
        let asked = std::mem::take(&mut self.expiry.asked);
        let mut out = Vec::new();
        let Some(alive) = alive else {
            return out;
        };
        let now = self.clock.now_us();
        for (key, legs) in asked {
            let up = legs.iter().any(|l| alive.contains(l));
            match self.calls.get_mut(&key) {
                Some(call) if up => call.quiet_since = Some(now),
                Some(_) => {
                    if let Some(call) = self.calls.remove(&key) {
                        out.push(self.expire_call(call));
                    }
                }
                None => {}
            }
        }
        out
    }

    /// Also finds lifecycle moments (webhook triggers); take them with
    /// [`SessionTracker::take_moments`] after each event.
    pub fn with_moments(mut self) -> Self {
        self.moments = Some(Vec::new());
        self
    }

    /// The moments found since the last call, in the order they happened.
    pub fn take_moments(&mut self) -> Vec<Moment> {
        self.moments
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Replaces the settings (a reloaded configuration); calls in progress keep their legs
    /// and continue under the new settings.
    pub fn set_settings(&mut self, settings: Arc<Settings>) {
        self.settings = settings;
    }

    /// Event timestamps ignored by the clock as too far from the stream's time.
    pub fn clock_outliers(&self) -> u64 {
        self.clock.outliers()
    }

    /// Calls in progress.
    pub fn active(&self) -> usize {
        self.calls.len()
    }

    /// The call in progress a leg belongs to.
    pub fn call_of(&self, uuid: &str) -> Option<&CallSession> {
        self.legs.get(uuid).and_then(|k| self.calls.get(k))
    }

    /// The calls in progress.
    pub fn calls(&self) -> impl Iterator<Item = &CallSession> {
        self.calls.values()
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes one event; returns the records of the calls it finished.
    pub fn on_event(&mut self, ev: &Event) -> Vec<CallRecord> {
        let mut out = Vec::new();
        let Some(name) = ev.name() else {
            return out;
        };
        let name = EventName::of(&name);
        // The event keeps its own time for its call; only the clock that drives expiry is
        // protected from a timestamp far from the others.
        let ts = match ev.timestamp_us() {
            Some(ts) => {
                // Logged at the 1st, 2nd, 4th, 8th… outlier: a peer whose every timestamp
                // is wrong must not turn the log into a copy of the stream.
                if self.clock.observe(ts) && self.clock.outliers().is_power_of_two() {
                    tracing::warn!(
                        event = name.as_str(),
                        timestamp_us = ts,
                        clock_us = self.clock.now_us(),
                        outliers = self.clock.outliers(),
                        "event timestamp far from the stream's clock: ignored for expiry"
                    );
                }
                ts
            }
            None => self.clock.now_us(),
        };
        self.since_sweep += 1;
        if name == EventName::Heartbeat || self.since_sweep >= 4096 {
            self.since_sweep = 0;
            self.expire(&mut out);
        }
        if matches!(name, EventName::Other | EventName::Heartbeat) {
            return out;
        }
        let Some(uuid) = ev.unique_id() else {
            return out;
        };
        let key = match self.legs.get(uuid.as_ref()) {
            Some(k) => *k,
            None => {
                // A channel's last words (its destroy, and the CS_DESTROY state after it)
                // never open a call: they are stragglers of one that ended unseen.
                if self.finished.contains(&uuid)
                    || !name.is_channel()
                    || name == EventName::ChannelDestroy
                    || ev.get("Channel-State").is_some_and(|s| s == "CS_DESTROY")
                {
                    return out;
                }
                self.attach(&uuid, name, ev, ts)
            }
        };
        let key = match name {
            EventName::ChannelBridge => self.merge_bridged(key, ev),
            // A leg first seen on a sparse event (CHANNEL_STATE CS_NEW carries no variables)
            // learns its parent when its CHANNEL_CREATE arrives.
            EventName::ChannelCreate | EventName::ChannelOutgoing | EventName::ChannelOriginate
                if self.calls.get(&key).is_some_and(|c| c.legs.len() == 1) =>
            {
                match self.parent_of(&uuid, ev) {
                    Some(parent) if parent != key => {
                        self.merge(parent, key);
                        parent
                    }
                    _ => key,
                }
            }
            _ => key,
        };
        let key = if self.catching_up > 0 {
            self.catch_up(key, &uuid, name, ev)
        } else {
            key
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return out;
        };
        call.apply(&uuid, name, ev, ts, &self.settings.mapping);
        if let Some(moments) = self.moments.as_mut() {
            let found = call.find_moments(name);
            if !found.is_empty() {
                let snapshot = Arc::new(cdr::build(call, &self.settings, Stage::InProgress));
                moments.extend(call.stamp_moments(found, snapshot, ts, false));
            }
        }
        if call.is_over() {
            if let Some(call) = self.calls.remove(&key) {
                out.push(self.finish(call));
            }
        }
        out
    }

    /// Brings leg `uuid` of call `key` up to date if it was first seen mid-call; returns the
    /// call it belongs to. An adopted leg listed apart from the call it has joined (a queue
    /// agent's, a retrieved parked call's) is merged into it, as an uninterrupted switchhook
    /// had it.
    fn catch_up(&mut self, key: u64, uuid: &str, name: EventName, ev: &Event) -> u64 {
        let Some(call) = self.calls.get_mut(&key) else {
            return key;
        };
        // Events without the channel's variables (CHANNEL_STATE, CHANNEL_CALLSTATE) cannot
        // say what application the leg is in or which queue caller it serves: wait for one
        // that can.
        if !call.legs.iter().any(|l| l.catching_up && l.uuid == uuid)
            || !ev
                .headers()
                .names()
                .any(|(_, n)| n.starts_with("variable_"))
        {
            return key;
        }
        call.catch_up(uuid, name, ev, &self.settings.mapping);
        self.catching_up -= 1;
        // The leg's call now: a queue agent's names its caller (`cc_member_session_uuid`),
        // a bridged leg's `Channel-Call-UUID` names the call it joined (valet retrieval,
        // attended transfer), which `show channels` may still list apart.
        let links: Vec<String> = [
            ev.var("cc_member_session_uuid"),
            ev.get("Channel-Call-UUID"),
        ]
        .into_iter()
        .flatten()
        .filter(|m| m.as_ref() != uuid)
        .map(|m| m.into_owned())
        .collect();
        // It serves a call whose teardown was under way at the adoption (left alone): so is
        // it.
        if links.iter().any(|l| self.finished.contains(l)) {
            if let Some(call) = self.calls.remove(&key) {
                for leg in &call.legs {
                    if leg.catching_up {
                        self.catching_up = self.catching_up.saturating_sub(1);
                    }
                    self.legs.remove(&leg.uuid);
                    self.finished.insert(leg.uuid.clone());
                }
            }
            return key;
        }
        match links.iter().find_map(|l| self.legs.get(l).copied()) {
            Some(parent) if parent != key => {
                self.merge(parent, key);
                parent
            }
            // Failing those, the leg it is bridged with (an attended transfer's consultation
            // leg, listed under a call uuid of its own): the older call takes in the younger,
            // as on a bridge.
            _ => self.merge_bridged(key, ev),
        }
    }

    /// The event stream had a gap: every call in progress becomes partial.
    pub fn on_gap(&mut self, reason: &str) {
        for call in self.calls.values_mut() {
            call.mark_gap(reason);
        }
    }

    /// After a (re)connect: calls none of whose legs FreeSWITCH still has ended while we were
    /// away; they are emitted, partial. Channels FreeSWITCH has that no call knows (calls up
    /// while switchhook started or was away) are adopted, see [`SessionTracker::adopt`].
    pub fn on_resync(&mut self, snapshots: &[ChannelSnapshot]) -> Vec<CallRecord> {
        self.adopt(snapshots);
        let alive: HashSet<&str> = snapshots.iter().map(|c| c.uuid.as_str()).collect();
        let mut done = Vec::new();
        for (key, call) in self.calls.iter_mut() {
            let at = call.timeline.last_us();
            for leg in call.legs.iter_mut() {
                if leg.state != LegState::Complete && !alive.contains(leg.uuid.as_str()) {
                    leg.hungup_us.get_or_insert(at);
                    leg.state = LegState::Complete;
                }
            }
            if call.is_over() {
                call.partial
                    .get_or_insert_with(|| "ended while the event socket was disconnected".into());
                done.push(*key);
            }
        }
        let mut out = Vec::new();
        for key in done {
            if let Some(call) = self.calls.remove(&key) {
                out.push(self.finish(call));
            }
        }
        out
    }

    /// Opens a call for each group of unknown channels (by `call_uuid`), the call's own
    /// channel first, so the call has the id, caller and direction an uninterrupted
    /// switchhook gave it; each leg catches up on its next event.
    fn adopt(&mut self, snapshots: &[ChannelSnapshot]) {
        let mut calls: BTreeMap<&str, Vec<&ChannelSnapshot>> = BTreeMap::new();
        for c in snapshots {
            if c.uuid.is_empty()
                || self.legs.contains_key(&c.uuid)
                || self.finished.contains(&c.uuid)
            {
                continue;
            }
            // Torn down already (a bridge's far end may still be up): what is left of it are
            // hangup events whose answer and bridge cannot be told apart any more, so its
            // stragglers are ignored rather than reported as a missed call.
            if matches!(c.row.get("callstate"), Some(serde_json::Value::String(s)) if s == "HANGUP")
            {
                self.finished.insert(c.uuid.clone());
                // Its call's own leg, destroyed already, may still send a last CHANNEL_STATE.
                if let Some(first) = c
                    .call_uuid
                    .as_deref()
                    .filter(|u| !u.is_empty() && !snapshots.iter().any(|o| o.uuid == *u))
                {
                    self.finished.insert(first.to_owned());
                }
                continue;
            }
            let call = c.call_uuid.as_deref().filter(|u| !u.is_empty());
            calls.entry(call.unwrap_or(&c.uuid)).or_default().push(c);
        }
        for (call_uuid, mut rows) in calls {
            rows.sort_by_key(|r| (r.uuid != call_uuid, snapshot_created_us(r)));
            let mut key = None;
            for row in rows {
                let ev = snapshot_event(row);
                let at = snapshot_created_us(row).unwrap_or(self.clock.now_us());
                let first = Seen::snapshot(at);
                let mut leg = Leg::new(row.uuid.clone(), &ev, first, &self.settings.mapping.config);
                leg.catching_up = true;
                self.catching_up += 1;
                let (k, opened) = self.open_or_join(key, leg, &ev);
                if let Some(call) = self.calls.get_mut(&k).filter(|_| opened) {
                    // Its id even when its own leg is gone: the one it had.
                    call.id = call_uuid.to_owned();
                    call.mark_gap(
                        "in progress when switchhook connected: earlier events were not received",
                    );
                    call.adopted();
                }
                key = Some(k);
            }
        }
    }

    /// Ends every call in progress (end of a replayed file, shutdown), partial.
    pub fn flush(&mut self, reason: &str) -> Vec<CallRecord> {
        let mut keys: Vec<u64> = self.calls.keys().copied().collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        for key in keys {
            if let Some(mut call) = self.calls.remove(&key) {
                call.partial.get_or_insert_with(|| reason.to_owned());
                // The call goes on in FreeSWITCH: no end-of-call trigger fires for it, and
                // its record says what was known when it was cut off.
                out.push(self.finish_quietly(&call, Stage::InProgress));
            }
        }
        out
    }

    fn expire(&mut self, out: &mut Vec<CallRecord>) {
        let limit = self
            .clock
            .now_us()
            .saturating_sub(self.settings.expire_after_us);
        let mut stale: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.timeline.last_us().max(c.quiet_since.unwrap_or(0)) < limit)
            .map(|(k, _)| *k)
            .collect();
        stale.sort_unstable();
        for key in stale {
            if self.expiry.ask {
                let pending = |q: &[(u64, Vec<String>)]| q.iter().any(|(k, _)| *k == key);
                if pending(&self.expiry.asked) || pending(&self.expiry.questions) {
                    continue;
                }
                if let Some(call) = self.calls.get(&key) {
                    let legs = call
                        .legs
                        .iter()
                        .filter(|l| l.state != LegState::Complete)
                        .map(|l| l.uuid.clone())
                        .collect();
                    self.expiry.questions.push((key, legs));
                }
            } else if let Some(call) = self.calls.remove(&key) {
                out.push(self.expire_call(call));
            }
        }
    }

    fn expire_call(&mut self, mut call: CallSession) -> CallRecord {
        call.partial.get_or_insert_with(|| {
            format!(
                "expired: no event for {} s",
                self.settings.expire_after_us / 1_000_000
            )
        });
        self.finish(call)
    }

    /// Ends a call: its record, and its end-of-call moments.
    fn finish(&mut self, mut call: CallSession) -> CallRecord {
        let record = self.finish_quietly(&call, Stage::Ended);
        if let Some(moments) = self.moments.as_mut() {
            let found = call.final_moments(&record);
            if !found.is_empty() {
                let at = record.times.end_us;
                moments.extend(call.stamp_moments(found, Arc::new(record.clone()), at, true));
            }
        }
        record
    }

    /// Ends a call without firing its end-of-call moments.
    fn finish_quietly(&mut self, call: &CallSession, stage: Stage) -> CallRecord {
        for leg in &call.legs {
            if leg.catching_up {
                self.catching_up = self.catching_up.saturating_sub(1);
            }
            self.legs.remove(&leg.uuid);
            self.finished.insert(leg.uuid.clone());
        }
        let record = cdr::build(call, &self.settings, stage);
        tracing::debug!(call_id = %record.cdr.id, partial = ?record.cdr.partial, "call finished");
        record
    }

    /// Finds the call a new leg belongs to, or opens one.
    fn attach(&mut self, uuid: &str, name: EventName, ev: &Event, ts: i64) -> u64 {
        let first = Seen::event(name, ts);
        let mut leg = Leg::new(uuid.to_owned(), ev, first, &self.settings.mapping.config);
        let parent = self.parent_of(uuid, ev);
        let late = !is_birth(name, ev);
        if late {
            leg.catching_up = true;
            self.catching_up += 1;
        }
        let (key, opened) = self.open_or_join(parent, leg, ev);
        if let Some(call) = self.calls.get_mut(&key).filter(|_| opened && late) {
            call.partial = Some(format!(
                "first seen mid-call ({name}): earlier events were not received"
            ));
            // The id an uninterrupted switchhook gave the call: its first leg's.
            if let Some(first) = ev.get("Channel-Call-UUID").filter(|u| !u.is_empty()) {
                call.id = first.into_owned();
            }
        }
        key
    }

    /// Adds `leg` to call `parent`, or opens a call with it; returns the call and whether it
    /// is new.
    fn open_or_join(&mut self, parent: Option<u64>, leg: Leg, ev: &Event) -> (u64, bool) {
        let uuid = leg.uuid.clone();
        let (key, opened) = match parent {
            Some(k) => {
                if let Some(call) = self.calls.get_mut(&k) {
                    call.add_leg(leg);
                }
                (k, false)
            }
            None => {
                let k = self.next_key;
                self.next_key += 1;
                self.calls.insert(k, CallSession::new(leg, ev));
                (k, true)
            }
        };
        self.legs.insert(uuid, key);
        (key, opened)
    }

    /// The call a leg belongs to by its event's links: mod_callcenter's member session, the
    /// originating leg, the call uuid.
    fn parent_of(&self, uuid: &str, ev: &Event) -> Option<u64> {
        let own = self.legs.get(uuid).copied();
        [
            ev.var("cc_member_session_uuid"),
            ev.get("Other-Leg-Unique-ID"),
            ev.get("Channel-Call-UUID"),
        ]
        .into_iter()
        .flatten()
        .filter(|p| p.as_ref() != uuid)
        .filter_map(|p| self.legs.get(p.as_ref()).copied())
        .find(|k| Some(*k) != own)
    }

    /// Moves call `take` into call `keep`.
    fn merge(&mut self, keep: u64, take: u64) {
        if keep == take {
            return;
        }
        if let Some(mut young) = self.calls.remove(&take) {
            for leg in &young.legs {
                self.legs.insert(leg.uuid.clone(), keep);
            }
            if let (Some(moments), Some(old)) = (self.moments.as_mut(), self.calls.get(&keep)) {
                let settings = &self.settings;
                moments.extend(
                    young.merge_moment(&old.id, |c| cdr::build(c, settings, Stage::InProgress)),
                );
            }
            match self.calls.get_mut(&keep) {
                Some(old) => old.absorb(young),
                None => {
                    self.calls.insert(take, young);
                }
            }
        }
    }

    /// A bridge between legs of two calls makes them one (the older call absorbs the
    /// younger): valet retrieval, attended transfer, `uuid_bridge`.
    fn merge_bridged(&mut self, key: u64, ev: &Event) -> u64 {
        let Some(other) = ev.get("Other-Leg-Unique-ID") else {
            return key;
        };
        let Some(&other_key) = self.legs.get(other.as_ref()) else {
            return key;
        };
        if other_key == key {
            return key;
        }
        let (older, younger) = {
            let a = self.calls.get(&key).map(|c| c.timeline.start_us());
            let b = self.calls.get(&other_key).map(|c| c.timeline.start_us());
            match (a, b) {
                (Some(a), Some(b)) if b < a || (b == a && other_key < key) => (other_key, key),
                (Some(_), Some(_)) => (key, other_key),
                _ => return key,
            }
        };
        self.merge(older, younger);
        older
    }
}
