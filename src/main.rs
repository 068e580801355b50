use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = switchhook::cli::Cli::parse();
    // `--env-file` sets variables: done here, before any thread exists.
    if let Err(code) = cli.load_env_files() {
        return code;
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(switchhook::cli::run(cli)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
