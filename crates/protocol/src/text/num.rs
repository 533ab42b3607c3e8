//! Numbers read the way memcached reads them: C's `strtoull`/`strtol` wrapped
//! in memcached's `safe_strto*` checks, straight from the token bytes.
//!
//! What that means on the wire: leading whitespace (tab, vertical tab, …) and
//! a `+` or `-` sign are accepted, at least one digit is required, and the
//! digits may be followed only by the end of the token or by a whitespace byte
//! (anything after that byte is ignored, as `strtoul` stops there). Unsigned
//! fields refuse a `-` that would make the number negative as a signed one.
//!
//! One deliberate difference: memcached stores the 64-bit `strtoul`/`strtol`
//! result into 32-bit variables, silently truncating flags of `4294967296` to
//! `0` and a data length of `4294967297` to `1`. Here a number that does not
//! fit its field is refused instead.

/// C's `isspace` in the "C" locale.
#[inline]
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The sign and magnitude `strtoull`/`strtoll` would read, or `None` where
/// memcached's `safe_strto*` fails for every integer type: no digits, digits
/// followed by something other than whitespace, or a magnitude past `u64`.
#[inline]
fn scan(tok: &[u8]) -> Option<(bool, u64)> {
    let mut i = 0;
    while i < tok.len() && is_space(tok[i]) {
        i += 1;
    }
    let mut negative = false;
    if let Some(&sign @ (b'+' | b'-')) = tok.get(i) {
        negative = sign == b'-';
        i += 1;
    }
    let start = i;
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    while let Some(&d @ b'0'..=b'9') = tok.get(i) {
        match magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(d - b'0')))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start || overflow {
        return None;
    }
    match tok.get(i) {
        Some(&b) if !is_space(b) => None,
        _ => Some((negative, magnitude)),
    }
}

/// memcached's `safe_strtoull`: a 64-bit unsigned field (CAS, delta, initial
/// value). `-0` is zero; `-1` is refused.
pub(super) fn parse_u64(tok: &[u8]) -> Option<u64> {
    let (negative, magnitude) = scan(tok)?;
    let value = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    if (value as i64) < 0 && tok.contains(&b'-') {
        return None;
    }
    Some(value)
}

/// memcached's `safe_strtoul` for a 32-bit field (client flags), refusing
/// what does not fit instead of truncating it.
pub(super) fn parse_u32(tok: &[u8]) -> Option<u32> {
    parse_u64(tok).and_then(|v| u32::try_from(v).ok())
}

/// memcached's `safe_strtol` (exptime, TTL tokens, data length), without its
/// truncation to 32 bits: any value `strtol` reads on a 64-bit host.
pub(super) fn parse_i64(tok: &[u8]) -> Option<i64> {
    let (negative, magnitude) = scan(tok)?;
    if negative {
        // -(2^63) is the one magnitude past i64::MAX that still fits.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// An exptime or TTL token, as memcached reads it: `safe_strtol` into an
/// `int32_t`, so values wrap to 32 bits. Clients rely on this: libmemcached
/// sends a negative timeout (Django's `timeout=0`, "do not cache") as
/// `4294967295`, which memcached reads as -1, already expired.
pub(super) fn parse_exptime(tok: &[u8]) -> Option<i64> {
    parse_i64(tok).map(|v| i64::from(v as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptimes_wrap_to_32_bits_like_memcached() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0", Some(0)),
            (b"100", Some(100)),
            (b"-1", Some(-1)),
            (b"2147483647", Some(2147483647)),
            (b"2147483648", Some(-2147483648)),
            (b"4294967295", Some(-1)),
            (b"4294967296", Some(0)),
            (b"9999999999", Some(1410065407)),
            (b"99999999999999999999", None),
            (b"abc", None),
        ];
        for (tok, want) in cases {
            assert_eq!(
                parse_exptime(tok),
                *want,
                "{:?}",
                String::from_utf8_lossy(tok)
            );
        }
    }

    #[test]
    fn unsigned_like_safe_strtoull() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"007", Some(7)),
            (b"+5", Some(5)),
            (b"-0", Some(0)),
            (b"\t5", Some(5)),
            (b"5\t", Some(5)),
            (b"5\rjunk", Some(5)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"-1", None),
            (b"-5", None),
            // strtoull negates the magnitude: memcached accepts this as 1.
            (b"-18446744073709551615", Some(1)),
            (b"", None),
            (b"+", None),
            (b"-", None),
            (b" ", None),
            (b"abc", None),
            (b"1x", None),
            (b"1 ", Some(1)),
            (b"0x10", None),
        ];
        for (tok, want) in cases {
            assert_eq!(parse_u64(tok), *want, "{:?}", String::from_utf8_lossy(tok));
        }
    }

    #[test]
    fn u32_fields_refuse_what_does_not_fit() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
    }

    #[test]
    fn signed_like_safe_strtol() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0", Some(0)),
            (b"-1", Some(-1)),
            (b"+30", Some(30)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"9223372036854775808", None),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"-9223372036854775809", None),
            (b"99999999999999999999", None),
            (b"--1", None),
            (b"1-", None),
            (b"", None),
        ];
        for (tok, want) in cases {
            assert_eq!(parse_i64(tok), *want, "{:?}", String::from_utf8_lossy(tok));
        }
    }
}
