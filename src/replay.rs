//! Replay: captured event-socket byte streams read through the same codec as a live socket.

use std::path::Path;

use tokio::fs::File;
use tokio_util::codec::FramedRead;

use crate::esl::{EslCodec, Limits};

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
