//! Key families: a bounded set of labels that say which part of an
//! application a key belongs to, so hit/miss/bytes can be split per family
//! without one Prometheus series per key.
//!
//! # The rule
//! A key is read as bytes (it may not be UTF-8) in three steps.
//!
//! 1. **Django's envelope.** Django's default `KEY_FUNCTION` builds
//!    `f"{KEY_PREFIX}:{VERSION}:{key}"`, so the envelope is found at the
//!    *leftmost* `:` that is followed by a version — an optional `-` and one
//!    or more ASCII digits — and another `:`. Everything before it is the
//!    prefix (possibly empty, as in `:1:key`, possibly holding colons, as in
//!    `shop:prod:1:key`); everything after is the *rest*. A key with no such
//!    envelope (another client, a custom `KEY_FUNCTION`) is its own rest,
//!    with no prefix.
//! 2. **Django's own features**, recognised by how the rest starts:
//!
//!    | rest starts with                        | family                      |
//!    |-----------------------------------------|-----------------------------|
//!    | `views.decorators.cache.cache_page.`    | `django:cache_page`         |
//!    | `views.decorators.cache.cache_header.`  | `django:cache_header`       |
//!    | `template.cache.`                       | `django:template_fragment`  |
//!    | `django.contrib.sessions.cached_db`     | `django:session_cached_db`  |
//!    | `django.contrib.sessions.cache`         | `django:session`            |
//!
//!    These are the shapes Django 5.2 writes: `_generate_cache_key`
//!    (`…cache_page.{middleware prefix}.{method}.{md5 url}.{md5 headers}`,
//!    then `.{language}` with `USE_I18N` and `.{time zone}` with `USE_TZ`),
//!    `_generate_cache_header_key` (`…cache_header.{middleware prefix}.{md5
//!    url}` and the same suffixes), `make_template_fragment_key`
//!    (`template.cache.{fragment name}.{md5 of vary_on}`), and the session
//!    backends' `cache_key_prefix` followed directly by the 32-character
//!    session key. `cached_db` is tested before `cache`, which is its prefix;
//!    session keys are `[a-z0-9]` only, so a `cache` session can never look
//!    like `cached_db`. These five families always exist and do not count
//!    against the cap.
//! 3. **Application families.** Otherwise the family is the rest's first
//!    *segment*: the bytes before the first separator (by default any of
//!    `:` `.` `_` `-` `/` `|` `#`; `:` is always one), labelled
//!    `app:{segment}`, or `app:{prefix}:{segment}` when the registry was
//!    built with [`Families::with_prefix_in_label`] and the key has an
//!    envelope. The key is `other` instead when the segment
//!    - is not followed by a separator (`:1:homepage`: a bare word or an
//!      opaque token such as a hash is not a family),
//!    - is empty (`:1:_x`), longer than [`MAX_SEGMENT_LEN`] bytes, or all
//!      digits (`:1:42_x`: an id, not a name),
//!    - or, with its prefix, is not UTF-8 or holds a control character,
//!      space or `"`/`\` (labels must be printable UTF-8), or the prefix is
//!      longer than [`MAX_PREFIX_LEN`] bytes;
//!
//!    and when the cap is reached: the first `cap` distinct application
//!    families seen keep their label until the registry is dropped, every
//!    later one is counted as `other`.
//!
//! Examples: `:1:views.decorators.cache.cache_page..GET.ab….cd….en-us.UTC`
//! is `django:cache_page`; `shop:1:user_42` is `app:user` (or
//! `app:shop:user`); `:1:user:42:profile` is `app:user`; `cart-9f2c` (no
//! envelope) is `app:cart`; `:1:homepage` and `:1:42_x` are `other`.
//!
//! # Known ambiguities
//! The envelope is a guess from the bytes alone. A key from another client
//! that has a numeric middle segment, `user:42:cart:items`, reads as prefix
//! `user`, version `42`, rest `cart:items`, and is counted as `app:cart`
//! (`app:user:cart` with the prefix in the label); a `KEY_PREFIX` that
//! itself holds an all-digit segment (`site:2`) moves the envelope left.
//! Both only change which label a key gets, never correctness.
//!
//! # Cost
//! [`Families::classify`] scans the key once, compares a few bytes, and
//! probes an open-addressing table whose filled slots never change, with
//! acquire loads only: no lock, no allocation, no shared write once a
//! family is known (or once the cap is reached). The registry's mutex is
//! taken only the first time a new application family is seen.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// A family's small, copyable identity, stable for the life of its
/// [`Families`]: the server can index its per-family counters by
/// [`FamilyId::index`] instead of hashing a label per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId(u32);

impl FamilyId {
    /// Keys that fit no family, and application families past the cap.
    pub const OTHER: FamilyId = FamilyId(0);
    /// Django's per-view and per-site page cache (`cache_page`, the cache
    /// middleware): the cached responses.
    pub const CACHE_PAGE: FamilyId = FamilyId(1);
    /// The header lists the page cache stores per URL to build page keys.
    pub const CACHE_HEADER: FamilyId = FamilyId(2);
    /// `{% cache %}` template fragments.
    pub const TEMPLATE_FRAGMENT: FamilyId = FamilyId(3);
    /// Sessions of `django.contrib.sessions.backends.cache`.
    pub const SESSION: FamilyId = FamilyId(4);
    /// Sessions of `django.contrib.sessions.backends.cached_db`.
    pub const SESSION_CACHED_DB: FamilyId = FamilyId(5);

    /// A dense index, `0..families.len()`, for arrays of counters.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id whose [`FamilyId::index`] is `index` (an index kept
    /// elsewhere, e.g. in a small tag, turned back into an id).
    pub fn from_index(index: usize) -> FamilyId {
        FamilyId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// Whether this is `other` or one of the Django families, which every
    /// registry has and which do not count against the cap.
    pub fn is_builtin(self) -> bool {
        (self.0 as usize) < BUILTIN.len()
    }
}

/// Labels of the built-in families, indexed by [`FamilyId::index`].
const BUILTIN: [&str; 6] = [
    "other",
    "django:cache_page",
    "django:cache_header",
    "django:template_fragment",
    "django:session",
    "django:session_cached_db",
];

/// Longest application segment that gets a family; longer is `other`.
pub const MAX_SEGMENT_LEN: usize = 64;
/// Longest prefix put in a label; a longer one makes the key `other`.
pub const MAX_PREFIX_LEN: usize = 64;
/// The separators that end an application segment unless configured.
pub const DEFAULT_SEPARATORS: &[u8] = b":._-/|#";

/// The registry of families one node reports: the built-in ones plus the
/// first `cap` application families it sees. `Sync`: one instance is shared
/// by every connection.
pub struct Families {
    cap: usize,
    include_prefix: bool,
    separators: [bool; 256],
    /// Open addressing, linear probing, `len` a power of two above `2 *
    /// cap`; a slot is written once, under `insert`, and never changes.
    /// Holds `(hash of label after "app:", id)`.
    slots: Box<[OnceLock<(u64, FamilyId)>]>,
    /// Labels of application families, by `id - BUILTIN.len()`.
    labels: Box<[OnceLock<Box<str>>]>,
    /// Their hashes (as in `slots`), by the same index: for [`Families::code`].
    hashes: Box<[OnceLock<u64>]>,
    /// How many application families exist (published after their slot).
    count: AtomicUsize,
    insert: Mutex<()>,
}

/// What a key looks like, before the registry assigns an id.
#[derive(Debug, PartialEq, Eq)]
enum Shape<'a> {
    Builtin(FamilyId),
    App {
        /// The envelope's prefix, when the label includes it. Both parts are
        /// checked to be printable UTF-8.
        prefix: Option<&'a [u8]>,
        segment: &'a [u8],
        /// FNV-1a of the label after `app:` (see [`fnv`]).
        hash: u64,
    },
}

impl Families {
    /// A registry that labels at most `cap` application families, with the
    /// default separators and without the prefix in labels.
    pub fn new(cap: usize) -> Families {
        let table = if cap == 0 {
            0
        } else {
            (cap * 2 + 1).next_power_of_two()
        };
        let mut separators = [false; 256];
        for &b in DEFAULT_SEPARATORS {
            separators[b as usize] = true;
        }
        Families {
            cap,
            include_prefix: false,
            separators,
            slots: (0..table).map(|_| OnceLock::new()).collect(),
            labels: (0..cap).map(|_| OnceLock::new()).collect(),
            hashes: (0..cap).map(|_| OnceLock::new()).collect(),
            count: AtomicUsize::new(0),
            insert: Mutex::new(()),
        }
    }

    /// Label application families `app:{prefix}:{segment}`, for clusters
    /// shared by several sites with different `KEY_PREFIX`es (at the price
    /// of more labels under the same cap). Keys without an envelope keep
    /// `app:{segment}`.
    pub fn with_prefix_in_label(mut self, include: bool) -> Families {
        self.include_prefix = include;
        self
    }

    /// Replace the separators that end an application segment; `:` is kept
    /// whatever `separators` says, since it delimits Django's envelope.
    pub fn with_separators(mut self, separators: &[u8]) -> Families {
        self.separators = [false; 256];
        for &b in separators {
            self.separators[b as usize] = true;
        }
        self.separators[b':' as usize] = true;
        self
    }

    /// The family of `key`. Cheap and lock-free once the family is known;
    /// see the module documentation for the rule.
    pub fn classify(&self, key: &[u8]) -> FamilyId {
        match self.shape(key) {
            None => FamilyId::OTHER,
            Some(Shape::Builtin(id)) => id,
            Some(Shape::App {
                prefix,
                segment,
                hash,
            }) => self.app_family(prefix, segment, hash),
        }
    }

    /// A code for `id` that names the same family in any registry built
    /// alike (same separators, same prefix setting), for a node to tell
    /// another which family a key is in without the other classifying it:
    /// 1 to 6 the built-in families in [`FamilyId`] order, else the
    /// label's FNV-1a hash with the top bit set; 0 for an id this registry
    /// never handed out. Read back with [`Families::by_code`].
    pub fn code(&self, id: FamilyId) -> u64 {
        let i = id.index();
        if i < BUILTIN.len() {
            return i as u64 + 1;
        }
        self.hashes
            .get(i - BUILTIN.len())
            .and_then(OnceLock::get)
            .map_or(0, |&hash| hash | APP_CODE)
    }

    /// The family another registry named by [`Families::code`], if this
    /// one knows it: a family it has not seen yet is `None` (classify the
    /// key instead, which registers it). Two labels whose hashes agree in
    /// their low 63 bits would be taken for one another; that risk is
    /// ignored, as it only moves counts between two labels.
    pub fn by_code(&self, code: u64) -> Option<FamilyId> {
        if code == 0 {
            return None;
        }
        if code <= BUILTIN.len() as u64 {
            return Some(FamilyId(code as u32 - 1));
        }
        if code & APP_CODE == 0 {
            return None;
        }
        self.probe(code, |hash, _| hash | APP_CODE == code)
    }

    /// The label of `id`, e.g. `django:session` or `app:user`; `other` for
    /// an id this registry never handed out.
    pub fn name(&self, id: FamilyId) -> &str {
        let i = id.index();
        if i < BUILTIN.len() {
            return BUILTIN[i];
        }
        self.labels
            .get(i - BUILTIN.len())
            .and_then(OnceLock::get)
            .map_or(BUILTIN[0], |label| label)
    }

    /// How many families exist now: the built-in ones plus the application
    /// families seen so far. Every id handed out is below this.
    pub fn len(&self) -> usize {
        BUILTIN.len() + self.count.load(Ordering::Acquire)
    }

    /// Never true: `other` and the Django families always exist.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The most application families this registry labels.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Every family that exists now, by id: what to export (with zeros for
    /// families not yet used) so dashboards see a stable set of series.
    pub fn iter(&self) -> impl Iterator<Item = (FamilyId, &str)> + '_ {
        (0..self.len()).map(|i| {
            let id = FamilyId(i as u32);
            (id, self.name(id))
        })
    }

    fn shape<'a>(&self, key: &'a [u8]) -> Option<Shape<'a>> {
        let (prefix, rest) = match envelope(key) {
            Some((prefix, rest)) => (Some(prefix), rest),
            None => (None, key),
        };
        if let Some(id) = django_family(rest) {
            return Some(Shape::Builtin(id));
        }
        let prefix = match prefix {
            Some(p) if self.include_prefix => {
                if p.len() > MAX_PREFIX_LEN || !printable(p) {
                    return None;
                }
                Some(p)
            }
            _ => None,
        };
        // One pass over the segment: find its end, hash it, and check it is
        // printable ASCII and not all digits; bounded by MAX_SEGMENT_LEN.
        let mut hash = FNV_OFFSET;
        if let Some(p) = prefix {
            hash = fnv(fnv(hash, p), b":");
        }
        let (mut ascii, mut digits) = (true, true);
        let mut end = None;
        for (i, &b) in rest.iter().enumerate() {
            if self.separators[b as usize] {
                end = Some(i);
                break;
            }
            if i == MAX_SEGMENT_LEN {
                return None;
            }
            ascii &= b > b' ' && b < 0x7f && b != b'"' && b != b'\\';
            digits &= b.is_ascii_digit();
            hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        let segment = &rest[..end?];
        if segment.is_empty() || digits || (!ascii && !printable(segment)) {
            return None;
        }
        Some(Shape::App {
            prefix,
            segment,
            hash,
        })
    }

    fn app_family(&self, prefix: Option<&[u8]>, segment: &[u8], hash: u64) -> FamilyId {
        if self.cap == 0 {
            return FamilyId::OTHER;
        }
        if let Some(id) = self.find(hash, prefix, segment) {
            return id;
        }
        if self.count.load(Ordering::Acquire) >= self.cap {
            return FamilyId::OTHER;
        }
        // First sighting: the only path that locks or allocates.
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = self.find(hash, prefix, segment) {
            return id;
        }
        let n = self.count.load(Ordering::Relaxed);
        if n >= self.cap {
            return FamilyId::OTHER;
        }
        let id = FamilyId((BUILTIN.len() + n) as u32);
        // `printable` checked both parts are UTF-8.
        let text = |b| String::from_utf8_lossy(b);
        let label = match prefix {
            Some(p) => format!("app:{}:{}", text(p), text(segment)),
            None => format!("app:{}", text(segment)),
        };
        // Only this thread (holding `insert`) sets labels and slots.
        let _ = self.labels[n].set(label.into_boxed_str());
        let _ = self.hashes[n].set(hash);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while self.slots[i].get().is_some() {
            i = (i + 1) & mask;
        }
        let _ = self.slots[i].set((hash, id));
        self.count.store(n + 1, Ordering::Release);
        id
    }

    /// Probe for an application family; `None` at the first empty slot.
    fn find(&self, hash: u64, prefix: Option<&[u8]>, segment: &[u8]) -> Option<FamilyId> {
        self.probe(hash, |h, id| {
            h == hash && label_is(self.name(id).as_bytes(), prefix, segment)
        })
    }

    /// Walks the slots from `hash`'s until `is` accepts one (`Some` of its
    /// id) or an empty slot ends the run (`None`, as with no slots at all).
    /// Terminates: fewer than half the slots are ever filled.
    fn probe(&self, hash: u64, is: impl Fn(u64, FamilyId) -> bool) -> Option<FamilyId> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = hash as usize & mask;
        loop {
            let &(h, id) = self.slots[i].get()?;
            if is(h, id) {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Families")
            .field("cap", &self.cap)
            .field("include_prefix", &self.include_prefix)
            .field("families", &self.iter().map(|(_, n)| n).collect::<Vec<_>>())
            .finish()
    }
}

/// Split `prefix:version:rest` at the leftmost `:` followed by a version
/// (`-?[0-9]+`) and `:`.
fn envelope(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut from = 0;
    while let Some(off) = key[from..].iter().position(|&b| b == b':') {
        let colon = from + off;
        let after = &key[colon + 1..];
        let sign = usize::from(after.first() == Some(&b'-'));
        let digits = after[sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && after.get(sign + digits) == Some(&b':') {
            return Some((&key[..colon], &after[sign + digits + 1..]));
        }
        from = colon + 1;
    }
    None
}

/// Django's own key shapes, on the part after the envelope.
fn django_family(rest: &[u8]) -> Option<FamilyId> {
    const PAGE: &[u8] = b"views.decorators.cache.cache_page.";
    const HEADER: &[u8] = b"views.decorators.cache.cache_header.";
    const FRAGMENT: &[u8] = b"template.cache.";
    const CACHED_DB: &[u8] = b"django.contrib.sessions.cached_db";
    const SESSION: &[u8] = b"django.contrib.sessions.cache";
    match rest.first()? {
        b'v' if rest.starts_with(PAGE) => Some(FamilyId::CACHE_PAGE),
        b'v' if rest.starts_with(HEADER) => Some(FamilyId::CACHE_HEADER),
        b't' if rest.starts_with(FRAGMENT) => Some(FamilyId::TEMPLATE_FRAGMENT),
        // `cached_db` first: `…sessions.cache` is a prefix of it.
        b'd' if rest.starts_with(CACHED_DB) => Some(FamilyId::SESSION_CACHED_DB),
        b'd' if rest.starts_with(SESSION) => Some(FamilyId::SESSION),
        _ => None,
    }
}

/// Whether `bytes` may be part of a label: UTF-8 without control
/// characters, spaces, `"` or `\`. Printable ASCII (nearly every key) is
/// settled in one pass over the bytes; only other text pays for UTF-8
/// validation and Unicode tables.
fn printable(bytes: &[u8]) -> bool {
    if bytes
        .iter()
        .all(|&b| b > b' ' && b < 0x7f && b != b'"' && b != b'\\')
    {
        return true;
    }
    if bytes.is_ascii() {
        return false;
    }
    let Ok(s) = std::str::from_utf8(bytes) else {
        return false;
    };
    let bad = |c: char| c.is_control() || c.is_whitespace() || c == '"' || c == '\\';
    !s.contains(bad)
}

/// The bit that marks an application family's [`Families::code`].
const APP_CODE: u64 = 1 << 63;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, over the label after `app:`. Not DoS-resistant, and need not be:
/// at most `cap` entries are ever inserted, so a probe is bounded by `cap`.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Whether `label` is `app:{prefix}:{segment}` (or `app:{segment}`),
/// without building the string.
fn label_is(label: &[u8], prefix: Option<&[u8]>, segment: &[u8]) -> bool {
    let Some(rest) = label.strip_prefix(b"app:") else {
        return false;
    };
    match prefix {
        None => rest == segment,
        Some(p) => rest
            .strip_prefix(p)
            .and_then(|r| r.strip_prefix(b":"))
            .is_some_and(|r| r == segment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys as Django 5.2 writes them, with the family each must get.
    const CASES: &[(&[u8], &str)] = &[
        // cache_page: default (empty) KEY_PREFIX and middleware prefix,
        // with USE_I18N and USE_TZ suffixes.
        (
            b":1:views.decorators.cache.cache_page..GET.2b7e3e8bcfbd62b6b1f3ea1cc4a6f7b1.d41d8cd98f00b204e9800998ecf8427e.en-us.UTC",
            "django:cache_page",
        ),
        (
            b"mysite:3:views.decorators.cache.cache_page.blog.HEAD.2b7e3e8bcfbd62b6b1f3ea1cc4a6f7b1.d41d8cd98f00b204e9800998ecf8427e",
            "django:cache_page",
        ),
        (
            b":1:views.decorators.cache.cache_header..2b7e3e8bcfbd62b6b1f3ea1cc4a6f7b1.en-us.UTC",
            "django:cache_header",
        ),
        (
            b"shop:prod:2:views.decorators.cache.cache_header.mw.2b7e3e8bcfbd62b6b1f3ea1cc4a6f7b1",
            "django:cache_header",
        ),
        (
            b":1:template.cache.sidebar.d41d8cd98f00b204e9800998ecf8427e",
            "django:template_fragment",
        ),
        // A fragment name may hold dots.
        (
            b"app:1:template.cache.nav.main.5f4dcc3b5aa765d61d8327deb882cf99",
            "django:template_fragment",
        ),
        (
            b":1:django.contrib.sessions.cachek3b8x0v9q2m7n4p1z6w5y8r3t2u1s0ab",
            "django:session",
        ),
        (
            b":1:django.contrib.sessions.cached_dbk3b8x0v9q2m7n4p1z6w5y8r3t2u1s0ab",
            "django:session_cached_db",
        ),
        (
            b"a:b:c:10:django.contrib.sessions.cached_dbk3b8x0v9q2m7n4p1z6w5y8r3t2u1",
            "django:session_cached_db",
        ),
        // Negative versions (decr_version) are versions too.
        (b":-1:template.cache.x.d41d8cd98f00b204e9800998ecf8427e", "django:template_fragment"),
        // No envelope (custom KEY_FUNCTION that drops it): still Django's.
        (b"views.decorators.cache.cache_page.x.GET.a.b", "django:cache_page"),
        (b"django.contrib.sessions.cacheabc", "django:session"),
        // Near misses are application keys or other.
        (b":1:views.decorators.cache.other.x", "app:views"),
        (b":1:template.cachex", "app:template"),
        (b":1:djangox.contrib", "app:djangox"),
        // Application keys: first segment up to a separator.
        (b":1:user_42", "app:user"),
        (b":1:user:42:profile", "app:user"),
        (b"mysite:1:product.17", "app:product"),
        (b"mysite:1:cart-9f2c", "app:cart"),
        (b"mysite:1:api/v1/items", "app:api"),
        (b"mysite:1:feed|home", "app:feed"),
        (b"mysite:1:tag#7", "app:tag"),
        (b"shop:prod:1:order:5", "app:order"),
        // No envelope: the whole key is the rest.
        (b"cart-9f2c", "app:cart"),
        (b"stats:daily", "app:stats"),
        // A UTF-8 segment (pymemcache sends str keys as UTF-8).
        (":1:café_1".as_bytes(), "app:café"),
        // Other: no separator, empty, digits, too long, not UTF-8, control.
        (b":1:homepage", "other"),
        (b":1:d41d8cd98f00b204e9800998ecf8427e", "other"),
        (b":1:", "other"),
        (b"", "other"),
        (b":1:_x", "other"),
        (b":1:42_x", "other"),
        (b":1:\xff\xfe:x", "other"),
        (b":1:a\x01b:x", "other"),
        (b":1:a\"b:x", "other"),
        (
            b":1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:x",
            "other",
        ),
    ];

    #[test]
    fn a_family_code_names_the_same_family_in_a_registry_built_alike() {
        let owner = Families::new(8);
        let caller = Families::new(8);
        let keys: [&[u8]; 5] = [
            b":1:user:42",
            b":1:views.decorators.cache.cache_page.x.GET.a.b",
            b"cart-9f2c",
            b":1:homepage",
            b":1:order_7",
        ];
        // The caller has seen only some application families.
        caller.classify(b":1:order_1");
        for key in keys {
            let id = owner.classify(key);
            let code = owner.code(id);
            assert_ne!(code, 0, "{key:?}");
            let expect = caller.name(caller.classify(key)).to_owned();
            assert_eq!(owner.name(id), expect);
            assert_eq!(
                caller.name(caller.by_code(code).unwrap()),
                expect,
                "{key:?}"
            );
        }
        // A family the other registry has not seen, or no code at all.
        let fresh = owner.classify(b":1:basket:1");
        assert_eq!(caller.by_code(owner.code(fresh)), None);
        assert_eq!(caller.by_code(0), None);
        assert_eq!(
            caller.by_code(7),
            None,
            "neither built-in nor an application code"
        );
        assert_eq!(owner.code(FamilyId(6 + 8)), 0, "never handed out");
        // A registry without application families knows only the built-ins.
        let none = Families::new(0);
        assert_eq!(
            none.by_code(owner.code(FamilyId::SESSION)),
            Some(FamilyId::SESSION)
        );
        assert_eq!(none.by_code(owner.code(owner.classify(b"cart-1"))), None);
    }

    #[test]
    fn every_case_gets_its_family() {
        let families = Families::new(100);
        for &(key, want) in CASES {
            let id = families.classify(key);
            assert_eq!(
                families.name(id),
                want,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn builtin_ids_are_fixed() {
        let families = Families::new(4);
        let names: Vec<_> = families.iter().collect();
        assert_eq!(
            names,
            vec![
                (FamilyId::OTHER, "other"),
                (FamilyId::CACHE_PAGE, "django:cache_page"),
                (FamilyId::CACHE_HEADER, "django:cache_header"),
                (FamilyId::TEMPLATE_FRAGMENT, "django:template_fragment"),
                (FamilyId::SESSION, "django:session"),
                (FamilyId::SESSION_CACHED_DB, "django:session_cached_db"),
            ]
        );
        assert!(FamilyId::SESSION_CACHED_DB.is_builtin());
        assert_eq!(families.len(), 6);
    }

    #[test]
    fn prefix_in_label() {
        let families = Families::new(100).with_prefix_in_label(true);
        let cases: &[(&[u8], &str)] = &[
            (b"mysite:1:user_42", "app:mysite:user"),
            (b":1:user_42", "app::user"),
            (b"shop:prod:1:order:5", "app:shop:prod:order"),
            (b"cart-9f2c", "app:cart"),
            (b"user:42:cart:items", "app:user:cart"),
            (b"user:42:profile", "other"),
            // Django families never carry the prefix.
            (b"mysite:1:template.cache.x.y", "django:template_fragment"),
            // A prefix that cannot be a label makes the key other.
            (b"\xff:1:user_1", "other"),
            (b"a b:1:user_1", "other"),
        ];
        for &(key, want) in cases {
            let id = families.classify(key);
            assert_eq!(
                families.name(id),
                want,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
        // Same label, same id; different prefix, different family.
        assert_eq!(
            families.classify(b"mysite:1:user_1"),
            families.classify(b"mysite:2:user:x")
        );
        assert_ne!(
            families.classify(b"a:1:user_1"),
            families.classify(b"b:1:user_1")
        );
    }

    #[test]
    fn custom_separators_keep_the_colon() {
        let families = Families::new(10).with_separators(b".");
        assert_eq!(
            families.name(families.classify(b":1:user_42.x")),
            "app:user_42"
        );
        assert_eq!(
            families.name(families.classify(b":1:user_42:x")),
            "app:user_42"
        );
        assert_eq!(families.name(families.classify(b":1:user-42")), "other");
    }

    #[test]
    fn the_cap_bounds_application_families_only() {
        let families = Families::new(3);
        let a = families.classify(b":1:a_1");
        let b = families.classify(b":1:b_1");
        let c = families.classify(b":1:c_1");
        assert_eq!(families.len(), 9);
        // Past the cap: other, and no new label.
        assert_eq!(families.classify(b":1:d_1"), FamilyId::OTHER);
        assert_eq!(families.len(), 9);
        // Known families keep their ids; Django families still work.
        assert_eq!(families.classify(b":2:a:zz"), a);
        assert_eq!(families.classify(b"x:1:b.q"), b);
        assert_eq!(families.classify(b"c-3"), c);
        assert_eq!(
            families.classify(b":1:django.contrib.sessions.cacheabc"),
            FamilyId::SESSION
        );
        let names: Vec<_> = families.iter().map(|(_, n)| n.to_string()).collect();
        assert_eq!(&names[6..], ["app:a", "app:b", "app:c"]);
        assert_eq!(families.cap(), 3);
    }

    #[test]
    fn cap_zero_labels_no_application_family() {
        let families = Families::new(0);
        assert_eq!(families.classify(b":1:user_1"), FamilyId::OTHER);
        assert_eq!(
            families.classify(b":1:template.cache.a.b"),
            FamilyId::TEMPLATE_FRAGMENT
        );
        assert_eq!(families.len(), 6);
    }

    #[test]
    fn ids_are_dense_and_stable_under_many_families() {
        let families = Families::new(500);
        let ids: Vec<_> = (0..500)
            .map(|i| families.classify(format!(":1:fam{i}_x").as_bytes()))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.index(), 6 + i);
            assert_eq!(families.name(*id), format!("app:fam{i}"));
            assert_eq!(families.classify(format!("p:9:fam{i}.y").as_bytes()), *id);
        }
        assert_eq!(families.classify(b":1:fam500_x"), FamilyId::OTHER);
        assert_eq!(families.name(FamilyId(10_000)), "other");
    }

    #[test]
    fn concurrent_first_sightings_agree() {
        let families = Families::new(64);
        let seen: Vec<Vec<FamilyId>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .map(|i| families.classify(format!(":1:f{}_x", i % 80).as_bytes()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ids in &seen[1..] {
            assert_eq!(ids, &seen[0]);
        }
        assert_eq!(families.len(), 6 + 64);
        let labelled = seen[0].iter().filter(|id| **id != FamilyId::OTHER).count();
        // 64 of the 80 names got a label; each appears 1 or 2 times in 100.
        assert!(labelled >= 64, "{labelled}");
    }

    #[test]
    fn envelope_splits_at_the_leftmost_version() {
        assert_eq!(envelope(b":1:k"), Some((&b""[..], &b"k"[..])));
        assert_eq!(
            envelope(b"a:b:12:k:3:z"),
            Some((&b"a:b"[..], &b"k:3:z"[..]))
        );
        assert_eq!(envelope(b"a:-2:k"), Some((&b"a"[..], &b"k"[..])));
        assert_eq!(envelope(b"a:1"), None);
        assert_eq!(envelope(b"a::k"), None);
        assert_eq!(envelope(b"a:-:k"), None);
        assert_eq!(envelope(b"a:1x:k"), None);
    }
}
