//! What goes on the bus: each message's subject, id and body.
//!
//! Subjects: `PREFIX.moment.TENANT.PBX.PARTITION.CALL.TRIGGER` for a lifecycle moment (the
//! trigger's own dots make its last tokens: `call.answered.extension`),
//! `PREFIX.cdr.TENANT.PBX.PARTITION.CALL` for a finished call's CDR and
//! `PREFIX.dead.TENANT.WEBHOOK` for a delivery a worker gave up on, so a consumer picks a
//! kind, a tenant, a PBX, a partition, a call or a trigger with a filter subject. A value
//! that is not a valid token keeps its letters, digits, `_` and `-`, the rest becoming `_`
//! (the body holds it as it is); an empty one is `_`.

use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::NatsConfig;
use crate::hooks::moment_data::MomentData;
use crate::hooks::DeadLetter;
use crate::relay::Table;
use crate::session::cdr::Cdr;
use crate::session::{CallRecord, Moment, Trigger};

/// The outbox table messages wait in for JetStream.
pub(crate) static QUEUE: Table = Table {
    name: "bus_queue",
    key: "msg_id",
    json: "message_json",
    items: "bus messages",
};

/// One message, made on the event loop up to its body (serialized on the queue's thread).
pub(crate) struct Message {
    subject: String,
    id: String,
    body: Body,
}

enum Body {
    Moment(Arc<MomentData>),
    /// The CDR and the call's tenant.
    Cdr(Box<Cdr>, String),
}

/// The envelope every message body shares.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, T: Serialize> {
    /// `moment` or `cdr`.
    kind: &'static str,
    /// The message id (`Nats-Msg-Id`).
    id: &'a str,
    tenant_id: &'a str,
    pbx_id: &'a str,
    call_id: &'a str,
    #[serde(flatten)]
    body: T,
}

/// The `Nats-Msg-Id` of a call's moment: the same from every switchhook that sees it.
pub fn moment_id(call_id: &str, trigger: Trigger) -> String {
    let name = format!("{call_id}\n{}", trigger.name());
    format!(
        "mom_{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).simple()
    )
}

/// The `Nats-Msg-Id` of a call's CDR.
pub fn cdr_id(call_id: &str) -> String {
    format!("cdr_{call_id}")
}

/// `s` as one subject token.
pub(crate) fn token(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The call's partition: FNV-1a of its id, so every switchhook puts a call in the same one.
pub(crate) fn partition(call_id: &str, partitions: u32) -> u32 {
    let mut h = fnv::FnvHasher::default();
    h.write(call_id.as_bytes());
    (h.finish() % u64::from(partitions.max(1))) as u32
}

/// The subject tokens after the kind: tenant, PBX, partition, call.
fn route(cfg: &NatsConfig, tenant: &str, pbx: &str, call_id: &str) -> String {
    format!(
        "{}.{}.{}.{}",
        token(tenant),
        token(pbx),
        partition(call_id, cfg.partitions),
        token(call_id)
    )
}

impl Message {
    /// A lifecycle moment, with its data.
    pub(crate) fn moment(cfg: &NatsConfig, m: &Moment, data: Arc<MomentData>) -> Message {
        let pbx = &m.record.cdr.pbxId;
        Message {
            subject: format!(
                "{}.moment.{}.{}",
                cfg.subject_prefix,
                route(cfg, m.record.tenant_id(), pbx, &m.call_id),
                m.trigger.name()
            ),
            id: moment_id(&m.call_id, m.trigger),
            body: Body::Moment(data),
        }
    }

    /// A finished call's CDR.
    pub(crate) fn cdr(cfg: &NatsConfig, record: &CallRecord) -> Message {
        let cdr = &record.cdr;
        Message {
            subject: format!(
                "{}.cdr.{}",
                cfg.subject_prefix,
                route(cfg, record.tenant_id(), &cdr.pbxId, &cdr.id)
            ),
            id: cdr_id(&cdr.id),
            body: Body::Cdr(Box::new(cdr.clone()), record.tenant_id().to_owned()),
        }
    }
}

/// A dead letter as announced on the bus (and read back by `deliveries fleet`): it names
/// the delivery without its URL, headers or body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename = "dead", rename_all = "camelCase")]
pub struct DeadLetterNotice {
    /// The announcement's id: `dead_WEBHOOK-ID_ATTEMPTS`.
    pub id: String,
    /// The delivery's `webhook-id`.
    pub webhook_id: String,
    /// The webhook.
    pub webhook: String,
    /// The trigger.
    pub trigger: String,
    /// The call.
    pub call_id: String,
    /// The call's tenant (empty: none).
    pub tenant_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last answer's status, if any.
    pub status: Option<u16>,
    /// The last error, if any.
    pub error: Option<String>,
    /// When it died (unix ms).
    pub at_ms: i64,
    /// The worker whose outbox holds it.
    pub worker: String,
}

/// A dead letter's announcement, published by the worker that gave up on it: subject
/// `PREFIX.dead.TENANT.WEBHOOK`, id `dead_WEBHOOK-ID_ATTEMPTS` (announced again after a
/// restart, stored once; dead again after a retry, announced again), and its body.
pub(crate) fn dead_letter(
    cfg: &NatsConfig,
    d: &DeadLetter,
    worker: &str,
) -> (String, DeadLetterNotice) {
    let subject = format!(
        "{}.dead.{}.{}",
        cfg.subject_prefix,
        token(&d.tenant),
        token(&d.webhook)
    );
    let notice = DeadLetterNotice {
        id: format!("dead_{}_{}", d.id, d.attempts),
        webhook_id: d.id.clone(),
        webhook: d.webhook.clone(),
        trigger: d.trigger.clone(),
        call_id: d.call_id.clone(),
        tenant_id: d.tenant.clone(),
        attempts: d.attempts,
        status: d.status,
        error: d.error.clone(),
        at_ms: d.cursor.at_ms,
        worker: worker.to_owned(),
    };
    (subject, notice)
}

/// A message as its queue keeps it: the id, and `{"subject", "id", "message"}`.
pub(crate) fn queued(m: Message) -> (String, String) {
    let message = match &m.body {
        Body::Moment(d) => serde_json::to_value(Envelope {
            kind: "moment",
            id: &m.id,
            tenant_id: &d.tenant,
            pbx_id: d.text("pbxId"),
            call_id: &d.call_id,
            body: json!({ "moment": &**d }),
        }),
        Body::Cdr(c, tenant) => serde_json::to_value(Envelope {
            kind: "cdr",
            id: &m.id,
            tenant_id: tenant,
            pbx_id: &c.pbxId,
            call_id: &c.id,
            body: json!({ "cdr": c }),
        }),
    }
    .unwrap_or(Value::Null);
    let row = json!({ "subject": m.subject, "id": m.id, "message": message });
    (m.id, row.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_partitions_and_ids_are_stable() {
        assert_eq!(token("pbx1.example.com"), "pbx1_example_com");
        assert_eq!(token(""), "_");
        assert_eq!(token("a*b>c d"), "a_b_c_d");
        // The same call lands in the same partition on every machine and every version:
        // FNV-1a, 64 bits, as published.
        assert_eq!(partition("7f5e0f6e-6c8f-4c5e-9d4b-1a2b3c4d5e6f", 16), 14);
        let spread: std::collections::HashSet<u32> = (0..200)
            .map(|i| partition(&format!("call-{i}"), 16))
            .collect();
        assert_eq!(spread.len(), 16);
        let hangup = Trigger::parse("call.hangup").unwrap();
        assert_eq!(moment_id("c1", hangup), moment_id("c1", hangup));
        assert_ne!(moment_id("c1", hangup), moment_id("c2", hangup));
        assert_eq!(cdr_id("c1"), "cdr_c1");
    }
}
