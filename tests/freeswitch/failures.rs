//! The real PBX failing under switchhook: refused logins, the event socket reloaded, new calls
//! paused, and FreeSWITCH stopped or killed with calls up.

use std::time::Duration;

use serde_json::Value;

use crate::common::receiver::{Received, Receiver, Reply};
use crate::live::{hangup_cdr, hangup_webhook, run_config, runtime, same_cdr};
use crate::rig::{replay_cdrs, wait_until, Rig, Switchhook, PBX_ESL, SIM_ESL};

const CONNECTED: &str = "connected to FreeSWITCH event socket";
const REFUSED: &str = "event socket refused us";

/// The PBX's event socket configuration in the running rig.
fn event_socket_conf(rig: &Rig) -> std::path::PathBuf {
    rig.pbx_conf()
        .join("autoload_configs/event_socket.conf.xml")
}

/// Waits until `run` has logged `count` refusals; the first must quote FreeSWITCH's `text`.
fn refused_with(run: &Switchhook, count: usize, text: &str) {
    assert!(
        run.wait_for(REFUSED, count, Duration::from_secs(30)),
        "{}",
        run.log()
    );
    let refused = &run.lines(REFUSED)[0];
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains(text), "{refused}");
}

pub fn wrong_password_and_acl_refusal_are_reported_and_retried(rig: &Rig) {
    // A wrong password: refused with FreeSWITCH's reply, logged as such (never the password),
    // and retried with backoff rather than giving up or spinning.
    let mut run = Switchhook::start_with(&run_config(""), "not-the-password");
    refused_with(&run, 2, "invalid");
    assert!(run.running(), "run gave up: {}", run.log());
    assert!(
        !run.log().contains("not-the-password"),
        "the password was logged"
    );
    assert!(run.lines("subscribed").is_empty());
    drop(run);

    // The ACL refuses loopback: FreeSWITCH's rude rejection is reported; once the ACL lets it
    // in again, the same process connects and subscribes without a restart.
    let conf = event_socket_conf(rig);
    let original = std::fs::read_to_string(&conf).unwrap();
    let mut run = Switchhook::start(&run_config(""));
    assert!(
        run.wait_for("subscribed", 1, Duration::from_secs(30)),
        "{}",
        run.log()
    );
    std::fs::write(&conf, original.replace("loopback.auto", "rfc1918.auto")).unwrap();
    assert!(
        rig.reload_event_socket(),
        "mod_event_socket did not come back"
    );
    refused_with(&run, 1, "Access Denied");
    assert!(run.running());
    // fs_cli is refused too now, so the ACL goes back by restarting the PBX (its start
    // recreates the configuration).
    std::fs::write(&conf, &original).unwrap();
    rig.script("stop.sh", &["pbx"]);
    pbx_back(rig, &run, 2);
}

pub fn event_socket_reload_and_fsctl_pause_lose_no_call(rig: &Rig) {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start(|_, _| Reply::status(200)));
    let run = Switchhook::start(&run_config(&hangup_webhook(&receiver)));
    assert!(
        run.wait_for("subscribed", 1, Duration::from_secs(30)),
        "{}",
        run.log()
    );

    // The event socket reloaded under switchhook: it reconnects and subscribes again.
    assert!(
        rig.reload_event_socket(),
        "mod_event_socket did not come back"
    );
    assert!(
        run.wait_for("subscribed", 2, Duration::from_secs(30)),
        "{}",
        run.log()
    );

    // New calls paused: the carrier's call is refused before it is a channel, so there is
    // no call and no webhook, and the connection stays up.
    assert!(rig.fs_cli(PBX_ESL, "fsctl pause").contains("+OK"));
    let (code, reports) = rig.routing_check(&[
        "--did",
        "+441610001001",
        "--cli",
        "+447700900500",
        "--max-wait",
        "5",
    ]);
    assert!(rig.fs_cli(PBX_ESL, "fsctl resume").contains("+OK"));
    assert_eq!(code, 1, "{reports:?}");
    assert_eq!(
        reports[0]["failed"][0], "the call never reached the PBX",
        "{reports:?}"
    );

    // A whole call afterwards, equal to its replay.
    let capture = rig.driver("01");
    let replayed = replay_cdrs(&capture);
    assert_eq!(replayed.len(), 1);
    let live = hangup_cdr(&rt, &receiver, replayed[0]["id"].as_str().unwrap());
    same_cdr("01 after reload and pause", &live, &replayed[0]);
    assert_eq!(run.lines(CONNECTED).len(), 2, "{}", run.log());
    assert_eq!(receiver.seen().len(), 1, "only the whole call's webhook");
}

/// Places a carrier call to `did` that rings a phone and stays up (the SIM parks its caller);
/// returns once the PBX has its channels.
pub fn call_in_progress(rig: &Rig, cli: &str, did: &str) {
    let before = channel_count(rig, PBX_ESL);
    let reply = rig.fs_cli(
        SIM_ESL,
        &format!(
            "bgapi originate {{origination_caller_id_number={cli},ignore_early_media=true}}\
             sofia/carrier/{did}@127.0.0.1:5080 &park"
        ),
    );
    assert!(reply.contains("+OK"), "{reply}");
    assert!(
        wait_until(Duration::from_secs(20), || channel_count(rig, PBX_ESL)
            >= before + 2),
        "the call did not reach the phone"
    );
}

/// Starts the stopped PBX (after hanging up what the SIM still holds of its calls) and waits
/// until the phones are registered and `run` has subscribed for the `nth` time.
fn pbx_back(rig: &Rig, run: &Switchhook, nth: usize) {
    let _ = rig.fs_cli(SIM_ESL, "hupall NORMAL_CLEARING");
    rig.script("start.sh", &["pbx"]);
    rig.wait_registered();
    assert!(
        run.wait_for("subscribed", nth, Duration::from_secs(60)),
        "{}",
        run.log()
    );
}

fn channel_count(rig: &Rig, port: u16) -> usize {
    rig.fs_cli(port, "show channels count")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn webhooks(receiver: &Receiver, trigger: &str) -> Vec<Value> {
    receiver
        .seen()
        .iter()
        .filter_map(|r: &Received| serde_json::from_str::<Value>(&r.body).ok())
        .filter(|b| b["trigger"] == trigger)
        .collect()
}

pub fn pbx_restart_mid_call_marks_it_partial_and_later_calls_are_whole(rig: &Rig) {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start(|_, _| Reply::status(200)));
    let run = Switchhook::start(&run_config(&format!(
        "{}\n[[webhooks]]\nname = \"received\"\ntriggers = [\"call.received\"]\nurl = \"{}/received\"\n",
        hangup_webhook(&receiver),
        receiver.base()
    )));
    assert!(
        run.wait_for("subscribed", 1, Duration::from_secs(30)),
        "{}",
        run.log()
    );

    // 1. A graceful restart with a call ringing: FreeSWITCH hangs its calls up as it stops.
    call_in_progress(rig, "+447700900601", "+441610001001");
    assert!(rt.block_on(receiver.wait_for(Duration::from_secs(20), |s| s.len() == 1)));
    rig.script("stop.sh", &["pbx"]);
    pbx_back(rig, &run, 2);
    assert!(
        rt.block_on(receiver.wait_for(Duration::from_secs(30), |_| {
            !webhooks(&receiver, "call.hangup").is_empty()
        })),
        "no hangup for the call up at the restart: {}",
        run.log()
    );
    let stopped = &webhooks(&receiver, "call.hangup")[0]["cdr"];
    println!(
        "  graceful stop: the call ended {} (partial: {})",
        stopped["cause"], stopped["partial"]
    );

    // 2. A crash (SIGKILL) with two calls ringing: nothing tells switchhook how they ended,
    // so after the restart the resync finds them gone and ends both as partial.
    call_in_progress(rig, "+447700900602", "+441610001002");
    call_in_progress(rig, "+447700900603", "+441610001003");
    assert!(rt.block_on(receiver.wait_for(Duration::from_secs(20), |_| {
        webhooks(&receiver, "call.received").len() == 3
    })));
    let pid = rig.pbx_pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    // start.sh takes a PBX whose pid still answers for a running one: wait until it is gone.
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(wait_until(Duration::from_secs(20), || !proc_dir.exists()));
    pbx_back(rig, &run, 3);
    let crashed: Vec<String> = webhooks(&receiver, "call.received")[1..]
        .iter()
        .map(|b| b["cdr"]["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &crashed {
        let cdr = hangup_cdr(&rt, &receiver, id);
        assert!(cdr["partial"].is_string(), "call {id} not partial: {cdr}");
    }

    // 3. Calls after the restarts are whole and equal their replay.
    let capture = rig.driver("01");
    let replayed = replay_cdrs(&capture);
    let live = hangup_cdr(&rt, &receiver, replayed[0]["id"].as_str().unwrap());
    same_cdr("01 after the restarts", &live, &replayed[0]);
    assert_eq!(webhooks(&receiver, "call.hangup").len(), 4);
}
