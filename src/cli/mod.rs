//! The command line: `run`, `replay`, `check-config`, `explain`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;

mod calls;
mod deliveries;
mod demo;
mod diff;
mod env_file;
mod record;

pub use diff::DiffArgs;
pub use record::RecordArgs;
pub mod svg;

use crate::esl::{Limits, Message};
use crate::hooks::WebhookSet;
use crate::logging::{self, LogFormat};
use crate::pipeline::{Compiled, Pipeline};
use crate::problem::Problem;
use crate::replay;
use crate::session::{CallRecord, Settings};

/// switchhook: FreeSWITCH calls to webhooks, CDRs and routing decisions.
#[derive(Debug, Parser)]
#[command(name = "switchhook", version, about)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Read environment variables from this file first (`KEY=VALUE` lines), or from a systemd
    /// unit file (its `Environment=` and `EnvironmentFile=`): the environment the service
    /// runs with, for commands run by hand. May be given more than once.
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
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
    /// The whole live pipeline on a bundled real capture: an embedded event socket streams
    /// it, webhooks go through the durable outbox to a built-in receiver that prints them.
    /// No FreeSWITCH and no configuration needed.
    Demo {
        /// Playback speed (1 = real time; the bundled capture lasts about 18 s).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Stream this capture instead of the bundled one.
        #[arg(long)]
        capture: Option<PathBuf>,
        /// After the capture has played, keep the live page and the admin endpoint up until
        /// Ctrl-C.
        #[arg(long)]
        stay: bool,
        /// Keep the demo's outbox afterwards (it is removed at exit otherwise) and print
        /// where it is.
        #[arg(long)]
        keep: bool,
    },
    /// Read captured event-socket streams and print what the live pipeline would produce.
    Replay {
        /// What to print, one JSON object per line.
        #[arg(long, value_enum, default_value_t = Emit::Events)]
        emit: Emit,
        /// Configuration whose `[mapping]`, `[sessions]`, `[numbers]`, `[directory]` and
        /// `[rates]` apply (defaults without).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Capture files (raw bytes as read from the event socket).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show how a call's CDR was built: its timeline and, for each field, the event and
    /// header that set it.
    Explain {
        /// The call id (the CDR's `id`), any of its legs' `Unique-ID` (as FreeSWITCH's logs
        /// name them), or a unique prefix of either.
        call_id: String,
        /// Configuration to apply (as for `replay`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Capture files to search.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also write the call's timeline as an SVG picture to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Record the live event stream as a capture (what `replay`, `explain` and `diff` read):
    /// the whole stream or only some calls, for a while or a number of calls.
    Record(RecordArgs),
    /// Replay captures under two configurations and show, call by call, which CDR fields and
    /// which webhook requests differ; exits 1 when something does (a deployment gate).
    Diff(DiffArgs),
    /// Print shell completions for bash, zsh, fish, elvish or PowerShell
    /// (`switchhook completions bash > /etc/bash_completion.d/switchhook`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, roff (`switchhook man > /usr/share/man/man1/switchhook.1`).
    Man,
    /// Validate a configuration file; prints every problem with its key path.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Ask the PostgreSQL call store (`[call_store]`): list and show calls, canned reports,
    /// retention.
    Calls {
        /// Configuration whose `[call_store]` names the database (before or after the action).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: calls::Action,
    },
    /// Deliver webhooks from NATS JetStream: a worker of a fleet whose `run` processes
    /// publish (`[nats] webhooks = "workers"`). Workers share the stream's partitions; each
    /// delivers through its own outbox (`[store] path`).
    Deliver {
        /// Configuration file: `[nats]`, `[worker]`, `[store]`, `[[webhooks]]`, `[egress]`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Inspect and act on the webhook outbox (works while `run` is running).
    Deliveries {
        /// Configuration whose `[store] path` names the outbox (before or after the action).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// The outbox file, instead of the configuration's (before or after the action).
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: deliveries::Action,
    },
}

/// What `replay` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// Every event: decoded header names → values, body as `_body`.
    Events,
    /// One CDR per finished call, in the order calls end.
    Cdr,
    /// Every webhook request the configured `[[webhooks]]` would send (nothing is sent).
    Webhooks,
    /// Write every finished call to the configured `[call_store]` (PostgreSQL), as `run`
    /// would: fills a database from recorded traffic.
    Store,
}

/// The exit statuses, as the README documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Something did not work, or nothing matched what was named.
    Failure = 1,
    /// The command line is wrong (clap's own status for its errors).
    Usage = 2,
    /// The configuration is wrong (sysexits' `EX_CONFIG`): a service manager should not
    /// restart into it (the unit's `RestartPreventExitStatus`).
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl Cli {
    /// Sets the variables of every `--env-file`, in order. Call it before any thread starts
    /// (setting the environment is not thread-safe).
    pub fn load_env_files(&self) -> Result<(), ExitCode> {
        for file in &self.env_file {
            match env_file::read(file) {
                Ok(vars) => {
                    for (k, v) in vars {
                        std::env::set_var(k, v);
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    return Err(Exit::Usage.into());
                }
            }
        }
        Ok(())
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let log_format = cli.log_format;
    let quiet =
        |format: Option<LogFormat>| logging::init("warn", format.unwrap_or(LogFormat::Text));
    match cli.command {
        CliCommand::Run { config } => run_live(config, log_format).await,
        CliCommand::Demo {
            speed,
            capture,
            stay,
            keep,
        } => {
            quiet(log_format);
            demo::run(demo::DemoOptions {
                speed,
                capture,
                stay,
                keep,
            })
            .await
        }
        CliCommand::Replay {
            emit,
            config,
            files,
        } => {
            quiet(log_format);
            if emit == Emit::Events {
                return replay_events(&files).await;
            }
            if emit == Emit::Store {
                return match Compiled::load(config.as_deref()) {
                    Ok((cfg, c)) => calls::load_captures(&cfg, c.settings, &files).await,
                    Err(problems) => {
                        print_problems(config.as_deref(), &problems);
                        Exit::Config.into()
                    }
                };
            }
            match load(config.as_deref()) {
                Ok(c) if emit == Emit::Cdr => replay_lines(c.settings, None, &files).await,
                Ok(c) => replay_lines(c.settings, Some(c.hooks), &files).await,
                Err(code) => code,
            }
        }
        CliCommand::Explain {
            call_id,
            config,
            files,
            svg,
        } => {
            quiet(log_format);
            match load(config.as_deref()) {
                Ok(c) => explain(c.settings, &call_id, &files, svg.as_deref()).await,
                Err(code) => code,
            }
        }
        CliCommand::Record(args) => record::run(args, log_format).await,
        CliCommand::Diff(args) => {
            quiet(log_format);
            diff::run(args).await
        }
        CliCommand::Completions { shell } => {
            let mut text = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "switchhook", &mut text);
            print_bytes(&text)
        }
        CliCommand::Man => {
            let mut text = Vec::new();
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut text) {
                Ok(()) => print_bytes(&text),
                Err(e) => {
                    eprintln!("{e}");
                    Exit::Failure.into()
                }
            }
        }
        CliCommand::CheckConfig { file } => check_config(&file),
        CliCommand::Calls { config, action } => {
            quiet(log_format);
            calls::run(config.as_deref(), action).await
        }
        CliCommand::Deliveries { config, db, action } => {
            deliveries::run(config.as_deref(), db.as_deref(), action).await
        }
        CliCommand::Deliver { config } => deliver(config, log_format).await,
    }
}

/// `deliver`: a webhook worker until SIGINT or SIGTERM.
async fn deliver(config: Option<PathBuf>, log_format: Option<LogFormat>) -> ExitCode {
    let (cfg, compiled) = match Compiled::load(config.as_deref()) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(config.as_deref(), &problems);
            return Exit::Config.into();
        }
    };
    if !cfg.nats.enabled() {
        eprintln!("deliver takes its work from NATS: set [nats] servers");
        return Exit::Config.into();
    }
    logging::init(&cfg.log.level, log_format.unwrap_or(cfg.log.format));
    let mut worker = match crate::pipeline::WorkerProcess::start(cfg, compiled, config).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Failure.into();
        }
    };
    worker.run(crate::pipeline::shutdown_signal()).await;
    worker.shutdown().await;
    ExitCode::SUCCESS
}

/// `run`: the live pipeline until SIGINT or SIGTERM.
async fn run_live(config: Option<PathBuf>, log_format: Option<LogFormat>) -> ExitCode {
    let (cfg, compiled) = match Compiled::load(config.as_deref()) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(config.as_deref(), &problems);
            return Exit::Config.into();
        }
    };
    logging::init(&cfg.log.level, log_format.unwrap_or(cfg.log.format));
    let mut pipeline = match Pipeline::start(cfg, compiled, config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Failure.into();
        }
    };
    pipeline.run(crate::pipeline::shutdown_signal()).await;
    pipeline.shutdown().await;
    ExitCode::SUCCESS
}

/// Writes `bytes` to stdout; a closed pipe (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            Exit::Failure.into()
        }
    }
}

/// Every problem, one line each with the file, and their number.
fn print_problems(file: Option<&Path>, problems: &[Problem]) {
    let prefix = file
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default();
    for p in problems {
        // A variable's mistake is the variable's, not the file's.
        let prefix = if p.in_file() { prefix.as_str() } else { "" };
        eprintln!("{prefix}{p}");
    }
    eprintln!("{} error(s)", problems.len());
}

fn check_config(file: &Path) -> ExitCode {
    if !file.exists() {
        eprintln!("{}: no such file", file.display());
        return Exit::Usage.into();
    }
    match Compiled::load(Some(file)) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print_problems(Some(file), &problems);
            Exit::Config.into()
        }
    }
}

/// The configuration, compiled, for the commands that replay captures.
fn load(config: Option<&Path>) -> Result<Compiled, ExitCode> {
    Compiled::load(config).map(|(_, c)| c).map_err(|problems| {
        print_problems(config, &problems);
        Exit::Config.into()
    })
}

/// NDJSON on stdout. A closed pipe (`| head`) stops output quietly; another write error
/// stops it with a failure.
struct JsonLines<W: Write> {
    out: W,
    stopped: Option<ExitCode>,
}

impl<W: Write> JsonLines<W> {
    fn new(out: W) -> Self {
        JsonLines { out, stopped: None }
    }

    /// Writes one line, unless output has stopped.
    fn put<T: serde::Serialize>(&mut self, value: &T) {
        if self.stopped.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|_| self.out.write_all(b"\n"));
        if let Err(e) = written {
            self.stopped = Some(Self::code(e));
        }
    }

    fn code(e: std::io::Error) -> ExitCode {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            ExitCode::SUCCESS
        } else {
            eprintln!("stdout: {e}");
            ExitCode::from(1)
        }
    }

    /// Flushes; the exit code (1 when `failed`).
    fn finish(mut self, failed: bool) -> ExitCode {
        if let Some(code) = self.stopped {
            return code;
        }
        if let Err(e) = self.out.flush() {
            return Self::code(e);
        }
        if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Prints a replayed file's protocol errors (or why it could not be read); true if clean.
fn reported(file: &Path, result: std::io::Result<replay::AssembleReport>) -> bool {
    match result {
        Ok(report) => {
            if let Some(why) = report.not_a_capture() {
                eprintln!("{}: {why}", file.display());
                return false;
            }
            for e in &report.errors {
                eprintln!("{}: {e}", file.display());
            }
            report.errors.is_empty()
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            false
        }
    }
}

/// `replay --emit cdr` (no `hooks`) and `--emit webhooks`: one JSON line per CDR or per
/// request, file after file.
async fn replay_lines(
    settings: Arc<Settings>,
    hooks: Option<Arc<WebhookSet>>,
    files: &[PathBuf],
) -> ExitCode {
    let hooks = hooks.map(|h| {
        if h.hooks().is_empty() {
            eprintln!(
                "no [[webhooks]] configured: showing what a webhook on every trigger, posting to {}, would send",
                crate::hooks::webhook::EXAMPLE_URL
            );
            Arc::new(WebhookSet::example())
        } else {
            h
        }
    });
    let stdout = std::io::stdout();
    let mut out = JsonLines::new(std::io::BufWriter::new(stdout.lock()));
    let mut failed = false;
    let progress = replay::Progress::on_terminal(files);
    for file in files {
        let settings = Arc::clone(&settings);
        let result = match &hooks {
            None => replay::assemble(file, settings, &progress, |rec| out.put(&rec.cdr)).await,
            Some(hooks) => {
                replay::moments(file, settings, &progress, |m| {
                    for req in hooks.plan(&m) {
                        let signer = hooks.get(&req.webhook).and_then(|h| h.signer.as_ref());
                        out.put(&req.to_printable(signer, m.at_us / 1_000_000));
                    }
                })
                .await
            }
        };
        if out.stopped.is_some() {
            break;
        }
        failed |= !reported(file, result);
    }
    progress.finish();
    out.finish(failed)
}

async fn explain(
    settings: Arc<Settings>,
    call_id: &str,
    files: &[PathBuf],
    svg: Option<&Path>,
) -> ExitCode {
    let mut found: Vec<CallRecord> = Vec::new();
    for file in files {
        let progress = replay::Progress::hidden();
        let matches = |r: &CallRecord| {
            r.cdr.id.starts_with(call_id) || r.leg_ids.iter().any(|l| l.starts_with(call_id))
        };
        let assembled = replay::assemble(file, Arc::clone(&settings), &progress, |r| {
            if matches(&r) {
                found.push(r)
            }
        })
        .await;
        match assembled {
            Ok(report) => {
                if let Some(why) = report.not_a_capture() {
                    eprintln!("{}: {why}", file.display());
                    return ExitCode::from(1);
                }
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                return ExitCode::from(1);
            }
        }
    }
    match found.len() {
        0 => {
            eprintln!("no call {call_id:?} in the capture(s)");
            ExitCode::from(1)
        }
        1 => {
            print!("{}", render_explanation(&found[0]));
            if let Some(path) = svg {
                if let Err(e) = std::fs::write(path, svg::timeline_svg(&found[0])) {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::from(1);
                }
                eprintln!("timeline written to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        n => {
            eprintln!("{call_id:?} matches {n} calls; give more of the id:");
            for r in &found {
                eprintln!("  {}", r.cdr.id);
            }
            ExitCode::from(1)
        }
    }
}

/// The text `explain` prints for one call.
pub fn render_explanation(rec: &CallRecord) -> String {
    use std::fmt::Write as _;
    let c = &rec.cdr;
    let mut s = String::new();
    let end = c.end.as_deref().unwrap_or("(in progress)");
    let _ = writeln!(s, "call {}  {} .. {end}  ({} s)", c.id, c.start, c.dur);
    if let Some(p) = &c.partial {
        let _ = writeln!(s, "PARTIAL: {p}");
    }
    let _ = writeln!(s, "\ntimeline (ms from the start):");
    for seg in &c.timeline {
        let _ = writeln!(
            s,
            "  {:>8} .. {:>8}  {:<9} {}",
            seg.start_ms,
            seg.end_ms,
            seg.kind.as_str(),
            seg.party.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(s, "\nfields:");
    let value = serde_json::to_value(c).unwrap_or_default();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if matches!(k.as_str(), "timeline" | "recordings") {
                continue;
            }
            let sources: Vec<&str> = rec
                .provenance
                .iter()
                .filter(|(f, _)| f == k)
                .map(|(_, src)| src.as_str())
                .collect();
            let _ = writeln!(s, "  {k} = {v}");
            for src in sources {
                let _ = writeln!(s, "      <- {src}");
            }
        }
    }
    s
}

async fn replay_events(files: &[PathBuf]) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = JsonLines::new(std::io::BufWriter::with_capacity(1 << 16, stdout.lock()));
    let mut failed = false;
    let progress = replay::Progress::on_terminal(files);
    for file in files {
        let mut stream = match replay::open_counted(file, Limits::default(), &progress).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed = true;
                continue;
            }
        };
        // Frame errors wait until the file has shown an event: a file that holds none is
        // not a capture, and says so in one line.
        let mut report = replay::AssembleReport::default();
        while let Some(item) = stream.next().await {
            match item {
                Err(e) => {
                    eprintln!("{}: read error: {e}", file.display());
                    failed = true;
                    break;
                }
                Ok(Ok(Message::Event(ev))) => {
                    if report.events == 0 {
                        for e in report.errors.drain(..) {
                            eprintln!("{}: {e}", file.display());
                        }
                    }
                    report.events += 1;
                    out.put(&ev)
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    failed = true;
                    if report.events == 0 {
                        report.errors.push(e.to_string());
                    } else {
                        eprintln!("{}: {e}", file.display());
                    }
                }
            }
            if out.stopped.is_some() {
                progress.finish();
                return out.finish(failed);
            }
        }
        if let Some(why) = report.not_a_capture() {
            eprintln!("{}: {why}", file.display());
            failed = true;
        }
    }
    progress.finish();
    out.finish(failed)
}
