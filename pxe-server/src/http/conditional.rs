//! Validators and conditional requests (RFC 9110 §8.8, §13), sans-IO.
//!
//! A file's validators come from the image snapshot's [`ImageVersion`] (inode, size, mtime to
//! the nanosecond): the `ETag` is strong because two snapshots with the same version hold the
//! same bytes (the store only records a version when the file did not change while it was
//! copied). `Last-Modified` is the mtime in whole seconds. An image without a version gets no
//! validators, and then no precondition can match.
//!
//! Evaluation (GET and HEAD only, §13.2.2): `If-None-Match` first (weak comparison; `*` matches
//! any file); only when it is absent, `If-Modified-Since` (ignored unless it is one valid
//! HTTP-date). A match means 304. For a `Range`, `If-Range` must match the current
//! representation exactly (strong comparison for an entity-tag; a date equal to
//! `Last-Modified`, and only when that date is a strong validator, i.e. at least a second
//! older than the response); otherwise the whole file is sent with 200.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::images::ImageVersion;

/// Most entity-tags examined in one request's `If-None-Match` (beyond: no match).
const MAX_TAGS: usize = 64;

/// The validators of one file version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The quoted strong entity-tag, e.g. `"1f2a-8000-17f0c..."`.
    etag: String,
    /// `Last-Modified`, whole seconds since the epoch (`None` for an mtime before 1970).
    modified: Option<u64>,
    /// Whether `modified` may stand in for the bytes (RFC 9110 §8.8.2.2): the file had not been
    /// modified for at least a second when the answer is made, so a second change within the
    /// same second cannot share the date.
    strong_date: bool,
}

impl Validators {
    /// The validators of `version`, for an answer made at `now`.
    pub fn of(version: &ImageVersion, now: SystemTime) -> Validators {
        let mtime_ns = version.mtime_ns;
        let modified = u64::try_from(mtime_ns.div_euclid(1_000_000_000)).ok();
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Validators {
            // Hex of three numbers: only etagc characters, no quote or backslash.
            etag: format!(
                "\"{:x}-{:x}-{:x}\"",
                version.ino, version.size, mtime_ns as u128
            ),
            modified,
            strong_date: modified.is_some() && now_ns - mtime_ns >= 1_000_000_000,
        }
    }

    /// The `ETag` value (with its quotes).
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The `Last-Modified` value as an IMF-fixdate, if the mtime is after the epoch.
    pub fn last_modified(&self) -> Option<String> {
        self.modified
            .map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)))
    }

    /// The opaque part of our tag (without quotes).
    fn opaque(&self) -> &[u8] {
        let b = self.etag.as_bytes();
        &b[1..b.len() - 1]
    }
}

/// Whether a GET or HEAD is answered 304 Not Modified, given every `If-None-Match` and
/// `If-Modified-Since` line of the request.
pub fn not_modified<'a>(
    v: Option<&Validators>,
    if_none_match: impl Iterator<Item = &'a [u8]>,
    if_modified_since: impl Iterator<Item = &'a [u8]>,
) -> bool {
    let Some(v) = v else {
        return false;
    };
    let mut inm = if_none_match.peekable();
    if inm.peek().is_some() {
        // Present: its answer decides, If-Modified-Since is not looked at (§13.2.2 step 3/4).
        return inm.any(|line| none_match_hits(v, line));
    }
    let Some(date) = single(if_modified_since).and_then(parse_date) else {
        return false;
    };
    v.modified.is_some_and(|m| m <= date)
}

/// Whether a `Range` is honoured under the request's `If-Range` lines (`true` when there is
/// none). With no validators nothing matches: the whole file is sent.
pub fn if_range_holds<'a>(
    v: Option<&Validators>,
    if_range: impl Iterator<Item = &'a [u8]>,
) -> bool {
    let mut lines = if_range.peekable();
    if lines.peek().is_none() {
        return true;
    }
    let (Some(v), Some(value)) = (v, single(lines)) else {
        return false;
    };
    let value = trim(value);
    if value.first() == Some(&b'"') || value.starts_with(b"W/") {
        // An entity-tag: strong comparison, so a weak tag never matches.
        return match parse_tag(value) {
            Some((tag, false, rest)) => trim(rest).is_empty() && tag == v.opaque(),
            _ => false,
        };
    }
    v.strong_date && v.modified.is_some() && parse_date(value) == v.modified
}

/// One `If-None-Match` line against our tag: `*`, or a list with our opaque-tag (weak
/// comparison: `W/` is ignored). A malformed list matches nothing from the error on.
fn none_match_hits(v: &Validators, line: &[u8]) -> bool {
    let line = trim(line);
    if line == b"*" {
        return true;
    }
    let mut rest = line;
    for _ in 0..MAX_TAGS {
        rest = skip_list_separators(rest);
        if rest.is_empty() {
            return false;
        }
        let Some((tag, _weak, after)) = parse_tag(rest) else {
            return false;
        };
        if tag == v.opaque() {
            return true;
        }
        rest = after;
    }
    false
}

/// `[W/]"opaque"` at the start of `s`: the opaque bytes, whether it was weak, what follows.
fn parse_tag(s: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let s = s.strip_prefix(b"\"")?;
    let end = s.iter().position(|&b| b == b'"')?;
    let tag = &s[..end];
    // etagc = %x21 / %x23-7E / obs-text
    if tag.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return None;
    }
    Some((tag, weak, &s[end + 1..]))
}

fn skip_list_separators(mut s: &[u8]) -> &[u8] {
    while let Some((&b, rest)) = s.split_first() {
        if b == b',' || b == b' ' || b == b'\t' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// The only line of a header that must appear once (`None` if absent or repeated).
fn single<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = lines.next()?;
    lines.next().is_none().then_some(first)
}

/// An HTTP-date (any of the three formats RFC 9110 §5.6.7 accepts) as seconds since the
/// epoch; `None` for anything else, or a date before 1970.
fn parse_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(value)).ok()?;
    let t = httpdate::parse_http_date(text).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-02 03:04:05.5 UTC
    const MTIME_S: u64 = 1_704_164_645;
    const DATE: &str = "Tue, 02 Jan 2024 03:04:05 GMT";

    fn version() -> ImageVersion {
        ImageVersion {
            ino: 0x1234,
            size: 0x8000,
            mtime_ns: i128::from(MTIME_S) * 1_000_000_000 + 500_000_000,
        }
    }

    fn at(secs_after_mtime: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(MTIME_S + secs_after_mtime)
    }

    fn v() -> Validators {
        Validators::of(&version(), at(3600))
    }

    fn lines<'a>(l: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        l.iter().map(|s| s.as_bytes())
    }

    #[test]
    fn validators_come_from_the_version() {
        let v = v();
        assert_eq!(v.etag(), "\"1234-8000-17a668b74dce9700\"");
        assert_eq!(v.last_modified().as_deref(), Some(DATE));
        // Another inode, size or mtime (even 1 ns) is another tag.
        let mut other = version();
        other.mtime_ns += 1;
        assert_ne!(Validators::of(&other, at(3600)).etag(), v.etag());
        other = version();
        other.ino += 1;
        assert_ne!(Validators::of(&other, at(3600)).etag(), v.etag());
        other = version();
        other.size -= 1;
        assert_ne!(Validators::of(&other, at(3600)).etag(), v.etag());
        // A file from before 1970 has a tag but no Last-Modified.
        other.mtime_ns = -5;
        let old = Validators::of(&other, at(0));
        assert!(old.last_modified().is_none());
        assert!(old.etag().starts_with('"') && old.etag().ends_with('"'));
    }

    #[test]
    fn if_none_match() {
        let v = v();
        let tag = v.etag().to_owned();
        let weak = format!("W/{tag}");
        let listed = format!("\"a\", {weak} ,\"b\"");
        for (l, want) in [
            (vec![tag.as_str()], true),
            (vec!["*"], true),
            (vec![weak.as_str()], true), // weak comparison
            (vec![listed.as_str()], true),
            (vec!["\"a\"", tag.as_str()], true), // several lines
            (vec!["\"a\", \"b\""], false),
            (vec!["\"1234-8000\""], false),
            (vec!["garbage", tag.as_str()], true),
            (vec![&tag[1..]], false), // unquoted
            (vec![""], false),
        ] {
            assert_eq!(not_modified(Some(&v), lines(&l), lines(&[])), want, "{l:?}");
        }
        // Present and not matching: If-Modified-Since is not consulted.
        assert!(!not_modified(Some(&v), lines(&["\"x\""]), lines(&[DATE])));
        // No validators: never 304.
        assert!(!not_modified(None, lines(&["*"]), lines(&[DATE])));
    }

    #[test]
    fn if_modified_since() {
        let v = v();
        let later = "Tue, 02 Jan 2024 03:04:06 GMT";
        let earlier = "Tue, 02 Jan 2024 03:04:04 GMT";
        for (l, want) in [
            (vec![DATE], true), // same second: not modified (mtime fraction dropped)
            (vec![later], true),
            (vec![earlier], false),
            (vec!["Tuesday, 02-Jan-24 03:04:05 GMT"], true), // RFC 850
            (vec!["Tue Jan  2 03:04:05 2024"], true),        // asctime
            (vec!["yesterday"], false),
            (vec![DATE, DATE], false), // more than one: ignored
        ] {
            assert_eq!(not_modified(Some(&v), lines(&[]), lines(&l)), want, "{l:?}");
        }
    }

    #[test]
    fn if_range() {
        let v = v();
        let tag = v.etag().to_owned();
        let weak = format!("W/{tag}");
        for (l, want) in [
            (vec![], true),
            (vec![tag.as_str()], true),
            (vec![weak.as_str()], false), // strong comparison
            (vec!["\"other\""], false),
            (vec![DATE], true),
            (vec!["Tue, 02 Jan 2024 03:04:06 GMT"], false), // must be equal, not later
            (vec![tag.as_str(), tag.as_str()], false),
            (vec!["nonsense"], false),
        ] {
            assert_eq!(if_range_holds(Some(&v), lines(&l)), want, "{l:?}");
        }
        // No validators: an If-Range never holds.
        assert!(!if_range_holds(None, lines(&[tag.as_str()])));
        // Modified less than a second before the answer: the date is weak, only the tag works.
        let fresh = Validators::of(&version(), at(1) - Duration::from_millis(600));
        assert!(!if_range_holds(Some(&fresh), lines(&[DATE])));
        assert!(if_range_holds(Some(&fresh), lines(&[tag.as_str()])));
    }
}
