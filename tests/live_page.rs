//! The live page in a real browser: `switchhook demo` streams the bundled capture, headless
//! Chromium loads the page (its script polls `/live.json`), and the DOM it rendered is
//! checked: the calls in progress with their timeline bars while the capture plays, then the
//! five finished calls and their deliveries. Needs Debian's `chromium` (`.ci/run` installs
//! it); `CHROMIUM` names another binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::LogTail;
use serde_json::Value;

fn chromium() -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} not found: the live-page test needs Chromium (Debian: apt-get install chromium; .ci/run installs it)"
    );
    bin
}

/// The DOM after the page's script has run (virtual time lets its first poll finish).
fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-call-id`s of the rows of `class` (`call` or `cdr`), each with how many
/// timeline segments it drew.
fn rows(dom: &str, class: &str) -> Vec<(String, usize)> {
    let start = format!("<tr class=\"{class}\" data-call-id=\"");
    dom.split(&start)
        .skip(1)
        .map(|rest| {
            let id = rest.split('"').next().unwrap_or_default().to_owned();
            let row = rest.split("</tr>").next().unwrap_or_default();
            (id, row.matches("class=\"seg seg-").count())
        })
        .collect()
}

fn live_json(rt: &tokio::runtime::Runtime, base: &str) -> Option<Value> {
    rt.block_on(async {
        let r = reqwest::get(format!("{base}live.json")).await.ok()?;
        serde_json::from_str(&r.text().await.ok()?).ok()
    })
}

#[test]
fn the_live_page_shows_the_demos_calls_in_a_browser() {
    chromium();
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .args(["demo", "--speed", "1", "--stay"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(common::ChildGuard)
        .unwrap();
    let mut out = LogTail::stdout(&mut demo);
    assert!(
        out.wait_for("live page", Duration::from_secs(30)),
        "{}",
        out.text()
    );
    let base = out
        .text()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("live page")
                .map(|r| r.split_whitespace().next().unwrap_or_default().to_owned())
        })
        .expect("the demo says where the live page is");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // While the capture plays: wait until several calls are up, then look with the browser.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut active: Vec<String> = Vec::new();
    while Instant::now() < deadline && active.len() < 2 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(page) = live_json(&rt, &base) {
            active = page["active"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    assert!(
        active.len() >= 2,
        "calls in progress never showed: {}",
        out.text()
    );
    let dom = rendered_dom(&base);
    let calls = rows(&dom, "call");
    assert!(!calls.is_empty(), "no call rows rendered:\n{dom}");
    for (id, segments) in &calls {
        // At real speed capture 16's calls last 4 to 14 s and overlap: a
        // call up when the JSON was read is still up a moment later.
        assert!(segments >= &1, "call {id} drew no timeline:\n{dom}");
    }
    assert!(
        calls.iter().any(|(id, _)| active.contains(id)),
        "the browser's calls {calls:?} are not the ones in progress {active:?}"
    );
    // The legend is drawn by the script from the server's kinds: every kind, last included.
    assert!(
        dom.contains("</i>voicemail</span>"),
        "no legend drawn:\n{dom}"
    );

    // After the capture: five finished calls, each with its bar, and the deliveries.
    assert!(
        out.wait_for("The capture has played", Duration::from_secs(60)),
        "{}",
        out.text()
    );
    let dom = rendered_dom(&base);
    let finished = rows(&dom, "cdr");
    assert_eq!(finished.len(), 5, "{finished:?}\n{dom}");
    assert!(finished.iter().all(|(_, segs)| *segs >= 1), "{finished:?}");
    assert!(dom.contains("no calls in progress"));
    // One zone and one format for every time, and each row names its call as the
    // deliveries table does.
    assert!(dom.contains("times in UTC"), "{dom}");
    for (id, _) in &finished {
        assert!(
            dom.contains(&format!("<td title=\"{id}\">{}</td>", &id[..8])),
            "call {id} has no id cell:\n{dom}"
        );
    }
    let stamp = regex::Regex::new(r"<td>20\d\d-\d\d-\d\d \d\d:\d\d:\d\d</td>").unwrap();
    let delivery_rows = dom.matches("<tr class=\"delivery\"").count();
    assert!(
        stamp.find_iter(&dom).count() >= finished.len() + delivery_rows,
        "calls and deliveries in one time format:\n{dom}"
    );
    let delivered = dom
        .matches("<tr class=\"delivery\" data-outcome=\"delivered\"")
        .count();
    let page = live_json(&rt, &base).unwrap();
    assert!(delivered >= 20, "{delivered} delivery rows:\n{dom}");
    assert_eq!(delivered, page["deliveries"].as_array().unwrap().len());
    // The talk segments the browser drew are the ones the CDRs hold.
    let talks = dom.matches("class=\"seg seg-talk\"").count();
    let cdr_talks: usize = page["finished"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["segments"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["kind"] == "talk")
                .count()
        })
        .sum();
    assert_eq!(talks, cdr_talks);
    assert!(talks >= 4, "four of the five calls were answered");

    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let status = demo.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Stopped by a signal, the demo still removed its temporary outbox.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}
