//! A real 3-node cluster on 127.0.0.1 (in-process nodes, every listener on
//! an ephemeral port, gossip with the fast profile): any node answers for
//! any key exactly as memcached answers, a multi-get spans every owner,
//! `flush_all` empties the cluster, a crashed node is dropped and its keys
//! served by the survivors, it rejoins, and no stale data comes back.
//!
//! Timings are printed for the closing note (`cargo test --release -p
//! shoal-e2e --test cluster -- --nocapture`); nothing here asserts on them
//! beyond generous bounds that mean "it never happened".

mod binary_cases;
mod text_cases;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster::{DEFAULT_VNODES, NodeName, Ring};
use e2e::{ClusterNode, Memcached, Packet, mask_cas, wait_until};

/// How long a cluster may take to form or to notice a change before a test
/// fails (the fast profile needs about a second).
const SETTLE: Duration = Duration::from_secs(20);

/// The names `start_cluster(3)` gives its nodes.
const NAMES: [&str; 3] = ["shoal-0", "shoal-1", "shoal-2"];

/// Sixty keys `prefix0` … `prefix59`: enough that every node of three owns
/// some (see [`owned_by`]).
fn candidates(prefix: &str) -> Vec<String> {
    (0..60).map(|i| format!("{prefix}{i}")).collect()
}

fn start_cluster(n: usize) -> Vec<ClusterNode> {
    let first = ClusterNode::start("shoal-0", &[]);
    let seeds = [first.gossip];
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(ClusterNode::start(&format!("shoal-{i}"), &seeds));
    }
    wait_converged(&nodes);
    nodes
}

/// Every node is ready and its ring holds exactly `nodes`.
fn wait_converged(nodes: &[ClusterNode]) -> Duration {
    let want = nodes.len().to_string();
    wait_until("every ring to hold every node", SETTLE, || {
        nodes.iter().all(|n| {
            let s = n.cluster_stats();
            s.get("ready").map(String::as_str) == Some("1")
                && s.get("ring_members") == Some(&want)
                && s.get("members") == Some(&want)
        })
    })
}

/// The ring the nodes build: who owns `key`.
fn owner(names: &[&str], key: &str) -> String {
    let ring = Ring::new(
        names.iter().map(|n| NodeName::new(n).unwrap()),
        DEFAULT_VNODES,
    );
    ring.owner(key.as_bytes()).unwrap().to_string()
}

fn text_exchange(conn: &mut e2e::Conn, request: &[u8]) -> String {
    conn.text(b"flush_all\r\n");
    mask_cas(&conn.text(request))
}

#[test]
fn every_text_command_through_every_node_answers_as_memcached() {
    let nodes = start_cluster(3);
    let memcached = Memcached::start(&[]);
    // The cases' keys must not all live on one node.
    let owners: BTreeSet<String> = ["k", "a", "b", "n", "m", "f", "x", "s", "big", "near"]
        .iter()
        .map(|k| owner(&NAMES, k))
        .collect();
    assert!(owners.len() >= 2, "the cases' keys all live on {owners:?}");

    let mut failures = Vec::new();
    let cases = text_cases::cases();
    for (name, request) in &cases {
        let expected = text_exchange(&mut memcached.conn(), request);
        for node in &nodes {
            let got = text_exchange(&mut node.conn(), request);
            if got != expected {
                failures.push(format!(
                    "{name} through {}:\n  memcached: {expected:?}\n  shoal:     {got:?}",
                    node.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers differ from memcached:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The point of the test: requests were forwarded.
    let forwarded: u64 = nodes
        .iter()
        .map(|n| {
            n.cluster_stats()
                .iter()
                .filter(|(k, _)| k.starts_with("forwarded:"))
                .map(|(_, v)| v.parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert!(forwarded > 100, "only {forwarded} operations forwarded");
}

#[test]
fn every_binary_command_through_every_node_answers_as_memcached() {
    let nodes = start_cluster(3);
    let memcached = Memcached::start(&[]);
    let exchange = |conn: &mut e2e::Conn, packets: &[Vec<u8>]| {
        conn.binary(&Packet::request(binary_cases::FLUSH, b"", b"", b"", 0, 0));
        conn.set_timeout(Duration::from_secs(2));
        let (answers, ended) = match conn.try_binary(&packets.concat()) {
            Ok(answers) => (answers, None),
            Err((answers, ended)) => (answers, Some(ended)),
        };
        let answers: Vec<Packet> = answers.iter().map(Packet::without_cas).collect();
        (answers, ended)
    };
    let mut failures = Vec::new();
    for (name, packets) in binary_cases::cases() {
        let expected = exchange(&mut memcached.conn(), &packets);
        for node in &nodes {
            let got = exchange(&mut node.conn(), &packets);
            if got != expected {
                failures.push(format!(
                    "{name} through {}:\n  memcached: {expected:?}\n  shoal:     {got:?}",
                    node.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers differ from memcached:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_multi_get_spanning_every_owner_answers_in_the_clients_order() {
    let nodes = start_cluster(3);
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i}")).collect();
    let owners: BTreeSet<String> = keys.iter().map(|k| owner(&NAMES, k)).collect();
    assert_eq!(owners.len(), 3);
    // Written through each node in turn, every third key missing.
    let mut set = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        set.extend_from_slice(
            format!("set {key} {i} 0 {}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes(),
        );
    }
    let stored = nodes[1].conn().text_str(std::str::from_utf8(&set).unwrap());
    assert_eq!(stored.matches("STORED").count(), 66, "{stored}");

    let mut expected = String::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        expected.push_str(&format!(
            "VALUE {key} {i} {}\r\nv{i}\r\n",
            format!("v{i}").len()
        ));
    }
    expected.push_str("END\r\n");
    let get = format!("get {}\r\n", keys.join(" "));
    for node in &nodes {
        let got = node.conn().text_str(&get);
        assert_eq!(got, expected, "through {}", node.name);
        // The same as a binary getkq batch ended by a noop.
        let mut batch = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            batch.extend(Packet::request(
                binary_cases::GETKQ,
                b"",
                key.as_bytes(),
                b"",
                i as u32,
                0,
            ));
        }
        let answers = node.conn().binary(&batch);
        let got: Vec<(u32, Vec<u8>, Vec<u8>)> = answers
            .into_iter()
            .map(|p| (p.opaque, p.key, p.value))
            .collect();
        let want: Vec<(u32, Vec<u8>, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, k)| {
                (
                    i as u32,
                    k.clone().into_bytes(),
                    format!("v{i}").into_bytes(),
                )
            })
            .collect();
        assert_eq!(got, want, "getkq batch through {}", node.name);
    }
}

#[test]
fn requests_split_across_reads_are_forwarded_whole() {
    // The entry node hands peers slices of its read buffer: a request cut
    // anywhere by the network, small or up to the item limit, must reach
    // the owner byte for byte, in order with the requests around it.
    let nodes = start_cluster(3);
    let pool = candidates("split:");
    let mut keys = Vec::new();
    for name in &NAMES[1..] {
        keys.extend(owned_by(&NAMES, name, &pool).into_iter().take(3).cloned());
    }
    keys.push(owned_by(&NAMES, "shoal-0", &pool)[0].clone());
    let sizes = [1, 100, 70_000, 1_000_000];
    let value = |i: usize, len: usize| -> Vec<u8> {
        (0..len).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect()
    };
    let mut request = Vec::new();
    let mut expected = String::new();
    for (i, key) in keys.iter().enumerate() {
        let v = value(i, sizes[i % sizes.len()]);
        request.extend_from_slice(format!("set {key} {i} 0 {}\r\n", v.len()).as_bytes());
        request.extend_from_slice(&v);
        request.extend_from_slice(format!("\r\nget {key}\r\n").as_bytes());
        expected.push_str(&format!("STORED\r\nVALUE {key} {i} {}\r\n", v.len()));
        expected.push_str(&String::from_utf8(v).unwrap());
        expected.push_str("\r\nEND\r\n");
    }
    request.extend_from_slice(b"mn\r\n");
    expected.push_str("MN\r\n");

    let mut conn = nodes[0].conn();
    // Odd-sized pieces with pauses, so the node reads requests in parts.
    let sender = {
        let mut stream = conn.try_clone();
        std::thread::spawn(move || {
            for (n, piece) in request.chunks(4093).enumerate() {
                stream.send(piece);
                if n % 16 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let got = conn.read_exact(expected.len());
    sender.join().unwrap();
    assert!(
        got == expected.as_bytes(),
        "answers differ from the expected {} bytes",
        expected.len()
    );

    // Every node reads back what the owners stored.
    for node in &nodes {
        for (i, key) in keys.iter().enumerate() {
            let v = value(i, sizes[i % sizes.len()]);
            let got = node.conn().text(format!("get {key}\r\n").as_bytes());
            let mut want = format!("VALUE {key} {i} {}\r\n", v.len()).into_bytes();
            want.extend_from_slice(&v);
            want.extend_from_slice(b"\r\nEND\r\n");
            assert!(got == want, "{key} through {}", node.name);
        }
    }
}

#[test]
fn flush_all_through_one_node_empties_every_node_and_a_write_after_it_stays() {
    let nodes = start_cluster(3);
    let keys: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let mut set = String::new();
    for key in &keys {
        set.push_str(&format!("set {key} 0 0 1\r\nx\r\n"));
    }
    nodes[0].conn().text_str(&set);
    let get = format!("get {}\r\n", keys.join(" "));
    assert_eq!(nodes[2].conn().text_str(&get).matches("VALUE").count(), 30);
    // flush_all, then at once a write, on one connection.
    let answer = nodes[1]
        .conn()
        .text_str("flush_all\r\nset f1 0 0 5\r\nafter\r\n");
    assert_eq!(answer, "OK\r\nSTORED\r\n");
    for node in &nodes {
        assert_eq!(
            node.conn().text_str(&get),
            "VALUE f1 0 5\r\nafter\r\nEND\r\n",
            "through {}",
            node.name
        );
    }
    // Every node counts the items it holds: only f1's owner has one.
    let items: u64 = nodes
        .iter()
        .map(|n| {
            let stats = n.conn().text_str("stats\r\n");
            let line = stats
                .lines()
                .find(|l| l.starts_with("STAT curr_items "))
                .unwrap();
            line["STAT curr_items ".len()..].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(items, 1);
}

/// The keys among `candidates` that `name` owns in `names`' ring.
fn owned_by<'k>(names: &[&str], name: &str, candidates: &'k [String]) -> Vec<&'k String> {
    candidates
        .iter()
        .filter(|k| owner(names, k) == name)
        .collect()
}

#[test]
fn a_crashed_node_is_dropped_its_keys_served_cold_and_it_rejoins() {
    let mut nodes = start_cluster(3);
    let keys = candidates("c");
    let victims = owned_by(&NAMES, "shoal-2", &keys);
    assert!(!victims.is_empty());
    let mut set = String::new();
    for key in &keys {
        set.push_str(&format!("set {key} 0 0 1\r\nx\r\n"));
    }
    assert_eq!(nodes[0].conn().text_str(&set).matches("STORED").count(), 60);

    let crashed = nodes.pop().unwrap();
    let gossip = crashed.gossip;
    crashed.crash();
    let t0 = Instant::now();
    // Until the survivors drop it: a write for its keys is a clear
    // SERVER_ERROR and a read a miss, never a hang; afterwards both work.
    let write = format!("set {} 0 0 3\r\nnew\r\n", victims[0]);
    let read = format!("get {}\r\n", victims[0]);
    let mut errors_seen = 0;
    let detected = loop {
        assert!(
            t0.elapsed() < SETTLE,
            "the survivors never dropped the crashed node"
        );
        let mut all_dropped = true;
        for node in &nodes {
            let started = Instant::now();
            let wrote = node.conn().text_str(&write);
            assert!(started.elapsed() < Duration::from_secs(3), "a write hung");
            match wrote.as_str() {
                "STORED\r\n" => {}
                e if e.starts_with("SERVER_ERROR ") => errors_seen += 1,
                other => panic!("unexpected answer to a write: {other:?}"),
            }
            let got = node.conn().text_str(&read);
            assert!(
                got == "END\r\n" || got == "VALUE c 0 3\r\nnew\r\nEND\r\n".replace("c", victims[0]),
                "{got:?}"
            );
            all_dropped &=
                node.cluster_stats().get("ring_members").map(String::as_str) == Some("2");
        }
        if all_dropped {
            break t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Its keys are served (cold) by their new owners through every node.
    let served = wait_until("the crashed node's keys to be writable", SETTLE, || {
        nodes
            .iter()
            .all(|n| n.conn().text_str(&write) == "STORED\r\n")
    });
    for node in &nodes {
        let got = node.conn().text_str(&format!("get {}\r\n", victims[0]));
        assert_eq!(got, format!("VALUE {} 0 3\r\nnew\r\nEND\r\n", victims[0]));
    }
    println!(
        "crash (fast profile): every survivor dropped the node after {detected:?}; its keys writable through every survivor {served:?} later; {errors_seen} writes answered SERVER_ERROR meanwhile"
    );

    // It comes back (a new process, same name) and rejoins.
    let t1 = Instant::now();
    nodes.push(ClusterNode::start("shoal-2", &[gossip, nodes[0].gossip]));
    let rejoined = wait_converged(&nodes);
    println!(
        "restart: back in every ring after {:?}",
        t1.elapsed().max(rejoined)
    );
    // Its keys are its own again, and it holds nothing from its past life.
    for node in &nodes {
        assert_eq!(
            node.conn().text_str(&read),
            "END\r\n",
            "through {}",
            node.name
        );
    }
}

#[test]
fn a_key_whose_ownership_moves_away_and_back_is_not_served_stale() {
    // Two nodes, then a third takes some keys, then crashes: the keys go
    // back to their first owner, which must not serve the copy it held
    // before the third node came.
    let mut nodes = start_cluster(2);
    let keys: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let two = ["shoal-0", "shoal-1"];
    let three = ["shoal-0", "shoal-1", "shoal-2"];
    let moving: Vec<&String> = keys
        .iter()
        .filter(|k| owner(&three, k) == "shoal-2")
        .collect();
    assert!(!moving.is_empty());
    let key = moving[0];
    let first_owner = owner(&two, key);
    nodes[0]
        .conn()
        .text_str(&format!("set {key} 0 0 3\r\nold\r\n"));

    nodes.push(ClusterNode::start("shoal-2", &[nodes[0].gossip]));
    wait_converged(&nodes);
    // The new owner has not got it (no hand-over yet): a miss; write anew.
    assert_eq!(
        nodes[0].conn().text_str(&format!("get {key}\r\n")),
        "END\r\n"
    );
    nodes[1]
        .conn()
        .text_str(&format!("set {key} 0 0 3\r\nnew\r\n"));
    nodes.pop().unwrap().crash();
    wait_converged(&nodes);
    // Back with its first owner, which dropped "old" when it lost the key.
    for node in &nodes {
        assert_eq!(
            node.conn().text_str(&format!("get {key}\r\n")),
            "END\r\n",
            "{first_owner} served a stale copy through {}",
            node.name
        );
    }
}

#[test]
fn a_node_that_has_not_joined_owns_nothing_and_says_so() {
    // Its only seed answers nothing: it never joins.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed: SocketAddr = silent.local_addr().unwrap();
    let node = ClusterNode::start("lonely", &[seed]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.http_get("/healthz").0, 200);
    assert_eq!(node.http_get("/readyz").0, 503);
    let mut conn = node.conn();
    let got = conn.text_str("set k 0 0 1\r\nx\r\nget k\r\nversion\r\n");
    let lines: Vec<&str> = got.lines().collect();
    assert!(lines[0].starts_with("SERVER_ERROR "), "{got}");
    assert!(lines[1].starts_with("SERVER_ERROR "), "{got}");
    assert!(lines[2].starts_with("VERSION "), "{got}");
    assert_eq!(
        node.cluster_stats().get("ready").map(String::as_str),
        Some("0")
    );

    // A cluster of one (no seeds) is ready at once.
    let alone = ClusterNode::start("alone", &[]);
    wait_until("a cluster of one to be ready", SETTLE, || {
        alone.http_get("/readyz").0 == 200
    });
    assert_eq!(
        alone.conn().text_str("set k 0 0 1\r\nx\r\nget k\r\n"),
        "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"
    );
    let (status, json) = alone.http_get("/cluster");
    assert_eq!(status, 200);
    assert!(
        json.contains(r#""node":"alone""#) && json.contains(r#""ready":true"#),
        "{json}"
    );
}

#[test]
fn a_peer_serves_a_key_it_does_not_own_only_to_a_caller_routing_with_its_own_ring() {
    use cluster::peer::v1::{
        BatchRequest, ErrorCode, GetRequest, GetResponse, Operation, operation, operation_result,
        peer_client::PeerClient,
    };
    let nodes = start_cluster(3);
    let pool = candidates("ring:");
    let key = owned_by(&NAMES, "shoal-1", &pool)[0].clone();
    assert_eq!(
        nodes[0]
            .conn()
            .text_str(&format!("set {key} 0 0 1\r\nv\r\n")),
        "STORED\r\n"
    );
    let version = Ring::new(
        NAMES.iter().map(|n| NodeName::new(n).unwrap()),
        DEFAULT_VNODES,
    )
    .version();

    // `get` sent to `node` in a batch routed by a ring of version
    // `ring_version`: the answering node's ring version and the answer.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ask = |node: &ClusterNode, ring_version: u64, get: GetRequest| -> (u64, GetResponse) {
        rt.block_on(async {
            let mut client = PeerClient::connect(format!("http://{}", node.peer))
                .await
                .unwrap();
            let answer = client
                .batch(BatchRequest {
                    id: 1,
                    ring_version,
                    operations: vec![Operation {
                        op: Some(operation::Op::Get(get)),
                    }],
                })
                .await
                .unwrap()
                .into_inner();
            match answer.results[0].result.clone() {
                Some(operation_result::Result::Get(r)) => (answer.ring_version, r),
                other => panic!("not a get's answer: {other:?}"),
            }
        })
    };
    // (error, found) of a get of `key` sent to `node` as routed by a ring
    // of version `ring_version`.
    let get = |node: &ClusterNode, ring_version: u64| -> (ErrorCode, bool) {
        let request = GetRequest {
            keys: vec![key.clone().into()],
            ..Default::default()
        };
        let (answered_by, r) = ask(node, ring_version, request);
        assert_eq!(answered_by, version, "the answer names the node's ring");
        (r.error(), r.items.first().is_some_and(|i| i.found))
    };
    // The owner serves whoever asks.
    assert_eq!(get(&nodes[1], 0), (ErrorCode::None, true));
    assert_eq!(get(&nodes[1], version), (ErrorCode::None, true));
    // Another node refuses the key, unless the caller routed it with a
    // ring equal to its own (then the caller's ring says it owns the key,
    // and the check is skipped: here that is a lie, answered as a miss).
    assert_eq!(get(&nodes[2], 0), (ErrorCode::NotOwner, false));
    assert_eq!(get(&nodes[2], version ^ 1), (ErrorCode::NotOwner, false));
    assert_eq!(get(&nodes[2], version), (ErrorCode::None, false));

    // A packed get carries many clients' keys: one the node does not own
    // is a miss, and the keys it owns are still served.
    let mine = owned_by(&NAMES, "shoal-2", &pool)[0].clone();
    assert_eq!(
        nodes[0]
            .conn()
            .text_str(&format!("set {mine} 0 0 1\r\nm\r\n")),
        "STORED\r\n"
    );
    let mut keys = bytes::BytesMut::new();
    for k in [&mine, &key, &mine] {
        assert!(cluster::packed::push_key(&mut keys, k.as_bytes()));
    }
    let request = GetRequest {
        packed_keys: keys.freeze(),
        omit: cluster::peer::OMIT_META,
        ..Default::default()
    };
    let (_, answer) = ask(&nodes[2], 0, request);
    assert_eq!(answer.error(), ErrorCode::None);
    let items = cluster::packed::Items::new(answer.packed_items, answer.values, true, 3).unwrap();
    let found: Vec<Option<Vec<u8>>> = (0..3)
        .map(|i| items.get(i).map(|hit| hit.value.as_slice().to_vec()))
        .collect();
    assert_eq!(found, [Some(b"m".to_vec()), None, Some(b"m".to_vec())]);
}

#[test]
fn a_forwarded_get_carries_the_cas_wherever_its_protocol_shows_it() {
    // The entry node asks the owner only for the fields the client's
    // command shows; the CAS must survive wherever one is shown.
    let nodes = start_cluster(3);
    let keys = candidates("c");
    let key = owned_by(&NAMES, "shoal-1", &keys)[0];
    let mut conn = nodes[0].conn();
    let got = conn.text_str(&format!("set {key} 7 0 5\r\nhello\r\ngets {key}\r\n"));
    let cas: u64 = got
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(cas, 0, "{got}");
    assert_eq!(
        conn.text_str(&format!("get {key}\r\nmg {key} c f v\r\n")),
        format!("VALUE {key} 7 5\r\nhello\r\nEND\r\nVA 5 c{cas} f7\r\nhello\r\n")
    );
    assert!(
        conn.text_str(&format!("me {key}\r\n"))
            .contains(&format!(" cas={cas} ")),
        "me shows the CAS"
    );
    let answers = conn.binary(&Packet::request(
        binary_cases::GET,
        b"",
        key.as_bytes(),
        b"",
        1,
        0,
    ));
    assert_eq!(
        (answers[0].cas, &answers[0].value[..]),
        (cas, &b"hello"[..])
    );
    // And the CAS works: a text cas through the non-owner replaces it.
    assert_eq!(
        conn.text_str(&format!("cas {key} 0 0 1 {cas}\r\nx\r\n")),
        "STORED\r\n"
    );
}

#[test]
fn gets_of_every_shape_in_one_pass_are_answered_in_order() {
    // Plain gets travel packed once the owner has said it reads them; a
    // get that needs the meta fields (me, mg with t) cannot, and must
    // start a listed one without reordering anything.
    let nodes = start_cluster(3);
    let keys = candidates("p");
    let owned = owned_by(&NAMES, "shoal-1", &keys);
    let (a, big, missing) = (owned[0], owned[1], owned[2]);
    let large = "L".repeat(4000);
    let mut conn = nodes[0].conn();
    assert_eq!(
        conn.text_str(&format!(
            "set {a} 3 0 5\r\nhello\r\nset {big} 0 0 {}\r\n{large}\r\n",
            large.len()
        )),
        "STORED\r\nSTORED\r\n"
    );
    let got = conn.text_str(&format!(
        "get {a} {big} {missing}\r\nme {a}\r\nmg {a} t v\r\ngets {a}\r\nget {big}\r\nmg {missing} v\r\nget {a}\r\n"
    ));
    let value_a = format!("VALUE {a} 3 5\r\nhello\r\n");
    let value_big = format!("VALUE {big} 0 {}\r\n{large}\r\n", large.len());
    // Consumes `want` from the front of `rest`, and then the rest of its
    // line when that varies (me's fields, a gets' CAS).
    fn take(rest: &mut &str, want: &str, then_skip_line: bool) {
        assert!(
            rest.starts_with(want),
            "expected {want:?} at {:?}",
            &rest[..rest.len().min(120)]
        );
        *rest = &rest[want.len()..];
        if then_skip_line {
            *rest = &rest[rest.find("\r\n").unwrap() + 2..];
        }
    }
    let rest = &mut got.as_str();
    take(rest, &format!("{value_a}{value_big}END\r\n"), false);
    take(rest, &format!("ME {a} exp=-1 la="), true);
    take(rest, "VA 5 t-1\r\nhello\r\n", false);
    take(rest, &format!("VALUE {a} 3 5 "), true);
    take(rest, "hello\r\nEND\r\n", false);
    take(rest, &format!("{value_big}END\r\n"), false);
    take(rest, "EN\r\n", false);
    take(rest, &format!("{value_a}END\r\n"), false);
    assert_eq!(*rest, "");
}

#[test]
fn answers_larger_than_a_peer_frame_arrive_whole() {
    // A forwarded answer travels in HTTP/2 frames of up to 1 MiB: values
    // near the item size limit, and one get whose answer spans several
    // frames, must come back byte for byte, in order.
    let nodes = start_cluster(3);
    let keys: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let owned = owned_by(&NAMES, "shoal-2", &keys);
    assert!(owned.len() >= 43, "{} keys", owned.len());
    // Distinct bytes per key, so a value spliced from another shows.
    let value = |i: usize, len: usize| -> Vec<u8> {
        (0..len)
            .map(|j| b'a' + ((i * 7 + j / 997) % 26) as u8)
            .collect()
    };
    let values: Vec<Vec<u8>> = (0..43)
        .map(|i| value(i, if i < 3 { 900_000 } else { 30_000 }))
        .collect();
    let names: Vec<&str> = owned
        .iter()
        .take(values.len())
        .map(|k| k.as_str())
        .collect();
    // Key `i`'s line and value as a get answers it (flags `i`).
    let hit = |i: usize| -> Vec<u8> {
        let v = &values[i];
        let line = format!("VALUE {} {i} {}\r\n", names[i], v.len());
        [line.as_bytes(), v, b"\r\n"].concat()
    };
    let mut conn = nodes[0].conn();
    for (i, key) in names.iter().enumerate() {
        let set = format!("set {key} {i} 0 {}\r\n", values[i].len());
        let set = [set.as_bytes(), &values[i], b"\r\n"].concat();
        assert_eq!(conn.text(&set), b"STORED\r\n", "{key}");
    }
    let got = conn.text(format!("get {}\r\n", names.join(" ")).as_bytes());
    let mut want: Vec<u8> = (0..names.len()).flat_map(hit).collect();
    want.extend_from_slice(b"END\r\n");
    assert!(
        got == want,
        "a multi-get of {} bytes came back altered",
        want.len()
    );
    // The same keys again, one get each, pipelined.
    let gets: String = names.iter().map(|k| format!("get {k}\r\n")).collect();
    let got = conn.text(gets.as_bytes());
    let want: Vec<u8> = (0..names.len())
        .flat_map(|i| [hit(i), b"END\r\n".to_vec()].concat())
        .collect();
    assert!(
        got == want,
        "pipelined gets of {} bytes came back altered",
        want.len()
    );
}

#[test]
fn cas_tokens_of_one_node_never_match_on_another() {
    let nodes = start_cluster(3);
    let keys = candidates("t");
    // One key per owner, and each owner's CAS values.
    let mut tags = BTreeSet::new();
    for name in NAMES {
        let key = owned_by(&NAMES, name, &keys)[0];
        let got = nodes[0]
            .conn()
            .text_str(&format!("set {key} 0 0 1\r\nx\r\ngets {key}\r\n"));
        let cas: u64 = got
            .lines()
            .nth(1)
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // libmemcached reads CAS values as signed.
        assert!(cas <= i64::MAX as u64, "{cas}");
        tags.insert(cas >> 48);
    }
    assert_eq!(tags.len(), 3, "CAS values share their node bits: {tags:?}");
}

/// Keys `prefix0` … `prefix399` that node 0 does not own.
fn remote_keys(prefix: &str) -> Vec<String> {
    (0..400)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| owner(&NAMES, k) != "shoal-0")
        .collect()
}

/// Runs `each(t, conn, keys)` on 8 connections to `node` at once, each
/// connection `t` with its own share of `keys` (every 8th, from the `t`th).
fn on_connections(
    node: &ClusterNode,
    keys: &[String],
    each: impl Fn(usize, e2e::Conn, &[&String]) + Sync,
) {
    const CONNS: usize = 8;
    let each = &each;
    std::thread::scope(|s| {
        for t in 0..CONNS {
            let conn = node.conn();
            let mine: Vec<&String> = keys.iter().skip(t).step_by(CONNS).collect();
            s.spawn(move || each(t, conn, &mine));
        }
    });
}

#[test]
fn pipelined_writes_and_gets_from_many_connections_keep_each_connections_order() {
    // Plain gets from every connection travel together, in one shared get
    // per owner; still, a connection's get sees what that connection wrote
    // just before it, and never what it wrote or deleted after it.
    let nodes = start_cluster(3);
    let remote = remote_keys("o");
    on_connections(&nodes[0], &remote, |t, mut conn, mine| {
        for round in 0..30 {
            let value = format!("{t}-{round}");
            let (mut request, mut want) = (String::new(), String::new());
            for key in mine {
                request.push_str(&format!(
                    "get {key}\r\nset {key} 0 0 {}\r\n{value}\r\nget {key}\r\ndelete {key}\r\nget {key}\r\n",
                    value.len()
                ));
                want.push_str(&format!(
                    "END\r\nSTORED\r\nVALUE {key} 0 {}\r\n{value}\r\nEND\r\nDELETED\r\nEND\r\n",
                    value.len()
                ));
            }
            assert_eq!(
                conn.text_str(&request),
                want,
                "connection {t}, round {round}"
            );
        }
    });
    // A flush_all in the middle of a pipeline: the get before it hits,
    // the one after it misses, the one after the next set hits again.
    let key = &remote[0];
    let got = nodes[0].conn().text_str(&format!(
        "set {key} 0 0 1\r\na\r\nget {key}\r\nflush_all\r\nget {key}\r\nset {key} 0 0 1\r\nb\r\nget {key}\r\n"
    ));
    assert_eq!(
        got,
        format!(
            "STORED\r\nVALUE {key} 0 1\r\na\r\nEND\r\nOK\r\nEND\r\nSTORED\r\nVALUE {key} 0 1\r\nb\r\nEND\r\n"
        )
    );
}

#[test]
fn pipelined_binary_writes_and_quiet_gets_keep_each_connections_order() {
    // The binary form of the test above, with the quiet forms a client
    // library pipelines (setq, getkq ended by a noop): a quiet get after
    // a write of its key sees it, and after a delete answers nothing.
    use binary_cases::{DELETEQ, GETK, GETKQ, SETQ};
    let nodes = start_cluster(3);
    on_connections(&nodes[0], &remote_keys("q"), |t, mut conn, mine| {
        let extras = [0u8; 8]; // flags 0, exptime 0
        for round in 0..30u32 {
            let value = format!("{t}-{round}");
            let mut request = Vec::new();
            for (i, key) in mine.iter().enumerate() {
                let (k, op) = (key.as_bytes(), (i as u32) * 5);
                request.extend(Packet::request(GETKQ, b"", k, b"", op, 0));
                request.extend(Packet::request(
                    SETQ,
                    &extras,
                    k,
                    value.as_bytes(),
                    op + 1,
                    0,
                ));
                request.extend(Packet::request(GETK, b"", k, b"", op + 2, 0));
                request.extend(Packet::request(DELETEQ, b"", k, b"", op + 3, 0));
                request.extend(Packet::request(GETKQ, b"", k, b"", op + 4, 0));
            }
            // Only each key's GETK answers: the quiet gets miss
            // (before the set, after the delete), the quiet writes
            // succeed.
            let answers = conn.binary(&request);
            let got: Vec<(u32, u16, Vec<u8>, Vec<u8>)> = answers
                .into_iter()
                .map(|p| (p.opaque, p.status, p.key, p.value))
                .collect();
            let want: Vec<(u32, u16, Vec<u8>, Vec<u8>)> = mine
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    let op = (i as u32) * 5 + 2;
                    (op, 0, key.as_bytes().to_vec(), value.as_bytes().to_vec())
                })
                .collect();
            assert_eq!(got, want, "connection {t}, round {round}");
        }
    });
}
