//! What a frame means: the envelope's `Content-Type` decides.

use std::borrow::Cow;

use bytes::Bytes;

use super::event::{Event, EventError};
use super::headers::Headers;

/// One complete message from FreeSWITCH.
#[derive(Debug, Clone)]
pub enum Message {
    /// `auth/request`: the greeting of an inbound connection.
    AuthRequest,
    /// `command/reply`: the answer to a command (`+OK …`, `-ERR …`).
    Reply(Reply),
    /// `api/response`: the output of an `api` command (no trailing newline guaranteed).
    ApiResponse(ApiResponse),
    /// `text/event-plain`, `text/event-json` or `text/event-xml`.
    Event(Event),
    /// The outbound-mode `connect` reply: a `command/reply` whose headers are the channel data.
    ChannelData(Event),
    /// `text/disconnect-notice` in any of its forms.
    Disconnect(DisconnectNotice),
    /// `text/rude-rejection`: the ACL refused this client.
    RudeRejection(String),
    /// `log/data`: a log line (after the `log` command).
    Log(LogLine),
    /// A content type this client does not know; kept, not dropped.
    Other {
        /// The envelope's `Content-Type`.
        content_type: String,
        /// The envelope headers.
        headers: Headers,
        /// The body, if any.
        body: Bytes,
    },
}

/// Why a frame's content could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The envelope has no `Content-Type`.
    #[error("frame has no Content-Type")]
    MissingContentType,
    /// An event frame with no body (its envelope lost its `Content-Length`).
    #[error("{0} frame has no body")]
    EmptyEvent(String),
    /// An event frame whose body is not a valid event.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// A `command/reply`.
#[derive(Debug, Clone)]
pub struct Reply {
    headers: Headers,
}

/// The outcome a `Reply-Text` states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyStatus {
    /// `+OK` and the rest of the line (`accepted`, `Job-UUID: …`, `will linger 10 seconds`).
    Ok(String),
    /// `-ERR` and the rest (`invalid`, `command not found`, `no reply`…).
    Err(String),
    /// A reply that is neither: `getvar` answers with the bare value.
    Value(String),
}

impl Reply {
    /// Wraps envelope headers as a reply.
    pub fn new(headers: Headers) -> Self {
        Reply { headers }
    }

    /// The reply's headers (`Reply-Text`, `Job-UUID`, …).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// `Reply-Text` as sent.
    pub fn text(&self) -> Cow<'_, str> {
        self.headers.get("Reply-Text").unwrap_or(Cow::Borrowed(""))
    }

    /// `+OK` / `-ERR` / a bare value, split on the first space after the marker.
    pub fn status(&self) -> ReplyStatus {
        classify(&self.text())
    }

    /// Whether the reply is `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self.status(), ReplyStatus::Ok(_))
    }

    /// The `Job-UUID` of a `bgapi` reply: the header, or `+OK Job-UUID: <id>` split on the
    /// first colon only.
    pub fn job_uuid(&self) -> Option<String> {
        if let Some(v) = self.headers.get("Job-UUID") {
            return Some(v.into_owned());
        }
        match self.status() {
            ReplyStatus::Ok(rest) => {
                let (key, value) = rest.split_once(':')?;
                (key.trim() == "Job-UUID").then(|| value.trim().to_owned())
            }
            _ => None,
        }
    }
}

fn classify(text: &str) -> ReplyStatus {
    let text = text.trim_end_matches('\n');
    if let Some(rest) = text.strip_prefix("+OK") {
        ReplyStatus::Ok(rest.trim_start().to_owned())
    } else if let Some(rest) = text.strip_prefix("-ERR") {
        ReplyStatus::Err(rest.trim_start().to_owned())
    } else {
        ReplyStatus::Value(text.to_owned())
    }
}

/// An `api/response` body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    body: Bytes,
}

impl ApiResponse {
    /// Wraps a response body.
    pub fn new(body: Bytes) -> Self {
        ApiResponse { body }
    }

    /// The raw body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (lossy for non-UTF-8).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Whether FreeSWITCH reported a failure (`-ERR …`, `-USAGE: …`).
    pub fn is_err(&self) -> bool {
        self.body.starts_with(b"-ERR") || self.body.starts_with(b"-USAGE")
    }
}

/// How a disconnect notice asks the client to behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The connection is closing now.
    Disconnect,
    /// The channel hung up but FreeSWITCH keeps sending events for `linger_time`: keep reading.
    Linger,
    /// The listener fell too far behind and FreeSWITCH dropped it: events were lost.
    LostEvents,
    /// A notice with no disposition (inbound `exit`, server shutdown).
    Plain,
}

/// A `text/disconnect-notice`.
#[derive(Debug, Clone)]
pub struct DisconnectNotice {
    /// What the notice means for the client.
    pub disposition: Disposition,
    /// `Linger-Time` in seconds (`-1`: until the channel is gone).
    pub linger_time: Option<i64>,
    /// `Controlled-Session-UUID` in outbound mode.
    pub session_uuid: Option<String>,
    /// The human-readable body.
    pub text: String,
}

impl DisconnectNotice {
    /// Whether the client must keep reading (linger) rather than close.
    pub fn keep_reading(&self) -> bool {
        self.disposition == Disposition::Linger
    }
}

/// A `log/data` frame.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// `Log-Level`, when present.
    pub level: Option<u8>,
    /// The envelope headers (`Log-File`, `Log-Func`, `User-Data`…).
    pub headers: Headers,
    /// The log text.
    pub text: String,
}

impl Message {
    /// Interprets an envelope and its body.
    pub fn from_parts(headers: Headers, body: Bytes) -> Result<Self, MessageError> {
        // Matched on the raw bytes: no allocation on the per-event path.
        let content_type = headers
            .get_raw("Content-Type")
            .ok_or(MessageError::MissingContentType)?;
        let text = || String::from_utf8_lossy(&body).into_owned();
        if content_type.starts_with(b"text/event-") && body.is_empty() {
            return Err(MessageError::EmptyEvent(
                String::from_utf8_lossy(content_type).into_owned(),
            ));
        }
        Ok(match content_type {
            b"text/event-plain" => Message::Event(Event::parse_plain(body)?),
            b"text/event-json" => Message::Event(Event::parse_json(&body)?),
            b"text/event-xml" => Message::Event(Event::parse_xml(&body)?),
            b"command/reply" if headers.contains("Event-Name") => {
                Message::ChannelData(Event::from_envelope(headers))
            }
            b"command/reply" => Message::Reply(Reply::new(headers)),
            b"api/response" => Message::ApiResponse(ApiResponse::new(body)),
            b"auth/request" => Message::AuthRequest,
            b"text/disconnect-notice" => {
                let text = text();
                let disposition = match headers.get("Content-Disposition").as_deref() {
                    Some("linger") => Disposition::Linger,
                    _ if text.contains("lost events") => Disposition::LostEvents,
                    Some("disconnect") => Disposition::Disconnect,
                    _ => Disposition::Plain,
                };
                Message::Disconnect(DisconnectNotice {
                    disposition,
                    linger_time: headers
                        .get("Linger-Time")
                        .and_then(|v| v.trim().parse().ok()),
                    session_uuid: headers.get("Controlled-Session-UUID").map(Cow::into_owned),
                    text,
                })
            }
            b"text/rude-rejection" => Message::RudeRejection(text()),
            b"log/data" => Message::Log(LogLine {
                level: headers.get("Log-Level").and_then(|v| v.trim().parse().ok()),
                text: text(),
                headers,
            }),
            _ => Message::Other {
                content_type: String::from_utf8_lossy(content_type).into_owned(),
                headers,
                body,
            },
        })
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::AuthRequest => "auth_request",
            Message::Reply(_) => "command_reply",
            Message::ApiResponse(_) => "api_response",
            Message::Event(_) => "event",
            Message::ChannelData(_) => "channel_data",
            Message::Disconnect(_) => "disconnect_notice",
            Message::RudeRejection(_) => "rude_rejection",
            Message::Log(_) => "log_data",
            Message::Other { .. } => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(envelope: &str, body: &str) -> Message {
        let b = Bytes::copy_from_slice(envelope.as_bytes());
        let h = Headers::parse(b.clone(), 0..b.len(), false).unwrap();
        Message::from_parts(h, Bytes::copy_from_slice(body.as_bytes())).unwrap()
    }

    #[test]
    fn reply_forms() {
        let Message::Reply(r) = msg(
            "Content-Type: command/reply\nReply-Text: +OK accepted\n",
            "",
        ) else {
            panic!()
        };
        assert_eq!(r.status(), ReplyStatus::Ok("accepted".into()));
        let Message::Reply(r) = msg(
            "Content-Type: command/reply\nReply-Text: -ERR invalid\n",
            "",
        ) else {
            panic!()
        };
        assert_eq!(r.status(), ReplyStatus::Err("invalid".into()));
        let Message::Reply(r) = msg(
            "Content-Type: command/reply\nReply-Text: +OK Job-UUID: 7f4d-b78a:extra\n",
            "",
        ) else {
            panic!()
        };
        assert_eq!(r.job_uuid().unwrap(), "7f4d-b78a:extra");
        let Message::Reply(r) = msg(
            "Content-Type: command/reply\nReply-Text: +441610007100\n",
            "",
        ) else {
            panic!()
        };
        assert_eq!(r.status(), ReplyStatus::Value("+441610007100".into()));
    }

    #[test]
    fn api_errors() {
        for body in ["-ERR no reply\n", "-USAGE: <uuid>\n"] {
            let Message::ApiResponse(a) = msg("Content-Type: api/response\n", body) else {
                panic!()
            };
            assert!(a.is_err());
        }
        let Message::ApiResponse(a) = msg("Content-Type: api/response\n", "127.0.0.1") else {
            panic!()
        };
        assert!(!a.is_err());
        assert_eq!(a.text(), "127.0.0.1");
    }

    #[test]
    fn disconnect_forms() {
        let cases = [
            ("Content-Type: text/disconnect-notice\nContent-Disposition: linger\nLinger-Time: -1\n", "", Disposition::Linger),
            ("Content-Type: text/disconnect-notice\nContent-Disposition: disconnect\n", "Disconnected, goodbye.\n", Disposition::Disconnect),
            ("Content-Type: text/disconnect-notice\n", "Disconnected, goodbye.\n", Disposition::Plain),
            ("Content-Type: text/disconnect-notice\n", "killed listener because of lost events\n", Disposition::LostEvents),
        ];
        for (env, body, want) in cases {
            let Message::Disconnect(d) = msg(env, body) else {
                panic!()
            };
            assert_eq!(d.disposition, want, "{env}");
        }
        let Message::Disconnect(d) = msg(cases[0].0, "") else {
            panic!()
        };
        assert_eq!(d.linger_time, Some(-1));
        assert!(d.keep_reading());
    }

    #[test]
    fn rude_rejection_log_and_unknown() {
        assert!(matches!(
            msg("Content-Type: text/rude-rejection\n", "Access Denied, go away.\n"),
            Message::RudeRejection(t) if t.starts_with("Access Denied")
        ));
        assert!(matches!(
            msg("Content-Type: log/data\nLog-Level: 7\n", "hello"),
            Message::Log(LogLine { level: Some(7), .. })
        ));
        assert!(matches!(
            msg("Content-Type: x/y\n", ""),
            Message::Other { .. }
        ));
    }
}
