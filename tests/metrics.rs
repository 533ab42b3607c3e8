//! `/metrics` on real nodes: Prometheus text whose counters rise by exactly
//! what clients did, counted once cluster-wide (client requests at the node
//! the client talks to, store figures at the owner), and none when metrics
//! are off. (A real Prometheus scrapes a cluster in tests/python.)

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{ClusterNode, Packet, Settings, wait_until};

/// Every sample on the page: `name{labels}` → value.
fn scrape(node: &ClusterNode) -> BTreeMap<String, f64> {
    let (status, page) = node.http_get("/metrics");
    assert_eq!(status, 200, "{page}");
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// The sum over every series of `name` whose labels include all of `with`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && with.iter().all(|w| series.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

fn requests(command: &str, protocol: &str, outcome: &str) -> String {
    format!(
        "shoal_requests_total{{command=\"{command}\",protocol=\"{protocol}\",outcome=\"{outcome}\"}}"
    )
}

#[test]
fn counters_rise_by_exactly_what_a_client_did() {
    let node = ClusterNode::start("solo", &[]);
    wait_until("ready", Duration::from_secs(10), || {
        node.http_get("/readyz").0 == 200
    });
    let before = scrape(&node);
    assert_eq!(
        sum(
            &before,
            "shoal_build_info",
            &["version=\"0.1.0\"", "git_sha=\""]
        ),
        1.0
    );

    let mut c = node.conn();
    c.text(b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nget a b nope\r\nincr nope 1\r\nbogus\r\n");
    c.text(b"mg a v\r\nmd b\r\nstats\r\nstats nosuch\r\n");
    // A binary get (hit) and a quiet miss, ended by the harness's noop.
    let mut batch = Packet::request(0x00, b"", b"a", b"", 1, 0);
    batch.extend(Packet::request(0x09, b"", b"zzz", b"", 2, 0));
    c.binary(&batch);

    let after = scrape(&node);
    let rose = |series: &str| get(&after, series) - get(&before, series);
    assert_eq!(rose(&requests("set", "text", "stored")), 2.0);
    assert_eq!(rose(&requests("get", "text", "hit")), 2.0);
    assert_eq!(rose(&requests("get", "text", "miss")), 1.0);
    assert_eq!(rose(&requests("incr", "text", "not_found")), 1.0);
    assert_eq!(rose(&requests("invalid", "text", "error")), 1.0);
    assert_eq!(rose(&requests("get", "meta", "hit")), 1.0);
    assert_eq!(rose(&requests("delete", "meta", "deleted")), 1.0);
    assert_eq!(rose(&requests("get", "binary", "hit")), 1.0);
    assert_eq!(rose(&requests("get", "binary", "miss")), 1.0);
    assert_eq!(rose(&requests("stats", "text", "ok")), 1.0);
    assert_eq!(rose(&requests("stats", "text", "error")), 1.0);
    // Key families: `a` and `b` are application keys with no separator
    // after their first segment, so `other`.
    assert_eq!(
        rose("shoal_key_family_requests_total{family=\"other\",outcome=\"stored\"}"),
        2.0
    );
    // The harness's own sentinels: text mn and binary noop.
    assert!(rose(&requests("noop", "meta", "ok")) >= 2.0);
    // Latency: one sample per request (a multi-key get is one request).
    let gets = sum(
        &after,
        "shoal_request_duration_seconds_count",
        &["command=\"get\""],
    ) - sum(
        &before,
        "shoal_request_duration_seconds_count",
        &["command=\"get\""],
    );
    assert_eq!(gets, 4.0, "text get, mg, binary get, binary getq");
    assert_eq!(
        get(
            &after,
            "shoal_request_duration_seconds_bucket{command=\"get\",le=\"+Inf\"}"
        ),
        sum(
            &after,
            "shoal_request_duration_seconds_count",
            &["command=\"get\""]
        )
    );
    // Store figures.
    assert_eq!(get(&after, "shoal_items"), 1.0);
    assert_eq!(get(&after, "shoal_memory_limit_bytes"), (64 << 20) as f64);
    assert!(get(&after, "shoal_memory_used_bytes") > 0.0);
    assert_eq!(get(&after, "shoal_ready"), 1.0);
    assert_eq!(get(&after, "shoal_cluster_members{state=\"ready\"}"), 1.0);
    assert_eq!(get(&after, "shoal_ring_members"), 1.0);
    assert!(get(&after, "shoal_connections") >= 1.0);
    assert!(rose("shoal_bytes_read_total") > 0.0 && rose("shoal_bytes_written_total") > 0.0);
}

#[test]
fn a_cluster_counts_each_client_request_once() {
    let first = ClusterNode::start("m-0", &[]);
    let nodes = [
        ClusterNode::start("m-1", &[first.gossip]),
        ClusterNode::start("m-2", &[first.gossip]),
    ];
    let nodes: Vec<&ClusterNode> = std::iter::once(&first).chain(nodes.iter()).collect();
    wait_until("a 3-node ring everywhere", Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            let s = n.cluster_stats();
            s.get("ring_members").map(String::as_str) == Some("3")
                && s.get("ready").map(String::as_str) == Some("1")
        })
    });
    // Two key families: an application's and Django's cache sessions.
    let keys: Vec<String> = (0..60)
        .map(|i| match i % 2 {
            0 => format!(":1:user:{i}"),
            _ => format!(":1:django.contrib.sessions.cachek{i}"),
        })
        .collect();
    let mut set = String::new();
    for k in &keys {
        set.push_str(&format!("set {k} 0 0 1\r\nx\r\n"));
    }
    nodes[0].conn().text_str(&set);
    let before: Vec<_> = nodes.iter().map(|n| scrape(n)).collect();
    // 60 hits and 10 misses, all through node 0.
    let misses: Vec<String> = (0..10).map(|i| format!("miss{i}")).collect();
    let got = nodes[0]
        .conn()
        .text_str(&format!("get {} {}\r\n", keys.join(" "), misses.join(" ")));
    assert_eq!(got.matches("VALUE").count(), 60);
    let after: Vec<_> = nodes.iter().map(|n| scrape(n)).collect();
    let rose = |name: &str, with: &[&str]| -> f64 {
        after.iter().map(|s| sum(s, name, with)).sum::<f64>()
            - before.iter().map(|s| sum(s, name, with)).sum::<f64>()
    };
    // Client requests: counted once, at node 0.
    assert_eq!(
        rose(
            "shoal_requests_total",
            &["command=\"get\"", "outcome=\"hit\""]
        ),
        60.0
    );
    assert_eq!(
        rose(
            "shoal_requests_total",
            &["command=\"get\"", "outcome=\"miss\""]
        ),
        10.0
    );
    let at_node0 = sum(&after[0], "shoal_requests_total", &["command=\"get\""])
        - sum(&before[0], "shoal_requests_total", &["command=\"get\""]);
    assert_eq!(at_node0, 70.0);
    // Key families are a client-request figure: at node 0, whichever node
    // owns the key (a forwarded hit's family is the one its owner names).
    let family_at_node0 = |family: &str, outcome: &str| {
        let with = [
            format!("family=\"{family}\""),
            format!("outcome=\"{outcome}\""),
        ];
        let with: Vec<&str> = with.iter().map(String::as_str).collect();
        sum(&after[0], "shoal_key_family_requests_total", &with)
            - sum(&before[0], "shoal_key_family_requests_total", &with)
    };
    assert_eq!(family_at_node0("app:user", "hit"), 30.0);
    assert_eq!(family_at_node0("django:session", "hit"), 30.0);
    assert_eq!(family_at_node0("other", "miss"), 10.0);
    assert_eq!(
        rose("shoal_key_family_requests_total", &["outcome=\"hit\""]),
        60.0,
        "counted once, at node 0"
    );
    // Store lookups: counted once, at each key's owner.
    assert_eq!(rose("shoal_store_hits_total", &[]), 60.0);
    assert_eq!(rose("shoal_store_misses_total", &[]), 10.0);
    // Node 0 forwarded to both peers, and the peers did work for it.
    assert!(sum(&after[0], "shoal_forwarded_total", &["peer=\"m-1\""]) > 0.0);
    assert!(sum(&after[0], "shoal_forwarded_total", &["peer=\"m-2\""]) > 0.0);
    assert!(
        sum(
            &after[0],
            "shoal_forward_duration_seconds_count",
            &["peer=\"m-1\""]
        ) > 0.0
    );
    assert!(rose("shoal_peer_operations_total", &[]) > 0.0);
    assert_eq!(sum(&after[0], "shoal_forward_errors_total", &[]), 0.0);
}

#[test]
fn metrics_off_serves_no_page() {
    let node = ClusterNode::with(
        "quiet",
        &[],
        Settings {
            metrics: false,
            ..Settings::default()
        },
    );
    wait_until("ready", Duration::from_secs(10), || {
        node.http_get("/readyz").0 == 200
    });
    assert_eq!(node.http_get("/metrics").0, 404);
    assert_eq!(node.conn().text_str("set k 0 0 1\r\nx\r\n"), "STORED\r\n");
}

#[test]
fn hot_keys_show_the_most_requested_and_the_most_missed() {
    let node = ClusterNode::start("hot", &[]);
    wait_until("ready", Duration::from_secs(10), || {
        node.http_get("/readyz").0 == 200
    });
    let mut c = node.conn();
    c.text(b"set hot 0 0 1\r\nx\r\n");
    // 6400 gets of `hot`, 6400 of the missing `cold`, a few of others.
    for _ in 0..64 {
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend_from_slice(b"get hot cold\r\n");
            batch.extend_from_slice(format!("get other{i}\r\n").as_bytes());
        }
        c.text(&batch);
    }
    let stats = c.text_str("stats hotkeys\r\n");
    let line = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
            .to_owned()
    };
    // Sampled one get in 64, scaled back: a loose band around 6400.
    let check = |value: String, key: &str| {
        let (count, got) = value.split_once(' ').unwrap();
        assert_eq!(got, key, "{stats}");
        let count: u64 = count.parse().unwrap();
        assert!((2000..=12000).contains(&count), "{key}: {count}");
    };
    let first_two = [line("requested:1"), line("requested:2")];
    assert!(
        first_two.iter().any(|l| l.ends_with(" hot"))
            && first_two.iter().any(|l| l.ends_with(" cold")),
        "{stats}"
    );
    check(line("missed:1"), "cold");
    let (status, json) = node.http_get("/hotkeys");
    assert_eq!(status, 200);
    assert!(
        json.starts_with(r#"{"requested":[{"key":"#) && json.contains(r#""missed":[{"key":"cold""#),
        "{json}"
    );
}
