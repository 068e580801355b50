//! The admin HTTP server (axum): `/metrics`, `/healthz`, `/readyz`, and the live page (`/`,
//! which polls `/live.json`).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::auth::{self, Credentials};
use super::metrics::{Snapshot, Sources};
use crate::hooks::store::Admin;

/// A bound admin endpoint.
pub(crate) struct AdminServer {
    listener: tokio::net::TcpListener,
    credentials: Option<Credentials>,
}

impl AdminServer {
    /// Binds `addr`.
    pub(crate) async fn bind(addr: &str) -> std::io::Result<AdminServer> {
        Ok(AdminServer {
            listener: tokio::net::TcpListener::bind(addr).await?,
            credentials: None,
        })
    }

    /// Requires these credentials on the live page, its data and `/metrics`.
    pub(crate) fn require(mut self, credentials: Option<Credentials>) -> AdminServer {
        self.credentials = credentials;
        self
    }

    /// Serves what `sources` hold until `stop`.
    pub(crate) async fn serve(self, sources: Sources, stop: CancellationToken) {
        // Call data and metrics behind the credentials, if any; the probes stay open.
        let mut guarded = axum::Router::new()
            .route("/metrics", get(metrics))
            .route("/", get(live_page))
            .route("/live.json", get(live_json));
        if let Some(creds) = self.credentials {
            guarded = guarded.layer(axum::middleware::from_fn_with_state(creds, auth::require));
        }
        let app = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .merge(guarded)
            .with_state(sources);
        let _ = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    }
}

/// The outbox's rows per state, read on a blocking thread; Err: the outbox does not answer.
async fn outbox_depth(s: &Sources) -> Result<Vec<(String, i64)>, String> {
    let path = s.outbox.clone();
    tokio::task::spawn_blocking(move || {
        Admin::open_read_only(&path)
            .and_then(|a| a.counts())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn readyz(State(s): State<Sources>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if s.esl
        .as_ref()
        .is_some_and(|esl| !esl.connected.load(Ordering::Relaxed))
    {
        problems.push("event socket not connected and subscribed".to_owned());
    }
    if s.worker
        .as_ref()
        .is_some_and(|w| !w.connected.load(Ordering::Relaxed))
    {
        problems.push("not connected to NATS".to_owned());
    }
    if let Err(e) = outbox_depth(&s).await {
        problems.push(format!("outbox: {e}"));
    }
    if let Some(p) = s.delivery.outbox_problem() {
        problems.push(p);
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

/// The live page: static, it polls `/live.json`.
const LIVE_PAGE: &str = include_str!("live.html");

async fn live_page() -> impl IntoResponse {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            // The page's own inline script and style, its own JSON, nothing from elsewhere.
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        LIVE_PAGE,
    )
}

async fn live_json(State(s): State<Sources>) -> impl IntoResponse {
    (
        [("cache-control", "no-store")],
        axum::Json(s.live.page(s.delivery.recent())),
    )
}

/// `/metrics`: OpenMetrics when the scraper asks for it (Prometheus does), else the classic
/// text format (`curl`, `promtool check metrics`, older scrapers).
async fn metrics(State(s): State<Sources>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let depth = outbox_depth(&s).await.unwrap_or_default();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::new(s, depth)));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) if openmetrics => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            super::metrics::classic_text(&text),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "encoding failed\n".to_owned(),
        ),
    }
}
