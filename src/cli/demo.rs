//! `switchhook demo`: the whole live pipeline on a bundled real capture, with no FreeSWITCH
//! and no configuration file.
//!
//! An embedded event-socket server streams the capture (five overlapping calls recorded from
//! FreeSWITCH 1.10) at real speed; `run`'s pipeline connects to it over TCP, assembles the
//! calls, commits every webhook to a durable outbox and delivers it to a local receiver that
//! prints what it gets.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::fake_freeswitch::{Pace, PlaybackConfig, PlaybackServer};
use crate::hooks::webhook::WebhookConfig;
use crate::pipeline::{Compiled, Pipeline};
use crate::session::{Settings, Trigger};

/// The bundled capture: scenario 16 of `fixtures/freeswitch-1.10` (a DDI call, a ring group,
/// a queue, an outbound call and a missed call, overlapping, about 18 s).
const CAPTURE: &[u8] = include_bytes!("../../fixtures/freeswitch-1.10/16-concurrent-mix.esl");
const CAPTURE_NAME: &str = "16-concurrent-mix.esl";

/// Demo options.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    /// 1.0: real time.
    pub speed: f64,
    /// Another capture instead of the bundled one.
    pub capture: Option<PathBuf>,
    /// Keep the admin endpoint (and its live page) up after the capture has played, until
    /// Ctrl-C or SIGTERM.
    pub stay: bool,
    /// Keep the temporary outbox (removed at exit otherwise, Ctrl-C included).
    pub keep: bool,
}

/// Runs the demo until the capture has played and its webhooks arrived (or Ctrl-C).
pub(crate) async fn run(opts: DemoOptions) -> ExitCode {
    match demo(opts).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(opts: DemoOptions) -> Result<ExitCode, String> {
    // Removed when dropped: on every way out, unless --keep.
    let tmp = tempfile::Builder::new()
        .prefix("switchhook-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let dir = tmp.path().to_path_buf();
    let capture = match opts.capture {
        Some(p) => p,
        None => {
            let p = dir.join(CAPTURE_NAME);
            std::fs::write(&p, CAPTURE).map_err(|e| e.to_string())?;
            p
        }
    };
    // How many calls the capture holds: the demo ends when each has had its hangup webhook.
    let calls = crate::replay::records(&capture, Arc::new(Settings::default()))
        .await
        .map_err(|e| format!("{}: {e}", capture.display()))?
        .into_iter()
        .filter(|r| r.cdr.partial.is_none())
        .count();
    let password = uuid::Uuid::new_v4().simple().to_string();
    let server = PlaybackServer::start(
        "127.0.0.1:0",
        PlaybackConfig {
            password: password.clone(),
            captures: vec![capture.clone()],
            pace: Pace::RealTime {
                speed: opts.speed.max(0.01),
            },
            faults: Default::default(),
        },
    )
    .await
    .map_err(|e| format!("cannot start the embedded event socket: {e}"))?;
    let hangups = Arc::new(AtomicUsize::new(0));
    let receiver = start_receiver(Arc::clone(&hangups)).await?;

    let mut cfg = Config::default();
    cfg.freeswitch.host = "127.0.0.1".into();
    cfg.freeswitch.port = server.addr().port();
    cfg.freeswitch.password = password;
    cfg.store.path = dir.join("outbox.db");
    let hook: WebhookConfig = serde_json::from_value(serde_json::json!({
        "name": "demo",
        "description": "every trigger, to the demo's own receiver",
        "triggers": Trigger::ALL.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "url": format!("http://{receiver}/webhook"),
        "secret": format!("whsec_{}", base64_secret()),
    }))
    .map_err(|e| e.to_string())?;
    cfg.webhooks = vec![hook];
    // The built-in receiver is on loopback, which webhooks may not reach unless allowed.
    cfg.egress.allow = vec![receiver.ip().to_string()];
    // The admin endpoint on a free loopback port.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    cfg.admin.listen = admin.to_string();

    println!("switchhook demo");
    println!(
        "  event socket  127.0.0.1:{} (embedded, streaming {} at {}x real time)",
        cfg.freeswitch.port,
        capture.display(),
        opts.speed
    );
    println!("  webhooks      http://{receiver}/webhook (a built-in receiver printing below)");
    println!(
        "  outbox        {} ({})",
        cfg.store.path.display(),
        if opts.keep {
            "kept after the demo"
        } else {
            "removed at exit; --keep keeps it"
        }
    );
    println!("  live page     http://{admin}/ (calls in progress, finished calls, deliveries)");
    println!("  admin         http://{admin}/metrics  /healthz  /readyz");
    println!("  {calls} calls to come; Ctrl-C stops\n");

    let stop = {
        let hangups = Arc::clone(&hangups);
        async move {
            let done = async {
                while hangups.load(Ordering::Relaxed) < calls {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Let the last deliveries be marked delivered.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if opts.stay {
                    println!(
                        "\nThe capture has played; the live page stays up at http://{admin}/ until Ctrl-C."
                    );
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = done => {}
                _ = crate::pipeline::shutdown_signal() => {}
            }
        }
    };
    let outbox = cfg.store.path.clone();
    let compiled = Compiled::new(&cfg).map_err(|problems| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut pipeline = Pipeline::start(cfg, compiled, None)
        .await
        .map_err(|e| e.to_string())?;
    pipeline.run(stop).await;
    pipeline.shutdown().await;
    println!(
        "\n{} of {calls} calls delivered their hangup webhook. See the README for `run` with your own FreeSWITCH.",
        hangups.load(Ordering::Relaxed)
    );
    drop(server);
    if opts.keep {
        let _ = tmp.keep();
        println!(
            "The outbox is kept: switchhook deliveries --db {} status",
            outbox.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A fresh 32-byte secret, base64 (the specification asks for 24 to 64 bytes).
fn base64_secret() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..2)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A local receiver printing one line per webhook.
async fn start_receiver(hangups: Arc<AtomicUsize>) -> Result<std::net::SocketAddr, String> {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let hangups = Arc::clone(&hangups);
        async move {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                println!("{}", describe(&v));
                if v["trigger"] == "call.hangup" {
                    hangups.fetch_add(1, Ordering::Relaxed);
                }
            }
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// One webhook as a line: trigger, call, who called whom, and what the trigger adds.
pub(crate) fn describe(v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let cdr = &v["cdr"];
    let id: String = s(&cdr["id"]).chars().take(8).collect();
    let mut line = format!(
        "  webhook  {:<28} call {id}  {} -> {}  {}",
        s(&v["trigger"]),
        s(&cdr["cliNum"]),
        s(&cdr["ddiNum"]),
        s(&v["callType"]),
    );
    if let Some(detail) = v["detail"].as_object() {
        for (k, d) in detail {
            line.push_str(&format!("  {k}={}", s(d)));
        }
    }
    if v["ended"] == true {
        line.push_str(&format!(
            "  ring={}s talk={}s ans={}",
            s(&cdr["ring"]),
            s(&cdr["talk"]),
            s(&cdr["ans"])
        ));
    }
    line
}
