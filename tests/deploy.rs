//! The systemd unit in `deploy/` stays true to the program: its command line parses, the
//! outbox lands in its state directory through the environment override it sets, it runs
//! unprivileged and restarts on failure; `systemd-analyze verify` accepts it where systemd is
//! installed.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

const UNIT: &str = include_str!("../deploy/switchhook.service");

/// `Key=value` lines by key (a key may repeat).
fn directives() -> HashMap<&'static str, Vec<&'static str>> {
    let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in UNIT.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        out.entry(k).or_default().push(v);
    }
    out
}

/// The unit in `dir`, with the binary this test built standing in for
/// /usr/local/bin/switchhook; None where systemd-analyze is not installed.
fn unit_for_systemd_analyze(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()?;
    assert!(out.status.success());
    let unit = dir.join("switchhook.service");
    std::fs::write(
        &unit,
        UNIT.replace(
            "/usr/local/bin/switchhook",
            env!("CARGO_BIN_EXE_switchhook"),
        ),
    )
    .unwrap();
    Some(unit)
}

fn one(d: &HashMap<&str, Vec<&'static str>>, key: &str) -> &'static str {
    match d.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn the_unit_runs_unprivileged_restarts_and_keeps_the_outbox_in_its_state_directory() {
    let d = directives();
    assert_eq!(one(&d, "User"), "switchhook");
    assert_eq!(one(&d, "Restart"), "on-failure");
    assert_eq!(one(&d, "StateDirectory"), "switchhook");
    assert_eq!(one(&d, "NoNewPrivileges"), "yes");
    assert_eq!(one(&d, "CapabilityBoundingSet"), "");
    assert!(one(&d, "ExecReload").contains("-HUP"));
    // The outbox path the unit sets is inside the state directory systemd makes.
    let env = one(&d, "Environment");
    let (name, path) = env.split_once('=').unwrap();
    assert_eq!(name, "SWITCHHOOK__STORE__PATH");
    assert!(path.starts_with("/var/lib/switchhook/"), "{path}");
    // The command line is one switchhook accepts.
    let exec: Vec<&str> = one(&d, "ExecStart").split_whitespace().collect();
    assert!(exec[0].ends_with("/switchhook"));
    let cli = switchhook::cli::Cli::try_parse_from(&exec).expect("ExecStart parses");
    assert!(matches!(
        cli.command,
        switchhook::cli::CliCommand::Run { config: Some(_) }
    ));
}

#[test]
fn the_store_path_override_the_unit_uses_puts_the_outbox_there() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchhook.toml");
    let nobody = common::free_addr();
    std::fs::write(
        &cfg,
        format!(
            "[freeswitch]\nhost = \"127.0.0.1\"\nport = {}\n",
            nobody.port()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let outbox = state.join("outbox.db");
    let mut child = common::run_command(&cfg, "")
        .current_dir(dir.path())
        .env("SWITCHHOOK__STORE__PATH", &outbox)
        .stderr(Stdio::null())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !outbox.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(outbox.exists(), "no outbox at {}", outbox.display());
    assert!(
        !dir.path().join("switchhook.db").exists(),
        "the default path was used instead"
    );
}

#[test]
fn systemd_accepts_the_unit_where_it_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(unit) = unit_for_systemd_analyze(dir.path()) else {
        // No systemd on this machine: the unit's content is checked by the tests above.
        eprintln!("systemd-analyze not installed; skipped");
        return;
    };
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // Only the host's own state (no such user here, no freeswitch.service) may be mentioned.
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| !l.contains("freeswitch.service") && !l.trim().is_empty())
        .collect();
    assert!(out.status.success() && complaints.is_empty(), "{said}");
}

/// The unit waits for `run` to say it is ready and watches it; the configuration its install
/// steps put in place is a quiet start (no webhooks, no routing), not the example file.
#[test]
fn the_unit_is_notified_and_watched_and_installs_a_quiet_configuration() {
    let d = directives();
    assert_eq!(one(&d, "Type"), "notify");
    assert_eq!(one(&d, "NotifyAccess"), "main");
    assert_eq!(one(&d, "WatchdogSec"), "30s");
    for hardening in [
        "ProtectProc",
        "ProcSubset",
        "PrivateUsers",
        "RemoveIPC",
        "UMask",
    ] {
        assert!(d.contains_key(hardening), "{hardening}");
    }
    let install: Vec<&str> = UNIT
        .lines()
        .filter(|l| l.starts_with("#   install"))
        .collect();
    let live = install
        .iter()
        .find(|l| l.ends_with("/etc/switchhook/switchhook.toml"))
        .expect("an install line for the configuration");
    assert!(live.contains("deploy/switchhook.toml"), "{live}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/switchhook.toml");
    let (cfg, _) = switchhook::pipeline::Compiled::load(Some(std::path::Path::new(path))).unwrap();
    assert!(cfg.webhooks.is_empty() && cfg.routes.is_empty());
    assert!(cfg.routing.listen.is_empty(), "no routing server");
}

/// `systemd-analyze security` rates the unit's exposure 1.1 or better (lower is safer), where
/// systemd can rate a unit file offline.
#[test]
fn the_unit_exposes_little() {
    let dir = tempfile::tempdir().unwrap();
    let Some(unit) = unit_for_systemd_analyze(dir.path()) else {
        // No systemd on this machine: the unit's content is checked by the tests above.
        eprintln!("systemd-analyze not installed; skipped");
        return;
    };
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let level = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for switchhook.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    match level {
        Some(level) => assert!(level <= 1.1, "exposure {level}:\n{said}"),
        // A systemd too old to rate a file offline.
        None => eprintln!(
            "systemd-analyze security --offline not available; skipped: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
