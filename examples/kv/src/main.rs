//! The `raft-kv` binary: `serve`, `up` and `bench` (see `raft_kv::cli`).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use raft_kv::cli::{Cli, Command, ServeConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Bad flags: clap prints its message and exits with 2.
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the tokio runtime: {e}")),
    };
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.into_config().unwrap_or_else(|e| invalid_flags("serve", e));
            runtime.block_on(serve(cfg))
        }
        Command::Up(cfg) => {
            if let Err(e) = cfg.validate() {
                invalid_flags("up", e);
            }
            match runtime.block_on(raft_kv::up::up(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Bench(cfg) => {
            if let Err(e) = cfg.validate() {
                invalid_flags("bench", e);
            }
            let json = cfg.json;
            match runtime.block_on(raft_kv::bench::run(cfg)) {
                Ok(report) => match print_report(&report, json) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(format_args!("writing the report: {e}")),
                },
                Err(e) => fail(e),
            }
        }
    }
}

/// Runs one member until a signal, or until it is removed from the cluster.
async fn serve(cfg: ServeConfig) -> ExitCode {
    match raft_kv::server::serve(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: `up` sends each member's log to a file.
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(io::stderr)
        .init();
}

/// A flag rule clap cannot check: reported like clap's own errors, with the usage of
/// `subcommand`, and exit code 2.
fn invalid_flags(subcommand: &str, message: impl std::fmt::Display) -> ! {
    let mut command = Cli::command();
    command.build();
    let command = command.find_subcommand_mut(subcommand).expect("a subcommand of Cli");
    command.error(clap::error::ErrorKind::ValueValidation, message).exit()
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("raft-kv: error: {error}");
    ExitCode::FAILURE
}

/// The bench report on stdout: it is what the command produces.
fn print_report(report: &raft_kv::bench::BenchReport, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report).map_err(io::Error::other)?;
        writeln!(out)
    } else {
        raft_kv::bench::write_table(report, &mut out)
    }
}
