//! From a request's path to a file name beneath the root, sans-IO.
//!
//! The path is percent-decoded first and checked afterwards, so an encoded trick (`%2e%2e`,
//! `%2f`, `%00`, `%5c`) is refused exactly like the plain one. The name returned has no empty,
//! `.` or `..` segment; the image store then resolves it with `RESOLVE_BENEATH`, which also
//! refuses symlinks leaving the root.

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// 400: not an origin-form path, a broken `%` escape, a NUL byte or a backslash.
    BadPath(&'static str),
    /// 403: a `..` segment (plain or encoded).
    Traversal,
}

/// The file name (segments joined by `/`, never empty-segmented, possibly empty for `/`) that
/// `path` (the request target without its query) names.
pub fn file_name(path: &str) -> Result<Vec<u8>, PathRefusal> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathRefusal::BadPath("path does not start with /"));
    }
    let decoded = pxe_proto::uri::percent_decode(raw, false)
        .ok_or(PathRefusal::BadPath("broken percent-encoding"))?;
    if decoded.contains(&0) {
        return Err(PathRefusal::BadPath("NUL byte in path"));
    }
    if decoded.contains(&b'\\') {
        return Err(PathRefusal::BadPath("backslash in path"));
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(PathRefusal::Traversal),
            s => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_normalized_paths() {
        let cases: &[(&str, &[u8])] = &[
            ("/vmlinuz", b"vmlinuz"),
            ("/images/initrd.img", b"images/initrd.img"),
            ("//images///initrd.img", b"images/initrd.img"),
            ("/./images/./initrd.img", b"images/initrd.img"),
            ("/images/", b"images"),
            ("/a%20b", b"a b"),
            ("/%41%62c", b"Abc"),
            ("/dir%2Ffile", b"dir/file"),
            ("/...", b"..."),
            ("/..foo", b"..foo"),
            ("/foo..", b"foo.."),
            // Double encoding decodes once: a literal "%2e%2e" name, not a traversal.
            ("/%252e%252e", b"%2e%2e"),
            ("/caf%C3%A9", "café".as_bytes()),
            ("/\u{00e9}", "é".as_bytes()),
            ("/%ff", b"\xff"),
            ("/", b""),
            ("//", b""),
            ("/./", b""),
        ];
        for (path, want) in cases {
            assert_eq!(file_name(path).as_deref(), Ok(*want), "{path:?}");
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        use PathRefusal::*;
        let cases: &[(&str, PathRefusal)] = &[
            ("/../etc/passwd", Traversal),
            ("/a/../../etc/passwd", Traversal),
            ("/a/..", Traversal),
            ("/..", Traversal),
            ("/%2e%2e/%2e%2e/etc/passwd", Traversal),
            ("/%2E%2E/etc/passwd", Traversal),
            ("/.%2e/etc/passwd", Traversal),
            ("/%2e./etc/passwd", Traversal),
            ("/a%2f..%2f..%2fetc%2fpasswd", Traversal),
            ("/a/%2e%2e", Traversal),
            ("/..%5cetc", BadPath("backslash in path")),
            ("/a\\..\\b", BadPath("backslash in path")),
            ("/%5c%5cserver%5cshare", BadPath("backslash in path")),
            ("/etc/passwd%00.png", BadPath("NUL byte in path")),
            ("/%00", BadPath("NUL byte in path")),
            ("/%", BadPath("broken percent-encoding")),
            ("/%2", BadPath("broken percent-encoding")),
            ("/%zz", BadPath("broken percent-encoding")),
            ("/%%32%65", BadPath("broken percent-encoding")),
            ("/%-1", BadPath("broken percent-encoding")),
            ("*", BadPath("path does not start with /")),
            ("", BadPath("path does not start with /")),
            ("etc/passwd", BadPath("path does not start with /")),
        ];
        for (path, want) in cases {
            assert_eq!(file_name(path), Err(*want), "{path:?}");
        }
    }

    #[test]
    fn absolute_tricks_stay_relative() {
        // Leading slashes (plain or encoded) never make an absolute name: the store gets
        // "etc/passwd" beneath the root.
        for path in ["//etc/passwd", "/%2fetc/passwd", "/%2F%2Fetc/passwd"] {
            assert_eq!(file_name(path).unwrap(), b"etc/passwd", "{path:?}");
        }
    }
}
