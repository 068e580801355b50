//! Record: the event stream of a live FreeSWITCH written as a capture, the same bytes the
//! bundled captures hold, so `replay`, `explain` and `diff` work on the engineer's own calls.
//!
//! A capture opens with FreeSWITCH's reply to the subscription and then holds each
//! `text/event-plain` frame as it arrived: its envelope (`Content-Length`, `Content-Type`) and
//! the body byte for byte. Filters keep whole calls: every event of every leg of a call that
//! matches, found by call assembly as the legs join.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::esl::Event;
use crate::session::numbers::NumberReader;
use crate::session::{CallSession, RecentlyFinished, SessionTracker, Settings};

/// What FreeSWITCH answers to `event plain …`: the first frame of every capture.
const SUBSCRIBED: &[u8] =
    b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n";

/// Events of legs not (yet) known to belong to a wanted call, kept in case they do: a leg's
/// first events come before it is linked to its call.
const HELD_EVENTS: usize = 512;

/// Which calls to keep (all when every field is empty).
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// The number dialled (any form: compared in E.164).
    pub did: Option<String>,
    /// The caller's number (any form).
    pub caller: Option<String>,
    /// A call id or any leg's `Unique-ID`, or a prefix of one.
    pub call: Option<String>,
}

impl CallFilter {
    fn is_empty(&self) -> bool {
        self.did.is_none() && self.caller.is_none() && self.call.is_none()
    }

    /// The numbers in E.164, read once rather than at every event.
    fn normalized(mut self, numbers: &NumberReader) -> CallFilter {
        for n in [&mut self.did, &mut self.caller].into_iter().flatten() {
            *n = numbers.read(n).e164;
        }
        self
    }

    /// Whether `call` is wanted; the filter's numbers are [`CallFilter::normalized`].
    fn wants(&self, call: &CallSession, numbers: &NumberReader) -> bool {
        let same = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| {
                let h = numbers.read(have);
                !h.e164.is_empty() && w == h.e164
            })
        };
        same(&self.did, call.dialled())
            && same(&self.caller, call.caller_number())
            && self.call.as_deref().is_none_or(|id| {
                call.id.starts_with(id) || call.leg_ids().any(|l| l.starts_with(id))
            })
    }
}

/// Capture files: the first at the given path, then `NAME.1.esl`, `NAME.2.esl`… once one
/// reaches the size limit.
struct Files {
    path: PathBuf,
    max_bytes: Option<u64>,
    out: BufWriter<File>,
    written: u64,
    opened: Vec<PathBuf>,
}

impl Files {
    fn create(path: &Path, max_bytes: Option<u64>) -> io::Result<Files> {
        let mut files = Files {
            path: path.to_owned(),
            max_bytes,
            out: BufWriter::new(File::create(path)?),
            written: 0,
            opened: vec![path.to_owned()],
        };
        files.put(SUBSCRIBED)?;
        Ok(files)
    }

    fn next_path(&self) -> PathBuf {
        let n = self.opened.len();
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match self.path.extension() {
            Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
            None => format!("{stem}.{n}"),
        };
        self.path.with_file_name(name)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// One event frame, starting a new file first if this one is full.
    fn frame(&mut self, body: &[u8]) -> io::Result<()> {
        let envelope = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n",
            body.len()
        );
        let size = (envelope.len() + body.len()) as u64;
        if self
            .max_bytes
            .is_some_and(|max| self.written > SUBSCRIBED.len() as u64 && self.written + size > max)
        {
            self.out.flush()?;
            let next = self.next_path();
            self.out = BufWriter::new(File::create(&next)?);
            self.opened.push(next);
            self.written = 0;
            self.put(SUBSCRIBED)?;
        }
        self.put(envelope.as_bytes())?;
        self.put(body)
    }
}

/// What a recording holds so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Event frames written.
    pub events: u64,
    /// Calls that ended within the recording (and matched the filter).
    pub calls: u64,
    /// Events not written: other calls', or not in the plain format.
    pub skipped: u64,
}

/// Writes the events it is given as a capture.
pub struct Recorder {
    files: Files,
    filter: CallFilter,
    tracker: SessionTracker,
    /// Calls (by id) that match the filter, with how many of their legs had their held
    /// events written.
    wanted: HashMap<String, usize>,
    /// Calls (by id) that did not match, with what they were judged on (legs, the number
    /// dialled, the caller): judged again only when that changes.
    unwanted: HashMap<String, (usize, String, String)>,
    /// Legs of wanted calls that have ended, for their last events.
    ended_legs: RecentlyFinished,
    held: VecDeque<(String, Event)>,
    stats: RecordStats,
}

impl Recorder {
    /// Records into `path` (rotating at `max_bytes`), keeping the calls `filter` wants;
    /// `settings` reads the numbers and assembles calls as `run` does.
    pub fn create(
        path: &Path,
        max_bytes: Option<u64>,
        filter: CallFilter,
        settings: Arc<Settings>,
    ) -> io::Result<Recorder> {
        Ok(Recorder {
            files: Files::create(path, max_bytes)?,
            filter: filter.normalized(&settings.numbers),
            tracker: SessionTracker::new(settings),
            wanted: HashMap::new(),
            unwanted: HashMap::new(),
            ended_legs: RecentlyFinished::default(),
            held: VecDeque::new(),
            stats: RecordStats::default(),
        })
    }

    /// Takes one event; writes it if it belongs to the recording.
    pub fn on_event(&mut self, ev: &Event) -> io::Result<()> {
        let ended = self.tracker.on_event(ev);
        let Some(body) = ev.plain_bytes() else {
            self.stats.skipped += 1;
            return Ok(());
        };
        if self.filter.is_empty() {
            self.stats.calls += ended.len() as u64;
            return self.write(body);
        }
        let Some(uuid) = ev.unique_id().map(|u| u.into_owned()) else {
            // HEARTBEAT and other events of no call keep the capture's clock moving.
            return self.write(body);
        };
        // Whether the event's call is wanted, and the legs whose held events are due (a call
        // just found wanted, or one that gained a leg): most events need neither.
        let (keep_it, due) = match self.tracker.call_of(&uuid) {
            Some(call) => {
                let legs = call.leg_count();
                if !self.wanted.contains_key(&call.id) {
                    let judged = (
                        legs,
                        call.dialled().to_owned(),
                        call.caller_number().to_owned(),
                    );
                    if self.unwanted.get(&call.id) != Some(&judged) {
                        if self.filter.wants(call, &self.tracker.settings().numbers) {
                            self.unwanted.remove(&call.id);
                            self.wanted.insert(call.id.clone(), 0);
                        } else {
                            self.unwanted.insert(call.id.clone(), judged);
                        }
                    }
                }
                match self.wanted.get_mut(&call.id) {
                    Some(flushed) if *flushed != legs => {
                        *flushed = legs;
                        (true, call.leg_ids().map(str::to_owned).collect())
                    }
                    Some(_) => (true, Vec::new()),
                    None => (false, Vec::new()),
                }
            }
            None => match ended.iter().find(|r| r.leg_ids.contains(&uuid)) {
                Some(r) if self.wanted.contains_key(&r.cdr.id) => (true, r.leg_ids.clone()),
                Some(_) => (false, Vec::new()),
                None => (self.ended_legs.contains(&uuid), Vec::new()),
            },
        };
        for rec in &ended {
            self.unwanted.remove(&rec.cdr.id);
            if self.wanted.remove(&rec.cdr.id).is_some() {
                self.stats.calls += 1;
                for leg in &rec.leg_ids {
                    self.ended_legs.insert(leg.clone());
                }
            }
        }
        if !keep_it {
            if self.held.len() == HELD_EVENTS {
                self.held.pop_front();
                self.stats.skipped += 1;
            }
            self.held.push_back((uuid, ev.clone()));
            return Ok(());
        }
        if !due.is_empty() {
            // The call's earlier events, held before its legs were linked, go first.
            let mut keep = VecDeque::with_capacity(self.held.len());
            for (leg, held) in std::mem::take(&mut self.held) {
                if due.contains(&leg) {
                    if let Some(b) = held.plain_bytes() {
                        self.write(&b.clone())?;
                    }
                } else {
                    keep.push_back((leg, held));
                }
            }
            self.held = keep;
        }
        self.write(body)
    }

    fn write(&mut self, body: &[u8]) -> io::Result<()> {
        self.stats.events += 1;
        self.files.frame(body)
    }

    /// Writes what is buffered to disk (the files stay open).
    pub fn flush(&mut self) -> io::Result<()> {
        self.files.out.flush()
    }

    /// What has been recorded.
    pub fn stats(&self) -> RecordStats {
        let mut s = self.stats.clone();
        s.skipped += self.held.len() as u64;
        s
    }

    /// The files written, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files.opened
    }

    /// Flushes and closes the recording.
    pub fn finish(mut self) -> io::Result<(RecordStats, Vec<PathBuf>)> {
        self.flush()?;
        let stats = self.stats();
        Ok((stats, self.files.opened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_freeswitch::load_capture;

    fn capture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/freeswitch-1.10")
            .join(name)
    }

    fn record(
        filter: CallFilter,
        max_bytes: Option<u64>,
    ) -> (tempfile::TempDir, RecordStats, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::create(
            &dir.path().join("rec.esl"),
            max_bytes,
            filter,
            Arc::new(Settings::default()),
        )
        .unwrap();
        for f in load_capture(&capture("16-concurrent-mix.esl")).unwrap() {
            r.on_event(&f.event).unwrap();
        }
        let (stats, files) = r.finish().unwrap();
        (dir, stats, files)
    }

    #[test]
    fn every_event_is_written_back_byte_for_byte() {
        let (_dir, stats, files) = record(CallFilter::default(), None);
        assert_eq!(stats.calls, 5);
        let ours = std::fs::read(&files[0]).unwrap();
        let theirs = std::fs::read(capture("16-concurrent-mix.esl")).unwrap();
        // The capture also holds the final `+OK bye` and disconnect notice, which are no
        // events: everything before them is the same.
        let events_end = theirs
            .windows(b"Content-Type: command/reply\nReply-Text: +OK bye".len())
            .position(|w| w == b"Content-Type: command/reply\nReply-Text: +OK bye")
            .unwrap();
        assert_eq!(ours, theirs[..events_end]);
        assert_eq!(stats.events, 419);
    }

    /// The calls a recorded file replays to, by id.
    fn calls_in(files: &[PathBuf]) -> Vec<crate::session::CallRecord> {
        let mut t = SessionTracker::new(Arc::new(Settings::default()));
        let mut out = Vec::new();
        for f in files {
            for frame in load_capture(f).unwrap() {
                out.extend(t.on_event(&frame.event));
            }
        }
        out
    }

    #[test]
    fn a_filter_keeps_whole_calls() {
        let (_d, _, all) = record(CallFilter::default(), None);
        let whole = calls_in(&all);
        // By caller (national form), and by a prefix of a leg that is not the call's first.
        let missed = whole
            .iter()
            .find(|r| r.cdr.cliNum == "+447700900165")
            .unwrap();
        let leg = &missed.leg_ids[1];
        for filter in [
            CallFilter {
                caller: Some("07700900165".into()),
                ..Default::default()
            },
            CallFilter {
                call: Some(leg[..13].into()),
                ..Default::default()
            },
        ] {
            let (_d, stats, files) = record(filter.clone(), None);
            assert_eq!(stats.calls, 1, "{filter:?}");
            let got = calls_in(&files);
            assert_eq!(got.len(), 1, "{filter:?}");
            assert_eq!(got[0].cdr, missed.cdr, "{filter:?}");
        }
    }

    #[test]
    fn rotation_splits_at_frame_boundaries() {
        let (_dir, stats, files) = record(CallFilter::default(), Some(1_000_000));
        assert!(files.len() >= 3, "{files:?}");
        let mut frames = 0;
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 1_000_000);
            frames += load_capture(f).unwrap().len();
        }
        assert_eq!(frames as u64, stats.events);
    }
}
