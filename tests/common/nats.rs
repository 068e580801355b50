//! A real NATS server for a test: Debian's `nats-server` with JetStream, on a free loopback
//! port, its store in a temporary directory; stopped when the guard goes, also when the
//! test fails. It can be stopped and started again on the same port and store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test server, running or stopped.
pub struct Nats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

fn binary() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nats-server is not installed (apt-get install nats-server)")
}

impl Nats {
    /// A new server, started.
    pub fn start() -> Nats {
        let mut n = Nats {
            port: super::free_addr().port(),
            dir: tempfile::Builder::new()
                .prefix("switchhook-nats")
                .tempdir()
                .unwrap(),
            child: None,
            starts: 0,
        };
        n.resume();
        n
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The `[nats]` section naming this server, with more keys.
    pub fn section(&self, more: &str) -> String {
        format!("[nats]\nservers = [{:?}]\n{more}", self.url())
    }

    /// Stops the server (as a crash would: SIGKILL); its store stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until it answers.
    pub fn resume(&mut self) {
        self.stop();
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("server{}.log", self.starts)))
            .unwrap();
        let child = Command::new(binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A JetStream client.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url()).await.unwrap();
        async_nats::jetstream::new(client)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One stored message: its stream sequence, subject, `Nats-Msg-Id` and body.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub id: String,
    pub body: serde_json::Value,
}

/// Every message of `stream`, in stream order (empty when it does not exist yet).
pub async fn messages(js: &async_nats::jetstream::Context, stream: &str) -> Vec<Stored> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let Ok(info) = s.info().await else {
        return Vec::new();
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first..=last {
        if last == 0 {
            break;
        }
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push(Stored {
            seq,
            subject: m.subject.to_string(),
            id,
            body: serde_json::from_slice(&m.payload).unwrap_or_default(),
        });
    }
    out
}
