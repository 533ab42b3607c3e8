//! The `shoal` binary: parse flags, bind, serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cluster::client::ClientConfig;
use cluster::{NodeName, Profile};
use server::{ClusterSettings, Config, Listeners, Settings};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
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
    let ip = config.listen;
    let addr = SocketAddr::new(ip, config.port);
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
    let peer_addr = SocketAddr::new(ip, config.peer_port);
    let peer = TcpListener::bind(peer_addr)
        .await
        .with_context(|| format!("binding the peer port {peer_addr}"))?;
    let http_addr = SocketAddr::new(ip, config.http_port);
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding the HTTP port {http_addr}"))?;
    let gossip_addr = SocketAddr::new(ip, config.gossip_port);
    let gossip = UdpSocket::bind(gossip_addr)
        .await
        .with_context(|| format!("binding the gossip port {gossip_addr}/udp"))?;

    let cluster = cluster_settings(&config, &tcp, &peer, &http, &gossip).await?;
    info!(
        "shoal {} node {} listening on {} (peer {}, gossip {}/udp, http {}; memory limit {} MB, item size max {} bytes, {} threads){}",
        env!("CARGO_PKG_VERSION"),
        cluster.node_name,
        tcp.local_addr()?,
        peer.local_addr()?,
        gossip.local_addr()?,
        http.local_addr()?,
        config.memory_limit >> 20,
        config.max_item_size,
        config.threads,
        if cluster.seeds.is_empty() {
            ", no seeds: a cluster of one".to_owned()
        } else {
            format!(", seeds {}", cluster.seeds.join(","))
        }
    );
    let listeners = Listeners {
        tcp: Some(tcp),
        unix,
        peer: Some(peer),
        gossip: Some(gossip),
        http: Some(http),
    };
    let settings = Settings {
        cluster: Some(cluster),
        ..Settings::from(&config)
    };
    server::run(listeners, settings, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

/// The cluster side of the command line: the node's name (default: the
/// host name), what it advertises, and how it finds the others.
async fn cluster_settings(
    config: &Config,
    tcp: &TcpListener,
    peer: &TcpListener,
    http: &TcpListener,
    gossip: &UdpSocket,
) -> anyhow::Result<ClusterSettings> {
    let hostname = hostname().unwrap_or_else(|| "localhost".to_owned());
    let name = config.node_name.clone().unwrap_or_else(|| hostname.clone());
    let node_name = NodeName::new(&name).context("--node-name")?;
    let bound = gossip.local_addr()?;
    // Peers are told a name they can resolve: the bound address when it is
    // a real one; with a wildcard, the host's name (in Kubernetes, pass
    // the pod's stable DNS name with --advertise-host).
    let advertise_host = match &config.advertise_host {
        Some(host) => host.clone(),
        None if config.listen.is_unspecified() => hostname.clone(),
        None => config.listen.to_string(),
    };
    // Gossip goes to an IP, never waiting on DNS: resolve the advertised
    // host once now when bound to a wildcard.
    let gossip_addr = if bound.ip().is_unspecified() {
        let resolved = tokio::net::lookup_host((advertise_host.as_str(), bound.port()))
            .await
            .ok()
            .and_then(|mut addrs| addrs.find(|a| a.is_ipv4() == bound.is_ipv4()));
        match resolved {
            Some(addr) => Some(addr),
            None => {
                warn!(
                    "cannot resolve --advertise-host {advertise_host:?}; peers will be told 127.0.0.1"
                );
                Some(SocketAddr::new([127, 0, 0, 1].into(), bound.port()))
            }
        }
    } else {
        None
    };
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port());
    let mut profile = match config.gossip_profile.as_str() {
        "fast" => Profile::fast(),
        _ => Profile::lan(),
    };
    profile.vnodes = cluster::DEFAULT_VNODES;
    Ok(ClusterSettings {
        node_name,
        seeds: config
            .seeds
            .iter()
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .collect(),
        advertise_host,
        gossip_addr,
        memcache_port: port(tcp)?,
        peer_port: port(peer)?,
        http_port: port(http)?,
        profile,
        client: ClientConfig {
            deadline: Duration::from_millis(config.peer_timeout_ms),
            max_in_flight: config.peer_window.into(),
            ..ClientConfig::default()
        },
    })
}

/// The host name (`gethostname`), if it is valid UTF-8.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|s| !s.is_empty())
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
