//! Replay: captured event-socket byte streams read through the same codec as a live socket.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use tokio::fs::File;
use tokio_util::codec::FramedRead;

use crate::esl::{EslCodec, Limits, Message};
use crate::session::{CallRecord, Moment, SessionTracker, Settings};

/// Read buffer size for capture files: large reads keep syscalls off the profile.
const READ_CAPACITY: usize = 256 * 1024;

/// Opens a capture file as a stream of [`crate::esl::Decoded`] items, exactly as the bytes
/// would have arrived on a socket.
pub async fn open(path: &Path, limits: Limits) -> std::io::Result<FramedRead<File, EslCodec>> {
    let file = File::open(path).await?;
    Ok(FramedRead::with_capacity(
        file,
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

/// Replays a capture through call assembly, handing each finished call's record to `emit`
/// in the order calls end; calls still up when the file ends are emitted last, partial.
pub async fn assemble(
    path: &Path,
    settings: Arc<Settings>,
    mut emit: impl FnMut(CallRecord),
) -> std::io::Result<AssembleReport> {
    let mut tracker = SessionTracker::new(settings);
    drive(path, &mut tracker, |_, records| {
        records.into_iter().for_each(&mut emit)
    })
    .await
}

/// Replays a capture through call assembly with lifecycle moments on, handing each moment
/// to `emit` in the order the live pipeline would have found it.
pub async fn moments(
    path: &Path,
    settings: Arc<Settings>,
    mut emit: impl FnMut(Moment),
) -> std::io::Result<AssembleReport> {
    let mut tracker = SessionTracker::new(settings).with_moments();
    drive(path, &mut tracker, |t, _| {
        t.take_moments().into_iter().for_each(&mut emit)
    })
    .await
}

/// Feeds a capture to `tracker`, calling `after` with the records each event finished.
async fn drive(
    path: &Path,
    tracker: &mut SessionTracker,
    mut after: impl FnMut(&mut SessionTracker, Vec<CallRecord>),
) -> std::io::Result<AssembleReport> {
    let mut stream = open(path, Limits::default()).await?;
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
    assemble(path, settings, |r| out.push(r)).await?;
    Ok(out)
}
