//! `[log]`: what is logged and how, and the subscriber that writes it to stderr.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::problem::Problem;

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `switchhook=debug`…); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogConfig {
    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<Problem> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Vec::new(),
            Err(_) => vec![Problem::new(
                "log.level",
                format!("{:?} is not a tracing filter", self.level),
            )],
        }
    }
}

/// Starts logging to stderr at `level` (`RUST_LOG` wins when set).
pub(crate) fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a journal or a log file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Fields that hold a JSON document (the CDR of "call finished"): a JSON line carries them
/// as objects, so a log shipper or `jq` reads them without decoding twice.
const JSON_FIELDS: &[&str] = &["cdr"];

/// One JSON object per event, everything at the top level, as log shippers expect:
/// `timestamp`, `level`, `target`, `message`, then the event's fields.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            jiff::Timestamp::now().to_string().into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        // Its place, filled when the message is visited.
        line.insert("message".into(), Value::Null);
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Puts an event's fields into a JSON line.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let v = match JSON_FIELDS.contains(&field.name()) {
            true => serde_json::from_str(value).unwrap_or_else(|_| value.into()),
            false => value.into(),
        };
        self.put(field, v);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_has_its_message_and_fields_on_top_and_the_cdr_as_an_object() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let cdr = r#"{"id":"c1","talk":5}"#;
            tracing::info!(call_id = %"c1", partial = false, n = 3, %cdr, "call finished");
            tracing::warn!(error = %"refused", "cannot connect");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["message"], "call finished");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["call_id"], "c1");
        assert_eq!(first["partial"], false);
        assert_eq!(first["n"], 3);
        assert_eq!(first["cdr"]["talk"], 5);
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(keys[..4], ["timestamp", "level", "target", "message"]);
        assert_eq!(lines[1]["error"], "refused");
        assert_eq!(lines[1]["level"], "WARN");
    }
}
