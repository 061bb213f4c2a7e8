//! `Range: bytes=...` (RFC 9110 §14), sans-IO.
//!
//! One range is honoured (`a-b`, `a-`, `-n`). Anything the server may ignore is ignored, so the
//! client gets the whole file with 200: another unit, a syntax error, several ranges (a
//! multipart/byteranges answer is allowed but never needed by a boot client; 200 with the whole
//! file is a valid answer to a multi-range request), or several `Range` header lines.
//! Numbers too large for `u64` saturate: a first position past any file is unsatisfiable, a
//! last position or suffix past the end is clamped to the file.

/// What a request's `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range: 200 with the whole file.
    Full,
    /// 206 with bytes `start..end` (end exclusive, `start < end <= len`).
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates `Range` header values (every line the request carried) against a file of `len`
/// bytes.
pub fn evaluate<'a>(mut values: impl Iterator<Item = &'a [u8]>, len: u64) -> RangeAnswer {
    let Some(value) = values.next() else {
        return RangeAnswer::Full;
    };
    if values.next().is_some() {
        return RangeAnswer::Full;
    }
    match parse(value) {
        Some(spec) => spec.resolve(len),
        None => RangeAnswer::Full,
    }
}

/// One parsed byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last` (inclusive) or `first-` (`last` = None).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The answer for a file of `len` bytes.
    pub fn resolve(self, len: u64) -> RangeAnswer {
        match self {
            ByteRange::From { first, last } => {
                if first >= len {
                    return RangeAnswer::Unsatisfiable;
                }
                let end = match last {
                    Some(last) => last.saturating_add(1).min(len),
                    None => len,
                };
                RangeAnswer::Partial { start: first, end }
            }
            ByteRange::Suffix(0) => RangeAnswer::Unsatisfiable,
            ByteRange::Suffix(_) if len == 0 => RangeAnswer::Unsatisfiable,
            ByteRange::Suffix(n) => RangeAnswer::Partial {
                start: len - n.min(len),
                end: len,
            },
        }
    }
}

/// Parses `bytes=<one range>`; `None` for anything that must be ignored (other unit, several
/// ranges, syntax error, `last < first`).
pub fn parse(value: &[u8]) -> Option<ByteRange> {
    let value = trim(value);
    let eq = value.iter().position(|&b| b == b'=')?;
    let (unit, set) = (trim(&value[..eq]), &value[eq + 1..]);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let set = trim(set);
    // A list with empty elements ("0-1,") is still several elements: refuse any comma.
    if set.contains(&b',') {
        return None;
    }
    let dash = set.iter().position(|&b| b == b'-')?;
    let (first, last) = (trim(&set[..dash]), trim(&set[dash + 1..]));
    if first.is_empty() {
        return Some(ByteRange::Suffix(number(last)?));
    }
    let first = number(first)?;
    if last.is_empty() {
        return Some(ByteRange::From { first, last: None });
    }
    let last = number(last)?;
    if last < first {
        return None;
    }
    Some(ByteRange::From {
        first,
        last: Some(last),
    })
}

/// Decimal digits only (no sign, no spaces inside), saturating at `u64::MAX`.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Strips optional whitespace (SP / HTAB).
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::*;

    fn answer(value: &str, len: u64) -> RangeAnswer {
        evaluate(std::iter::once(value.as_bytes()), len)
    }

    fn part(start: u64, end: u64) -> RangeAnswer {
        Partial { start, end }
    }

    #[test]
    fn every_single_range_form() {
        assert_eq!(answer("bytes=0-99", 1000), part(0, 100));
        assert_eq!(answer("bytes=100-", 1000), part(100, 1000));
        assert_eq!(answer("bytes=-100", 1000), part(900, 1000));
        assert_eq!(answer("bytes=999-999", 1000), part(999, 1000));
        assert_eq!(answer("bytes=0-0", 1), part(0, 1));
        // Last position past the end is clamped.
        assert_eq!(answer("bytes=500-5000", 1000), part(500, 1000));
        // Suffix larger than the file: the whole file, as 206.
        assert_eq!(answer("bytes=-5000", 1000), part(0, 1000));
        assert_eq!(answer("bytes=-1000", 1000), part(0, 1000));
        // Case-insensitive unit and optional whitespace.
        assert_eq!(answer("Bytes = 1-2 ", 10), part(1, 3));
        assert_eq!(answer("bytes=\t-3", 10), part(7, 10));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(answer("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(answer("bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(answer("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(answer("bytes=0-", 0), Unsatisfiable);
        assert_eq!(answer("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(answer("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn overflow_saturates() {
        let huge = "99999999999999999999999999";
        assert_eq!(answer(&format!("bytes={huge}-"), 1000), Unsatisfiable);
        assert_eq!(answer(&format!("bytes=0-{huge}"), 1000), part(0, 1000));
        assert_eq!(answer(&format!("bytes=-{huge}"), 1000), part(0, 1000));
        assert_eq!(
            answer(&format!("bytes={huge}-{huge}"), u64::MAX),
            Unsatisfiable
        );
        let max = u64::MAX;
        assert_eq!(answer(&format!("bytes=5-{max}"), 10), part(5, 10));
        assert_eq!(answer(&format!("bytes=0-{max}"), max), part(0, max));
    }

    #[test]
    fn garbage_and_multi_range_are_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=abc",
            "bytes=1-a",
            "bytes=a-1",
            "bytes=+1-2",
            "bytes=1 0-20",
            "bytes=--1",
            "bytes=1--2",
            "bytes=5-4",
            "bytes=0-1,2-3",
            "bytes=0-1,",
            "bytes=,0-1",
            "items=0-1",
            "bytes 0-1",
            "=0-1",
            "bytes=0x10-20",
            "bytes=\u{00e9}-1",
        ] {
            assert_eq!(answer(v, 1000), Full, "{v:?}");
        }
        let bin: &[u8] = b"bytes=\xff\x00-1";
        assert_eq!(evaluate(std::iter::once(bin), 10), Full);
    }

    #[test]
    fn header_count() {
        assert_eq!(evaluate(std::iter::empty(), 10), Full);
        let two = [&b"bytes=0-1"[..], b"bytes=2-3"];
        assert_eq!(evaluate(two.into_iter(), 10), Full);
    }
}
