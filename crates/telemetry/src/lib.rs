//! shoal's telemetry data structures: pure, synchronous, no I/O, no
//! metrics crate. The server calls them on its hot path and exports what
//! they hold; nothing here emits a metric or takes a lock across anything
//! slow.
//!
//! The parts:
//! - [`families`]: [`Families`] assigns every key a family — Django's own
//!   key shapes (`django:cache_page`, `django:cache_header`,
//!   `django:template_fragment`, `django:session`,
//!   `django:session_cached_db`), application families (`app:user`) up to a
//!   cap, else `other` — so hit/miss/bytes can be split per family with
//!   bounded label cardinality. Lock-free once a family is known.
//! - [`topk`]: [`TopK`], an approximate top-K of the most frequent keys
//!   (Space-Saving, sharded, optionally sampled) in bounded memory, with a
//!   per-key error bound; one instance for requested keys, one for missed.
//! - [`privacy`]: [`Privacy`], how reported keys are shown — whole, cut to a
//!   few bytes, or as a keyed SipHash token.
//!
//! The rules operators need are also in this crate's `README.md`.
//!
//! ```
//! use telemetry::{Families, FamilyId, HashKey, Privacy, TopK};
//!
//! let families = Families::new(50);
//! let id = families.classify(b":1:views.decorators.cache.cache_page..GET.a.b");
//! assert_eq!(id, FamilyId::CACHE_PAGE);
//! assert_eq!(families.name(families.classify(b"shop:1:user_42")), "app:user");
//!
//! let requested = TopK::new(10, 1000);
//! requested.record(b"shop:1:user_42");
//! requested.record(b"shop:1:user_42");
//! let hot = requested.report(10, &Privacy::Hash(HashKey::random()));
//! assert_eq!(hot[0].count, 2);
//! assert!(hot[0].key.starts_with("hash:"));
//! ```

pub mod families;
pub mod privacy;
pub mod topk;

pub use families::{Families, FamilyId};
pub use privacy::{HashKey, Privacy};
pub use topk::{HotKey, TopK, TopKConfig};
