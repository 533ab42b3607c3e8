//! The command line: memcached's flags where they exist, each with a
//! `SHOAL_*` environment variable (a flag beats its variable).
//!
//! `SHOAL_PORT` and `SHOAL_SERVICE_*` are never read: Kubernetes injects them
//! into every pod when a Service is named `shoal`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// shoal: a clustered, memcached-compatible cache.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal", version, about)]
pub struct Config {
    /// TCP port for the memcache protocols (text and binary).
    #[arg(
        short = 'p',
        long = "port",
        env = "SHOAL_MEMCACHE_PORT",
        default_value_t = 11211
    )]
    pub port: u16,

    /// Address every listener binds.
    #[arg(
        short = 'l',
        long = "listen",
        env = "SHOAL_LISTEN",
        default_value = "0.0.0.0"
    )]
    pub listen: IpAddr,

    /// Also listen on this unix socket (Django: `LOCATION: "unix:/path"`).
    #[arg(short = 's', long = "unix-socket", env = "SHOAL_UNIX_SOCKET")]
    pub unix_socket: Option<PathBuf>,

    /// Item memory in megabytes (suffixes k, m, g also accepted).
    #[arg(short = 'm', long = "memory-limit", env = "SHOAL_MEMORY_LIMIT", default_value = "64", value_parser = parse_megabytes)]
    pub memory_limit: usize,

    /// Largest item, as memcached counts it (key, value and header); bytes
    /// or with a k/m suffix.
    #[arg(short = 'I', long = "max-item-size", env = "SHOAL_MAX_ITEM_SIZE", default_value = "1m", value_parser = parse_item_size)]
    pub max_item_size: usize,

    /// Most simultaneous client connections.
    #[arg(
        short = 'c',
        long = "conn-limit",
        env = "SHOAL_CONN_LIMIT",
        default_value_t = 1024
    )]
    pub conn_limit: usize,

    /// Worker threads.
    #[arg(short = 't', long = "threads", env = "SHOAL_THREADS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,

    /// Refuse flush_all, as memcached's -F does.
    #[arg(short = 'F', long = "disable-flush-all", env = "SHOAL_DISABLE_FLUSH")]
    pub disable_flush: bool,

    /// Log more (-v, -vv). `SHOAL_VERBOSE` takes a level.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// This node's stable name in the cluster (default: the host name).
    #[arg(long = "node-name", env = "SHOAL_NODE_NAME")]
    pub node_name: Option<String>,

    /// Gossip addresses of other nodes (host:port, comma separated).
    #[arg(long = "seeds", env = "SHOAL_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,

    /// The host peers and discovery are told to reach this node at.
    #[arg(long = "advertise-host", env = "SHOAL_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// UDP port for gossip.
    #[arg(
        long = "gossip-port",
        env = "SHOAL_GOSSIP_PORT",
        default_value_t = 7946
    )]
    pub gossip_port: u16,

    /// TCP port for the peer gRPC API.
    #[arg(long = "peer-port", env = "SHOAL_PEER_PORT", default_value_t = 7947)]
    pub peer_port: u16,

    /// TCP port for /metrics, /healthz and /readyz.
    #[arg(long = "http-port", env = "SHOAL_HTTP_PORT", default_value_t = 9150)]
    pub http_port: u16,

    /// Gossip timings: `lan` (deployments) or `fast` (tests on one host:
    /// a crash is noticed in about a second).
    #[arg(
        long = "gossip-profile",
        env = "SHOAL_GOSSIP_PROFILE",
        default_value = "lan",
        value_parser = ["lan", "fast"]
    )]
    pub gossip_profile: String,

    /// Longest a request forwarded to a peer may take, in milliseconds;
    /// past it a read is a miss and a write `SERVER_ERROR`.
    #[arg(
        long = "peer-timeout-ms",
        env = "SHOAL_PEER_TIMEOUT_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    pub peer_timeout_ms: u64,

    /// Batches of forwarded requests in flight to one peer at a time.
    /// While the window is full, new requests for that peer queue and go
    /// out together in the next batch: a small window makes larger
    /// batches (less CPU per forwarded request under load), a larger one
    /// lower latency on an idle link.
    #[arg(
        long = "peer-window",
        env = "SHOAL_PEER_WINDOW",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub peer_window: u16,

    /// Keep Prometheus metrics and serve them on `/metrics` (`off` saves
    /// their few instructions per request).
    #[arg(
        long = "metrics",
        env = "SHOAL_METRICS",
        default_value = "on",
        value_parser = ["on", "off"]
    )]
    pub metrics: String,

    /// Most application key families (key prefixes) labelled in the
    /// metrics; keys of later ones count as `other`. Django's own families
    /// (cache_page, sessions, template fragments…) are always labelled.
    #[arg(
        long = "key-family-cap",
        env = "SHOAL_KEY_FAMILY_CAP",
        default_value_t = 32,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1000)
    )]
    pub key_family_cap: usize,

    /// How `stats hotkeys` and `/hotkeys` show keys: `plain`, `hash` (a
    /// keyed hash, new secret at each start) or `truncate:N` (the first N
    /// characters).
    #[arg(
        long = "hot-key-privacy",
        env = "SHOAL_HOT_KEY_PRIVACY",
        default_value = "plain",
        value_parser = parse_privacy
    )]
    pub hot_key_privacy: telemetry::Privacy,
}

fn parse_privacy(s: &str) -> Result<telemetry::Privacy, String> {
    match s {
        "plain" => Ok(telemetry::Privacy::Plain),
        "hash" => Ok(telemetry::Privacy::Hash(telemetry::HashKey::random())),
        _ => match s.strip_prefix("truncate:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(telemetry::Privacy::Truncate(n)),
            _ => Err(format!("expected plain, hash or truncate:N, got {s:?}")),
        },
    }
}

impl Config {
    /// The verbosity: `-v` counted, or `SHOAL_VERBOSE` when no flag is given.
    pub fn verbosity(&self) -> u8 {
        if self.verbose > 0 {
            return self.verbose;
        }
        match std::env::var("SHOAL_VERBOSE") {
            Ok(v) => match v.trim() {
                "" | "0" | "false" | "no" | "off" => 0,
                "true" | "yes" | "on" => 1,
                n => n.parse().unwrap_or(1),
            },
            Err(_) => 0,
        }
    }
}

/// memcached's -I refuses less than 1 KiB and more than 1 GiB.
const MIN_ITEM_SIZE: usize = 1024;
const MAX_ITEM_SIZE: usize = 1024 * 1024 * 1024;

fn parse_size(s: &str, default_unit: usize) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let unit = match c.to_ascii_lowercase() {
                'b' => 1,
                'k' => 1024,
                'm' => 1024 * 1024,
                'g' => 1024 * 1024 * 1024,
                _ => return Err(format!("unknown size unit in {s:?}")),
            };
            (&s[..i], unit)
        }
        _ => (s, default_unit),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

fn parse_megabytes(s: &str) -> Result<usize, String> {
    let bytes = parse_size(s, 1024 * 1024)?;
    if bytes == 0 {
        return Err("the memory limit must be above zero".into());
    }
    Ok(bytes)
}

fn parse_item_size(s: &str) -> Result<usize, String> {
    let bytes = parse_size(s, 1)?;
    if !(MIN_ITEM_SIZE..=MAX_ITEM_SIZE).contains(&bytes) {
        return Err(format!(
            "item size must be between {MIN_ITEM_SIZE} bytes and 1g, got {s:?}"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
    }

    #[test]
    fn memcached_defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 11211);
        assert_eq!(c.memory_limit, 64 * 1024 * 1024);
        assert_eq!(c.max_item_size, 1024 * 1024);
        assert_eq!(c.conn_limit, 1024);
        assert!(!c.disable_flush);
        assert_eq!(
            (c.gossip_port, c.peer_port, c.http_port),
            (7946, 7947, 9150)
        );
    }

    #[test]
    fn memcached_flags() {
        let c = parse(&[
            "-p",
            "22122",
            "-l",
            "127.0.0.1",
            "-s",
            "/tmp/s.sock",
            "-m",
            "128",
            "-I",
            "2m",
            "-c",
            "10",
            "-t",
            "2",
            "-F",
            "-vv",
        ])
        .unwrap();
        assert_eq!(c.port, 22122);
        assert_eq!(c.listen.to_string(), "127.0.0.1");
        assert_eq!(c.unix_socket.unwrap().to_str(), Some("/tmp/s.sock"));
        assert_eq!(c.memory_limit, 128 << 20);
        assert_eq!(c.max_item_size, 2 << 20);
        assert_eq!(
            (c.conn_limit, c.threads, c.disable_flush, c.verbose),
            (10, 2, true, 2)
        );
    }

    #[test]
    fn cluster_flags() {
        let c = parse(&[
            "--node-name",
            "shoal-2",
            "--seeds",
            "a:7946,b:7946",
            "--advertise-host",
            "x.local",
            "--gossip-port",
            "1",
            "--peer-port",
            "2",
            "--http-port",
            "3",
        ])
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("shoal-2"));
        assert_eq!(c.seeds, ["a:7946", "b:7946"]);
        assert_eq!(c.advertise_host.as_deref(), Some("x.local"));
        assert_eq!((c.gossip_port, c.peer_port, c.http_port), (1, 2, 3));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_item_size("1m"), Ok(1 << 20));
        assert_eq!(parse_item_size("1024k"), Ok(1 << 20));
        assert_eq!(parse_item_size("2048"), Ok(2048));
        assert_eq!(parse_item_size("1M"), Ok(1 << 20));
        assert!(parse_item_size("512").is_err());
        assert!(parse_item_size("2g").is_err());
        assert!(parse_item_size("1x").is_err());
        assert_eq!(parse_megabytes("64"), Ok(64 << 20));
        assert_eq!(parse_megabytes("1g"), Ok(1 << 30));
        assert!(parse_megabytes("0").is_err());
    }
}
