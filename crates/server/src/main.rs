//! The `shoal` binary: parse flags, bind, serve until SIGTERM or SIGINT.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use server::{Config, Listeners, Settings};
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.verbosity());

    let mut runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.threads.into());
        b
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if !config.seeds.is_empty() {
        warn!(
            "--seeds given, but clustering is not built yet: serving as a single node and ignoring {:?}",
            config.seeds
        );
    }
    let addr = SocketAddr::new(config.listen, config.port);
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let unix = match &config.unix_socket {
        Some(path) => {
            // A socket file left by a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok() {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
            }
            let l = UnixListener::bind(path)
                .with_context(|| format!("binding unix socket {}", path.display()))?;
            Some((l, path.clone()))
        }
        None => None,
    };
    info!(
        "shoal {} listening on {} (memory limit {} MB, item size max {} bytes, {} threads)",
        env!("CARGO_PKG_VERSION"),
        tcp.local_addr()?,
        config.memory_limit >> 20,
        config.max_item_size,
        config.threads,
    );
    let listeners = Listeners {
        tcp: Some(tcp),
        unix,
        peer: None,
    };
    server::run(listeners, Settings::from(&config), shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
