//! Commands to FreeSWITCH, validated before they are written.
//!
//! ESL commands are line-based: a value holding a line break would end the command early and
//! start a new one of the sender's choosing. Every constructor checks its arguments, so a value
//! that came from the network (a caller name, a routing reply) can never smuggle in a command.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::event::EventFormat;

/// Why a command was refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A value contains a line break or NUL (which would end or split the command).
    #[error("{what} contains a line break or NUL byte")]
    LineBreak {
        /// Which argument.
        what: &'static str,
    },
    /// A value that must be a single token contains whitespace or is empty.
    #[error("{what} must be a non-empty token without spaces: {value:?}")]
    NotAToken {
        /// Which argument.
        what: &'static str,
        /// The offending value.
        value: String,
    },
}

/// A validated command. `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// `auth <password>`.
    Auth(String),
    /// `userauth <user>@<domain>:<password>`.
    UserAuth {
        /// `user@domain`.
        user: String,
        /// The user's password.
        password: String,
    },
    /// `api <command> <args>`: blocking; answered with `api/response`.
    Api(String),
    /// `bgapi <command>` with a client-chosen `Job-UUID`; the result comes as BACKGROUND_JOB.
    BgApi {
        /// The API command line.
        command: String,
        /// The Job-UUID FreeSWITCH will echo in the reply and the BACKGROUND_JOB event.
        job_uuid: String,
    },
    /// `event <format> <names…>`.
    Event {
        /// plain, json or xml.
        format: EventFormat,
        /// Event names (`ALL`, `CHANNEL_CREATE`, `CUSTOM callcenter::info`…).
        names: Vec<String>,
    },
    /// `nixevent <names…>`.
    NixEvent(Vec<String>),
    /// `noevents`.
    NoEvents,
    /// `filter <header> <value>`.
    Filter {
        /// Header to match.
        header: String,
        /// Value to match.
        value: String,
    },
    /// `filter delete <header> [<value>]`.
    FilterDelete {
        /// Header of the filter to remove.
        header: String,
        /// Its value, or all filters on that header.
        value: Option<String>,
    },
    /// `sendmsg [<uuid>]` with headers (`call-command`, `execute-app-name`, …).
    SendMsg {
        /// Target channel; none in outbound mode (the socket's own channel).
        uuid: Option<String>,
        /// Message headers in order.
        headers: Vec<(String, String)>,
    },
    /// Outbound mode: `connect`.
    Connect,
    /// Outbound mode: `myevents [<format>]`.
    MyEvents(Option<EventFormat>),
    /// Outbound mode: `linger [<seconds>]`.
    Linger(Option<u32>),
    /// Outbound mode: `getvar <name>`.
    GetVar(String),
    /// `exit`.
    Exit,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Auth(_) => f.write_str("Auth(<redacted>)"),
            Command::UserAuth { user, .. } => write!(f, "UserAuth({user}, <redacted>)"),
            other => {
                let mut buf = BytesMut::new();
                other.write_to(&mut buf);
                write!(f, "{:?}", String::from_utf8_lossy(&buf).trim_end())
            }
        }
    }
}

fn no_breaks(what: &'static str, v: &str) -> Result<(), CommandError> {
    if v.bytes().any(|b| b == b'\n' || b == b'\r' || b == 0) {
        Err(CommandError::LineBreak { what })
    } else {
        Ok(())
    }
}

fn token(what: &'static str, v: &str) -> Result<(), CommandError> {
    no_breaks(what, v)?;
    if v.is_empty() || v.bytes().any(|b| b.is_ascii_whitespace()) {
        Err(CommandError::NotAToken {
            what,
            value: v.to_owned(),
        })
    } else {
        Ok(())
    }
}

impl Command {
    /// `auth <password>`.
    pub fn auth(password: &str) -> Result<Self, CommandError> {
        no_breaks("password", password)?;
        Ok(Command::Auth(password.to_owned()))
    }

    /// `userauth user@domain:password`.
    pub fn user_auth(user: &str, password: &str) -> Result<Self, CommandError> {
        token("user", user)?;
        no_breaks("password", password)?;
        Ok(Command::UserAuth {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// `api <line>`.
    pub fn api(line: &str) -> Result<Self, CommandError> {
        no_breaks("api command", line)?;
        token("api command", line.split(' ').next().unwrap_or(""))?;
        Ok(Command::Api(line.to_owned()))
    }

    /// `bgapi <line>` with a fresh random Job-UUID.
    pub fn bgapi(line: &str) -> Result<Self, CommandError> {
        no_breaks("bgapi command", line)?;
        token("bgapi command", line.split(' ').next().unwrap_or(""))?;
        Ok(Command::BgApi {
            command: line.to_owned(),
            job_uuid: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// `event <format> <names…>`.
    pub fn event(format: EventFormat, names: &[String]) -> Result<Self, CommandError> {
        for n in names {
            token("event name", n).or_else(|e| {
                // `CUSTOM sofia::register` is one list entry with a space in it.
                if n.starts_with("CUSTOM ") {
                    no_breaks("event name", n)
                } else {
                    Err(e)
                }
            })?;
        }
        Ok(Command::Event {
            format,
            names: names.to_vec(),
        })
    }

    /// `nixevent <names…>`.
    pub fn nixevent(names: &[String]) -> Result<Self, CommandError> {
        for n in names {
            token("event name", n)?;
        }
        Ok(Command::NixEvent(names.to_vec()))
    }

    /// `filter <header> <value>`.
    pub fn filter(header: &str, value: &str) -> Result<Self, CommandError> {
        token("filter header", header)?;
        no_breaks("filter value", value)?;
        Ok(Command::Filter {
            header: header.to_owned(),
            value: value.to_owned(),
        })
    }

    /// `sendmsg [<uuid>]` executing one application: `execute-app-name`/`execute-app-arg`.
    pub fn execute(
        uuid: Option<&str>,
        app: &str,
        arg: &str,
        event_uuid: Option<&str>,
    ) -> Result<Self, CommandError> {
        if let Some(u) = uuid {
            token("uuid", u)?;
        }
        token("application", app)?;
        no_breaks("application argument", arg)?;
        let mut headers = vec![
            ("call-command".to_owned(), "execute".to_owned()),
            ("execute-app-name".to_owned(), app.to_owned()),
        ];
        if !arg.is_empty() {
            headers.push(("execute-app-arg".to_owned(), arg.to_owned()));
        }
        if let Some(id) = event_uuid {
            token("event uuid", id)?;
            headers.push(("Event-UUID".to_owned(), id.to_owned()));
        }
        Ok(Command::SendMsg {
            uuid: uuid.map(str::to_owned),
            headers,
        })
    }

    /// A `sendmsg` that holds FreeSWITCH's message queue until the application has run
    /// (`event-lock: true`), so messages sent back to back execute one after the other.
    pub fn with_event_lock(mut self) -> Self {
        if let Command::SendMsg { headers, .. } = &mut self {
            headers.push(("event-lock".to_owned(), "true".to_owned()));
        }
        self
    }

    /// Outbound `getvar <name>`.
    pub fn getvar(name: &str) -> Result<Self, CommandError> {
        token("variable name", name)?;
        Ok(Command::GetVar(name.to_owned()))
    }

    /// The Job-UUID of a `bgapi` command.
    pub fn job_uuid(&self) -> Option<&str> {
        match self {
            Command::BgApi { job_uuid, .. } => Some(job_uuid),
            _ => None,
        }
    }

    /// Whether FreeSWITCH answers this command with `api/response` rather than `command/reply`.
    pub fn expects_api_response(&self) -> bool {
        matches!(self, Command::Api(_))
    }

    /// Writes the command's wire form, blank-line terminated.
    pub fn write_to(&self, dst: &mut BytesMut) {
        let mut line = |parts: &[&str]| {
            for p in parts {
                dst.put_slice(p.as_bytes());
            }
            dst.put_u8(b'\n');
        };
        match self {
            Command::Auth(p) => line(&["auth ", p]),
            Command::UserAuth { user, password } => line(&["userauth ", user, ":", password]),
            Command::Api(c) => line(&["api ", c]),
            Command::BgApi { command, job_uuid } => {
                line(&["bgapi ", command]);
                line(&["Job-UUID: ", job_uuid]);
            }
            Command::Event { format, names } => {
                let joined = names.join(" ");
                line(&["event ", format.as_str(), " ", &joined]);
            }
            Command::NixEvent(names) => line(&["nixevent ", &names.join(" ")]),
            Command::NoEvents => line(&["noevents"]),
            Command::Filter { header, value } => line(&["filter ", header, " ", value]),
            Command::FilterDelete { header, value } => match value {
                Some(v) => line(&["filter delete ", header, " ", v]),
                None => line(&["filter delete ", header]),
            },
            Command::SendMsg { uuid, headers } => {
                match uuid {
                    Some(u) => line(&["sendmsg ", u]),
                    None => line(&["sendmsg"]),
                }
                for (k, v) in headers {
                    line(&[k, ": ", v]);
                }
            }
            Command::Connect => line(&["connect"]),
            Command::MyEvents(None) => line(&["myevents"]),
            Command::MyEvents(Some(f)) => line(&["myevents ", f.as_str()]),
            Command::Linger(None) => line(&["linger"]),
            Command::Linger(Some(s)) => line(&["linger ", &s.to_string()]),
            Command::GetVar(n) => line(&["getvar ", n]),
            Command::Exit => line(&["exit"]),
        }
        dst.put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(c: &Command) -> String {
        let mut b = BytesMut::new();
        c.write_to(&mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn wire_forms() {
        assert_eq!(wire(&Command::api("status").unwrap()), "api status\n\n");
        let bg = Command::bgapi("originate user/1001 &park").unwrap();
        assert_eq!(
            wire(&bg),
            format!(
                "bgapi originate user/1001 &park\nJob-UUID: {}\n\n",
                bg.job_uuid().unwrap()
            )
        );
        assert_eq!(
            wire(&Command::event(EventFormat::Plain, &["ALL".into()]).unwrap()),
            "event plain ALL\n\n"
        );
        assert_eq!(
            wire(&Command::execute(None, "set", "switchhook_status=ACK", Some("e1")).unwrap()),
            "sendmsg\ncall-command: execute\nexecute-app-name: set\nexecute-app-arg: switchhook_status=ACK\nEvent-UUID: e1\n\n"
        );
        assert_eq!(
            wire(&Command::user_auth("bob@example", "pw").unwrap()),
            "userauth bob@example:pw\n\n"
        );
    }

    #[test]
    fn line_breaks_are_refused_everywhere() {
        assert!(Command::api("status\n\napi fsctl shutdown").is_err());
        assert!(Command::auth("pw\nexit").is_err());
        assert!(Command::execute(None, "set", "x=1\nexecute-app-name: system", None).is_err());
        assert!(Command::execute(Some("u u"), "set", "x", None).is_err());
        assert!(Command::filter("Unique-ID", "a\rb").is_err());
        assert!(Command::event(EventFormat::Plain, &["A B".into()]).is_err());
        assert!(Command::event(EventFormat::Plain, &["CUSTOM sofia::register".into()]).is_ok());
    }

    #[test]
    fn debug_never_shows_passwords() {
        let d = format!(
            "{:?} {:?}",
            Command::auth("s3cret").unwrap(),
            Command::user_auth("u@d", "s3cret").unwrap()
        );
        assert!(!d.contains("s3cret"), "{d}");
    }
}
