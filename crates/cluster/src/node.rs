//! A node's stable name: what the ring is keyed by.

use std::fmt;
use std::sync::Arc;

use crate::Error;

/// Longest name accepted, in bytes: a DNS name's limit, since the default
/// name is the host name.
pub const MAX_NODE_NAME_LEN: usize = 253;

/// A node's stable name (`shoal-2`): its ring positions derive from it alone,
/// never from its address or generation, so a replaced pod (same name, new
/// IP) takes back the same arcs and every node agrees on them.
///
/// Cheap to clone (a shared `str`), because the ring, the membership table
/// and every routing decision hold copies. Ordered by its bytes, which is the
/// canonical order the ring and its version use. Its `Hash` is std's, for
/// in-process maps only: placement hashes [`NodeName::as_bytes`] itself.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(Arc<str>);

impl NodeName {
    /// # Errors
    /// [`Error::InvalidNodeName`] if the name is empty, longer than
    /// [`MAX_NODE_NAME_LEN`] bytes, or holds whitespace or control
    /// characters (it is printed in `stats`, logs and metrics labels).
    pub fn new(name: impl AsRef<str>) -> Result<NodeName, Error> {
        let name = name.as_ref();
        let invalid = |reason| Error::InvalidNodeName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > MAX_NODE_NAME_LEN {
            return Err(invalid("longer than 253 bytes"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        Ok(NodeName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bytes the placement hash is fed (see [`crate::ring`]).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for NodeName {
    type Err = Error;

    fn from_str(s: &str) -> Result<NodeName, Error> {
        NodeName::new(s)
    }
}

impl TryFrom<&str> for NodeName {
    type Error = Error;

    fn try_from(s: &str) -> Result<NodeName, Error> {
        NodeName::new(s)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_and_rejects_the_unprintable() {
        for ok in [
            "shoal-0",
            "shoal-2.shoal.default.svc.cluster.local",
            "n#1",
            "ü",
        ] {
            assert_eq!(NodeName::new(ok).unwrap().as_str(), ok);
        }
        let long = "a".repeat(MAX_NODE_NAME_LEN + 1);
        for bad in ["", "a b", "a\tb", "a\nb", "a\u{7f}", long.as_str()] {
            assert!(
                matches!(NodeName::new(bad), Err(Error::InvalidNodeName { .. })),
                "{bad:?}"
            );
        }
        assert!(NodeName::new("a".repeat(MAX_NODE_NAME_LEN)).is_ok());
    }

    #[test]
    fn orders_by_bytes() {
        let mut names: Vec<NodeName> = ["b", "a", "B", "aa"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        names.sort();
        let names: Vec<&str> = names.iter().map(NodeName::as_str).collect();
        assert_eq!(names, ["B", "a", "aa", "b"]);
    }
}
