//! golens: an eBPF agent that watches running Go services from outside.

use clap::Parser;
use golens::{cli, doctor, list, run, trace, tui};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // trace's output is the timeline: keep the agent's progress lines out of
    // it unless asked for (--log or GOLENS_LOG).
    let quiet = matches!(cli.command, Some(cli::Command::Trace(_)))
        && cli.log == "info"
        && std::env::var_os("GOLENS_LOG").is_none();
    let level = if quiet { "warn" } else { cli.log.as_str() };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a container's or a journal's log stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let result = match cli.command.unwrap_or(cli::Command::Run(cli::RunArgs::default())) {
        cli::Command::Run(args) => tokio_runtime().and_then(|rt| rt.block_on(run::run(args))),
        cli::Command::List(args) => list::list(&args),
        cli::Command::Top(args) => tui::top(&args),
        cli::Command::Trace(args) => trace::trace(&args),
        cli::Command::Doctor(args) => match doctor::doctor(&args) {
            Ok(code) => return code,
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
