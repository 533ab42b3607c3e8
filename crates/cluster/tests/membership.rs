//! Membership over real UDP sockets on 127.0.0.1: convergence, crash
//! detection, restart, graceful leave, seeds that come up late, garbage on
//! the gossip port, and a node declared down that comes back.
//!
//! Every wait is bounded and polls the view's `watch` channel; timings are
//! printed (`cargo test -p shoal-cluster --release --test membership --
//! --nocapture`) for the closing note.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BufMut;
use cluster::NodeName;
use cluster::membership::{
    Endpoints, Membership, MembershipConfig, MembershipView, NodeIdentity, NodeState, Profile,
};
use foca::{Codec, Header, Member, Message, PostcardCodec, State};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

struct Node {
    name: NodeName,
    addr: SocketAddr,
    membership: Membership,
    task: JoinHandle<()>,
}

fn identity(name: &str, addr: SocketAddr) -> NodeIdentity {
    NodeIdentity::new(
        NodeName::new(name).unwrap(),
        addr,
        Endpoints {
            host: "127.0.0.1".into(),
            memcache_port: 11211,
            peer_port: 7947,
            http_port: 9150,
        },
    )
    .unwrap()
}

async fn start_on(socket: UdpSocket, name: &str, seeds: &[String], profile: Profile) -> Node {
    let addr = socket.local_addr().unwrap();
    let identity = identity(name, addr);
    let config = MembershipConfig::new(seeds.to_vec(), profile);
    let (membership, task) = Membership::start(config, socket, identity);
    Node {
        name: NodeName::new(name).unwrap(),
        addr,
        membership,
        task,
    }
}

async fn start(name: &str, seeds: &[String]) -> Node {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    start_on(socket, name, seeds, Profile::fast()).await
}

/// Waits until `pred` holds for `node`'s view, at most until `deadline`.
async fn wait_for(
    node: &Node,
    deadline: Instant,
    what: &str,
    mut pred: impl FnMut(&MembershipView) -> bool,
) {
    let mut rx = node.membership.subscribe();
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, rx.wait_for(|v| pred(v)))
        .await
        .is_err()
    {
        panic!(
            "{}: timed out waiting for {what}; view: {:?}",
            node.name,
            node.membership.view()
        );
    }
}

fn names(nodes: &[&Node]) -> Vec<NodeName> {
    let mut names: Vec<NodeName> = nodes.iter().map(|n| n.name.clone()).collect();
    names.sort();
    names
}

/// Every node lists exactly `nodes` as live members.
async fn wait_members(nodes: &[&Node], deadline: Instant) {
    let want = names(nodes);
    for node in nodes {
        wait_for(node, deadline, "the member list", |v| {
            v.members
                .iter()
                .map(|m| m.name().clone())
                .collect::<Vec<_>>()
                == want
        })
        .await;
    }
}

/// Every node is ready, lists `nodes`, and has the ring of exactly
/// `nodes`, all rings equal by version.
async fn wait_converged(nodes: &[&Node], deadline: Instant) {
    let want = names(nodes);
    for node in nodes {
        wait_for(node, deadline, "a converged ring", |v| {
            v.is_ready()
                && v.ring.members() == want.as_slice()
                && v.members.len() == want.len()
                && v.members.iter().all(|m| m.state() == NodeState::Ready)
        })
        .await;
    }
    let versions: Vec<u64> = nodes
        .iter()
        .map(|n| n.membership.ring().version())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] == w[1]),
        "rings differ: {versions:?}"
    );
}

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

async fn converge(n: usize) -> (Vec<Node>, Duration, Duration) {
    let t0 = Instant::now();
    let seed = start("node-0", &[]).await;
    let seeds = vec![seed.addr.to_string()];
    let mut nodes = vec![seed];
    for i in 1..n {
        nodes.push(start(&format!("node-{i}"), &seeds).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_members(&refs, secs(10)).await;
    let members = t0.elapsed();
    wait_converged(&refs, secs(10)).await;
    let ring = t0.elapsed();
    (nodes, members, ring)
}

#[tokio::test]
async fn three_nodes_converge_from_one_seed() {
    let (nodes, members, ring) = converge(3).await;
    println!(
        "3 nodes: every member list complete after {members:?}, rings converged after {ring:?}"
    );
    for node in &nodes {
        let view = node.membership.view();
        assert!(view.joined);
        assert_eq!(view.epoch, 0);
        let me = view.member(&node.name).unwrap();
        assert_eq!(me.peer_addr(), "127.0.0.1:7947");
        assert_eq!(me.gossip_addr(), node.addr);
    }
}

#[tokio::test]
async fn ten_nodes_converge_from_one_seed() {
    let (_nodes, members, ring) = converge(10).await;
    println!(
        "10 nodes: every member list complete after {members:?}, rings converged after {ring:?}"
    );
}

#[tokio::test]
async fn a_crash_is_detected_and_the_node_rejoins_after_a_restart() {
    let (mut nodes, _, _) = converge(3).await;
    let crashed = nodes.pop().unwrap();
    let old_generation = crashed.membership.view().generation();
    crashed.task.abort();
    let t0 = Instant::now();
    let survivors: Vec<&Node> = nodes.iter().collect();
    wait_members(&survivors, secs(10)).await;
    let detected = t0.elapsed();
    wait_converged(&survivors, secs(10)).await;
    let ring = t0.elapsed();
    println!(
        "fast profile: crash dropped from every member list after {detected:?}, from every ring after {ring:?}"
    );
    assert!(detected < Duration::from_secs(5), "{detected:?}");

    // Same name, new socket, new process (a larger generation).
    let seeds = vec![nodes[0].addr.to_string()];
    let t0 = Instant::now();
    let restarted = start(crashed.name.as_str(), &seeds).await;
    let all: Vec<&Node> = nodes.iter().chain([&restarted]).collect();
    wait_converged(&all, secs(10)).await;
    println!("restarted node back in every ring after {:?}", t0.elapsed());
    let generation = restarted.membership.view().generation();
    assert!(generation > old_generation);
    for node in &nodes {
        let view = node.membership.view();
        assert_eq!(
            view.member(&restarted.name).unwrap().generation(),
            generation
        );
    }
}

#[tokio::test]
async fn a_leaving_node_leaves_every_ring_quickly() {
    let (mut nodes, _, _) = converge(3).await;
    let leaver = nodes.pop().unwrap();
    let t0 = Instant::now();
    let leave = tokio::spawn({
        let membership = leaver.membership.clone();
        async move { membership.leave().await }
    });
    let survivors: Vec<&Node> = nodes.iter().collect();
    let want = names(&survivors);
    for node in &survivors {
        wait_for(node, secs(3), "the leaver out of the ring", |v| {
            v.ring.members() == want.as_slice()
        })
        .await;
    }
    let out_of_rings = t0.elapsed();
    leave.await.unwrap().unwrap();
    let left = t0.elapsed();
    wait_members(&survivors, secs(3)).await;
    println!(
        "graceful leave: out of every ring after {out_of_rings:?}, leave() returned after {left:?}, out of every member list after {:?}",
        t0.elapsed()
    );
    assert!(!leaver.membership.is_ready());
    tokio::time::timeout(Duration::from_secs(1), leaver.task)
        .await
        .expect("the task ends after leaving")
        .unwrap();
    // Leaving is announced before going: a survivor's ring lost it well
    // within the fast profile's crash detection time.
    assert!(out_of_rings < Duration::from_secs(2), "{out_of_rings:?}");
}

#[tokio::test]
async fn a_seed_that_starts_later_is_retried_until_joined() {
    // A port nobody listens on yet.
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let seed_addr = probe.local_addr().unwrap();
    drop(probe);
    let joiner = start("joiner", &[seed_addr.to_string()]).await;
    // Not joined while the seed is absent: a bounded negative check.
    let mut rx = joiner.membership.subscribe();
    let early = tokio::time::timeout(Duration::from_millis(700), rx.wait_for(|v| v.joined)).await;
    assert!(early.is_err(), "joined with no seed up");
    assert!(!joiner.membership.is_ready());

    let socket = UdpSocket::bind(seed_addr).await.unwrap();
    let seed = start_on(socket, "seed", &[], Profile::fast()).await;
    let t0 = Instant::now();
    wait_converged(&[&seed, &joiner], secs(10)).await;
    println!(
        "late seed: joined {:?} after the seed came up",
        t0.elapsed()
    );
}

#[tokio::test]
async fn a_seed_list_with_unreachable_entries_joins() {
    let seed = start("seed", &[]).await;
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    // `localhost` may resolve to ::1 as well, where nothing listens.
    let seeds = vec![
        dead_addr.to_string(),
        "name.invalid:7946".to_string(),
        format!("localhost:{}", seed.addr.port()),
    ];
    let joiner = start("joiner", &seeds).await;
    wait_converged(&[&seed, &joiner], secs(10)).await;
}

#[tokio::test]
async fn a_cluster_of_one_is_ready_at_once() {
    let t0 = Instant::now();
    let alone = start("alone", &[]).await;
    wait_for(&alone, secs(2), "ready alone", MembershipView::is_ready).await;
    println!("no seeds: ready after {:?}", t0.elapsed());

    // Seeds that resolve only to this node.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let t0 = Instant::now();
    let selfish = start_on(socket, "selfish", &[addr.to_string()], Profile::fast()).await;
    wait_for(&selfish, secs(2), "ready alone", MembershipView::is_ready).await;
    println!("seeds = itself: ready after {:?}", t0.elapsed());
    assert_eq!(selfish.membership.view().members.len(), 1);
}

/// A tiny xorshift: random-looking bytes with no extra dependency.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_on_the_gossip_port_is_ignored() {
    let target = start("target", &[]).await;
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15;
    for len in [0usize, 1, 2, 3, 7, 64, 512, 1399, 1400, 1401, 9000] {
        for _ in 0..20 {
            sender
                .send_to(&noise(&mut state, len), target.addr)
                .await
                .unwrap();
        }
    }
    // A valid header followed by junk, and truncated valid packets.
    let stranger = identity("stranger", sender.local_addr().unwrap());
    let mut packet = Vec::new();
    PostcardCodec
        .encode_header(
            &Header {
                src: stranger.clone(),
                src_incarnation: 0,
                dst: stranger,
                message: Message::Gossip,
            },
            &mut packet,
        )
        .unwrap();
    for cut in 0..packet.len() {
        sender.send_to(&packet[..cut], target.addr).await.unwrap();
    }
    packet.put_u16(3);
    packet.extend(noise(&mut state, 40));
    sender.send_to(&packet, target.addr).await.unwrap();

    // Still alive and gossiping: a new node joins through it.
    let joiner = start("joiner", &[target.addr.to_string()]).await;
    wait_converged(&[&target, &joiner], secs(10)).await;
    assert!(!target.task.is_finished());
}

/// Sends `node` a gossip packet from `from` (a live member) whose only
/// update is `update`.
async fn inject(node: &Node, from: &NodeIdentity, update: Member<NodeIdentity>) {
    let mut packet = Vec::new();
    let mut codec = PostcardCodec;
    codec
        .encode_header(
            &Header {
                src: from.clone(),
                src_incarnation: 0,
                dst: node.membership.view().local,
                message: Message::Gossip,
            },
            &mut packet,
        )
        .unwrap();
    packet.put_u16(1);
    codec.encode_member(&update, &mut packet).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&packet, node.addr).await.unwrap();
}

#[tokio::test]
async fn a_node_declared_down_comes_back_as_a_new_generation_with_a_new_epoch() {
    let (nodes, _, _) = converge(3).await;
    let victim = &nodes[2];
    let before = victim.membership.view().local;
    let from = nodes[0].membership.view().local;

    // The cluster (as far as the victim can tell) declares it down.
    inject(victim, &from, Member::new(before.clone(), 0, State::Down)).await;
    wait_for(victim, secs(5), "a renewed identity", |v| {
        v.epoch >= 1 && v.generation() > before.generation()
    })
    .await;
    let all: Vec<&Node> = nodes.iter().collect();
    wait_converged(&all, secs(10)).await;
    // Gossip carries the renewed identity to every member.
    let generation = victim.membership.view().generation();
    for node in &nodes {
        wait_for(node, secs(10), "the victim's new generation", |v| {
            v.member(&victim.name)
                .is_some_and(|m| m.generation() == generation)
        })
        .await;
    }

    // News of a newer process under its name: it comes back above it.
    let current = victim.membership.view().local;
    let epoch = victim.membership.view().epoch;
    let rival = current.clone().with_generation(generation + 1_000);
    inject(victim, &from, Member::new(rival.clone(), 0, State::Alive)).await;
    wait_for(victim, secs(5), "an identity above the rival", |v| {
        v.epoch > epoch && v.generation() > rival.generation()
    })
    .await;
    wait_converged(&all, secs(10)).await;
}

#[tokio::test]
async fn lan_profile_crash_detection() {
    let mut profile = Profile::lan();
    // Only the member list is measured here; keep ring changes prompt.
    profile.debounce.min_interval = Duration::from_millis(500);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let seed = start_on(socket, "lan-0", &[], profile.clone()).await;
    let seeds = vec![seed.addr.to_string()];
    let mut nodes = vec![seed];
    for i in 1..3 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        nodes.push(start_on(socket, &format!("lan-{i}"), &seeds, profile.clone()).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_converged(&refs, secs(10)).await;
    let crashed = nodes.pop().unwrap();
    crashed.task.abort();
    let t0 = Instant::now();
    let survivors: Vec<&Node> = nodes.iter().collect();
    wait_members(&survivors, secs(15)).await;
    let detected = t0.elapsed();
    wait_converged(&survivors, secs(5)).await;
    println!(
        "lan profile: crash dropped from every member list after {detected:?}, from every ring after {:?}",
        t0.elapsed()
    );
}
