//! switchhook against the real FreeSWITCH 1.10.12: the rig that recorded the bundled captures,
//! with real SIP calls placed by the rig's own driver.
//!
//! The rig binds fixed ports, so this target has its own runner: one rig for every case, the
//! cases one at a time, the rig stopped by a guard whatever happens. Like an ignored test it
//! runs only when asked, because it installs FreeSWITCH (apt and /opt) and takes minutes:
//!
//! ```sh
//! cargo test --test freeswitch -- --ignored            # every case (what .ci/run does)
//! cargo test --test freeswitch -- --ignored routing    # the cases whose name contains "routing"
//! ```

#[path = "../common/mod.rs"]
mod common;

mod conf;
mod failures;
mod fleet;
mod live;
mod measure;
mod rig;
mod routing;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use rig::Rig;

type Case = (&'static str, fn(&Rig));

/// Every case, in the order they run. `measure` runs only when named: it places 180 calls.
const CASES: &[Case] = &[
    (
        "live_calls_equal_their_replay_and_freeswitchs_own_cdrs",
        live::live_calls_equal_their_replay_and_freeswitchs_own_cdrs,
    ),
    (
        "routing_steps_end_where_the_reply_says",
        routing::routing_steps_end_where_the_reply_says,
    ),
    (
        "routing_digit_menus_on_the_real_dial_plan",
        routing::routing_digit_menus_on_the_real_dial_plan,
    ),
    (
        "bundled_freeswitch_conf_loads_and_routes_a_call",
        conf::bundled_freeswitch_conf_loads_and_routes_a_call,
    ),
    (
        "wrong_password_and_acl_refusal_are_reported_and_retried",
        failures::wrong_password_and_acl_refusal_are_reported_and_retried,
    ),
    (
        "event_socket_reload_and_fsctl_pause_lose_no_call",
        failures::event_socket_reload_and_fsctl_pause_lose_no_call,
    ),
    (
        "pbx_restart_mid_call_marks_it_partial_and_later_calls_are_whole",
        failures::pbx_restart_mid_call_marks_it_partial_and_later_calls_are_whole,
    ),
    (
        "two_runs_on_the_real_pbx_publish_each_moment_once_and_one_may_die",
        fleet::two_runs_on_the_real_pbx_publish_each_moment_once_and_one_may_die,
    ),
    ("measure", measure::measure),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let chosen: Vec<&Case> = CASES
        .iter()
        .filter(|(name, _)| {
            if names.is_empty() {
                *name != "measure"
            } else {
                names.iter().any(|n| name.contains(n))
            }
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return;
    }
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!(
            "real-FreeSWITCH tests: {} ignored (they install and start FreeSWITCH: \
             `cargo test --test freeswitch -- --ignored`, as .ci/run does)",
            chosen.len()
        );
        return;
    }
    let started = Instant::now();
    let mut rig = Rig::start();
    println!(
        "rig up in {:.1} s ({}); running {} cases",
        started.elapsed().as_secs_f64(),
        rig.dir().display(),
        chosen.len()
    );
    let mut failed = Vec::new();
    for (name, case) in &chosen {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| case(&rig))) {
            Ok(()) => println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                println!(
                    "test {name} ... FAILED ({:.1} s)",
                    t.elapsed().as_secs_f64()
                );
                failed.push(*name);
                // The next case must not inherit this one's calls.
                let _ = rig.fs_cli(rig::SIM_ESL, "hupall NORMAL_CLEARING");
                let _ = rig.fs_cli(rig::PBX_ESL, "hupall NORMAL_CLEARING");
            }
        }
    }
    rig.keep = !failed.is_empty();
    drop(rig);
    println!(
        "\ntest result: {}. {} passed; {} failed; finished in {:.1} s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("failures: {}", failed.join(", "));
        std::process::exit(101);
    }
}
