//! Asking the routing server: one HTTP call (with retries) inside a caller-sized deadline,
//! guarded by a circuit breaker per URL, backed by a last-known-good cache.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::breaker::{Admission, BreakerConfig, Breakers};
use super::config::RouteConfig;
use super::reply::{judge, Decision, ReplyRules, RoutingStatus};
use crate::template::{Escape, Template};

/// Where a step's decision came from (`switchhook_source`, the CDR's `routeSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The routing server answered (or failed to: see the status).
    Server,
    /// The server failed and a cached ACK for the same (did, callerid, code) was used.
    Cache,
    /// The URL's circuit breaker is open: the server was not asked.
    CircuitOpen,
    /// The digit menu failed (no code): the server was not asked.
    Menu,
    /// switchhook itself: no such route, or the step could not run.
    Switchhook,
}

impl Source {
    /// The token set as `switchhook_source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Server => "server",
            Source::Cache => "cache",
            Source::CircuitOpen => "circuit_open",
            Source::Menu => "menu",
            Source::Switchhook => "switchhook",
        }
    }
}

/// What the routing server is asked: the values the URL template may name.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// The digits the caller entered (menu), or empty.
    pub code: String,
    /// The number the caller dialled.
    pub did: String,
    /// The caller's number.
    pub callerid: String,
    /// The caller's name.
    pub callername: String,
    /// Channel-data headers named by the template (`variable_…`, `Caller-…`).
    pub extra: Map<String, Value>,
}

impl Question {
    fn fields(&self) -> Map<String, Value> {
        let mut m = self.extra.clone();
        m.insert("code".into(), self.code.clone().into());
        m.insert("did".into(), self.did.clone().into());
        m.insert("callerid".into(), self.callerid.clone().into());
        m.insert("callername".into(), self.callername.clone().into());
        m
    }

    fn cache_key(&self) -> (String, String, String) {
        (self.did.clone(), self.callerid.clone(), self.code.clone())
    }
}

/// A decision and how it was reached.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The decision.
    pub decision: Decision,
    /// Where it came from.
    pub source: Source,
    /// Time spent asking (zero when the server was not asked).
    pub latency: Duration,
    /// HTTP calls made.
    pub attempts: u32,
}

/// A route compiled for lookups.
#[derive(Debug, Clone)]
pub struct Route {
    /// The configuration.
    pub config: RouteConfig,
    url: Template,
    /// The URL as the channel and the CDR show it: see [`redacted`].
    pub shown_url: String,
}

impl Route {
    /// Compiles a (checked) route.
    pub fn new(config: RouteConfig) -> Route {
        Route {
            url: Template::parse(&config.url),
            shown_url: redacted(&config.url),
            config,
        }
    }

    /// The channel-data headers the URL names, beyond the four fixed fields.
    pub fn channel_fields(&self) -> impl Iterator<Item = &str> {
        self.url
            .fields()
            .filter(|f| super::config::is_channel_field(f))
    }
}

/// A route's URL template as the channel and the CDR show it: scheme, host and path, its
/// placeholders empty (no caller's data), without the query or any `user:password@` (they may
/// hold API keys, and the CDR travels to other systems). The template is rendered and parsed
/// as the configuration check does, so a checked route always has one.
pub(crate) fn redacted(url: &str) -> String {
    let rendered = Template::parse(url).render(&Map::new(), Escape::Url);
    let Ok(mut u) = reqwest::Url::parse(&rendered) else {
        return String::new();
    };
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.into()
}

type Cache = LruCache<(String, String, String), (Decision, Instant)>;

/// Asks routing servers. Shared by every call; breakers and caches outlive reloads.
pub struct Asker {
    http: reqwest::Client,
    breakers: Breakers,
    caches: Mutex<HashMap<String, Cache>>,
    cache_max: NonZeroUsize,
}

/// What one HTTP attempt gave.
enum Attempt {
    Replied(u16, Option<String>, Vec<u8>),
    Failed(String),
}

impl Asker {
    /// An asker with its breaker settings and cache bound.
    pub fn new(breaker: BreakerConfig, cache_max: usize) -> Asker {
        let http = reqwest::Client::builder()
            .user_agent(concat!("switchhook/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the TLS backend initialises");
        Asker {
            http,
            breakers: Breakers::new(breaker),
            caches: Mutex::new(HashMap::new()),
            cache_max: NonZeroUsize::new(cache_max.max(1)).expect("at least 1"),
        }
    }

    /// Asks the route's server within its deadline; falls back on the cache when it fails.
    pub async fn ask(&self, route: &Route, q: &Question, rules: &ReplyRules) -> Answer {
        let started = Instant::now();
        let deadline = started + route.config.deadline;
        let key = route.config.url.as_str();
        let mut attempts = 0;
        let (decision, source) = loop {
            if self.breakers.admit(key) == Admission::Refused {
                break (
                    Decision::bare(
                        RoutingStatus::Err,
                        "circuit open: the routing server failed repeatedly, not asked",
                    ),
                    Source::CircuitOpen,
                );
            }
            attempts += 1;
            let attempt = tokio::time::timeout_at(deadline, self.once(route, q, rules)).await;
            let retry_left = attempts <= route.config.retries
                && deadline.saturating_duration_since(Instant::now()) > Duration::from_millis(50);
            match attempt {
                Err(_) => {
                    self.breakers.record(key, false);
                    break (
                        Decision::bare(
                            RoutingStatus::Timeout,
                            format!(
                                "no answer within {}",
                                humantime::format_duration(route.config.deadline)
                            ),
                        ),
                        Source::Server,
                    );
                }
                Ok(Attempt::Failed(why)) => {
                    self.breakers.record(key, false);
                    if retry_left {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    break (
                        Decision::bare(
                            RoutingStatus::Err,
                            format!("could not reach the routing server: {why}"),
                        ),
                        Source::Server,
                    );
                }
                Ok(Attempt::Replied(status, ctype, body)) => {
                    let transient = status >= 500 || status == 429;
                    self.breakers.record(key, !transient);
                    if transient && retry_left {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    break (
                        judge(status, ctype.as_deref(), &body, rules),
                        Source::Server,
                    );
                }
            }
        };
        let latency = if attempts == 0 {
            Duration::ZERO
        } else {
            started.elapsed()
        };
        let mut answer = Answer {
            decision,
            source,
            latency,
            attempts,
        };
        self.consult_cache(route, q, &mut answer);
        answer
    }

    /// Stores a fresh ACK; replaces a server failure by a fresh cached ACK.
    fn consult_cache(&self, route: &Route, q: &Question, answer: &mut Answer) {
        let ttl = route.config.cache_ttl;
        if ttl.is_zero() {
            return;
        }
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let cache = caches
            .entry(route.config.name.clone())
            .or_insert_with(|| LruCache::new(self.cache_max));
        let status = answer.decision.status;
        if status == RoutingStatus::Ack && answer.source == Source::Server {
            cache.put(q.cache_key(), (answer.decision.clone(), Instant::now()));
            return;
        }
        if !matches!(status, RoutingStatus::Err | RoutingStatus::Timeout) {
            return;
        }
        let key = q.cache_key();
        match cache.get(&key) {
            Some((cached, at)) if at.elapsed() <= ttl => {
                let mut d = cached.clone();
                d.reason = format!(
                    "{}; used the last known good answer from {} s ago",
                    answer.decision.reason,
                    at.elapsed().as_secs()
                );
                answer.decision = d;
                answer.source = Source::Cache;
            }
            Some(_) => {
                cache.pop(&key);
            }
            None => {}
        }
    }

    async fn once(&self, route: &Route, q: &Question, rules: &ReplyRules) -> Attempt {
        let fields = q.fields();
        let url = route.url.render(&fields, Escape::Url);
        let req = if route.config.method == "POST" {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &fields {
                form.append_pair(k, &crate::template::text_of(v));
            }
            self.http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.finish())
        } else {
            self.http.get(&url)
        };
        let resp = req
            .header(
                "accept",
                "application/x-www-form-urlencoded, application/json;q=0.9, text/plain;q=0.8",
            )
            .send()
            .await;
        let mut resp = match resp {
            // Without the URL: it holds the caller's number and maybe a token.
            Err(e) => return Attempt::Failed(describe(e.without_url())),
            Ok(r) => r,
        };
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read at most one byte past the limit: enough for `judge` to refuse an overlong body
        // without holding a hostile server's gigabytes.
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    body.extend_from_slice(&c);
                    if body.len() > rules.body_max() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Attempt::Failed(describe(e.without_url())),
            }
        }
        Attempt::Replied(status, ctype, body)
    }
}

fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_url_keeps_scheme_host_and_path_only() {
        for (url, shown) in [
            (
                "https://crm.example/route?code={code}&key=SECRET",
                "https://crm.example/route",
            ),
            (
                "https://bot:s3cret@crm.example:8443/r/in#frag",
                "https://crm.example:8443/r/in",
            ),
            ("http://127.0.0.1:8090", "http://127.0.0.1:8090/"),
            ("http://u:p@h?x", "http://h/"),
            // A caller's number in the path stays out too.
            (
                "https://crm.example/r/{did}/in",
                "https://crm.example/r//in",
            ),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    fn route(ttl: u64) -> Route {
        let mut c: RouteConfig = serde_json::from_value(
            serde_json::json!({"name": "r", "url": "http://127.0.0.1:9/route?did={did}"}),
        )
        .unwrap();
        c.cache_ttl = Duration::from_secs(ttl);
        Route::new(c)
    }

    fn q() -> Question {
        Question {
            did: "+441610007100".into(),
            callerid: "+447700900190".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_cache_keeps_acks_and_answers_only_for_failures() {
        let asker = Asker::new(
            BreakerConfig {
                failures: 0,
                cooldown: Duration::from_secs(1),
            },
            10,
        );
        let r = route(60);
        let ack = |status| Answer {
            decision: Decision {
                status,
                destination: Some("1003".into()),
                callername: None,
                reason: "x".into(),
            },
            source: Source::Server,
            latency: Duration::ZERO,
            attempts: 1,
        };
        let mut a = ack(RoutingStatus::Ack);
        asker.consult_cache(&r, &q(), &mut a);
        let mut nak = Answer {
            decision: Decision::bare(RoutingStatus::Nak, "no"),
            ..ack(RoutingStatus::Nak)
        };
        asker.consult_cache(&r, &q(), &mut nak);
        assert_eq!(
            nak.decision.status,
            RoutingStatus::Nak,
            "a NAK is an answer"
        );
        let mut err = Answer {
            decision: Decision::bare(RoutingStatus::Timeout, "no answer within 2s"),
            ..ack(RoutingStatus::Timeout)
        };
        asker.consult_cache(&r, &q(), &mut err);
        assert_eq!(err.decision.status, RoutingStatus::Ack);
        assert_eq!(err.decision.destination.as_deref(), Some("1003"));
        assert_eq!(err.source, Source::Cache);
        assert!(err.decision.reason.starts_with("no answer within 2s; used"));
        // Another caller has no cached answer.
        let mut other = Answer {
            decision: Decision::bare(RoutingStatus::Err, "down"),
            ..ack(RoutingStatus::Err)
        };
        let mut q2 = q();
        q2.callerid = "+447700900999".into();
        asker.consult_cache(&r, &q2, &mut other);
        assert_eq!(other.decision.status, RoutingStatus::Err);
    }

    #[tokio::test]
    async fn a_refused_connection_is_err_without_the_url() {
        let asker = Asker::new(
            BreakerConfig {
                failures: 2,
                cooldown: Duration::from_secs(60),
            },
            10,
        );
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let r = route(0);
        let a = asker.ask(&r, &q(), &ReplyRules::default()).await;
        assert_eq!(a.decision.status, RoutingStatus::Err);
        assert_eq!(a.attempts, 2, "one retry");
        assert!(a.decision.reason.contains("could not reach"), "{:?}", a);
        assert!(!a.decision.reason.contains("447700900190"), "{:?}", a);
        // Two failures opened the breaker: the next call does not even try.
        let b = asker.ask(&r, &q(), &ReplyRules::default()).await;
        assert_eq!(b.source, Source::CircuitOpen);
        assert_eq!(b.attempts, 0);
    }
}
