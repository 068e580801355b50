//! Replay: captured event-socket byte streams read through the same codec as a live socket.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressBarIter, ProgressDrawTarget, ProgressStyle};
use tokio::fs::File;
use tokio_util::codec::FramedRead;

use crate::esl::{EslCodec, Limits, Message};
use crate::session::{CallRecord, Moment, SessionTracker, Settings};

/// Read buffer size for capture files: large reads keep syscalls off the profile.
const READ_CAPACITY: usize = 256 * 1024;

/// A capture being read: [`crate::esl::Decoded`] items, counted on a [`Progress`].
pub type CaptureStream = FramedRead<ProgressBarIter<File>, EslCodec>;

/// How far replay has read: a progress bar over the files' bytes on a terminal's stderr, or
/// nothing (piped, redirected, tests).
#[derive(Debug, Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    /// Shows nothing.
    pub fn hidden() -> Progress {
        Progress(ProgressBar::hidden())
    }

    /// A bar over `files`' total size when stderr is a terminal; hidden otherwise, so a
    /// pipe or a log gets no control characters.
    pub fn on_terminal(files: &[PathBuf]) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let total = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}",
        ) {
            bar.set_style(style);
        }
        Progress(bar)
    }

    /// Clears the bar (the output it shared the terminal with stays).
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Opens a capture file as a stream of [`crate::esl::Decoded`] items, exactly as the bytes
/// would have arrived on a socket.
pub async fn open(path: &Path, limits: Limits) -> std::io::Result<CaptureStream> {
    open_counted(path, limits, &Progress::hidden()).await
}

/// [`open`], counting the bytes read on `progress`.
pub async fn open_counted(
    path: &Path,
    limits: Limits,
    progress: &Progress,
) -> std::io::Result<CaptureStream> {
    let file = File::open(path).await?;
    progress.0.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    Ok(FramedRead::with_capacity(
        progress.0.wrap_async_read(file),
        EslCodec::new(limits),
        READ_CAPACITY,
    ))
}

/// What assembling a capture produced besides the records.
#[derive(Debug, Default)]
pub struct AssembleReport {
    /// Events fed to the tracker.
    pub events: u64,
    /// Protocol errors (skipped frames), with their byte offsets.
    pub errors: Vec<String>,
}

impl AssembleReport {
    /// Why the file is not a capture at all (it held no event), if it is not: one line
    /// instead of a parse error per line of a README or silence for an empty file.
    pub fn not_a_capture(&self) -> Option<String> {
        (self.events == 0).then(|| match self.errors.len() {
            0 => "not an event-socket capture: it holds no event".to_owned(),
            n => format!("not an event-socket capture: no event, {n} unreadable frame(s)"),
        })
    }
}

/// Replays a capture through call assembly, handing each finished call's record to `emit`
/// in the order calls end; calls still up when the file ends are emitted last, partial.
pub async fn assemble(
    path: &Path,
    settings: Arc<Settings>,
    progress: &Progress,
    mut emit: impl FnMut(CallRecord),
) -> std::io::Result<AssembleReport> {
    let mut tracker = SessionTracker::new(settings);
    drive(path, &mut tracker, progress, |_, records| {
        records.into_iter().for_each(&mut emit)
    })
    .await
}

/// Replays a capture through call assembly with lifecycle moments on, handing each moment
/// to `emit` in the order the live pipeline would have found it.
pub async fn moments(
    path: &Path,
    settings: Arc<Settings>,
    progress: &Progress,
    mut emit: impl FnMut(Moment),
) -> std::io::Result<AssembleReport> {
    let mut tracker = SessionTracker::new(settings).with_moments();
    drive(path, &mut tracker, progress, |t, _| {
        t.take_moments().into_iter().for_each(&mut emit)
    })
    .await
}

/// Both at once, in one pass: each finished call's record to `on_record` (as
/// [`assemble`]) and each moment to `on_moment` (as [`moments`]).
pub async fn records_and_moments(
    path: &Path,
    settings: Arc<Settings>,
    progress: &Progress,
    mut on_record: impl FnMut(CallRecord),
    mut on_moment: impl FnMut(Moment),
) -> std::io::Result<AssembleReport> {
    let mut tracker = SessionTracker::new(settings).with_moments();
    drive(path, &mut tracker, progress, |t, records| {
        t.take_moments().into_iter().for_each(&mut on_moment);
        records.into_iter().for_each(&mut on_record);
    })
    .await
}

/// Feeds a capture to `tracker`, calling `after` with the records each event finished.
async fn drive(
    path: &Path,
    tracker: &mut SessionTracker,
    progress: &Progress,
    mut after: impl FnMut(&mut SessionTracker, Vec<CallRecord>),
) -> std::io::Result<AssembleReport> {
    let mut stream = open_counted(path, Limits::default(), progress).await?;
    let mut report = AssembleReport::default();
    while let Some(item) = stream.next().await {
        match item? {
            Ok(Message::Event(ev)) => {
                report.events += 1;
                let records = tracker.on_event(&ev);
                after(tracker, records);
            }
            Ok(_) => {}
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let records = tracker.flush("still in progress when the capture ended");
    after(tracker, records);
    Ok(report)
}

/// Every record of a capture, in end order.
pub async fn records(path: &Path, settings: Arc<Settings>) -> std::io::Result<Vec<CallRecord>> {
    let mut out = Vec::new();
    assemble(path, settings, &Progress::hidden(), |r| out.push(r)).await?;
    Ok(out)
}
