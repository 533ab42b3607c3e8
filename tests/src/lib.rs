//! Helpers for shoal's end-to-end tests: start real nodes on `127.0.0.1:0`,
//! start a stock memcached beside them as the reference, and speak bytes.
//!
//! - [`Shoal`]: an in-process node on an ephemeral port, stopped on drop.
//! - [`Memcached`]: Debian's memcached on a free port, killed on drop; the
//!   behaviour shoal must match.
//! - [`Conn`]: a blocking client that sends raw bytes and reads back exactly
//!   one exchange, ended by a sentinel both servers answer (`mn` → `MN` for
//!   text, a noop with a marker opaque for binary).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use server::Settings;

/// How long any single read may wait before a test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A shoal node served in-process on its own runtime thread.
pub struct Shoal {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shoal {
    pub fn start() -> Shoal {
        Shoal::with(Settings::default())
    }

    pub fn with(settings: Settings) -> Shoal {
        Shoal::with_listeners(settings, None)
    }

    /// Also listen on the unix socket at `unix`.
    pub fn with_listeners(settings: Settings, unix: Option<PathBuf>) -> Shoal {
        let std = StdListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        std.set_nonblocking(true).unwrap();
        let addr = std.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tcp = tokio::net::TcpListener::from_std(std).unwrap();
                let unix = unix.map(|p| (tokio::net::UnixListener::bind(&p).unwrap(), p));
                let listeners = server::Listeners {
                    tcp: Some(tcp),
                    unix,
                    peer: None,
                    gossip: None,
                    http: None,
                };
                ready_tx.send(()).unwrap();
                server::run(listeners, settings, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        ready_rx.recv().expect("node failed to start");
        Shoal {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// Stop the node and wait until it has.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A clustered shoal node served in-process on its own runtime thread,
/// with every listener (memcache, peer, gossip, HTTP) on `127.0.0.1:0`.
/// [`ClusterNode::crash`] drops its runtime without leaving the cluster:
/// sockets close, nothing is said, as when a process is killed.
pub struct ClusterNode {
    pub name: String,
    pub addr: SocketAddr,
    pub gossip: SocketAddr,
    pub http: SocketAddr,
    /// The peer API (gRPC).
    pub peer: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterNode {
    /// Starts `name` with the fast gossip profile, joining through `seeds`
    /// (gossip addresses; empty: a cluster of one).
    pub fn start(name: &str, seeds: &[SocketAddr]) -> ClusterNode {
        ClusterNode::with(name, seeds, Settings::default())
    }

    pub fn with(name: &str, seeds: &[SocketAddr], settings: Settings) -> ClusterNode {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let node_name = cluster::NodeName::new(name).expect("a valid node name");
        let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let crashed = rt.block_on(async move {
                let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
                let tcp = bind().await.unwrap();
                let peer = bind().await.unwrap();
                let http = bind().await.unwrap();
                let gossip = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let addrs = (
                    tcp.local_addr().unwrap(),
                    gossip.local_addr().unwrap(),
                    http.local_addr().unwrap(),
                    peer.local_addr().unwrap(),
                );
                let settings = Settings {
                    cluster: Some(server::ClusterSettings {
                        node_name,
                        seeds,
                        advertise_host: "127.0.0.1".into(),
                        gossip_addr: None,
                        memcache_port: 0,
                        peer_port: 0,
                        http_port: 0,
                        profile: cluster::Profile::fast(),
                        client: cluster::client::ClientConfig {
                            deadline: Duration::from_millis(500),
                            ..Default::default()
                        },
                    }),
                    ..settings
                };
                let listeners = server::Listeners {
                    tcp: Some(tcp),
                    unix: None,
                    peer: Some(peer),
                    gossip: Some(gossip),
                    http: Some(http),
                };
                ready_tx.send(addrs).unwrap();
                let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
                let run = server::run(listeners, settings, async {
                    let _ = graceful_rx.await;
                });
                tokio::pin!(run);
                tokio::select! {
                    _ = &mut run => false,
                    crash = stop_rx => {
                        if crash.unwrap_or(false) {
                            return true;
                        }
                        let _ = graceful_tx.send(());
                        let _ = run.await;
                        false
                    }
                }
            });
            if crashed {
                // Every task and socket goes at once, without a word.
                rt.shutdown_background();
            }
        });
        let (addr, gossip, http, peer) = ready_rx.recv().expect("node failed to start");
        ClusterNode {
            name: name.to_owned(),
            addr,
            gossip,
            http,
            peer,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// `GET path` on the HTTP port: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).expect("connecting to the HTTP port");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .expect("reading the HTTP answer");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("an HTTP status line");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    /// `stats cluster` as name → value.
    pub fn cluster_stats(&self) -> std::collections::BTreeMap<String, String> {
        self.conn()
            .text_str("stats cluster\r\n")
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Kills the node: no graceful leave.
    pub fn crash(mut self) {
        self.finish(true);
    }

    /// Stops the node gracefully (it leaves the cluster first).
    pub fn stop(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, crash: bool) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(crash);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// Polls `check` every 20 ms until it holds; panics with `what` after
/// `timeout`. Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if check() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this process holds a socket listening on TCP `port`.
///
/// Read from `/proc`, so it cannot be fooled by another process (or a
/// self-connect) taking the port once this process lets it go, as a
/// connection attempt can.
pub fn this_process_listens_on(port: u16) -> bool {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let listening = |table: &str| {
        let table = std::fs::read_to_string(table).unwrap_or_default();
        table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1).and_then(|a| a.rsplit(':').next());
            local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                && cols.get(3) == Some(&"0A")
                && cols.get(9).is_some_and(|inode| ours.contains(*inode))
        })
    };
    listening("/proc/net/tcp") || listening("/proc/net/tcp6")
}

/// A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 and
/// report it, like memcached).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A stock memcached, the reference shoal's answers are compared with.
pub struct Memcached {
    pub addr: SocketAddr,
    child: Child,
}

impl Memcached {
    /// Start `/usr/bin/memcached` (or `$MEMCACHED_BIN`) with extra `args`.
    ///
    /// # Panics
    /// If memcached is not installed: the comparison tests need it, and CI
    /// installs it (`.ci/run`).
    pub fn start(args: &[&str]) -> Memcached {
        let bin = std::env::var("MEMCACHED_BIN").unwrap_or_else(|_| "/usr/bin/memcached".into());
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&bin)
                .args([
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "0",
                    "-u",
                    "nobody",
                ])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {bin} (install Debian's memcached): {e}"));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut m = Memcached { addr, child };
            if wait_for_port(addr, &mut m.child) {
                return m;
            }
        }
        panic!("memcached did not start");
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll until `addr` accepts a connection; false if the process exited.
pub fn wait_for_port(addr: SocketAddr, child: &mut Child) -> bool {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A blocking client speaking raw bytes.
pub struct Conn {
    stream: TcpStream,
}

/// The opaque of the binary noop that ends an exchange.
const SENTINEL_OPAQUE: u32 = 0x5E47_1E1A;

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connecting");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream }
    }

    /// A second handle on the same connection (to write from another
    /// thread while this one reads).
    pub fn try_clone(&self) -> Conn {
        Conn {
            stream: self.stream.try_clone().expect("cloning the stream"),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sending");
    }

    /// Send a text request and return everything answered before the
    /// sentinel `mn`'s `MN\r\n`.
    pub fn text(&mut self, request: &[u8]) -> Vec<u8> {
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(b"mn\r\n");
        self.send(&bytes);
        self.read_until_suffix(b"MN\r\n")
    }

    /// [`Conn::text`] as a string, for readable assertions.
    pub fn text_str(&mut self, request: &str) -> String {
        String::from_utf8_lossy(&self.text(request.as_bytes())).into_owned()
    }

    /// Like [`Conn::text`], but a connection the server closes before the
    /// sentinel gives `Err` with what arrived.
    pub fn try_text(&mut self, request: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(b"mn\r\n");
        if self.stream.write_all(&bytes).is_err() {
            return Err(Vec::new());
        }
        self.try_read_until_suffix(b"MN\r\n")
    }

    fn read_until_suffix(&mut self, suffix: &[u8]) -> Vec<u8> {
        self.try_read_until_suffix(suffix).unwrap_or_else(|got| {
            panic!(
                "connection closed before the sentinel; got {:?}",
                String::from_utf8_lossy(&got)
            )
        })
    }

    fn try_read_until_suffix(&mut self, suffix: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            if got.ends_with(suffix) {
                got.truncate(got.len() - suffix.len());
                return Ok(got);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(got),
                Err(e) => panic!("reading (have {:?}): {e}", String::from_utf8_lossy(&got)),
            }
        }
    }

    /// Read exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        self.stream.read_exact(&mut got).expect("reading");
        got
    }

    /// Read until the server closes the connection.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        self.stream.read_to_end(&mut got).expect("reading to close");
        got
    }

    /// Send binary packets and return the answer packets that arrive before
    /// the sentinel noop's answer.
    ///
    /// # Panics
    /// If the server closes the connection or stops answering first; use
    /// [`Conn::try_binary`] where that is a possible outcome.
    pub fn binary(&mut self, packets: &[u8]) -> Vec<Packet> {
        match self.try_binary(packets) {
            Ok(answers) => answers,
            Err((answers, why)) => panic!("{why:?} after {answers:?}"),
        }
    }

    /// Like [`Conn::binary`], but a close or a silence before the sentinel
    /// gives `Err` with the packets that did arrive and what happened.
    pub fn try_binary(&mut self, packets: &[u8]) -> Result<Vec<Packet>, (Vec<Packet>, Ended)> {
        let mut bytes = packets.to_vec();
        bytes.extend_from_slice(&Packet::request(0x0a, b"", b"", b"", SENTINEL_OPAQUE, 0));
        let mut answers = Vec::new();
        if self.stream.write_all(&bytes).is_err() {
            return Err((answers, Ended::Closed));
        }
        loop {
            match self.try_read_packet() {
                Ok(p) if p.opcode == 0x0a && p.opaque == SENTINEL_OPAQUE => return Ok(answers),
                Ok(p) => answers.push(p),
                Err(ended) => return Err((answers, ended)),
            }
        }
    }

    /// Set how long a read waits before the server counts as silent.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn read_packet(&mut self) -> Packet {
        self.try_read_packet()
            .unwrap_or_else(|ended| panic!("reading a packet: {ended:?}"))
    }

    fn try_read_packet(&mut self) -> Result<Packet, Ended> {
        let mut header = [0u8; 24];
        self.read_exact_or_end(&mut header)?;
        let body_len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
        let mut body = vec![0u8; body_len];
        self.read_exact_or_end(&mut body)?;
        let key_len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let extras_len = header[4] as usize;
        Ok(Packet {
            magic: header[0],
            opcode: header[1],
            status: u16::from_be_bytes([header[6], header[7]]),
            opaque: u32::from_be_bytes(header[12..16].try_into().unwrap()),
            cas: u64::from_be_bytes(header[16..24].try_into().unwrap()),
            extras: body[..extras_len].to_vec(),
            key: body[extras_len..extras_len + key_len].to_vec(),
            value: body[extras_len + key_len..].to_vec(),
        })
    }

    fn read_exact_or_end(&mut self, buf: &mut [u8]) -> Result<(), Ended> {
        self.stream.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Ended::Silent,
            _ => Ended::Closed,
        })
    }
}

/// How an exchange ended without its sentinel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server closed the connection.
    Closed,
    /// The server stopped answering (read timeout).
    Silent,
}

/// One binary protocol packet, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub magic: u8,
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Packet {
    /// Encode a binary request.
    pub fn request(
        opcode: u8,
        extras: &[u8],
        key: &[u8],
        value: &[u8],
        opaque: u32,
        cas: u64,
    ) -> Vec<u8> {
        let body = extras.len() + key.len() + value.len();
        let mut p = Vec::with_capacity(24 + body);
        p.push(0x80);
        p.push(opcode);
        p.extend_from_slice(&(key.len() as u16).to_be_bytes());
        p.push(extras.len() as u8);
        p.push(0);
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&(body as u32).to_be_bytes());
        p.extend_from_slice(&opaque.to_be_bytes());
        p.extend_from_slice(&cas.to_be_bytes());
        p.extend_from_slice(extras);
        p.extend_from_slice(key);
        p.extend_from_slice(value);
        p
    }

    /// The answer with CAS values replaced by whether they were set, for
    /// comparing servers whose CAS counters differ.
    pub fn without_cas(&self) -> Packet {
        Packet {
            cas: u64::from(self.cas != 0),
            ..self.clone()
        }
    }
}

/// Replace the CAS in `VALUE <key> <flags> <bytes> <cas>` lines with `<cas>`,
/// so text answers of two servers compare equal when only counters differ.
pub fn mask_cas(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    text.split_inclusive("\r\n")
        .map(|line| {
            let tokens: Vec<&str> = line.trim_end().split(' ').collect();
            if tokens.len() == 5 && tokens[0] == "VALUE" {
                format!("VALUE {} {} {} <cas>\r\n", tokens[1], tokens[2], tokens[3])
            } else {
                line.to_string()
            }
        })
        .collect()
}
