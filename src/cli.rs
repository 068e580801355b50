//! The command line: `run`, `replay`, `check-config`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;

use crate::config::{self, Config, LogFormat};
use crate::esl::{ClientConfig, EslClient, EslSignal, Limits, Message};
use crate::replay;

/// switchhook: FreeSWITCH calls to webhooks, CDRs and routing decisions.
#[derive(Debug, Parser)]
#[command(name = "switchhook", version, about)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Connect to FreeSWITCH's event socket and process calls live.
    Run {
        /// Configuration file (TOML); `SWITCHHOOK__SECTION__KEY` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Read captured event-socket streams and print what the live pipeline would produce.
    Replay {
        /// What to print, one JSON object per line.
        #[arg(long, value_enum, default_value_t = Emit::Events)]
        emit: Emit,
        /// Capture files (raw bytes as read from the event socket).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate a configuration file; prints every problem with its key path.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

/// What `replay` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// Every event: decoded header names → values, body as `_body`.
    Events,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        CliCommand::Run { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log.level, cli.log_format.unwrap_or(cfg.log.format));
            run_live(cfg).await
        }
        CliCommand::Replay { emit, files } => {
            init_logging("warn", cli.log_format.unwrap_or(LogFormat::Text));
            replay_files(emit, &files).await
        }
        CliCommand::CheckConfig { file } => check_config(&file),
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn check_config(file: &Path) -> ExitCode {
    if !file.exists() {
        eprintln!("{}: no such file", file.display());
        return ExitCode::from(2);
    }
    let issues = config::check(Some(file));
    if issues.is_empty() {
        println!("{}: ok", file.display());
        ExitCode::SUCCESS
    } else {
        for i in &issues {
            eprintln!("{}: {i}", file.display());
        }
        eprintln!("{} error(s)", issues.len());
        ExitCode::from(1)
    }
}

async fn run_live(cfg: Config) -> ExitCode {
    let (client, mut signals, task) = EslClient::spawn(ClientConfig::from(&cfg.freeswitch));
    let mut shutdown = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                client.shutdown().await;
                break;
            }
            sig = signals.recv() => match sig {
                None => break,
                Some(EslSignal::Event(ev)) => tracing::info!(
                    event = %ev.name().unwrap_or_default(),
                    uuid = %ev.unique_id().unwrap_or_default(),
                    seq = ev.sequence().unwrap_or_default(),
                    "event"
                ),
                Some(EslSignal::Connected { connection }) => tracing::info!(connection, "subscribed"),
                Some(EslSignal::Resync { connection, channels }) => {
                    tracing::info!(connection, channels = channels.len(), "resynced channels in progress")
                }
                Some(EslSignal::Gap(reason)) => tracing::warn!(?reason, "event gap"),
            }
        }
    }
    drop(signals);
    let _ = task.await;
    ExitCode::SUCCESS
}

async fn replay_files(emit: Emit, files: &[PathBuf]) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut failed = false;
    for file in files {
        let mut stream = match replay::open(file, Limits::default()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed = true;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{}: read error: {e}", file.display());
                    failed = true;
                    break;
                }
            };
            match (emit, item) {
                (Emit::Events, Ok(Message::Event(ev))) => {
                    let written = serde_json::to_writer(&mut out, &ev)
                        .map_err(std::io::Error::from)
                        .and_then(|_| out.write_all(b"\n"));
                    if let Err(e) = written {
                        // A closed pipe (`| head`) is the reader's choice, not an error.
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            return ExitCode::SUCCESS;
                        }
                        eprintln!("stdout: {e}");
                        return ExitCode::from(1);
                    }
                }
                (_, Ok(_)) => {}
                (_, Err(e)) => {
                    eprintln!("{}: {e}", file.display());
                    failed = true;
                }
            }
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("stdout: {e}");
            return ExitCode::from(1);
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
