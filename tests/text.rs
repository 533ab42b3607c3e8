//! The text protocol, byte for byte against stock memcached.
//!
//! Every case is sent to a shoal node and to memcached 1.6 (the reference),
//! each on a fresh connection after `flush_all`, and the answers must be
//! identical (CAS values masked, since the counters differ). A few cases also
//! pin the expected bytes, so the suite cannot pass by both servers agreeing
//! on something unexpected.

use e2e::{Conn, Memcached, Shoal, mask_cas};

mod text_cases;

use text_cases::cases;

fn exchange(conn: &mut Conn, request: &[u8]) -> String {
    conn.text(b"flush_all\r\n");
    mask_cas(&conn.text(request))
}

#[test]
fn text_commands_answer_as_memcached_does() {
    let shoal = Shoal::start();
    let memcached = Memcached::start(&[]);
    let mut failures = Vec::new();
    for (name, request) in cases() {
        let expected = exchange(&mut memcached.conn(), &request);
        let got = exchange(&mut shoal.conn(), &request);
        if got != expected {
            failures.push(format!(
                "{name}:\n  memcached: {expected:?}\n  shoal:     {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from memcached:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}

#[test]
fn answers_pinned_to_the_bytes() {
    let shoal = Shoal::start();
    let mut c = shoal.conn();
    assert_eq!(c.text_str("set k 5 0 3\r\nabc\r\n"), "STORED\r\n");
    assert_eq!(c.text_str("get k\r\n"), "VALUE k 5 3\r\nabc\r\nEND\r\n");
    assert_eq!(
        c.text_str("incr k 1\r\n"),
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );
    assert_eq!(c.text_str("bogus\r\n"), "ERROR\r\n");
    let mut big = b"set big 0 0 2000000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'v', 2_000_000));
    big.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8(c.text(&big)).unwrap(),
        "SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(c.text_str("mg k v f\r\n"), "VA 3 f5\r\nabc\r\n");
    c.send(b"mn\r\n");
    assert_eq!(c.read_exact(4), b"MN\r\n", "mn answers MN");
    // Flags are 32 bits. memcached 1.6.18 silently truncates larger ones;
    // shoal refuses them, as later memcached releases do.
    assert_eq!(
        c.text_str("set f 4294967296 0 1\r\nx\r\n"),
        "CLIENT_ERROR bad command line format\r\nERROR\r\n"
    );
}

#[test]
fn cas_round_trip() {
    let shoal = Shoal::start();
    let mut c = shoal.conn();
    c.text_str("set k 0 0 1\r\nx\r\n");
    let gets = c.text_str("gets k\r\n");
    let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(
        c.text_str(&format!("cas k 0 0 1 {}\r\ny\r\n", cas + 1)),
        "EXISTS\r\n"
    );
    assert_eq!(
        c.text_str(&format!("cas k 0 0 1 {cas}\r\ny\r\n")),
        "STORED\r\n"
    );
    assert_eq!(
        c.text_str(&format!("cas k 0 0 1 {cas}\r\nz\r\n")),
        "EXISTS\r\n"
    );
    assert_eq!(c.text_str("get k\r\n"), "VALUE k 0 1\r\ny\r\nEND\r\n");
}

#[test]
fn a_deep_pipeline_is_answered_in_order() {
    let shoal = Shoal::start();
    let mut c = shoal.conn();
    let mut req = Vec::new();
    for i in 0..2000 {
        req.extend_from_slice(
            format!("set k{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
    }
    for i in 0..2000 {
        req.extend_from_slice(format!("get k{i}\r\n").as_bytes());
    }
    let got = String::from_utf8(c.text(&req)).unwrap();
    let mut expected = "STORED\r\n".repeat(2000);
    for i in 0..2000 {
        expected.push_str(&format!(
            "VALUE k{i} {i} {}\r\n{i}\r\nEND\r\n",
            i.to_string().len()
        ));
    }
    assert_eq!(got, expected);
}

#[test]
fn a_hundred_key_get() {
    let shoal = Shoal::start();
    let mut c = shoal.conn();
    let mut req = String::new();
    for i in 0..100 {
        req.push_str(&format!("set key:{i:03} 0 0 4\r\nv{i:03}\r\n"));
    }
    c.text_str(&req);
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i:03}")).collect();
    let got = c.text_str(&format!("get {} missing\r\n", keys.join(" ")));
    let expected: String = (0..100)
        .map(|i| format!("VALUE key:{i:03} 0 4\r\nv{i:03}\r\n"))
        .chain(Some("END\r\n".into()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn quit_closes_the_connection() {
    let shoal = Shoal::start();
    let mut c = shoal.conn();
    c.send(b"quit\r\n");
    assert_eq!(c.read_to_close(), b"");
}

#[test]
fn a_line_too_long_closes_only_that_connection() {
    let shoal = Shoal::start();
    let mut bystander = shoal.conn();
    assert_eq!(bystander.text_str("set k 0 0 1\r\nx\r\n"), "STORED\r\n");
    let mut c = shoal.conn();
    c.send(&vec![b'a'; 200 * 1024]);
    let got = String::from_utf8(c.read_to_close()).unwrap();
    assert_eq!(got, "CLIENT_ERROR line too long\r\n");
    assert_eq!(
        bystander.text_str("get k\r\n"),
        "VALUE k 0 1\r\nx\r\nEND\r\n"
    );
}
