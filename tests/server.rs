//! The node as a whole: limits, sockets, bad input, shutdown.

use std::io::{Read, Write};

use std::os::unix::net::UnixStream;
use std::time::Duration;

use e2e::{Conn, Packet, Settings, Shoal};

fn stat(conn: &mut Conn, group: &str, name: &str) -> u64 {
    let stats = conn.text_str(&format!("stats {group}\r\n"));
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
        .parse()
        .unwrap()
}

#[test]
fn both_protocols_share_the_port() {
    let shoal = Shoal::start();
    let mut text = shoal.conn();
    assert_eq!(text.text_str("set k 0 0 2\r\nhi\r\n"), "STORED\r\n");
    let mut bin = shoal.conn();
    let got = bin.binary(&Packet::request(0x00, b"", b"k", b"", 1, 0));
    assert_eq!(got[0].value, b"hi");
}

#[test]
fn connections_over_the_limit_are_told_and_closed() {
    let shoal = Shoal::with(Settings {
        conn_limit: 2,
        ..Settings::default()
    });
    let mut a = shoal.conn();
    let mut b = shoal.conn();
    assert!(a.text_str("version\r\n").starts_with("VERSION "));
    assert!(b.text_str("version\r\n").starts_with("VERSION "));
    let mut c = shoal.conn();
    assert_eq!(c.read_to_close(), b"ERROR Too many open connections\r\n");
    drop(a);
    // The slot comes back once the server sees the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while shoal.conn().try_text(b"version\r\n").is_err() {
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stat(&mut b, "", "rejected_connections") >= 1);
}

#[test]
fn a_unix_socket_serves_too() {
    let dir = std::env::temp_dir().join(format!("shoal-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shoal.sock");
    let _ = std::fs::remove_file(&path);
    let shoal = Shoal::with_listeners(Settings::default(), Some(path.clone()));
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"set u 0 0 1\r\nx\r\nget u\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"END\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"STORED\r\nVALUE u 0 1\r\nx\r\nEND\r\n");
    shoal.stop();
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[test]
fn garbage_costs_only_its_own_connection() {
    let shoal = Shoal::start();
    let mut good = shoal.conn();
    good.text_str("set k 0 0 1\r\nx\r\n");
    // Random bytes, a binary header with a huge body, a half request: none of
    // them may take the node down.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..50 {
        let mut bad = Conn::connect(shoal.addr);
        let mut junk = Vec::new();
        for _ in 0..(round * 97 % 4000) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            junk.push(rng as u8);
        }
        if round % 3 == 0 {
            junk.insert(0, 0x80);
        }
        bad.send(&junk);
        drop(bad);
    }
    // Not `k`: a refused set removes its key's old value, as memcached's
    // does, and this connection races the good one.
    let mut huge = Packet::request(0x01, &[0; 8], b"other", b"", 1, 0);
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut bad = shoal.conn();
    bad.send(&huge);
    let got = good.text_str("get k\r\n");
    if got != "VALUE k 0 1\r\nx\r\nEND\r\n" {
        panic!("k is gone: {got:?}; stats: {}", good.text_str("stats\r\n"));
    }
}

#[test]
fn writing_ten_times_the_limit_stays_within_it() {
    let limit = 4 << 20;
    let shoal = Shoal::with(Settings {
        memory_limit: limit,
        ..Settings::default()
    });
    let mut c = shoal.conn();
    let value = "v".repeat(1000);
    let mut written = 0;
    let mut batch = String::new();
    let mut i = 0u64;
    while written < 10 * limit {
        batch.clear();
        for _ in 0..200 {
            batch.push_str(&format!(
                "set key:{i} 0 0 {} noreply\r\n{value}\r\n",
                value.len()
            ));
            written += value.len();
            i += 1;
        }
        c.text_str(&batch);
        let bytes = stat(&mut c, "", "bytes");
        assert!(bytes <= limit as u64, "accounted {bytes} > limit {limit}");
    }
    assert!(stat(&mut c, "", "evictions") > 0);
    assert_eq!(stat(&mut c, "", "limit_maxbytes"), limit as u64);
    // The newest item survived, the oldest was evicted.
    assert!(
        c.text_str(&format!("get key:{}\r\n", i - 1))
            .starts_with("VALUE")
    );
    assert_eq!(c.text_str("get key:0\r\n"), "END\r\n");
}

#[test]
fn flush_all_can_be_refused() {
    let shoal = Shoal::with(Settings {
        disable_flush: true,
        ..Settings::default()
    });
    let mut c = shoal.conn();
    c.text_str("set k 0 0 1\r\nx\r\n");
    assert_eq!(
        c.text_str("flush_all\r\n"),
        "CLIENT_ERROR flush_all not allowed\r\n"
    );
    assert!(c.text_str("get k\r\n").starts_with("VALUE"));
}

#[test]
fn stats_use_memcached_names() {
    let shoal = Shoal::start();
    let mut c = shoal.conn();
    c.text_str("set a 0 0 1\r\nx\r\nget a\r\nget b\r\n");
    assert_eq!(stat(&mut c, "", "curr_items"), 1);
    assert_eq!(stat(&mut c, "", "get_hits"), 1);
    assert_eq!(stat(&mut c, "", "get_misses"), 1);
    assert_eq!(stat(&mut c, "", "cmd_get"), 2);
    assert_eq!(stat(&mut c, "", "cmd_set"), 1);
    assert_eq!(stat(&mut c, "settings", "item_size_max"), 1 << 20);
    assert_eq!(stat(&mut c, "items", "items:1:number"), 1);
    assert!(stat(&mut c, "", "curr_connections") >= 1);
}

#[test]
fn shutdown_stops_serving() {
    let shoal = Shoal::start();
    let port = shoal.addr.port();
    let mut c = shoal.conn();
    c.text_str("set k 0 0 1\r\nx\r\n");
    assert!(e2e::this_process_listens_on(port));
    shoal.stop();
    assert_eq!(c.read_to_close(), b"");
    // Not a connection attempt: once the node lets the port go, anything
    // on the machine may take it (CI saw that once).
    assert!(!e2e::this_process_listens_on(port));
}

/// libmemcached's own conformance checker, text and binary, must pass.
#[test]
fn memccapable_passes() {
    let shoal = Shoal::start();
    let out = std::process::Command::new("memccapable")
        .args(["-h", "127.0.0.1", "-p", &shoal.addr.port().to_string()])
        .output()
        .expect("running memccapable (install Debian's libmemcached-tools)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("All tests passed"),
        "memccapable failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
