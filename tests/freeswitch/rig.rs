//! The rig and the processes a case starts, each behind a guard that stops it, also when the
//! case panics.
//!
//! The rig is FreeSWITCH's own two-instance test rig (`../shared/freeswitch/rig`): a PBX with
//! its event socket on 127.0.0.1:8021 and a SIM playing the carrier and four desk phones, real
//! SIP and RTP on loopback. Its ports are fixed, so one rig serves every case, one at a time.

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The PBX's event socket.
pub const PBX_ESL: u16 = 8021;
/// The SIM's event socket.
pub const SIM_ESL: u16 = 8022;
/// The rig's event-socket password.
pub const PASSWORD: &str = "ClueCon";
/// Where the rig's routing extensions (7100, 7101) connect.
pub const ROUTING_LISTEN: &str = "127.0.0.1:8084";

/// Where FreeSWITCH is installed (the prebuilt package's prefix).
const FS_PREFIX: &str = "/opt/freeswitch";

/// The steering repository's `shared/`: beside the project, or `SWITCHHOOK_SHARED`.
fn shared_dir() -> PathBuf {
    std::env::var_os("SWITCHHOOK_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// Waits for `cond` with a deadline; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running rig in a temporary `RIG_DIR`, stopped on drop.
pub struct Rig {
    src: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// Keep `RIG_DIR` (its logs) when the rig is dropped: set when a case failed.
    pub keep: bool,
}

impl Rig {
    /// Installs FreeSWITCH if it is missing, then starts both instances and waits until the
    /// four phones are registered.
    pub fn start() -> Rig {
        let shared = shared_dir();
        let install = shared.join("freeswitch/install.sh");
        assert!(
            install.exists(),
            "{} not found: the real-FreeSWITCH tests need the shared directory beside the \
             project (or SWITCHHOOK_SHARED)",
            install.display()
        );
        let out = Command::new("bash").arg(&install).output().unwrap();
        assert!(
            out.status.success(),
            "install.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for port in [PBX_ESL, SIM_ESL] {
            assert!(
                !listening(port),
                "127.0.0.1:{port} is taken: another FreeSWITCH (or rig) is running; stop it first"
            );
        }
        let rig = Rig {
            src: shared.join("freeswitch/rig"),
            dir: Some(
                tempfile::Builder::new()
                    .prefix("switchhook-rig-")
                    .tempdir()
                    .unwrap(),
            ),
            keep: false,
        };
        // From here on the guard stops whatever start.sh started, whatever happens next.
        rig.script("start.sh", &[]);
        rig.wait_registered();
        rig
    }

    /// `RIG_DIR`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("rig directory").path()
    }

    /// Where the driver writes its captures.
    pub fn out_dir(&self) -> PathBuf {
        self.dir().join("out")
    }

    /// The PBX's runtime configuration directory (recreated by every start of the PBX).
    pub fn pbx_conf(&self) -> PathBuf {
        self.dir().join("pbx/conf")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("RIG_DIR", self.dir())
            .env("FS_PREFIX", FS_PREFIX)
            .env("OUT_DIR", self.out_dir())
            .env("ESL_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs one of the rig's scripts (`start.sh pbx`, `stop.sh`) and requires success.
    pub fn script(&self, name: &str, args: &[&str]) -> Output {
        let out = self
            .command("bash")
            .arg(self.src.join(name))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// An API command on one instance through fs_cli (its output).
    pub fn fs_cli(&self, port: u16, cmd: &str) -> String {
        let out = self
            .command(&format!("{FS_PREFIX}/bin/fs_cli"))
            .args([
                "-H",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-p",
                PASSWORD,
                "-x",
                cmd,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Reloads mod_event_socket on the PBX (from a background job: the reload closes the
    /// connection that asks for it) and waits until it listens again; whether it did.
    pub fn reload_event_socket(&self) -> bool {
        let log = self.dir().join("pbx/log/freeswitch.log");
        let ups = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("Socket up listening on 127.0.0.1:8021")
                .count()
        };
        let before = ups();
        self.fs_cli(PBX_ESL, "bgapi reload mod_event_socket");
        wait_until(Duration::from_secs(20), || ups() > before)
    }

    /// Waits until phones 1001-1004 are registered to the PBX (after a PBX start they retry
    /// every 10 s).
    pub fn wait_registered(&self) {
        assert!(
            wait_until(Duration::from_secs(90), || self
                .fs_cli(PBX_ESL, "show registrations")
                .contains("4 total")),
            "the SIM's phones did not register to the PBX: {}",
            self.fs_cli(PBX_ESL, "show registrations")
        );
    }

    /// Waits until neither instance has a channel.
    pub fn wait_idle(&self) {
        assert!(
            wait_until(Duration::from_secs(60), || {
                [PBX_ESL, SIM_ESL]
                    .iter()
                    .all(|p| self.fs_cli(*p, "show channels count").contains("0 total"))
            }),
            "channels are still up"
        );
    }

    /// Runs a recorded scenario with the rig's driver (real calls); returns the plain capture
    /// it recorded of the PBX's event socket at the same time.
    pub fn driver(&self, scenario: &str) -> PathBuf {
        let out = self
            .command("python3")
            .arg(self.src.join("tools/driver.py"))
            .arg(scenario)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(" True"),
            "driver {scenario} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{scenario}-");
        std::fs::read_dir(self.out_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".esl") && !name.ends_with(".json.esl")
            })
            .unwrap_or_else(|| panic!("driver {scenario} wrote no capture"))
    }

    /// Places calls with `routing_check.py ARGS`; returns its exit code and one report per call.
    pub fn routing_check(&self, args: &[&str]) -> (i32, Vec<Value>) {
        let out = self
            .command("python3")
            .arg(self.src.join("routing_check.py"))
            .args(args)
            .output()
            .unwrap();
        let reports = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (out.status.code().unwrap_or(-1), reports)
    }

    /// The PBX's pid.
    pub fn pbx_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir().join("pbx/run/freeswitch.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self
            .command("bash")
            .arg(self.src.join("stop.sh"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Whatever did not stop within stop.sh's 30 s is killed: never an orphaned FreeSWITCH.
        for instance in ["sim", "pbx"] {
            if let Ok(pid) =
                std::fs::read_to_string(self.dir().join(instance).join("run/freeswitch.pid"))
            {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
        if self.keep {
            let dir = self.dir.take().unwrap().keep();
            eprintln!("rig logs kept in {}", dir.display());
        }
    }
}

/// A `switchhook run` process with its own directory (configuration, outbox, log), killed on
/// drop.
pub struct Switchhook {
    child: Child,
    dir: tempfile::TempDir,
}

impl Switchhook {
    /// Writes `config` (TOML; `{dir}` is replaced by the process's directory) and starts
    /// `switchhook run` on it with JSON logs at info level going to `run.log`.
    pub fn start(config: &str) -> Switchhook {
        Switchhook::start_with(config, PASSWORD)
    }

    /// The same with another event-socket password.
    pub fn start_with(config: &str, password: &str) -> Switchhook {
        let dir = tempfile::tempdir().unwrap();
        let text = config.replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("switchhook.toml");
        std::fs::write(&path, text).unwrap();
        let log = std::fs::File::create(dir.path().join("run.log")).unwrap();
        let child = crate::common::run_command(&path, password)
            .stderr(log)
            .spawn()
            .unwrap();
        Switchhook { child, dir }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("run.log")) {
            let _ = f.seek(SeekFrom::Start(0));
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Log lines (JSON) whose message is `message`.
    pub fn lines(&self, message: &str) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Waits until the log has at least `count` lines with `message`.
    pub fn wait_for(&self, message: &str, count: usize, limit: Duration) -> bool {
        wait_until(limit, || self.lines(message).len() >= count)
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Switchhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchhook replay --emit cdr CAPTURE`: one CDR per call.
pub fn replay_cdrs(capture: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .args(["replay", "--emit", "cdr"])
        .arg(capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay {}: {}",
        capture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
