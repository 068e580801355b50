//! One inbound TCP connection to mod_event_socket: greeting, authentication, then framed
//! messages both ways.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::codec::{Decoded, EslCodec, Limits};
use super::command::Command;
use super::message::{Message, ReplyStatus};

/// How to authenticate.
#[derive(Clone)]
pub(crate) enum Auth {
    /// `auth <password>`.
    Password(String),
    /// `userauth <user@domain>:<password>`.
    User {
        /// `user@domain`.
        user: String,
        /// The user's password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Password(_) => f.write_str("Password(<redacted>)"),
            Auth::User { user, .. } => write!(f, "User({user}, <redacted>)"),
        }
    }
}

/// Why a connection could not be set up or was lost.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP connect or I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No answer within the deadline.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The password (or user) was refused. The secret is never part of the message.
    #[error("authentication refused: {0}")]
    AuthRefused(String),
    /// The event socket's ACL refused this address.
    #[error("access denied by the event socket ACL: {0}")]
    AccessDenied(String),
    /// The peer closed the connection.
    #[error("connection closed by FreeSWITCH")]
    Closed,
    /// The peer said something other than the handshake.
    #[error("unexpected {0} during the handshake")]
    Unexpected(&'static str),
    /// A command could not be built from configuration values.
    #[error("invalid command: {0}")]
    Command(#[from] super::command::CommandError),
}

/// A framed, authenticated connection.
pub(crate) type Framed8021 = Framed<TcpStream, EslCodec>;

/// Connects, waits for `auth/request`, authenticates. Returns the framed connection ready for
/// commands.
pub(crate) async fn connect(
    addr: &str,
    auth: &Auth,
    limits: Limits,
    deadline: Duration,
) -> Result<Framed8021, ConnectError> {
    let stream = tokio::time::timeout(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout("connecting"))??;
    stream.set_nodelay(true)?;
    let mut framed = Framed::with_capacity(stream, EslCodec::new(limits), 256 * 1024);
    match next(&mut framed, deadline, "waiting for auth/request").await? {
        Message::AuthRequest => {}
        Message::RudeRejection(text) => {
            return Err(ConnectError::AccessDenied(text.trim().to_owned()))
        }
        other => return Err(ConnectError::Unexpected(other.kind())),
    }
    let cmd = match auth {
        Auth::Password(p) => Command::auth(p)?,
        Auth::User { user, password } => Command::user_auth(user, password)?,
    };
    framed.send(&cmd).await?;
    match next(&mut framed, deadline, "waiting for the auth reply").await? {
        Message::Reply(r) => match r.status() {
            ReplyStatus::Ok(_) => Ok(framed),
            ReplyStatus::Err(e) | ReplyStatus::Value(e) => Err(ConnectError::AuthRefused(e)),
        },
        Message::RudeRejection(text) => Err(ConnectError::AccessDenied(text.trim().to_owned())),
        other => Err(ConnectError::Unexpected(other.kind())),
    }
}

/// The next message, skipping (and logging) protocol errors.
async fn next(
    framed: &mut Framed8021,
    deadline: Duration,
    what: &'static str,
) -> Result<Message, ConnectError> {
    loop {
        let item: Option<Result<Decoded, std::io::Error>> =
            tokio::time::timeout(deadline, framed.next())
                .await
                .map_err(|_| ConnectError::Timeout(what))?;
        match item {
            None => return Err(ConnectError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Err(e))) => tracing::warn!(error = %e, "malformed frame during handshake"),
            Some(Ok(Ok(m))) => return Ok(m),
        }
    }
}
