//! What a moment gives its webhooks to render: built once per moment for every webhook, and
//! kept in the outbox beside the requests made of it, so that a delivery can be rendered
//! again later under the configuration of that day (a corrected URL or template).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::session::cdr::{CallKind, Times};
use crate::session::{Moment, Trigger};

/// A moment's data, made when first asked for and then shared by whoever renders or
/// publishes the moment (webhooks and the bus make it once between them).
#[derive(Debug, Default)]
pub(crate) struct LazyData(std::sync::OnceLock<std::sync::Arc<MomentData>>);

impl LazyData {
    /// `m`'s data (`m` must be the moment this belongs to).
    pub(crate) fn get(&self, m: &Moment) -> &std::sync::Arc<MomentData> {
        self.0
            .get_or_init(|| std::sync::Arc::new(MomentData::of(m)))
    }
}

/// One moment of one call, as the webhooks see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MomentData {
    /// What happened.
    pub(crate) trigger: Trigger,
    /// The call's session id.
    pub(crate) call_id: String,
    /// The moment's sequence number in its call.
    pub(crate) seq: u32,
    /// The event time that revealed it, µs.
    pub(crate) at_us: i64,
    /// Whether the call had ended.
    pub(crate) ended: bool,
    /// The call type.
    pub(crate) kind: CallKind,
    /// The call's tenant (its PBX's id when none is set).
    #[serde(default)]
    pub(crate) tenant: String,
    /// Start, answer and end, µs (for webhooks that render times in a zone of their own).
    pub(crate) times: Times,
    /// What the trigger adds.
    pub(crate) detail: Map<String, Value>,
    /// Everything templates and filters may name: the CDR, the flat fields, the trigger and
    /// its detail.
    pub(crate) fields: Map<String, Value>,
}

impl MomentData {
    /// The moment's data.
    pub(crate) fn of(m: &Moment) -> MomentData {
        MomentData {
            trigger: m.trigger,
            call_id: m.call_id.clone(),
            seq: m.seq,
            at_us: m.at_us,
            ended: m.ended,
            kind: m.record.kind,
            tenant: m.record.tenant_id().to_owned(),
            times: m.record.times,
            detail: m.detail.clone(),
            fields: fields_of(m),
        }
    }

    /// A text field (`ddiNum`…), empty when absent.
    pub(crate) fn text(&self, field: &str) -> &str {
        self.fields
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// About how many bytes it holds in memory (what the delivery queue's bounds count).
    pub(crate) fn memory(&self) -> usize {
        256 + self.call_id.len() + map_bytes(&self.detail) + map_bytes(&self.fields)
    }
}

/// The fields every webhook sees for a moment: the CDR, the flat fields, the trigger
/// and what it adds.
fn fields_of(m: &Moment) -> Map<String, Value> {
    let mut fields = match serde_json::to_value(&m.record.cdr) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    fields.extend(m.record.flat.clone());
    fields.insert("trigger".into(), m.trigger.name().into());
    fields.insert("sequence".into(), m.seq.into());
    fields.insert("callType".into(), m.record.kind.as_str().into());
    fields.insert("ended".into(), u8::from(m.ended).into());
    fields.extend(m.detail.clone());
    fields
}

fn map_bytes(map: &Map<String, Value>) -> usize {
    map.iter().map(|(k, v)| 32 + k.len() + value_bytes(v)).sum()
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => 24 + s.len(),
        Value::Array(a) => 24 + a.iter().map(value_bytes).sum::<usize>(),
        Value::Object(o) => 48 + map_bytes(o),
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_back_as_it_was_written_and_counts_what_it_holds() {
        let mut fields = Map::new();
        fields.insert("ddiNum".into(), "+13125550100".into());
        fields.insert("legs".into(), serde_json::json!([{"uuid": "a-b"}]));
        let data = MomentData {
            trigger: Trigger::ALL[0],
            call_id: "c1".into(),
            seq: 3,
            at_us: 1_700_000_000_000_000,
            ended: false,
            kind: CallKind::Inbound,
            tenant: "acme".into(),
            times: Times {
                start_us: 1,
                answer_us: Some(2),
                end_us: 3,
            },
            detail: Map::new(),
            fields,
        };
        let json = serde_json::to_string(&data).unwrap();
        assert_eq!(serde_json::from_str::<MomentData>(&json).unwrap(), data);
        assert_eq!(data.text("ddiNum"), "+13125550100");
        assert_eq!(data.text("legs"), "");
        assert!(
            data.memory() > json.len() / 2,
            "{} vs {}",
            data.memory(),
            json.len()
        );
    }
}
