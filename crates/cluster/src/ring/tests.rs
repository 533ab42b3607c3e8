//! The ring's contract (golden placement, checked against an independent
//! SipHash) and its properties (balance, minimal movement, determinism),
//! over seeded pseudo-random keys so every run sees the same ones.

use std::collections::BTreeSet;

use super::*;

fn names(names: &[&str]) -> Vec<NodeName> {
    names.iter().map(|n| NodeName::new(n).unwrap()).collect()
}

fn ring(members: &[&str]) -> Ring {
    Ring::new(names(members), DEFAULT_VNODES)
}

/// SplitMix64: a tiny seeded generator, so the tests need no `rand`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `count` keys as a cache sees them: half sequential (`key:N`, as load
/// generators and counters make them), half random printable bytes of 1 to
/// 64 bytes (as Django's prefixed and hashed keys look).
fn keys(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            if i % 2 == 0 {
                format!("key:{i}").into_bytes()
            } else {
                let len = 1 + rng.below(64) as usize;
                (0..len).map(|_| b'!' + rng.below(94) as u8).collect()
            }
        })
        .collect()
}

/// SipHash-2-4 written from the paper (Aumasson & Bernstein, 2012), so the
/// placement contract is checked against something other than the crates
/// that implement it.
fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut compress = |m: u64| {
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    };
    let mut chunks = msg.chunks_exact(8);
    for chunk in &mut chunks {
        compress(u64::from_le_bytes(chunk.try_into().unwrap()));
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    compress(u64::from_le_bytes(last) | ((msg.len() as u64) << 56));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Placement exactly as the module docs define it, with nothing from this
/// crate or `hashring`: the sorted (position, name, index) of every virtual
/// node.
struct Reference(Vec<(u64, Vec<u8>, u32)>);

impl Reference {
    fn new(members: &[&str], vnodes: u32) -> Reference {
        let members: BTreeSet<&[u8]> = members.iter().map(|m| m.as_bytes()).collect();
        let mut all: Vec<(u64, Vec<u8>, u32)> = members
            .iter()
            .flat_map(|&name| {
                (0..vnodes).map(move |i| {
                    let mut label = name.to_vec();
                    label.extend_from_slice(format!("#{i}").as_bytes());
                    (siphasher_zero(&label), name.to_vec(), i)
                })
            })
            .collect();
        all.sort();
        Reference(all)
    }

    fn owners(&self, key: &[u8], n: usize) -> Vec<String> {
        let at = siphasher_zero(key);
        let start = self.0.iter().position(|v| v.0 >= at).unwrap_or(0);
        let mut out: Vec<String> = Vec::new();
        for step in 0..self.0.len() {
            let name = String::from_utf8(self.0[(start + step) % self.0.len()].1.clone()).unwrap();
            if out.len() < n && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

fn siphasher_zero(msg: &[u8]) -> u64 {
    siphash24(0, 0, msg)
}

fn owner_str<'r>(ring: &'r Ring, key: &[u8]) -> &'r str {
    ring.owner(key).unwrap().as_str()
}

#[test]
fn reference_siphash_matches_the_papers_vectors() {
    // Key 00 01 .. 0f; messages 00 01 .. (len-1). From the paper's
    // appendix and the reference implementation's vectors.h.
    let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    let msg: Vec<u8> = (0..64).collect();
    assert_eq!(siphash24(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
    assert_eq!(siphash24(k0, k1, &msg[..1]), 0x74f8_39c5_93dc_67fd);
    assert_eq!(siphash24(k0, k1, &msg[..8]), 0x93f5_f579_9a93_2462);
    assert_eq!(siphash24(k0, k1, &msg[..15]), 0xa129_ca61_49be_45e5);
}

#[test]
fn point_is_siphash24_with_zero_keys_over_the_raw_bytes() {
    for key in keys(1, 2_000) {
        assert_eq!(point(&key), siphasher_zero(&key), "{key:?}");
    }
    assert_eq!(point(b""), siphasher_zero(b""));
    // Every length, every tail width, against the reference and against
    // the hasher `hashring` places keys with.
    let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    for len in 0..=bytes.len() {
        let key = &bytes[..len];
        assert_eq!(point(key), siphasher_zero(key), "length {len}");
        assert_eq!(
            point(key),
            hashring::DefaultHashBuilder.hash_one(super::Raw(key)),
            "length {len}"
        );
    }
    // Pinned, so a hasher that changed under us fails here first.
    assert_eq!(point(b""), 0x1e92_4b9d_7377_00d7);
    assert_eq!(point(b"shoal-0#0"), 0x3da9_d737_fa65_1bf9);
    assert_eq!(point(b"foo"), 0xdde3_8bd4_8eae_7414);
}

#[test]
fn placement_matches_the_documented_definition() {
    for (members, vnodes) in [
        (&["shoal-0", "shoal-1", "shoal-2"][..], DEFAULT_VNODES),
        (&["a", "b", "c", "d", "e"][..], 7),
        (&["only"][..], 3),
        (&["n#1", "n", "n#12"][..], 20),
    ] {
        let ring = Ring::new(names(members), vnodes);
        let reference = Reference::new(members, vnodes);
        for key in keys(2, 3_000) {
            let got: Vec<&str> = ring
                .owners(&key, members.len())
                .iter()
                .map(|n| n.as_str())
                .collect();
            assert_eq!(
                got,
                reference.owners(&key, members.len()),
                "{members:?} {key:?}"
            );
            assert_eq!(owner_str(&ring, &key), got[0]);
        }
    }
}

/// The placement every node of every build must agree on. If this fails
/// after a dependency or toolchain upgrade, that upgrade moves keys between
/// nodes of a mixed-version cluster: do not "fix" the expected values.
#[test]
fn golden_owners() {
    let ring = ring(&["shoal-0", "shoal-1", "shoal-2"]);
    let reference = Reference::new(&["shoal-0", "shoal-1", "shoal-2"], DEFAULT_VNODES);
    let k250 = [b'k'; 250];
    // (key, owners(key, 3)): the first is the owner.
    let cases: [(&[u8], [&str; 3]); 10] = [
        (b"foo", ["shoal-0", "shoal-1", "shoal-2"]),
        (b"bar", ["shoal-1", "shoal-2", "shoal-0"]),
        (b"baz", ["shoal-0", "shoal-2", "shoal-1"]),
        (b"", ["shoal-0", "shoal-1", "shoal-2"]),
        (b"key:0", ["shoal-0", "shoal-1", "shoal-2"]),
        (b"key:1", ["shoal-0", "shoal-1", "shoal-2"]),
        (
            b":1:views.decorators.cache.cache_page..GET.0ab1",
            ["shoal-1", "shoal-0", "shoal-2"],
        ),
        (
            b":1:django.contrib.sessions.cache3kq9",
            ["shoal-2", "shoal-1", "shoal-0"],
        ),
        (b"\x00\xff\x80binary", ["shoal-0", "shoal-2", "shoal-1"]),
        (&k250, ["shoal-2", "shoal-0", "shoal-1"]),
    ];
    for (key, owners) in cases {
        let got: Vec<&str> = ring.owners(key, 3).iter().map(|n| n.as_str()).collect();
        assert_eq!(got, owners, "{:?}", String::from_utf8_lossy(key));
        assert_eq!(owner_str(&ring, key), owners[0]);
        assert_eq!(reference.owners(key, 3), owners);
    }
    assert_eq!(ring.version(), 0x0885_ac59_d835_3f56);
}

#[test]
fn balance_of_three_nodes() {
    let ring = ring(&["shoal-0", "shoal-1", "shoal-2"]);
    let keys = keys(3, 30_000);
    let mut counts = [0usize; 3];
    for key in &keys {
        let owner = ring.owner(key).unwrap();
        counts[ring.members().iter().position(|m| m == owner).unwrap()] += 1;
    }
    let shares = counts.map(|c| c as f64 / keys.len() as f64);
    println!("3 × 160 vnodes, 30k keys: {counts:?} = {shares:.3?}");
    for share in shares {
        assert!((0.25..=0.42).contains(&share), "{shares:?}");
    }
}

/// Over many random member names the split stays near a third: the bound
/// above is not luck with the names `shoal-0..2`.
#[test]
fn balance_over_random_names() {
    let keys = keys(4, 30_000);
    let mut rng = Rng(5);
    let (mut lo, mut hi) = (1.0f64, 0.0f64);
    for _ in 0..20 {
        let members: Vec<String> = (0..3).map(|_| format!("node-{:x}", rng.next())).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        let ring = ring(&members);
        let mut counts = [0usize; 3];
        for key in &keys {
            let owner = ring.owner(key).unwrap();
            counts[ring.members().iter().position(|m| m == owner).unwrap()] += 1;
        }
        for c in counts {
            let share = c as f64 / keys.len() as f64;
            lo = lo.min(share);
            hi = hi.max(share);
        }
    }
    println!("20 random 3-node rings: shares within {lo:.3}..{hi:.3}");
    assert!(lo >= 0.25 && hi <= 0.42, "{lo} {hi}");
}

#[test]
fn adding_a_node_moves_keys_only_to_it() {
    let before = ring(&["shoal-0", "shoal-1", "shoal-2"]);
    let after = ring(&["shoal-0", "shoal-1", "shoal-2", "shoal-3"]);
    let keys = keys(6, 30_000);
    let mut moved = 0;
    for key in &keys {
        let (old, new) = (owner_str(&before, key), owner_str(&after, key));
        if old != new {
            assert_eq!(new, "shoal-3", "{key:?} moved {old} -> {new}");
            moved += 1;
        }
    }
    let share = moved as f64 / keys.len() as f64;
    println!("adding a 4th node moved {moved} of 30k keys ({share:.3})");
    assert!((0.17..=0.33).contains(&share), "{share}");
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    let before = ring(&["shoal-0", "shoal-1", "shoal-2", "shoal-3"]);
    let after = ring(&["shoal-0", "shoal-2", "shoal-3"]);
    let keys = keys(7, 30_000);
    let mut moved = 0;
    for key in &keys {
        let (old, new) = (owner_str(&before, key), owner_str(&after, key));
        if old != new {
            assert_eq!(old, "shoal-1", "{key:?} moved {old} -> {new}");
            moved += 1;
        } else {
            assert_ne!(old, "shoal-1");
        }
    }
    println!(
        "removing 1 of 4 nodes moved {moved} of 30k keys ({:.3})",
        moved as f64 / keys.len() as f64
    );
}

/// A departed owner's keys go to the next distinct member after it: the
/// same node `owners(key, 2)[1]` named, which is where a replica or a
/// hand-over would have put them.
#[test]
fn a_removed_owners_keys_go_to_its_successor() {
    let before = ring(&["shoal-0", "shoal-1", "shoal-2", "shoal-3"]);
    let after = ring(&["shoal-0", "shoal-2", "shoal-3"]);
    for key in keys(8, 5_000) {
        let owners = before.owners(&key, 2);
        if owners[0].as_str() == "shoal-1" {
            assert_eq!(after.owner(&key), Some(owners[1]));
        }
    }
}

#[test]
fn member_order_and_duplicates_do_not_matter() {
    let members = ["shoal-3", "shoal-0", "shoal-10", "shoal-1", "shoal-2"];
    let reference = ring(&members);
    let mut rng = Rng(9);
    for _ in 0..10 {
        let mut shuffled: Vec<&str> = members.to_vec();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        shuffled.push(shuffled[0]);
        let other = ring(&shuffled);
        assert_eq!(other.members(), reference.members());
        assert_eq!(other.version(), reference.version());
        assert_eq!(other.positions, reference.positions);
        for key in keys(10, 2_000) {
            assert_eq!(other.owners(&key, 5), reference.owners(&key, 5));
        }
    }
}

#[test]
fn owners_are_distinct_and_start_with_the_owner() {
    let ring = ring(&["a", "b", "c", "d", "e"]);
    for key in keys(11, 5_000) {
        let owner = ring.owner(&key).unwrap();
        assert_eq!(ring.owners(&key, 1), [owner]);
        let all = ring.owners(&key, 5);
        let distinct: BTreeSet<&NodeName> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 5);
        for n in 0..=7 {
            let some = ring.owners(&key, n);
            assert_eq!(some.len(), n.min(5));
            assert_eq!(some[..], all[..n.min(5)], "a prefix of the longer list");
        }
    }
}

#[test]
fn version_tracks_members_and_vnodes() {
    let a = ring(&["shoal-0", "shoal-1"]);
    assert_eq!(a.version(), ring(&["shoal-1", "shoal-0"]).version());
    assert_ne!(
        a.version(),
        ring(&["shoal-0", "shoal-1", "shoal-2"]).version()
    );
    assert_ne!(
        a.version(),
        Ring::new(names(&["shoal-0", "shoal-1"]), 100).version()
    );
    // Length prefixes keep ["ab", "c"] apart from ["a", "bc"].
    assert_ne!(ring(&["ab", "c"]).version(), ring(&["a", "bc"]).version());
    assert_ne!(Ring::empty().version(), 0);
}

#[test]
fn an_empty_ring_owns_nothing() {
    let ring = Ring::empty();
    assert!(ring.is_empty());
    assert_eq!(ring.owner(b"foo"), None);
    assert!(ring.owners(b"foo", 3).is_empty());
}

#[test]
fn a_single_member_owns_everything() {
    let ring = Ring::new(names(&["solo"]), 1);
    for key in keys(12, 100) {
        assert_eq!(owner_str(&ring, &key), "solo");
        assert_eq!(ring.owners(&key, 3).len(), 1);
    }
    assert!(ring.contains(&NodeName::new("solo").unwrap()));
    assert!(!ring.contains(&NodeName::new("other").unwrap()));
}

#[test]
fn zero_vnodes_means_one() {
    let ring = Ring::new(names(&["a", "b"]), 0);
    assert_eq!(ring.vnodes(), 1);
    assert_eq!(ring.positions.len(), 2);
}

#[test]
fn owner_index_names_the_same_member_as_owner() {
    for members in [
        &["a"][..],
        &["shoal-0", "shoal-1", "shoal-2"],
        &["n1", "n2", "n3", "n4", "n5"],
    ] {
        let ring = ring(members);
        for key in keys(7, 5000) {
            let by_index = ring.owner_index(&key).map(|i| &ring.members()[i]);
            assert_eq!(by_index, ring.owner(&key));
        }
    }
    assert_eq!(Ring::empty().owner_index(b"k"), None);
}

#[test]
fn the_bucket_and_direct_tables_find_what_a_binary_search_over_every_position_finds() {
    let mut rng = Rng(0x5eed_b0c4);
    for members in [0, 1, 2, 3, 7, 10] {
        for vnodes in [1, 3, 160] {
            let names: Vec<String> = (0..members).map(|i| format!("shoal-{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let ring = Ring::new(self::names(&refs), vnodes);
            let positions = &ring.positions;
            // Random points, every position and its neighbours, both ends.
            let mut points: Vec<u64> = (0..2000).map(|_| rng.next()).collect();
            for &p in positions.iter() {
                points.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
            }
            points.extend([0, 1, u64::MAX - 1, u64::MAX]);
            // And the direct table's range edges.
            for b in 0..ring.direct.len() as u64 {
                let start = b.checked_shl(ring.direct_shift).unwrap_or(0);
                points.extend([start, start.wrapping_sub(1), start.wrapping_add(1)]);
            }
            for at in points {
                let first = positions.partition_point(|&p| p < at);
                assert_eq!(
                    ring.first_at_or_after(at),
                    first,
                    "{members} members x {vnodes}, point {at:#x}"
                );
                if members > 0 {
                    assert_eq!(
                        ring.owner_at_point(at),
                        owner_from(&ring.owner_at, first) as usize,
                        "{members} members x {vnodes}, point {at:#x}"
                    );
                }
            }
            // The shortcut answers most lookups on its own.
            if members > 1 && vnodes == 160 {
                let mixed = ring.direct.iter().filter(|&&o| o == MIXED).count();
                assert!(
                    mixed * 5 < ring.direct.len(),
                    "{mixed} of {} ranges mixed",
                    ring.direct.len()
                );
            }
        }
    }
}
