use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = switchhook::cli::Cli::parse();
    switchhook::cli::run(cli).await
}
