//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_fs;
pub mod nats;
pub mod postgres;
pub mod receiver;

use std::path::PathBuf;

/// `switchhook run --config CONFIG` with the event-socket password from the environment (as
/// a deployment passes it), `RUST_LOG` cleared so the file's `[log]` applies, stdout dropped.
/// Callers choose stderr and spawn.
pub fn run_command(config: &std::path::Path, password: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"));
    cmd.args(["run", "--config"])
        .arg(config)
        .env("SWITCHHOOK__FREESWITCH__PASSWORD", password)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null());
    cmd
}

/// A two-thread runtime, as the tests use (the machine has two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The path of a capture under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The FreeSWITCH 1.10 scenario captures and their event-frame counts, from
/// `fixtures/README.md` (the same numbers for the plain and json files).
pub const SCENARIOS: &[(&str, usize)] = &[
    ("00-api-session", 4),
    ("01-inbound-answered", 83),
    ("02-inbound-missed", 67),
    ("03-abandoned-short", 69),
    ("04-hold-unhold", 96),
    ("04b-hold-uuid_hold", 92),
    ("05-valet-park", 158),
    ("06-ringgroup-simultaneous", 113),
    ("07-ringgroup-sequential", 96),
    ("08-queue-answered", 94),
    ("08b-queue-abandoned", 70),
    ("09-ivr-dtmf-transfer", 97),
    ("10-voicemail", 103),
    ("11-outbound-carrier", 67),
    ("12-click-to-call", 73),
    ("13-blind-transfer-refer", 139),
    ("13b-blind-transfer-uuid_transfer", 141),
    ("14-attended-transfer-refer-replaces", 181),
    ("15-recorded-call", 86),
    ("16-concurrent-mix", 419),
    ("17-outbound-socket", 93),
    ("18-rejected-busy-voicemail", 98),
    ("19-routing-crm-ack", 104),
    ("20-routing-pin-digits", 126),
    ("21-routing-pin-timeout", 120),
    ("22-routing-caller-hangup", 40),
    ("23-routing-api-linger", 108),
    ("24-inbound-withheld", 80),
    ("25-ivr-direct-extension", 110),
    ("26-outbound-answered", 67),
    ("27-blind-transfer-1003-to-1004", 137),
];

/// A free loopback address (bound and released: for a child process to bind).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A playback server streaming one capture as fast as the socket takes it.
pub async fn playback(
    capture: &str,
    password: &str,
) -> switchhook::fake_freeswitch::PlaybackServer {
    switchhook::fake_freeswitch::PlaybackServer::start(
        "127.0.0.1:0",
        switchhook::fake_freeswitch::PlaybackConfig {
            password: password.into(),
            captures: vec![fixture(capture)],
            pace: switchhook::fake_freeswitch::Pace::Fast,
            faults: Default::default(),
        },
    )
    .await
    .unwrap()
}

/// A playback server streaming `files` in turn at `pace`.
pub async fn play(
    files: &[PathBuf],
    password: &str,
    pace: switchhook::fake_freeswitch::Pace,
) -> switchhook::fake_freeswitch::PlaybackServer {
    switchhook::fake_freeswitch::PlaybackServer::start(
        "127.0.0.1:0",
        switchhook::fake_freeswitch::PlaybackConfig {
            password: password.into(),
            captures: files.to_vec(),
            pace,
            faults: Default::default(),
        },
    )
    .await
    .unwrap()
}

/// Waits until `done` holds, or panics after `limit` with `what`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    limit: std::time::Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let end = std::time::Instant::now() + limit;
    while !done().await {
        assert!(std::time::Instant::now() < end, "gave up waiting: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A child process that is killed (and reaped) when the guard goes, also when a test fails
/// before it stops the process itself.
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process's stderr, read line by line as it comes.
pub struct LogTail {
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub lines: Vec<String>,
}

impl LogTail {
    /// Takes the child's (piped) stderr.
    pub fn follow(child: &mut std::process::Child) -> LogTail {
        LogTail::read(child.stderr.take().expect("stderr piped"))
    }

    /// Takes the child's (piped) stdout.
    pub fn stdout(child: &mut std::process::Child) -> LogTail {
        LogTail::read(child.stdout.take().expect("stdout piped"))
    }

    fn read(from: impl std::io::Read + Send + 'static) -> LogTail {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogTail {
            rx,
            lines: Vec::new(),
        }
    }

    /// Reads until a line contains `what` (true) or `limit` passes or the log ends (false).
    pub fn wait_for(&mut self, what: &str, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            match self.rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.lines.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// The lines read so far, joined.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Reads the rest of the log, until the child closes it (it has exited) or `limit`
    /// passes, and returns all of it.
    pub fn finish(&mut self, limit: std::time::Duration) -> String {
        let end = std::time::Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) => self.lines.push(l),
                Err(_) => break,
            }
        }
        self.text()
    }
}

/// The channel variables of one of FreeSWITCH's JSON CDRs (mod_json_cdr), or None when the
/// file is not one.
pub fn freeswitch_cdr_vars(
    path: &std::path::Path,
) -> Option<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let vars = v.get("variables")?.as_object()?;
    Some(
        vars.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
    )
}
