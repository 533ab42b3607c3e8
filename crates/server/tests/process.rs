//! The `shoal` binary as operators run it: flags, environment variables,
//! signals, and resident memory under a write load.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the binary with `args` and `env` (the port comes from `port_env` or
/// `-p`), and wait until it accepts connections.
fn start(args: &[&str], env: &[(&str, &str)], port_via_env: bool) -> Proc {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(["-l", "127.0.0.1"]).args(args);
    // The cluster listeners too, so tests running side by side never
    // fight over the default ports.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gossip = udp.local_addr().unwrap().port();
    drop(udp);
    cmd.args(["--gossip-port", &gossip.to_string()])
        .args(["--peer-port", &free_port().to_string()])
        .args(["--http-port", &free_port().to_string()]);
    if port_via_env {
        cmd.env("SHOAL_MEMCACHE_PORT", port.to_string());
    } else {
        cmd.args(["-p", &port.to_string()]);
    }
    // What Kubernetes injects for a Service named shoal: must be ignored.
    cmd.env("SHOAL_PORT", "tcp://10.0.0.5:11211")
        .env("SHOAL_SERVICE_PORT", "11211");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut p = Proc { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "shoal exited at start"
        );
        assert!(Instant::now() < deadline, "shoal did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

fn ask(stream: &mut TcpStream, request: &str, until: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.ends_with(until.as_bytes()) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn stat(stream: &mut TcpStream, group: &str, name: &str) -> String {
    let stats = ask(stream, &format!("stats {group}\r\n"), "END\r\n");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
        .to_string()
}

#[test]
fn environment_variables_configure_the_node_and_flags_win() {
    let p = start(
        &["-m", "32"],
        &[
            ("SHOAL_MEMORY_LIMIT", "16"),
            ("SHOAL_MAX_ITEM_SIZE", "2m"),
            ("SHOAL_CONN_LIMIT", "77"),
            ("SHOAL_THREADS", "2"),
            ("SHOAL_DISABLE_FLUSH", "true"),
        ],
        true,
    );
    let mut s = connect(p.addr);
    assert_eq!(stat(&mut s, "settings", "maxbytes"), (32 << 20).to_string());
    assert_eq!(
        stat(&mut s, "settings", "item_size_max"),
        (2 << 20).to_string()
    );
    assert_eq!(stat(&mut s, "settings", "maxconns"), "77");
    assert_eq!(stat(&mut s, "settings", "num_threads"), "2");
    assert_eq!(stat(&mut s, "settings", "flush_enabled"), "no");
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut p = start(&["-t", "1"], &[], false);
    let mut s = connect(p.addr);
    assert_eq!(ask(&mut s, "set k 0 0 1\r\nx\r\n", "\r\n"), "STORED\r\n");
    let sent = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "shoal ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Resident memory stays within `-m` plus a stated slack while a client
/// writes ten times `-m` of mixed-size values.
///
/// The slack, 24 MiB + 25% of `-m`, covers the runtime and its threads'
/// stacks, connection buffers, and allocator fragmentation as item sizes mix.
#[test]
fn resident_memory_stays_within_the_limit() {
    const LIMIT_MB: u64 = 32;
    let p = start(&["-m", &LIMIT_MB.to_string(), "-t", "2"], &[], false);
    let limit = LIMIT_MB << 20;
    let slack = (24 << 20) + limit / 4;
    let mut s = connect(p.addr);
    let sizes = [100usize, 700, 3000, 12_000, 50_000];
    let mut written = 0u64;
    let mut i = 0u64;
    let mut peak = 0;
    while written < 10 * limit {
        let mut batch = Vec::new();
        for _ in 0..100 {
            let size = sizes[(i % sizes.len() as u64) as usize];
            batch.extend_from_slice(format!("set key:{i} 0 0 {size} noreply\r\n").as_bytes());
            batch.resize(batch.len() + size, b'x');
            batch.extend_from_slice(b"\r\n");
            written += size as u64;
            i += 1;
        }
        batch.extend_from_slice(b"mn\r\n");
        s.write_all(&batch).unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"MN\r\n");
        let bytes: u64 = stat(&mut s, "", "bytes").parse().unwrap();
        assert!(bytes <= limit, "accounted {bytes} over the limit {limit}");
        peak = peak.max(rss_bytes(p.child.id()));
    }
    println!(
        "resident memory peak {} MiB with -m {LIMIT_MB} (allowed {} MiB)",
        peak >> 20,
        (limit + slack) >> 20
    );
    assert!(
        peak <= limit + slack,
        "resident {} MiB over -m {} MiB + slack {} MiB",
        peak >> 20,
        LIMIT_MB,
        slack >> 20
    );
    eprintln!(
        "wrote {} MiB into -m {LIMIT_MB}: peak resident {} MiB",
        written >> 20,
        peak >> 20
    );
}
