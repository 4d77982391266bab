//! The `wkube` binary: parses flags and hands over to the component that
//! owns the subcommand. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use wkube::cli::{Cli, Command};

/// mimalloc rather than the C library's allocator: the API server's work is
/// mostly short-lived JSON trees and buffers, where it costs about half as
/// much CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout carries only what a command prints
    // (etcdctl-compatible output of `wkube kv`, usage lines of the server).
    tracing_subscriber::registry()
        .with(log_filter())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();

    // Many pods mean many sockets: the hard limit, not the soft one.
    if let Some(n) = wkube::cluster::raise_open_files_limit() {
        tracing::debug!(open_files = n, "open-file limit");
    }
    let data_dir = match cli.data_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        #[cfg(feature = "server")]
        Command::Server(args) => {
            if let Err(e) = args.validate() {
                eprintln!("Error: {e}");
                return ExitCode::FAILURE;
            }
            let scheduler = match args.scheduler_config() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("Error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut cfg = (*args).into_config(data_dir);
            cfg.scheduler = scheduler;
            match wkube::server::run(cfg, wkube::shutdown::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {:#}", anyhow::Error::from(e));
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "server")]
        Command::Kv(args) => wkube::cli::kv::run(args, &data_dir).await,
        Command::Agent(args) => {
            match wkube::cli::agent::run(args, data_dir, wkube::shutdown::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {:#}", anyhow::Error::from(e));
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "server")]
        Command::Push(args) => wkube::cli::push::run(args, &data_dir).await,
        #[cfg(feature = "server")]
        Command::Run(args) => wkube::cli::run::run(args, &data_dir).await,
        #[cfg(feature = "server")]
        Command::Node(args) => wkube::cli::node::run(args, &data_dir).await,
        #[cfg(feature = "server")]
        Command::Example(args) => wkube::cli::example::run(&args),
        #[cfg(feature = "server")]
        Command::Encryption(args) => wkube::cli::encryption::run(&args, &data_dir),
        #[cfg(feature = "server")]
        Command::Snapshot(args) => wkube::cli::snapshot::run(&args, &data_dir).await,
        #[cfg(feature = "server")]
        Command::Migrate(args) => wkube::cli::migrate::run(&args, &data_dir).await,
        #[cfg(feature = "server")]
        Command::Token(args) => wkube::cli::token::run_token(args, &data_dir).await,
        #[cfg(feature = "server")]
        Command::Kubeconfig(args) => wkube::cli::token::run_kubeconfig(args, &data_dir),
    }
}

/// What `RUST_LOG` asks to be logged, `info` by default.
#[cfg(feature = "server")]
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
}

/// The agent-only build reads `RUST_LOG` as `LEVEL` or `target=LEVEL,...`
/// directives without span or field filters: that parser needs no regular
/// expressions, which keeps the edge agent's binary small.
#[cfg(not(feature = "server"))]
fn log_filter() -> tracing_subscriber::filter::Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        })
}
