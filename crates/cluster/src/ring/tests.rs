//! The ring's contract (golden placement; `h` checked against values the
//! C++ reference computes) and its properties (balance, minimal movement,
//! determinism), over seeded pseudo-random keys so every run sees the same
//! ones.

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

/// Placement exactly as the module docs define it, with nothing from this
/// crate or `hashring` but `h` itself (rapidhash's portable function, held
/// to the C++ reference's values below): the sorted (position, name, index)
/// of every virtual node.
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
                    (rapidhash::v3::rapidhash_v3(&label), name.to_vec(), i)
                })
            })
            .collect();
        all.sort();
        Reference(all)
    }

    fn owners(&self, key: &[u8], n: usize) -> Vec<String> {
        let at = rapidhash::v3::rapidhash_v3(key);
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

fn owner_str<'r>(ring: &'r Ring, key: &[u8]) -> &'r str {
    ring.owner(key).unwrap().as_str()
}

/// The 300 test bytes the length cases below hash prefixes of.
fn test_bytes() -> Vec<u8> {
    (0..300u32)
        .map(|i| (i.wrapping_mul(37) ^ 0xa5) as u8)
        .collect()
}

#[test]
fn point_is_rapidhash_v3_as_the_cpp_reference_computes_it() {
    // `rapidhash(key, len)` (seed 0) of the C++ reference's rapidhash.h
    // V3, compiled and run on these inputs: every size class of the
    // algorithm (empty, 1-3, 4-7, 8-16, 17-48, 49-112, longer).
    let strings: [(&[u8], u64); 8] = [
        (b"", 0x0338_dc4b_e2ce_cdae),
        (b"a", 0x599f_47df_33a2_e1eb),
        (b"foo", 0x20c0_f952_e291_56a1),
        (b"key:0", 0xf914_f960_d7cb_1534),
        (b"shoal-0#0", 0x6a4d_e975_ea55_bdba),
        (b"key:000001", 0xeaee_a56a_9bbb_e368),
        (b"hello world", 0x2f27_cb27_d524_0940),
        (
            b":1:django.contrib.sessions.cache3kq9",
            0x6df5_8a3a_c4bc_5fac,
        ),
    ];
    for (key, want) in strings {
        assert_eq!(point(key), want, "{:?}", String::from_utf8_lossy(key));
    }
    let bytes = test_bytes();
    let lengths: [(usize, u64); 19] = [
        (1, 0x77a3_74c0_5ccf_9a3f),
        (3, 0x001f_9665_136a_4b8f),
        (4, 0x8c76_09dd_3797_f544),
        (7, 0x1e07_f3fb_dfa7_a79e),
        (8, 0xb520_0ebc_ead9_5247),
        (15, 0x6c49_6b25_40c7_ab68),
        (16, 0x88ee_075b_75ae_f7fd),
        (17, 0x178f_8eae_643b_c8ba),
        (32, 0x7ae6_a0d9_130d_85dc),
        (48, 0xd5af_2a6e_f8ff_daf1),
        (49, 0x714a_2828_d514_cd92),
        (64, 0x31df_5edf_13d5_cd03),
        (80, 0x6294_5c67_51ee_270d),
        (96, 0x3bf7_6547_9357_078d),
        (112, 0x32f9_19e6_d6c8_7604),
        (113, 0xd13c_be8f_42f9_7267),
        (200, 0x1339_bb87_9819_15a6),
        (250, 0x49e6_bb76_7965_6142),
        (300, 0x66b2_c704_50bf_7ba4),
    ];
    for (len, want) in lengths {
        assert_eq!(point(&bytes[..len]), want, "length {len}");
    }
}

#[test]
fn hashring_places_with_the_same_h_over_the_raw_bytes() {
    // The hasher `hashring` is given sees one `write` of the raw bytes:
    // the same value as `point` at every length, every tail width.
    let bytes = test_bytes();
    for len in 0..=bytes.len() {
        let key = &bytes[..len];
        assert_eq!(point(key), Placement.hash_one(Raw(key)), "length {len}");
    }
    for key in keys(1, 2_000) {
        assert_eq!(point(&key), Placement.hash_one(Raw(&key)), "{key:?}");
    }
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
        (b"foo", ["shoal-0", "shoal-2", "shoal-1"]),
        (b"bar", ["shoal-2", "shoal-1", "shoal-0"]),
        (b"baz", ["shoal-0", "shoal-2", "shoal-1"]),
        (b"", ["shoal-2", "shoal-1", "shoal-0"]),
        (b"key:0", ["shoal-1", "shoal-0", "shoal-2"]),
        (b"key:1", ["shoal-1", "shoal-0", "shoal-2"]),
        (
            b":1:views.decorators.cache.cache_page..GET.0ab1",
            ["shoal-1", "shoal-2", "shoal-0"],
        ),
        (
            b":1:django.contrib.sessions.cache3kq9",
            ["shoal-1", "shoal-0", "shoal-2"],
        ),
        (b"\x00\xff\x80binary", ["shoal-2", "shoal-0", "shoal-1"]),
        (&k250, ["shoal-2", "shoal-1", "shoal-0"]),
    ];
    for (key, owners) in cases {
        let got: Vec<&str> = ring.owners(key, 3).iter().map(|n| n.as_str()).collect();
        assert_eq!(got, owners, "{:?}", String::from_utf8_lossy(key));
        assert_eq!(owner_str(&ring, key), owners[0]);
        assert_eq!(reference.owners(key, 3), owners);
    }
    assert_eq!(ring.version(), 0xf0cf_053f_9d2a_0b1d);
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
