//! `master`: serve the pool, submit experiments, inspect results.

use anyhow::Result;
use clap::Parser;
use explore_master::cli::{self, Cli, Command};
use explore_master::server::{self, ServeConfig};

#[tokio::main]
async fn main() {
    // Exit codes (README "Exit codes"): 0 success, 1 error, 2 usage error (clap).
    let cli = Cli::parse();
    let log_format = cli.log_format;
    explore_common::logging::init(log_format);
    if let Err(e) = run(cli).await {
        explore_common::logging::report_error(log_format, &format!("{e:#}"));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(ServeConfig::try_from(&args)?).await,
        Command::Submit(args) => cli::submit(&args).await,
        Command::Status(args) => cli::status(&args).await,
        Command::Best(args) => cli::best(&args).await,
        Command::Trials(args) => cli::trials(&args).await,
        Command::Stop(args) => cli::stop(&args).await,
        Command::Resume(args) => cli::resume(&args).await,
        Command::Export(args) => explore_master::export::run(&args).await,
        Command::DevPrefill(args) => cli::prefill(&args).await,
    }
}

async fn serve(config: ServeConfig) -> Result<()> {
    let mut handle = server::start(config).await?;
    println!("master listening on {}", handle.addr);
    if let Some(http) = handle.http_addr {
        println!("http listening on {http} (dashboard: http://{http}/)");
    }
    tokio::select! {
        result = handle.wait() => result?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down: no new calls accepted");
            handle.shutdown().await?;
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
