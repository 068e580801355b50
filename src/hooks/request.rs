//! A rendered webhook request: what the outbox stores and the sender sends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use std::sync::Arc;

use super::moment_data::MomentData;
use super::sign::Signer;

/// One request for one webhook, one trigger, one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `webhook-id`: stable across attempts and restarts.
    pub id: String,
    /// The webhook's name.
    pub webhook: String,
    /// The trigger name.
    pub trigger: String,
    /// The call's session id.
    pub call_id: String,
    /// The call's moment sequence number.
    pub seq: u32,
    /// GET, POST or PUT.
    pub method: String,
    /// The full URL (GET data included).
    pub url: String,
    /// Headers, without the signature headers (those are made per attempt).
    pub headers: Vec<(String, String)>,
    /// The body (empty for GET).
    pub body: String,
    /// Whether the webhook signs its requests.
    pub signed: bool,
    /// 1 + retries.
    pub max_attempts: u32,
    /// When failed attempts are tried again (absent in requests stored before schedules
    /// could be chosen: linear).
    #[serde(default)]
    pub schedule: super::retry::Schedule,
    /// Per-attempt timeout, ms.
    pub timeout_ms: u64,
    /// The moment's event time, µs.
    pub at_us: i64,
    /// What it was rendered from, until the outbox has kept it (stored once per moment, not
    /// in the request).
    #[serde(skip)]
    pub(crate) moment: Option<Arc<MomentData>>,
    /// What the moment holds in memory, counted once when its requests are made.
    #[serde(skip)]
    pub(crate) moment_bytes: usize,
}

impl Request {
    /// About how many bytes the request holds in memory (what the delivery queue's memory
    /// bounds count).
    pub fn memory(&self) -> usize {
        256 + self.id.len()
            + self.call_id.len()
            + self.url.len()
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
            + self.moment.as_ref().map_or(0, |_| self.moment_bytes)
    }

    /// What is signed: the body, or for GET the query string that carries the data.
    pub fn signed_content(&self) -> &[u8] {
        if self.method == "GET" {
            self.url
                .split_once('?')
                .map(|(_, q)| q.as_bytes())
                .unwrap_or_default()
        } else {
            self.body.as_bytes()
        }
    }

    /// The Standard Webhooks headers for an attempt at `timestamp` (unix seconds); only
    /// `webhook-id` and `webhook-timestamp` without a signer.
    pub fn signature_headers(
        &self,
        signer: Option<&Signer>,
        timestamp: i64,
    ) -> Vec<(String, String)> {
        let mut h = vec![
            ("webhook-id".to_owned(), self.id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ];
        if let Some(s) = signer {
            h.push((
                "webhook-signature".to_owned(),
                s.sign(&self.id, timestamp, self.signed_content()),
            ));
        }
        h
    }

    /// The object `replay --emit webhooks` prints: `webhook`, `trigger`, `call_id`, `method`,
    /// `url`, `headers`, `body` (and `id`, `sequence`), with the headers an attempt at
    /// `timestamp` would carry.
    pub fn to_printable(&self, signer: Option<&Signer>, timestamp: i64) -> Value {
        let mut headers = Map::new();
        for (k, v) in self
            .headers
            .iter()
            .cloned()
            .chain(self.signature_headers(signer, timestamp))
        {
            headers.insert(k, Value::String(v));
        }
        let mut o = Map::new();
        o.insert("webhook".into(), self.webhook.clone().into());
        o.insert("trigger".into(), self.trigger.clone().into());
        o.insert("call_id".into(), self.call_id.clone().into());
        o.insert("sequence".into(), self.seq.into());
        o.insert("id".into(), self.id.clone().into());
        o.insert("method".into(), self.method.clone().into());
        o.insert("url".into(), self.url.clone().into());
        o.insert("headers".into(), Value::Object(headers));
        o.insert("body".into(), self.body.clone().into());
        Value::Object(o)
    }
}
