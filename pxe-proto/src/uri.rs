//! URI percent-encoding (RFC 3986 §2.1), as HTTP boot paths and install queries carry it.

/// The bytes of `raw` with every `%XX` escape decoded (hex digits of either case); `None` for a
/// `%` not followed by two hex digits. `plus_is_space`: `raw` is a query component in the form
/// encoding, where `+` stands for a space; in a path `+` is itself.
pub fn percent_decode(raw: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_digit)?;
                let lo = raw.get(i + 2).copied().and_then(hex_digit)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The value of one hex digit (either case).
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_plus_and_broken_escapes() {
        let d = |s: &str, plus| percent_decode(s.as_bytes(), plus);
        assert_eq!(d("a%2Fb%2fc", false).unwrap(), b"a/b/c");
        assert_eq!(d("%00%ff%FF", false).unwrap(), [0, 0xff, 0xff]);
        assert_eq!(d("a+b", false).unwrap(), b"a+b");
        assert_eq!(d("a+b%2B", true).unwrap(), b"a b+");
        assert_eq!(d("", true).unwrap(), b"");
        for bad in ["%", "%4", "%4g", "%+5", "%-1", "ab%"] {
            assert_eq!(d(bad, false), None, "{bad}");
            assert_eq!(d(bad, true), None, "{bad}");
        }
    }
}
