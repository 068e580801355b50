//! The streaming codec: bytes in, [`Message`]s out; [`Command`]s in, bytes out.
//!
//! A frame is an envelope (header lines, a blank line) and, when the envelope has a
//! `Content-Length`, that many body bytes. The codec takes each frame off the read buffer with
//! `split_to(..).freeze()`, so an event's bytes are never copied after the socket read: the
//! headers and body are spans into that one `Bytes`.
//!
//! Protocol errors are *items*, not stream errors (a `FramedRead` ends after an `Err`): the
//! codec reports the damage with its stream offset, skips the bad envelope and carries on with
//! the next one. Memory is bounded by [`Limits`] whatever the peer sends.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::command::Command;
use super::event::parse_length;
use super::headers::{HeaderError, Headers};
use super::message::{Message, MessageError};

/// Size limits that keep a hostile or broken peer from growing memory without bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest envelope (header block) accepted. The outbound `connect` reply carries the
    /// whole channel data in its envelope (about 7 kB in the captures; channels with many
    /// variables reach tens of kB).
    pub max_header_block: usize,
    /// The largest `Content-Length` accepted.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_block: 1 << 20,
            max_body: 32 << 20,
        }
    }
}

/// What was wrong with a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameErrorKind {
    /// No blank line within `max_header_block` bytes.
    #[error("header block exceeds {limit} bytes without a blank line")]
    HeaderBlockTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// `Content-Length` is missing a number, negative or not numeric.
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
    /// `Content-Length` is larger than `max_body`.
    #[error("Content-Length {len} exceeds the {limit}-byte limit")]
    BodyTooLarge {
        /// The declared length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A malformed envelope line.
    #[error("envelope: {0}")]
    Headers(#[from] HeaderError),
    /// The frame was complete but its content is not understood.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes left)")]
    Truncated(usize),
}

/// A protocol error at a stream offset. The codec has already skipped past it.
#[derive(Debug, thiserror::Error)]
#[error("at byte {offset}: {kind}")]
pub struct FrameError {
    /// Byte offset of the start of the bad frame in the stream.
    pub offset: u64,
    /// What was wrong.
    pub kind: FrameErrorKind,
}

/// One decoded item: a message, or a protocol error the stream survived.
pub type Decoded = Result<Message, FrameError>;

/// The ESL codec. One per connection (it keeps partial-frame state).
#[derive(Debug, Default)]
pub struct EslCodec {
    limits: Limits,
    /// Stream offset of `src[0]`.
    offset: u64,
    /// Where the search for the envelope's end resumes, so a frame arriving in many small
    /// reads is scanned once, not once per read.
    scan_from: usize,
    /// An envelope waiting for its body: (envelope length incl. blank line, body length).
    pending: Option<(usize, usize)>,
}

impl EslCodec {
    /// A codec with the given limits.
    pub fn new(limits: Limits) -> Self {
        EslCodec {
            limits,
            ..Default::default()
        }
    }

    /// Bytes consumed from the stream so far (the offset of the next frame).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn consume(&mut self, src: &mut BytesMut, n: usize) {
        src.advance(n);
        self.offset += n as u64;
        self.scan_from = 0;
    }

    fn error(&self, kind: FrameErrorKind) -> Option<Decoded> {
        Some(Err(FrameError {
            offset: self.offset,
            kind,
        }))
    }
}

impl Decoder for EslCodec {
    type Item = Decoded;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, std::io::Error> {
        if self.pending.is_none() {
            // FreeSWITCH itself skips stray line breaks between frames; so do we.
            let skip = src
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
            if skip > 0 {
                self.consume(src, skip);
            }
            if src.is_empty() {
                return Ok(None);
            }
            let from = self.scan_from.saturating_sub(1);
            let Some(pos) = memchr::memmem::find(&src[from..], b"\n\n").map(|p| p + from) else {
                if src.len() > self.limits.max_header_block {
                    // Drop what we have (keeping a trailing '\n' that may start the blank line).
                    let keep = usize::from(src.last() == Some(&b'\n'));
                    let err = self.error(FrameErrorKind::HeaderBlockTooLarge {
                        limit: self.limits.max_header_block,
                    });
                    let n = src.len() - keep;
                    self.consume(src, n);
                    return Ok(err);
                }
                self.scan_from = src.len();
                return Ok(None);
            };
            let envelope_len = pos + 2;
            if pos > self.limits.max_header_block {
                let err = self.error(FrameErrorKind::HeaderBlockTooLarge {
                    limit: self.limits.max_header_block,
                });
                self.consume(src, envelope_len);
                return Ok(err);
            }
            // The envelope's header list is built once the whole frame is in (over the frozen
            // frame); here only its Content-Length is needed.
            let block = &src[..pos + 1];
            let body_len = match find_content_length(block) {
                None => 0,
                Some(raw) => match parse_length(raw) {
                    Some(n) if n > self.limits.max_body => {
                        let err = self.error(FrameErrorKind::BodyTooLarge {
                            len: n,
                            limit: self.limits.max_body,
                        });
                        self.consume(src, envelope_len);
                        return Ok(err);
                    }
                    Some(n) => n,
                    None => {
                        let err = self.error(FrameErrorKind::BadContentLength(
                            String::from_utf8_lossy(raw).into_owned(),
                        ));
                        self.consume(src, envelope_len);
                        return Ok(err);
                    }
                },
            };
            self.pending = Some((envelope_len, body_len));
        }
        let (envelope_len, body_len) = self.pending.expect("set above");
        let total = envelope_len + body_len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        self.pending = None;
        let start = self.offset;
        let frame = src.split_to(total).freeze();
        self.offset += total as u64;
        self.scan_from = 0;
        let headers = match Headers::parse(frame.clone(), 0..envelope_len - 1, false) {
            Ok(h) => h,
            Err(e) => {
                return Ok(Some(Err(FrameError {
                    offset: start,
                    kind: e.into(),
                })))
            }
        };
        let body = frame.slice(envelope_len..);
        Ok(Some(Message::from_parts(headers, body).map_err(|e| {
            FrameError {
                offset: start,
                kind: e.into(),
            }
        })))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, std::io::Error> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        let rest = src.iter().filter(|&&b| b != b'\n' && b != b'\r').count();
        if rest == 0 {
            src.clear();
            return Ok(None);
        }
        let err = self.error(FrameErrorKind::Truncated(src.len()));
        let n = src.len();
        self.pending = None;
        self.consume(src, n);
        Ok(err)
    }
}

/// Finds the value of a `Content-Length` line in an envelope without parsing the rest.
fn find_content_length(block: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"content-length:";
    let mut line_start = 0;
    while line_start < block.len() {
        let line_end = memchr::memchr(b'\n', &block[line_start..])
            .map(|p| line_start + p)
            .unwrap_or(block.len());
        let line = &block[line_start..line_end];
        if line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return Some(&line[NAME.len()..]);
        }
        line_start = line_end + 1;
    }
    None
}

impl Encoder<&Command> for EslCodec {
    type Error = std::io::Error;

    fn encode(&mut self, cmd: &Command, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        cmd.write_to(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut EslCodec, data: &[u8]) -> Vec<Decoded> {
        let mut buf = BytesMut::from(data);
        let mut out = Vec::new();
        while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn header_only_and_body_frames() {
        let data = b"Content-Type: auth/request\n\nContent-Type: api/response\nContent-Length: 9\n\n127.0.0.1";
        let items = decode_all(&mut EslCodec::default(), data);
        assert!(matches!(items[0], Ok(Message::AuthRequest)));
        match &items[1] {
            Ok(Message::ApiResponse(a)) => assert_eq!(a.text(), "127.0.0.1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn bad_content_lengths_are_reported_and_skipped() {
        for bad in ["-5", "abc", "", "1e3"] {
            let data = format!(
                "Content-Type: api/response\nContent-Length: {bad}\n\nContent-Type: auth/request\n\n"
            );
            let items = decode_all(&mut EslCodec::default(), data.as_bytes());
            assert!(
                matches!(
                    &items[0],
                    Err(FrameError {
                        offset: 0,
                        kind: FrameErrorKind::BadContentLength(_)
                    })
                ),
                "{bad}: {items:?}"
            );
            assert!(
                matches!(items.last(), Some(Ok(Message::AuthRequest))),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_content_length_does_not_allocate() {
        let mut codec = EslCodec::new(Limits {
            max_header_block: 1024,
            max_body: 1024,
        });
        let data = b"Content-Type: api/response\nContent-Length: 99999999999\n\nContent-Type: auth/request\n\n";
        let mut buf = BytesMut::from(&data[..]);
        let first = codec.decode(&mut buf).unwrap().unwrap();
        assert!(matches!(
            first,
            Err(FrameError {
                kind: FrameErrorKind::BodyTooLarge { .. },
                ..
            })
        ));
        assert!(buf.capacity() < 4096);
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Ok(Message::AuthRequest))
        ));
    }

    #[test]
    fn oversized_header_block_is_dropped_with_bounded_memory() {
        let mut codec = EslCodec::new(Limits {
            max_header_block: 64,
            max_body: 64,
        });
        let mut buf = BytesMut::new();
        let mut errors = 0;
        for _ in 0..100 {
            buf.extend_from_slice(b"X-Garbage: aaaaaaaaaaaaaaaaaaaa\n");
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                assert!(item.is_err());
                errors += 1;
            }
            assert!(buf.len() <= 64 + 33);
        }
        assert!(errors > 0);
        buf.extend_from_slice(b"\nContent-Type: auth/request\n\n");
        let mut last = None;
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            last = Some(item);
        }
        assert!(matches!(last, Some(Ok(Message::AuthRequest))));
    }

    #[test]
    fn garbage_bytes_give_errors_never_panics() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let items = decode_all(&mut EslCodec::default(), &data);
        assert!(items.iter().all(|i| i.is_err()));
    }

    #[test]
    fn stream_ending_inside_a_frame_is_reported() {
        let items = decode_all(
            &mut EslCodec::default(),
            b"Content-Type: api/response\nContent-Length: 10\n\nabc",
        );
        assert!(matches!(
            items[..],
            [Err(FrameError {
                kind: FrameErrorKind::Truncated(_),
                ..
            })]
        ));
    }

    #[test]
    fn offsets_track_the_stream() {
        let data = b"\nContent-Type: auth/request\n\nContent-Type: text/event-plain\nContent-Length: 7\n\nbadline";
        let items = decode_all(&mut EslCodec::default(), data);
        match &items[1] {
            Err(e) => assert_eq!(e.offset, 29),
            other => panic!("{other:?}"),
        }
    }
}
