//! The consistent-hash ring: which node owns a key.
//!
//! Pure and synchronous: a [`Ring`] is built once from the set of *ready*
//! members and never changes; a membership change builds a new one (see
//! [`crate::debounce`] for when). Lookups take `&self` and allocate nothing
//! ([`Ring::owner`]), so the server can share one ring behind an `Arc` and
//! swap it whole.
//!
//! # Placement (a contract between nodes)
//! Every node must compute the same owner for every key, whatever compiler
//! or crate versions built it, so the hash is defined here byte for byte and
//! pinned by golden tests. Nothing here goes through std's `Hash` impls for
//! `str` or slices (which add length prefixes or terminators that may change
//! between Rust releases) or `DefaultHasher`.
//!
//! - **`h(b)`**: rapidhash V3 with its default secrets (seed 0) over the
//!   byte string `b`, as the C++ reference `rapidhash()` of rapidhash.h V3
//!   computes it; in code `rapidhash::v3::rapidhash_v3`, a function the
//!   crate keeps stable across its versions. It replaced SipHash-2-4
//!   (ring version "v1"): a forwarding node hashes every key of every
//!   request, and rapidhash takes about a fifth of the time on a short key.
//!   See [`point`].
//! - **Virtual nodes**: a member named `name` (its UTF-8 bytes) has
//!   `vnodes` positions, `h(name ++ "#" ++ decimal(i))` for `i` in
//!   `0..vnodes`, where `decimal` is ASCII digits without sign or leading
//!   zeros: `shoal-2#0` … `shoal-2#159`. The split at the last `#` makes the
//!   labels of different members distinct whatever the names contain.
//! - **A key's point** is `h(key)` over the raw key bytes as the client sent
//!   them (no namespace yet: when namespaces arrive, the bytes hashed must be
//!   the same on every node, and this doc must say which).
//! - **Owner**: the virtual node with the smallest position `>=` the key's
//!   point; if there is none, the one with the smallest position (the ring
//!   wraps). Two virtual nodes at the same position (odds about 2^-64 per
//!   pair) are ordered by name bytes, then index.
//! - **`owners(key, n)`**: from the owner's virtual node, walk positions
//!   upwards (wrapping) and take each member the first time it appears,
//!   until `n` members (or all of them) are taken. The first is the owner.
//! - **Version**: `h("shoal-ring-v2" ++ le32(vnodes) ++ for each member in
//!   ascending byte order: le32(len(name)) ++ name)`, with 0 replaced by 1
//!   (0 means "unknown" in the peer API). Equal versions mean equal
//!   placement, whatever order the members were learned in.
//!
//! `hashring` (fed `h` through [`Placement`]) keeps the sorted positions
//! and answers [`Ring::owner`]; [`Ring::owners`] walks a copy of the same
//! sorted order itself, because `HashRing::get_with_replicas` returns
//! consecutive virtual nodes (often the same member twice) and clones the
//! whole ring per call.

use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Write as _;

use hashring::HashRing;

use crate::NodeName;

/// Virtual nodes per member unless configured: enough that each of 3
/// members gets 28–39% of the keys whatever their names (see the tests), at
/// about 52 bytes per virtual node (8 KB per member).
pub const DEFAULT_VNODES: u32 = 160;

/// The placement hash `h` of the module docs over raw bytes: rapidhash
/// V3, default secrets. Public so that admin tools and tests can show where
/// a key falls.
#[inline]
pub fn point(bytes: &[u8]) -> u64 {
    rapidhash::v3::rapidhash_v3(bytes)
}

/// The hasher `hashring` places with: `h` of the one `write` that a
/// [`Raw`] or a [`VNode`] makes.
#[derive(Clone, Copy, Debug, Default)]
struct Placement;

impl BuildHasher for Placement {
    type Hasher = PlacementHasher;

    fn build_hasher(&self) -> PlacementHasher {
        PlacementHasher::default()
    }
}

#[derive(Default)]
struct PlacementHasher {
    hash: u64,
    written: bool,
}

impl Hasher for PlacementHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `h` is of one byte string: the types hashed here write once.
        debug_assert!(!self.written, "a placement hash takes one write");
        self.written = true;
        self.hash = point(bytes);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Bytes whose `Hash` is exactly one `write` of themselves: no length
/// prefix, no terminator, nothing a compiler upgrade could change.
struct Raw<'a>(&'a [u8]);

impl Hash for Raw<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// One virtual node as `hashring` stores it. Its `Hash` is one `write` of
/// its label `name#index`; the other fields ride along for lookups.
#[derive(Clone, Debug)]
struct VNode {
    name: NodeName,
    index: u32,
    /// Index of `name` in [`Ring::members`].
    member: u32,
    /// `h(label)`, kept so the successor table needs no rehashing.
    position: u64,
}

impl VNode {
    fn new(name: &NodeName, member: u32, index: u32) -> VNode {
        let mut vnode = VNode {
            name: name.clone(),
            index,
            member,
            position: 0,
        };
        vnode.position = Placement.hash_one(&vnode);
        vnode
    }

    /// `name ++ "#" ++ decimal(index)`.
    fn label(&self) -> Vec<u8> {
        let mut label = Vec::with_capacity(self.name.as_bytes().len() + 11);
        label.extend_from_slice(self.name.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(label, "#{}", self.index);
        label
    }
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.label());
    }
}

/// An immutable consistent-hash ring over a set of member names.
#[derive(Clone)]
pub struct Ring {
    /// Sorted by bytes, no duplicates.
    members: Vec<NodeName>,
    vnodes: u32,
    ring: HashRing<VNode, Placement>,
    /// The virtual nodes' positions in ring order, for walking successors.
    /// Kept apart from `owner_at` so a binary search touches only these.
    positions: Box<[u64]>,
    /// `owner_at[i]`: the member (index into `members`) at `positions[i]`.
    owner_at: Box<[u32]>,
    /// A lookup shortcut: `buckets[b]` is the first index into `positions`
    /// at or after `b << bucket_shift`, so a point's search is confined to
    /// its bucket (about one position) instead of a binary search over all.
    buckets: Box<[u32]>,
    bucket_shift: u32,
    /// A finer shortcut for the owner alone: `direct[b]` is the member
    /// that owns every point of `b << direct_shift` onwards up to the next
    /// such start, or [`MIXED`] when the owner changes within it (about one
    /// in ten). One load in a table of a few KiB answers most lookups.
    direct: Box<[u16]>,
    direct_shift: u32,
    version: u64,
}

/// A `Ring::direct` entry whose range has more than one owner.
const MIXED: u16 = u16::MAX;

impl Ring {
    /// A ring over `members` (duplicates ignored, order irrelevant) with
    /// `vnodes` virtual nodes each (at least 1).
    ///
    /// Costs one hash and a small allocation per virtual node (about
    /// 0.5 ms for 10 members × 160): build it off the request path and swap
    /// it in.
    pub fn new(members: impl IntoIterator<Item = NodeName>, vnodes: u32) -> Ring {
        let vnodes = vnodes.max(1);
        let mut members: Vec<NodeName> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        // Inserted in (name, index) order: hashring's sort is stable, so
        // equal positions stay in that order on every node.
        let mut entries = Vec::with_capacity(members.len() * vnodes as usize);
        for (member, name) in members.iter().enumerate() {
            let member = u32::try_from(member).expect("fewer than 2^32 members");
            entries.extend((0..vnodes).map(|index| VNode::new(name, member, index)));
        }
        // Ring order is position order, ties in insertion order: what
        // `hashring`'s stable sort of the same entries makes (finding them
        // sorted already).
        entries.sort_by_key(|v| v.position);
        let (positions, owner_at): (Vec<u64>, Vec<u32>) =
            entries.iter().map(|v| (v.position, v.member)).unzip();
        let mut ring = HashRing::with_hasher(Placement);
        ring.batch_add(entries);
        let version = version(&members, vnodes);
        let (buckets, bucket_shift) = buckets(&positions);
        let (direct, direct_shift) = direct(&positions, &owner_at);
        Ring {
            members,
            vnodes,
            ring,
            positions: positions.into(),
            owner_at: owner_at.into(),
            buckets,
            bucket_shift,
            direct,
            direct_shift,
            version,
        }
    }

    /// The index of the first position at or after `at` (`positions.len()`
    /// when there is none): `positions.partition_point(|&p| p < at)`,
    /// searched within `at`'s bucket only.
    fn first_at_or_after(&self, at: u64) -> usize {
        let b = at.checked_shr(self.bucket_shift).unwrap_or(0) as usize;
        let start = self.buckets[b] as usize;
        let end = self
            .buckets
            .get(b + 1)
            .map_or(self.positions.len(), |&e| e as usize);
        start + self.positions[start..end].partition_point(|&p| p < at)
    }

    /// A ring with no members: it owns nothing, as a node that has not
    /// joined must.
    pub fn empty() -> Ring {
        Ring::new([], DEFAULT_VNODES)
    }

    /// The member that owns `key`; `None` only when the ring is empty.
    pub fn owner(&self, key: &[u8]) -> Option<&NodeName> {
        self.ring.get(&Raw(key)).map(|vnode| &vnode.name)
    }

    /// The owner of `key` as an index into [`Ring::members`] (the same
    /// member as [`Ring::owner`]): lets a router keep per-member state in
    /// a plain slice. `None` only when the ring is empty.
    pub fn owner_index(&self, key: &[u8]) -> Option<usize> {
        if self.positions.is_empty() {
            return None;
        }
        Some(self.owner_at_point(point(key)))
    }

    /// The member owning point `at` of a ring that is not empty.
    fn owner_at_point(&self, at: u64) -> usize {
        let b = at.checked_shr(self.direct_shift).unwrap_or(0) as usize;
        match self.direct[b] {
            MIXED => owner_from(&self.owner_at, self.first_at_or_after(at)) as usize,
            member => usize::from(member),
        }
    }

    /// The `n` distinct members that follow `key` on the ring, the owner
    /// first: where replicas of the key go, and who takes it over when the
    /// owner leaves. Fewer than `n` when the ring has fewer members.
    pub fn owners(&self, key: &[u8], n: usize) -> Vec<&NodeName> {
        let n = n.min(self.members.len());
        let mut taken: Vec<u32> = Vec::with_capacity(n);
        if n == 0 {
            return Vec::new();
        }
        let start = self.first_at_or_after(point(key));
        let (before, from) = self.owner_at.split_at(start);
        // Every member has a virtual node, so one lap finds them all; `n`
        // is small (replicas), so a linear `contains` beats a set.
        for &member in from.iter().chain(before) {
            if !taken.contains(&member) {
                taken.push(member);
                if taken.len() == n {
                    break;
                }
            }
        }
        taken
            .into_iter()
            .map(|m| &self.members[m as usize])
            .collect()
    }

    /// The members, sorted by name bytes.
    pub fn members(&self) -> &[NodeName] {
        &self.members
    }

    pub fn contains(&self, name: &NodeName) -> bool {
        self.members.binary_search(name).is_ok()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// A hash of the members and `vnodes` (see the module docs): two nodes
    /// with the same version place every key alike. Never 0.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl Default for Ring {
    fn default() -> Ring {
        Ring::empty()
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("vnodes", &self.vnodes)
            .field("version", &format_args!("{:016x}", self.version))
            .finish_non_exhaustive()
    }
}

/// The bucket index of sorted `positions`: as many buckets as the next power
/// of two at or above their number (at most 2^20), each the first index at
/// or after its start; and the shift that turns a point into its bucket.
fn buckets(positions: &[u64]) -> (Box<[u32]>, u32) {
    let count = positions.len().next_power_of_two().clamp(1, 1 << 20);
    let shift = u64::BITS - count.trailing_zeros();
    let mut buckets = Vec::with_capacity(count);
    let mut i = 0;
    for b in 0..count as u64 {
        // With one bucket the shift is 64: every point is in bucket 0.
        let start = b.checked_shl(shift).unwrap_or(0);
        while i < positions.len() && positions[i] < start {
            i += 1;
        }
        buckets.push(u32::try_from(i).expect("fewer than 2^32 virtual nodes"));
    }
    (buckets.into(), shift)
}

/// The member at the `i`th position, the first at or after some point
/// (`owner_at.len()`: none after it, so the ring wraps to the first).
fn owner_from(owner_at: &[u32], i: usize) -> u32 {
    owner_at[if i == owner_at.len() { 0 } else { i }]
}

/// The direct owner table of sorted `positions` (owned by `owner_at`):
/// eight ranges per position, rounded up to a power of two (at most
/// 2^15), each the one member owning all of it or [`MIXED`]; and the shift
/// that turns a point into its range. All [`MIXED`] for an empty ring or
/// one with too many members for a `u16`.
fn direct(positions: &[u64], owner_at: &[u32]) -> (Box<[u16]>, u32) {
    let count = (positions.len() * 8).next_power_of_two().clamp(1, 1 << 15);
    let shift = u64::BITS - count.trailing_zeros();
    if positions.is_empty() || owner_at.len() > usize::from(MIXED) {
        return (vec![MIXED; count].into(), shift);
    }
    let owner = |i| owner_from(owner_at, i);
    // Both walks only move forward: one pass over the ranges and positions.
    let (mut first, mut through) = (0, 0);
    let direct = (0..count as u64)
        .map(|b| {
            // The range's points run from `start` to just before the next
            // range's start; their owners are those of the positions from
            // the first at or after `start` to the first at or after the
            // range's last point.
            let start = b.checked_shl(shift).unwrap_or(0);
            // The last range ends at u64::MAX: `(b + 1) << shift` would
            // overflow there.
            let last = start | u64::MAX.checked_shr(u64::BITS - shift).unwrap_or(0);
            while first < positions.len() && positions[first] < start {
                first += 1;
            }
            through = through.max(first);
            while through < positions.len() && positions[through] < last {
                through += 1;
            }
            let member = owner(first);
            if (first..=through).all(|i| owner(i) == member) {
                u16::try_from(member).unwrap_or(MIXED)
            } else {
                MIXED
            }
        })
        .collect();
    (direct, shift)
}

/// The ring version of the module docs. `members` must be sorted.
fn version(members: &[NodeName], vnodes: u32) -> u64 {
    let mut buf = Vec::with_capacity(
        17 + members
            .iter()
            .map(|m| 4 + m.as_bytes().len())
            .sum::<usize>(),
    );
    buf.extend_from_slice(b"shoal-ring-v2");
    buf.extend_from_slice(&vnodes.to_le_bytes());
    for name in members {
        let len = u32::try_from(name.as_bytes().len()).expect("names are short");
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
    }
    point(&buf).max(1)
}

#[cfg(test)]
mod tests;
