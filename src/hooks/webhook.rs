//! `[[webhooks]]`: what users configure, compiled once, and the requests a moment produces.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::egress::{Egress, EgressConfig};
use super::filter::{Filter, FilterConfig};
use super::moment_data::{LazyData, MomentData};
use super::request::Request;
use super::retry::Schedule;
use super::sign::Signer;
use crate::problem::Problem;
use crate::session::cdr::{CallKind, Cdr, FLAT_FIELDS};
use crate::session::numbers::NumberReader;
use crate::session::{Moment, Trigger};
use crate::template::{text_of, Escape, Template};

/// HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// Data in the query string.
    Get,
    /// Data in the body.
    #[default]
    Post,
    /// Data in the body.
    Put,
}

impl Method {
    /// `GET`, `POST`, `PUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// Body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `application/json`.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// One `[[webhooks]]` entry: a configuration contract users script against.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name: the outbox and the logs know the webhook by it.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Trigger names (`call.hangup`…).
    pub triggers: Vec<String>,
    /// URL template.
    pub url: String,
    /// GET, POST or PUT.
    #[serde(default)]
    pub method: Method,
    /// json or form.
    #[serde(default)]
    pub format: Format,
    /// Retry attempts after the first, 0-10.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// IANA zone for the times it renders (`[sessions] time_zone` when unset).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// inbound, outbound, internal, click_to_call; empty: all.
    #[serde(default)]
    pub call_types: Vec<CallKind>,
    /// "My numbers": the DIDs it fires for (any form; compared in E.164); empty: all.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// The tenants whose calls it fires for (`[[tenants]]`, `[mapping] tenant`); empty: all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Conditions, all of which must hold.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// Extra headers (values are templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables (header name → variable), for
    /// tokens: added to each attempt as it is sent, never stored in the outbox, never logged.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Static key/values sent as `customData`.
    #[serde(default)]
    pub custom_data: Map<String, Value>,
    /// Standard Webhooks signing secret (`whsec_` + base64, 24 to 64 bytes), or a list of
    /// them, the newest first, while one replaces another (each signs every request).
    #[serde(default)]
    pub secret: Option<Secrets>,
    /// The environment variable that holds the signing secret instead (so it can live in
    /// `secrets.env` rather than the TOML file), several separated by spaces while one
    /// replaces another; read when the configuration is loaded.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Body template (the standard CloudSessionCdr payload when unset).
    #[serde(default)]
    pub body: Option<String>,
    /// Whether it fires at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `triggerId` in the payload (a stable id derived from the name when unset).
    #[serde(default)]
    pub trigger_id: Option<String>,
    /// `tenantId` and `id` in the payload (the call's tenant when unset, else its `pbxId`).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// A webhook failing without a single success for this long is disabled (a warning is
    /// logged at half of it).
    #[serde(default = "default_disable_after", with = "humantime_serde")]
    pub disable_after: Duration,
    /// When failed attempts are tried again: `linear` (attempt × 2 s, at most 10 retries) or
    /// `exponential` (10 s doubling up to `backoff_max`, ±25 %, at most 30 retries), for
    /// receivers that may be down for hours.
    #[serde(default)]
    pub backoff: BackoffKind,
    /// The longest wait of the exponential schedule.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// When the webhook answers again after failing, send its dead letters again, in order
    /// (what `switchhook deliveries retry --webhook NAME` does by hand).
    #[serde(default)]
    pub replay_dead_letters: bool,
}

/// `backoff`: the retry schedule's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// Attempt × 2 s.
    #[default]
    Linear,
    /// Doubling, capped, jittered.
    Exponential,
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(3600)
}

/// One signing secret, or several while one replaces another (the newest first).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Secrets {
    /// One secret.
    One(String),
    /// Several: every one signs each request.
    Several(Vec<String>),
}

/// The signing secrets, space-separated: `secret` itself, or the value of the variable
/// `secret_env` names. The errors name the variable, never a value.
fn secret_of(cfg: &WebhookConfig) -> Result<Option<String>, String> {
    match (&cfg.secret, &cfg.secret_env) {
        (Some(_), Some(_)) => Err("set secret or secret_env, not both".into()),
        (Some(Secrets::One(s)), None) => Ok(Some(s.clone())),
        (Some(Secrets::Several(list)), None) => Ok(Some(list.join(" "))),
        (None, Some(var)) => crate::secrets::from_env(var)
            .map(Some)
            .map_err(|e| e.to_string()),
        (None, None) => Ok(None),
    }
}

fn default_retries() -> u8 {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_disable_after() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn yes() -> bool {
    true
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("triggers", &self.triggers)
            .field("url", &self.url)
            .field("method", &self.method)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &self.secret_env)
            .field("headers_env", &self.headers_env)
            .finish_non_exhaustive()
    }
}

/// Names a moment offers to templates and filters besides the CDR's and the flat fields'.
pub(crate) const MOMENT_FIELDS: [&str; 14] = [
    "trigger",
    "sequence",
    "callType",
    "ended",
    "webhook",
    "triggerId",
    "tenantId",
    "digit",
    "digits",
    "menu",
    "answeredBy",
    "group",
    "dialed",
    "webhookId",
];

/// Whether templates and filters may name `field`.
pub(crate) fn is_known_field(field: &str) -> bool {
    Cdr::field_names().iter().any(|f| f == field)
        || FLAT_FIELDS.contains(&field)
        || MOMENT_FIELDS.contains(&field)
}

/// What decides whether a webhook is interested in a moment.
#[derive(Clone, Copy)]
struct Firing<'a> {
    trigger: Trigger,
    kind: CallKind,
    ddi: &'a str,
    cli: &'a str,
    tenant: &'a str,
}

/// A compiled webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Its configuration.
    pub config: WebhookConfig,
    triggers: Vec<Trigger>,
    url: Template,
    headers: Vec<(String, Template)>,
    body: Option<Template>,
    filters: Vec<Filter>,
    numbers: HashSet<String>,
    tz: Option<jiff::tz::TimeZone>,
    /// Its signing key.
    pub signer: Option<Signer>,
    /// The `headers_env` headers with their values, added per attempt.
    pub secret_headers: SecretHeaders,
    trigger_id: String,
}

/// Header values read from the environment. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct SecretHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
            .finish()
    }
}

/// All configured webhooks, compiled.
#[derive(Debug, Clone, Default)]
pub struct WebhookSet {
    hooks: Vec<Webhook>,
    egress: Arc<Egress>,
}

impl Webhook {
    /// Compiles one webhook; `at` is its key path (`webhooks[0]`).
    pub fn compile(
        cfg: &WebhookConfig,
        at: &str,
        numbers: &NumberReader,
    ) -> Result<Webhook, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &str, msg: String| problems.push(Problem::new(format!("{at}.{key}"), msg));
        if cfg.name.is_empty()
            || !cfg
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            bad(
                "name",
                format!("{:?}: use letters, digits, _ - .", cfg.name),
            );
        }
        let mut triggers = Vec::new();
        if cfg.triggers.is_empty() {
            bad("triggers", "name at least one trigger".into());
        }
        for (i, t) in cfg.triggers.iter().enumerate() {
            match Trigger::parse(t) {
                Some(t) => triggers.push(t),
                None => bad(
                    &format!("triggers[{i}]"),
                    format!(
                        "unknown trigger {t:?}; one of {}",
                        Trigger::ALL.map(Trigger::name).join(", ")
                    ),
                ),
            }
        }
        let url = Template::parse(&cfg.url);
        let check_fields = |key: &str, t: &Template, bad: &mut dyn FnMut(&str, String)| {
            for f in t.fields() {
                if !is_known_field(f) {
                    bad(key, format!("unknown placeholder {{{f}}}"));
                }
            }
        };
        check_fields("url", &url, &mut bad);
        // Call data may fill the path and query, never where the request goes.
        let authority = cfg.url.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        });
        if authority.contains('{') {
            bad(
                "url",
                format!(
                    "{:?}: the host, port and credentials cannot come from placeholders",
                    cfg.url
                ),
            );
        }
        let sample: Map<String, Value> = Map::new();
        match reqwest::Url::parse(&url.render(&sample, Escape::Url)) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => bad("url", format!("{:?}: must be http(s)://host/…", u.scheme())),
            Err(e) => bad("url", format!("{:?} is not a URL: {e}", cfg.url)),
        }
        let most = match cfg.backoff {
            BackoffKind::Linear => 10,
            BackoffKind::Exponential => 30,
        };
        if cfg.retries > most {
            bad(
                "retries",
                format!(
                    "{} is more than {most} (the {} schedule's most)",
                    cfg.retries,
                    match cfg.backoff {
                        BackoffKind::Linear => "linear",
                        BackoffKind::Exponential => "exponential",
                    }
                ),
            );
        }
        if cfg.timeout.is_zero() || cfg.timeout > Duration::from_secs(300) {
            bad("timeout", "must be between 1 ms and 5 min".into());
        }
        let tz = match &cfg.time_zone {
            Some(z) => match jiff::tz::TimeZone::get(z) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    bad("time_zone", format!("{z:?} is not an IANA time zone"));
                    None
                }
            },
            None => None,
        };
        let settable = |name: &str| {
            let reserved = name.to_ascii_lowercase().starts_with("webhook-")
                || name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("host");
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok() && !reserved
        };
        let mut headers = Vec::new();
        for (name, value) in &cfg.headers {
            if !settable(name) {
                bad(
                    &format!("headers.{name}"),
                    "not a header name switchhook may set".into(),
                );
            }
            let t = Template::parse(value);
            check_fields(&format!("headers.{name}"), &t, &mut bad);
            headers.push((name.clone(), t));
        }
        let mut secret_headers = Vec::new();
        for (name, var) in &cfg.headers_env {
            let key = format!("headers_env.{name}");
            if !settable(name) {
                bad(&key, "not a header name switchhook may set".into());
            } else if cfg.headers.keys().any(|h| h.eq_ignore_ascii_case(name)) {
                bad(&key, format!("{name} is in headers too"));
            }
            match crate::secrets::from_env(var) {
                // The message names the variable, never the value.
                Ok(v) if reqwest::header::HeaderValue::from_str(&v).is_err() => bad(
                    &key,
                    format!("the environment variable {var:?} is not a valid header value"),
                ),
                Ok(v) => secret_headers.push((name.clone(), v)),
                Err(e) => bad(&key, e.to_string()),
            }
        }
        let body = cfg.body.as_ref().map(|b| Template::parse(b));
        if let Some(t) = &body {
            check_fields("body", t, &mut bad);
            if cfg.format == Format::Json && cfg.method != Method::Get {
                if let Err(e) = t.check_json() {
                    bad("body", format!("not JSON once filled in: {e}"));
                }
            }
        }
        let mut filters = Vec::new();
        for (i, f) in cfg.filters.iter().enumerate() {
            match Filter::compile(f, is_known_field) {
                Ok(f) => filters.push(f),
                Err(e) => bad(&format!("filters[{i}]"), e),
            }
        }
        let mut dids = HashSet::new();
        for (i, n) in cfg.numbers.iter().enumerate() {
            let info = numbers.read(n);
            if info.e164.is_empty() {
                bad(
                    &format!("numbers[{i}]"),
                    format!("{n:?} is not a phone number"),
                );
            }
            dids.insert(info.e164);
        }
        let signer = match secret_of(cfg) {
            Ok(secret) => match secret.as_deref().map(Signer::new) {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    let key = if cfg.secret.is_some() {
                        "secret"
                    } else {
                        "secret_env"
                    };
                    bad(key, e.to_string());
                    None
                }
                None => None,
            },
            Err(e) => {
                bad("secret_env", e);
                None
            }
        };
        if cfg.disable_after < Duration::from_secs(1) {
            bad("disable_after", "must be at least 1 s".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let trigger_id = cfg.trigger_id.clone().unwrap_or_else(|| {
            uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("switchhook:webhook:{}", cfg.name).as_bytes(),
            )
            .to_string()
        });
        Ok(Webhook {
            config: cfg.clone(),
            triggers,
            url,
            headers,
            body,
            filters,
            numbers: dids,
            tz,
            signer,
            secret_headers: SecretHeaders(secret_headers),
            trigger_id,
        })
    }

    /// Whether the webhook is interested in a moment before its filters are looked at
    /// (checked first: most webhooks skip most moments, and building fields costs).
    fn fires_for(&self, m: Firing<'_>) -> bool {
        self.config.enabled
            && self.triggers.contains(&m.trigger)
            && (self.config.call_types.is_empty() || self.config.call_types.contains(&m.kind))
            && (self.numbers.is_empty()
                || self.numbers.contains(m.ddi)
                || self.numbers.contains(m.cli))
            && (self.config.tenants.is_empty() || self.config.tenants.iter().any(|t| t == m.tenant))
    }

    /// The request this webhook sends for a moment, if it fires.
    pub(crate) fn request(&self, m: &Arc<MomentData>) -> Option<Request> {
        let firing = Firing {
            trigger: m.trigger,
            kind: m.kind,
            ddi: m.text("ddiNum"),
            cli: m.text("cliNum"),
            tenant: &m.tenant,
        };
        if !self.fires_for(firing) {
            return None;
        }
        let mut fields = m.fields.clone();
        let tenant = self.config.tenant_id.clone().unwrap_or_else(|| {
            if m.tenant.is_empty() {
                m.text("pbxId").to_owned()
            } else {
                m.tenant.clone()
            }
        });
        let id = message_id(&self.config.name, &m.call_id, m.trigger);
        fields.insert("webhook".into(), self.config.name.clone().into());
        fields.insert("triggerId".into(), self.trigger_id.clone().into());
        fields.insert("tenantId".into(), tenant.clone().into());
        fields.insert("webhookId".into(), id.clone().into());
        if let Some(tz) = &self.tz {
            retime(
                &mut fields,
                m,
                tz,
                self.config.time_zone.as_deref().unwrap_or_default(),
            );
        }
        if !self.filters.iter().all(|f| f.matches(&fields)) {
            return None;
        }
        let method = self.config.method;
        let mut url = self.url.render(&fields, Escape::Url);
        let mut headers: Vec<(String, String)> = Vec::new();
        let body = match (method, &self.body) {
            (Method::Get, Some(t)) => {
                append_query(&mut url, &t.render(&fields, Escape::Form));
                String::new()
            }
            (Method::Get, None) => {
                append_query(
                    &mut url,
                    &form_pairs(&self.payload_pairs(m, &fields, &tenant)),
                );
                String::new()
            }
            (_, Some(t)) => {
                let escape = match self.config.format {
                    Format::Json => Escape::Json,
                    Format::Form => Escape::Form,
                };
                t.render(&fields, escape)
            }
            (_, None) => match self.config.format {
                Format::Json => self.payload_json(m, &fields, &tenant).to_string(),
                Format::Form => form_pairs(&self.payload_pairs(m, &fields, &tenant)),
            },
        };
        if method != Method::Get {
            let ct = match self.config.format {
                Format::Json => "application/json",
                Format::Form => "application/x-www-form-urlencoded",
            };
            headers.push(("content-type".into(), ct.into()));
        }
        headers.push((
            "user-agent".into(),
            concat!("switchhook/", env!("CARGO_PKG_VERSION")).into(),
        ));
        for (name, t) in &self.headers {
            headers.push((name.clone(), t.render(&fields, Escape::Header)));
        }
        Some(Request {
            id,
            webhook: self.config.name.clone(),
            trigger: m.trigger.name().into(),
            call_id: m.call_id.clone(),
            seq: m.seq,
            method: method.as_str().into(),
            url,
            headers,
            body,
            signed: self.signer.is_some(),
            max_attempts: 1 + u32::from(self.config.retries),
            schedule: match self.config.backoff {
                BackoffKind::Linear => Schedule::Linear,
                BackoffKind::Exponential => Schedule::Exponential {
                    max_ms: self.config.backoff_max.as_millis().min(u64::MAX as u128) as u64,
                },
            },
            timeout_ms: self.config.timeout.as_millis().min(u64::MAX as u128) as u64,
            at_us: m.at_us,
            moment: Some(Arc::clone(m)),
            moment_bytes: 0,
        })
    }

    /// The standard payload: `triggerId`, `id`, `tenantId`, `cdr`, `customData`, plus the
    /// trigger, the per-call sequence number and what the trigger adds.
    fn payload_json(&self, m: &MomentData, fields: &Map<String, Value>, tenant: &str) -> Value {
        // The CDR as the fields hold it (serialized once per moment, retimed for this webhook).
        let cdr: Map<String, Value> = Cdr::field_names()
            .iter()
            .filter_map(|k| fields.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        let mut p = Map::new();
        p.insert("triggerId".into(), self.trigger_id.clone().into());
        p.insert("id".into(), tenant.into());
        p.insert("tenantId".into(), tenant.into());
        p.insert("trigger".into(), m.trigger.name().into());
        p.insert("sequence".into(), m.seq.into());
        p.insert("callType".into(), m.kind.as_str().into());
        p.insert("ended".into(), m.ended.into());
        if !m.detail.is_empty() {
            p.insert("detail".into(), Value::Object(m.detail.clone()));
        }
        p.insert("cdr".into(), Value::Object(cdr));
        p.insert(
            "customData".into(),
            Value::Object(self.config.custom_data.clone()),
        );
        Value::Object(p)
    }

    /// The same payload flattened to key/value pairs (form bodies, GET query strings).
    fn payload_pairs(
        &self,
        m: &MomentData,
        fields: &Map<String, Value>,
        tenant: &str,
    ) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = vec![
            ("triggerId".into(), self.trigger_id.clone()),
            ("id".into(), tenant.into()),
            ("tenantId".into(), tenant.into()),
            ("trigger".into(), m.trigger.name().into()),
            ("sequence".into(), m.seq.to_string()),
            ("callType".into(), m.kind.as_str().into()),
            ("ended".into(), if m.ended { "1" } else { "0" }.into()),
        ];
        // Every key once: a CDR or custom key that the envelope already uses is sent under
        // its JSON path (`cdr.id`, `customData.trigger`).
        let mut taken: HashSet<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        let mut push = |pairs: &mut Vec<(String, String)>, prefix: &str, k: &str, v: String| {
            let key = if taken.contains(k) {
                format!("{prefix}.{k}")
            } else {
                k.to_owned()
            };
            taken.insert(key.clone());
            pairs.push((key, v));
        };
        for (k, v) in &m.detail {
            push(&mut pairs, "detail", k, text_of(v));
        }
        let names = Cdr::field_names().iter().map(String::as_str);
        for name in names.chain(FLAT_FIELDS.iter().copied()) {
            if matches!(name, "timeline" | "recordings") {
                continue;
            }
            if let Some(v) = fields.get(name).filter(|v| !v.is_null()) {
                push(&mut pairs, "cdr", name, text_of(v));
            }
        }
        for (k, v) in &self.config.custom_data {
            push(&mut pairs, "customData", k, text_of(v));
        }
        pairs
    }
}

fn form_pairs(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn append_query(url: &mut String, query: &str) {
    if query.is_empty() {
        return;
    }
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(query);
}

/// Renders the moment's times in the webhook's own zone.
fn retime(fields: &mut Map<String, Value>, m: &MomentData, tz: &jiff::tz::TimeZone, name: &str) {
    let fmt = |us: i64| match jiff::Timestamp::from_microsecond(us) {
        Ok(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => String::new(),
    };
    let t = m.times;
    fields.insert("tz".into(), name.into());
    fields.insert("start".into(), fmt(t.start_us).into());
    fields.insert("call-date".into(), fmt(t.start_us).into());
    fields.insert("end".into(), fmt(t.end_us).into());
    if let Some(a) = t.answer_us {
        fields.insert("answer".into(), fmt(a).into());
    }
}

/// The `webhook-id` of a webhook's request for one trigger of one call: the same on every
/// attempt, after a restart and in replay, so receivers can de-duplicate.
pub(crate) fn message_id(webhook: &str, call_id: &str, trigger: Trigger) -> String {
    let name = format!("{webhook}\n{call_id}\n{}", trigger.name());
    format!(
        "msg_{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).simple()
    )
}

/// Where the built-in example webhook posts (what `replay --emit webhooks` shows without a
/// configuration, and what `demo` receives).
pub(crate) const EXAMPLE_URL: &str = "http://127.0.0.1:8080/hooks/{trigger}";

impl WebhookSet {
    /// One webhook on every trigger, posting the default JSON payload to [`EXAMPLE_URL`].
    pub fn example() -> WebhookSet {
        let cfg = WebhookConfig {
            name: "example".into(),
            description: "every trigger, default payload".into(),
            triggers: Trigger::ALL.iter().map(|t| t.name().to_owned()).collect(),
            url: EXAMPLE_URL.into(),
            method: Method::Post,
            format: Format::Json,
            retries: default_retries(),
            timeout: default_timeout(),
            time_zone: None,
            call_types: Vec::new(),
            numbers: Vec::new(),
            tenants: Vec::new(),
            filters: Vec::new(),
            headers: BTreeMap::new(),
            custom_data: Map::new(),
            secret: None,
            secret_env: None,
            headers_env: BTreeMap::new(),
            body: None,
            enabled: true,
            trigger_id: None,
            tenant_id: None,
            disable_after: default_disable_after(),
            backoff: BackoffKind::Linear,
            backoff_max: default_backoff_max(),
            replay_dead_letters: false,
        };
        let numbers = NumberReader::new(&Default::default());
        // A local receiver to try things with: loopback allowed.
        let egress = EgressConfig {
            allow: vec!["127.0.0.1".into()],
            ..EgressConfig::default()
        };
        WebhookSet::compile(&[cfg], &egress, &numbers).unwrap_or_default()
    }

    /// Compiles every webhook; all problems are reported, each with its key path.
    pub fn compile(
        configs: &[WebhookConfig],
        egress: &EgressConfig,
        numbers: &NumberReader,
    ) -> Result<WebhookSet, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut hooks = Vec::new();
        let egress = match Egress::compile(egress) {
            Ok(e) => e,
            Err(p) => {
                problems.extend(p);
                Egress::default()
            }
        };
        let mut names = HashSet::new();
        for (i, cfg) in configs.iter().enumerate() {
            let at = format!("webhooks[{i}]");
            if !names.insert(cfg.name.as_str()) {
                problems.push(Problem::new(
                    format!("{at}.name"),
                    format!("{:?} is used twice", cfg.name),
                ));
            }
            match Webhook::compile(cfg, &at, numbers) {
                Ok(h) => {
                    // An address in the URL is known now; a host name when it is resolved.
                    if let Err(why) = egress.check_url(&h.url.render(&Map::new(), Escape::Url)) {
                        problems.push(Problem::new(format!("{at}.url"), why));
                    }
                    hooks.push(h)
                }
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() {
            Ok(WebhookSet {
                hooks,
                egress: Arc::new(egress),
            })
        } else {
            Err(problems)
        }
    }

    /// Where requests may go.
    pub fn egress(&self) -> &Arc<Egress> {
        &self.egress
    }

    /// The webhooks.
    pub fn hooks(&self) -> &[Webhook] {
        &self.hooks
    }

    /// The webhook called `name`.
    pub fn get(&self, name: &str) -> Option<&Webhook> {
        self.hooks.iter().find(|h| h.config.name == name)
    }

    /// Every request the moment produces, in configuration order.
    pub fn plan(&self, m: &Moment) -> Vec<Request> {
        self.plan_lazy(m, &LazyData::default())
    }

    /// [`WebhookSet::plan`], with the moment's data made once for every user of it (`data`
    /// belongs to `m`).
    pub(crate) fn plan_lazy(&self, m: &Moment, data: &LazyData) -> Vec<Request> {
        let cdr = &m.record.cdr;
        let firing = Firing {
            trigger: m.trigger,
            kind: m.record.kind,
            ddi: &cdr.ddiNum,
            cli: &cdr.cliNum,
            tenant: m.record.tenant_id(),
        };
        let interested = |h: &Webhook| h.fires_for(firing);
        if !self.hooks.iter().any(interested) {
            return Vec::new();
        }
        self.plan_data(data.get(m))
    }

    /// Every request a moment's data produces (a moment taken from the bus), in
    /// configuration order.
    pub(crate) fn plan_data(&self, data: &Arc<MomentData>) -> Vec<Request> {
        let mut requests: Vec<Request> =
            self.hooks.iter().filter_map(|h| h.request(data)).collect();
        if !requests.is_empty() {
            let bytes = data.memory();
            for r in &mut requests {
                r.moment_bytes = bytes;
            }
        }
        requests
    }
}
