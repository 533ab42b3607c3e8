//! memcached's small rules, as pure functions: what an exptime means, how
//! big an item is against `-I`, what incr/decr accept as a number.

/// Exptimes up to this many seconds (30 days) are relative to now; larger
/// ones are unix times (memcached's `REALTIME_MAXDELTA`).
pub const MAX_RELATIVE_EXPTIME: i64 = 60 * 60 * 24 * 30;

/// What an exptime from a client means at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Exptime 0: the item never expires.
    Never,
    /// The item is live until this unix second (exclusive: at `t` it is gone).
    At(u32),
    /// Negative, or an absolute time not after now: the item is born expired.
    /// memcached still answers `STORED`/`TOUCHED`; the key just reads as a miss.
    Expired,
}

impl Expiry {
    /// The value kept in an item's `exptime` field: 0 for never. An already
    /// expired item is never linked, so `Expired` has no field value.
    pub(crate) fn field(self) -> Option<u32> {
        match self {
            Expiry::Never => Some(0),
            Expiry::At(t) => Some(t),
            Expiry::Expired => None,
        }
    }
}

/// memcached's `realtime()`: 0 is never; negative is already expired; up to
/// 30 days (inclusive) is relative to `now`; anything larger is an absolute
/// unix time, expired if it is not in the future. Times past 2106 saturate.
pub fn expiry_time(exptime: i64, now: u32) -> Expiry {
    if exptime == 0 {
        Expiry::Never
    } else if exptime < 0 {
        Expiry::Expired
    } else if exptime <= MAX_RELATIVE_EXPTIME {
        // exptime >= 1, so the result is after `now` (and never 0).
        let at = i64::from(now) + exptime;
        Expiry::At(u32::try_from(at).unwrap_or(u32::MAX))
    } else if exptime <= i64::from(now) {
        Expiry::Expired
    } else {
        Expiry::At(u32::try_from(exptime).unwrap_or(u32::MAX))
    }
}

/// Bytes memcached's item header takes on a 64-bit build (`sizeof(item)`).
const MEMCACHED_ITEM_HEADER: usize = 48;
/// The CAS field memcached adds to every item (CAS is always on here).
const MEMCACHED_CAS: usize = 8;

/// memcached's `ntotal` for an item: header + CAS + key + NUL + (4 bytes of
/// flags when they are non-zero) + value + "\r\n". An item is too large when
/// this exceeds `-I`. Measured against memcached 1.6.18: for `-I 1m` the
/// largest value `set` accepts with a 1-byte key and flags 0 is 1,048,516
/// bytes (1,048,512 with non-zero flags).
pub fn item_size(key_len: usize, value_len: usize, flags: u32) -> usize {
    let suffix = if flags == 0 { 0 } else { 4 };
    MEMCACHED_ITEM_HEADER
        .saturating_add(MEMCACHED_CAS)
        .saturating_add(key_len)
        .saturating_add(1)
        .saturating_add(suffix)
        .saturating_add(value_len)
        .saturating_add(2)
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The number incr/decr find in a stored value, as memcached's
/// `safe_strtoull` reads it, or `None` for "non-numeric value".
///
/// memcached runs `strtoull(data, &end, 10)` on the value followed by its
/// "\r\n", so this accepts exactly what that accepts (checked against
/// memcached 1.6.18): optional leading whitespace, an optional `+` or `-`
/// (`-` negates modulo 2^64, and the result is refused if it then looks
/// negative as an `i64`), at least one digit, no overflow of 64 bits, and
/// then whitespace, a NUL or the end of the value — anything may follow that
/// whitespace ("12 abc" reads as 12). An empty value is non-numeric.
pub(crate) fn parse_counter(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut i = value.iter().position(|&b| !is_c_space(b))?;
    let negative = match value[i] {
        b'-' => {
            i += 1;
            true
        }
        b'+' => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits_start = i;
    let mut n: u64 = 0;
    while let Some(&b) = value.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    match value.get(i) {
        None | Some(0) => {}
        Some(&b) if is_c_space(b) => {}
        Some(_) => return None,
    }
    if negative {
        n = n.wrapping_neg();
        if (n as i64) < 0 {
            return None;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1_700_000_000;

    #[test]
    fn exptime_rules() {
        let cases: &[(i64, Expiry)] = &[
            (0, Expiry::Never),
            (-1, Expiry::Expired),
            (i64::MIN, Expiry::Expired),
            (1, Expiry::At(NOW + 1)),
            (100, Expiry::At(NOW + 100)),
            // The 30-day boundary: 2,592,000 is still relative...
            (2_592_000, Expiry::At(NOW + 2_592_000)),
            // ...one more is an absolute time, long past.
            (2_592_001, Expiry::Expired),
            (i64::from(NOW) - 1, Expiry::Expired),
            (i64::from(NOW), Expiry::Expired),
            (i64::from(NOW) + 1, Expiry::At(NOW + 1)),
            (i64::from(NOW) + 5_000_000, Expiry::At(NOW + 5_000_000)),
            (i64::MAX, Expiry::At(u32::MAX)),
        ];
        for &(exptime, want) in cases {
            assert_eq!(expiry_time(exptime, NOW), want, "exptime {exptime}");
        }
    }

    #[test]
    fn exptime_near_clock_edges() {
        // A clock at 0 (tests) still never yields "never" for a relative time.
        assert_eq!(expiry_time(1, 0), Expiry::At(1));
        assert_eq!(expiry_time(10, u32::MAX), Expiry::At(u32::MAX));
        assert_eq!(expiry_time(2_592_001, 0), Expiry::At(2_592_001));
    }

    #[test]
    fn item_size_matches_memcached() {
        // (key, value, flags, limit): largest values memcached 1.6.18 accepted.
        let accepted: &[(usize, usize, u32, usize)] = &[
            (1, 1_048_516, 0, 1 << 20),
            (1, 1_048_512, 1, 1 << 20),
            (3, 1_048_514, 0, 1 << 20),
            (13, 1_048_504, 0, 1 << 20),
            (13, 1_048_500, 1, 1 << 20),
            (250, 1_048_267, 0, 1 << 20),
            (250, 1_048_263, 1, 1 << 20),
            (1, 1988, 0, 2048),
            (13, 1976, 0, 2048),
            (13, 1972, 1, 2048),
            (250, 1739, 0, 2048),
            (250, 1735, 1, 2048),
            (13, 524_216, 0, 512 << 10),
        ];
        for &(k, v, flags, limit) in accepted {
            assert_eq!(
                item_size(k, v, flags),
                limit,
                "key {k} value {v} flags {flags}"
            );
            assert!(item_size(k, v + 1, flags) > limit);
        }
        assert_eq!(item_size(usize::MAX, 1, 0), usize::MAX);
    }

    #[test]
    fn counters_parse_like_strtoull() {
        // Each case was run through `incr` on memcached 1.6.18.
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"12", Some(12)),
            (b"007", Some(7)),
            (b"12 abc", Some(12)),
            (b" 5", Some(5)),
            (b"+5", Some(5)),
            (b"-0", Some(0)),
            (b"5\0zz", Some(5)),
            (b"5\t", Some(5)),
            (b"5\r", Some(5)),
            (b"9 ", Some(9)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"-18446744073709551615", Some(1)),
            (b"-1", None),
            (b"18446744073709551616", None),
            (b"99999999999999999999999", None),
            (b"", None),
            (b" ", None),
            (b"+", None),
            (b"-", None),
            (b"0x10", None),
            (b"12abc", None),
            (b"abc", None),
            (b"1.5", None),
        ];
        for &(value, want) in cases {
            assert_eq!(
                parse_counter(value),
                want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
