//! The relay's destination: a JetStream stream, made when missing, each message published
//! with its id as `Nats-Msg-Id` and taken as written once the stream acknowledges it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde_json::Value;

use super::config::NatsConfig;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BusError {
    /// The servers could not be reached or refused the credentials.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// The stream could not be found or made.
    #[error("stream {stream}: {why}")]
    Stream {
        /// The stream.
        stream: String,
        /// What the server said.
        why: String,
    },
    /// A message was not acknowledged.
    #[error("publish {subject}: {why}")]
    Publish {
        /// Its subject.
        subject: String,
        /// What went wrong.
        why: String,
    },
    /// A queued row is not a message (a damaged outbox).
    #[error("a queued message has no subject or id")]
    Damaged,
}

/// JetStream as `[nats]` names it.
pub(crate) struct JetStream(pub(crate) NatsConfig);

impl JetStream {
    async fn options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        let c = &self.0;
        let secret =
            |var: &str| crate::secrets::from_env(var).map_err(|e| BusError::Connect(e.to_string()));
        let mut o = if !c.user.is_empty() {
            async_nats::ConnectOptions::with_user_and_password(
                c.user.clone(),
                secret(&c.password_env)?,
            )
        } else if !c.token_env.is_empty() {
            async_nats::ConnectOptions::with_token(secret(&c.token_env)?)
        } else if !c.credentials_file.is_empty() {
            async_nats::ConnectOptions::with_credentials_file(&c.credentials_file)
                .await
                .map_err(|e| BusError::Connect(format!("{}: {e}", c.credentials_file)))?
        } else {
            async_nats::ConnectOptions::new()
        };
        o = o
            .name("switchhook")
            .connection_timeout(c.timeout)
            .request_timeout(Some(c.timeout));
        Ok(o)
    }

    /// The stream's settings when it is made here.
    fn stream_config(&self) -> stream::Config {
        let c = &self.0;
        stream::Config {
            name: c.stream.clone(),
            subjects: vec![format!("{}.>", c.subject_prefix)],
            duplicate_window: c.duplicate_window,
            max_age: c.max_age,
            num_replicas: c.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }
}

impl JetStream {
    /// Connects, and makes the stream when it does not exist.
    pub(crate) async fn context(&self) -> Result<jetstream::Context, BusError> {
        let js = self.connect_only().await?;
        js.get_or_create_stream(self.stream_config())
            .await
            .map_err(|e| BusError::Stream {
                stream: self.0.stream.clone(),
                why: e.to_string(),
            })?;
        Ok(js)
    }

    /// Connects, leaving the stream as it is (to read from it).
    pub(crate) async fn connect_only(&self) -> Result<jetstream::Context, BusError> {
        let opts = self.options().await?;
        let servers: Vec<async_nats::ServerAddr> = self
            .0
            .servers
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let client = tokio::time::timeout(self.0.timeout, opts.connect(servers))
            .await
            .map_err(|_| BusError::Connect("timed out".into()))?
            .map_err(|e| BusError::Connect(e.to_string()))?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.0.timeout);
        Ok(js)
    }
}

/// Stream `name`, or None when the server has no such stream.
pub(crate) async fn existing_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Stream>, String> {
    match js.get_stream(name).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(format!("stream {name}: {e}")),
        },
    }
}

/// A key-value bucket, made when missing, and whether it has never held a value. Its stream
/// is made here, as the key-value convention lays it out, rather than by the client's
/// bucket call, which asks for account details that servers before 2.10 answer in a form it
/// cannot read. `max_age` zero keeps values until they are deleted.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<(kv::Store, bool), String> {
    let fail = |e: &dyn std::fmt::Display| format!("key-value bucket {name}: {e}");
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?;
    let new = stream
        .info()
        .await
        .map_err(|e| fail(&e))?
        .state
        .last_sequence
        == 0;
    let kv = js.get_key_value(name).await.map_err(|e| fail(&e))?;
    Ok((kv, new))
}

impl crate::relay::Sink for JetStream {
    type Conn = jetstream::Context;
    type Error = BusError;
    const NAME: &'static str = "NATS";

    async fn connect(&self) -> Result<jetstream::Context, BusError> {
        self.context().await
    }

    async fn write(&self, js: &mut jetstream::Context, items: &[Value]) -> Result<(), BusError> {
        // Published back to back, then the acknowledgements awaited in order: the server
        // stores one connection's messages in the order they were sent.
        let mut acks = Vec::with_capacity(items.len());
        for item in items {
            let (Some(subject), Some(id)) = (item["subject"].as_str(), item["id"].as_str()) else {
                return Err(BusError::Damaged);
            };
            let fail = |e: &dyn std::fmt::Display| BusError::Publish {
                subject: subject.to_owned(),
                why: e.to_string(),
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
            headers.insert("Content-Type", "application/json");
            let payload = serde_json::to_vec(&item["message"]).map_err(|e| fail(&e))?;
            let ack = js
                .publish_with_headers(subject.to_owned(), headers, payload.into())
                .await
                .map_err(|e| fail(&e))?;
            acks.push((subject, ack));
        }
        for (subject, ack) in acks {
            let fail = |why: String| BusError::Publish {
                subject: subject.to_owned(),
                why,
            };
            match tokio::time::timeout(self.0.timeout + Duration::from_millis(100), ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(fail(e.to_string())),
                Err(_) => return Err(fail("no acknowledgement in time".into())),
            }
        }
        Ok(())
    }

    fn is_transient(e: &BusError) -> bool {
        matches!(e, BusError::Connect(_) | BusError::Publish { .. })
    }
}
