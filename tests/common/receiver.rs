//! A real HTTP receiver on 127.0.0.1 for webhook tests: answers by a script, records what
//! arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Retry-After` to send.
    pub retry_after: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// The body (`ok` unless set).
    pub body: String,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
}

impl Reply {
    /// A plain status.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            body: "ok".into(),
            content_type: None,
        }
    }

    /// A 200 with a body of that content type.
    pub fn body(content_type: &str, body: impl Into<String>) -> Reply {
        Reply {
            body: body.into(),
            content_type: Some(content_type.into()),
            ..Reply::status(200)
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers (lower-case names).
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

type Script = dyn Fn(&str, usize) -> Reply + Send + Sync;

struct Shared {
    script: Mutex<Arc<Script>>,
    seen: Mutex<Vec<Received>>,
    hits: Mutex<HashMap<String, usize>>,
    /// true: requests wait before they are answered, until [`Receiver::release`].
    gate: tokio::sync::watch::Sender<bool>,
}

/// A running receiver.
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let nth = {
        let mut hits = s.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let script = Arc::clone(&s.script.lock().unwrap());
    let reply = script(&path, nth);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let _ = s.gate.subscribe().wait_for(|held| !held).await;
    s.seen.lock().unwrap().push(Received {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        status: reply.status,
    });
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(ct) = reply.content_type {
        resp.headers_mut()
            .insert("content-type", ct.parse().unwrap());
    }
    if let Some(ra) = reply.retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    resp
}

impl Receiver {
    /// Starts a receiver answering by `script(path, nth request to that path)`.
    pub async fn start(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let shared = Arc::new(Shared {
            script: Mutex::new(Arc::new(script)),
            seen: Mutex::new(Vec::new()),
            hits: Mutex::new(HashMap::new()),
            gate: tokio::sync::watch::channel(false).0,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    /// Changes how it answers from now on.
    pub fn set_script(&self, script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// Requests arriving from now on wait, unanswered, until [`Receiver::release`].
    pub fn hold(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Answers the requests held and every later one at once.
    pub fn release(&self) {
        self.shared.gate.send_replace(false);
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Received> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests that have arrived at `path`, answered or not yet.
    pub fn arrived(&self, path: &str) -> usize {
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `done(seen)` holds or `limit` passes; returns whether it held.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if done(&self.seen()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done(&self.seen())
    }
}
