//! `switchhook record`: a capture of the engineer's own PBX, from the live event socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{print_problems, Exit};
use crate::esl::{EslClient, EslSignal, EventFormat};
use crate::logging::{self, LogFormat};
use crate::pipeline::Compiled;
use crate::record::{CallFilter, Recorder};

/// What `record` was asked for.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Configuration whose `[freeswitch]` to connect with (as `run`), and whose `[numbers]`
    /// and `[mapping]` read the filters' numbers.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The capture file to write (replaced if it exists).
    #[arg(long, short)]
    out: PathBuf,
    /// Stop after this long (`90s`, `10m`, `2h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop once this many (matching) calls have ended.
    #[arg(long)]
    calls: Option<u64>,
    /// Keep only calls to this number (any form; compared in E.164).
    #[arg(long)]
    did: Option<String>,
    /// Keep only calls from this number.
    #[arg(long)]
    caller: Option<String>,
    /// Keep only this call: its id or any leg's `Unique-ID` (or a prefix).
    #[arg(long)]
    call: Option<String>,
    /// Start a new file (`NAME.1.esl`, `NAME.2.esl`…) when one reaches this many MiB.
    #[arg(long, value_name = "MIB")]
    rotate_mib: Option<u64>,
}

/// Records until the duration or the call count is reached, or SIGINT/SIGTERM.
pub(super) async fn run(args: RecordArgs, log_format: Option<LogFormat>) -> ExitCode {
    let (cfg, compiled) = match Compiled::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(args.config.as_deref(), &problems);
            return Exit::Config.into();
        }
    };
    logging::init(&cfg.log.level, log_format.unwrap_or(cfg.log.format));
    let filter = CallFilter {
        did: args.did,
        caller: args.caller,
        call: args.call,
    };
    let max_bytes = args.rotate_mib.map(|m| m.saturating_mul(1 << 20));
    let mut recorder = match Recorder::create(&args.out, max_bytes, filter, compiled.settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", args.out.display());
            return Exit::Failure.into();
        }
    };
    // Captures are the plain format, FreeSWITCH's bytes as they came.
    let mut fs = cfg.freeswitch.clone();
    fs.format = EventFormat::Plain;
    let (client, mut signals, task) = EslClient::spawn(fs);
    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    let mut deadline = std::pin::pin!(deadline);
    let mut stop = std::pin::pin!(crate::pipeline::shutdown_signal());
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    let mut failed = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut deadline => break,
            _ = flush.tick() => {
                if let Err(e) = recorder.flush() {
                    failed = Some(e);
                    break;
                }
            }
            signal = signals.recv() => match signal {
                None => break,
                Some(EslSignal::Event(ev)) => {
                    if let Err(e) = recorder.on_event(&ev) {
                        failed = Some(e);
                        break;
                    }
                    if args.calls.is_some_and(|n| recorder.stats().calls >= n) {
                        break;
                    }
                }
                Some(EslSignal::Connected { connection }) => {
                    tracing::info!(connection, out = %args.out.display(), "recording");
                }
                Some(EslSignal::Gap(reason)) => {
                    tracing::warn!(?reason, "event gap: calls in progress are incomplete in the capture");
                }
                Some(EslSignal::Resync { .. }) => {}
            },
        }
    }
    client.shutdown().await;
    drop(signals);
    let _ = task.await;
    if let Some(e) = failed {
        eprintln!("{}: {e}", args.out.display());
        return Exit::Failure.into();
    }
    match recorder.finish() {
        Ok((stats, files)) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "recorded {} events of {} calls into {}",
                stats.events,
                stats.calls,
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", args.out.display());
            Exit::Failure.into()
        }
    }
}
