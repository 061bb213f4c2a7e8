//! Operators' host selectors (`pxe-server host SELECTOR ...`).

use pxe_proto::{ClientUuid, MacAddr};

use super::HostConfig;

/// A selector that matched nothing, or an empty one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("empty host selector")]
    Empty,
    #[error("no [[hosts]] entry matches {0:?}")]
    NoMatch(String),
}

/// The `[[hosts]]` entries (indices, in config order, no duplicates) that `selector` names:
/// `all`, or a comma-separated list of hostnames, MACs (any case, `:` or `-`), UUIDs, and
/// globs (`*`, `?`) over hostnames. Every item must match at least one host.
pub(super) fn select(hosts: &[HostConfig], selector: &str) -> Result<Vec<usize>, SelectError> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err(SelectError::Empty);
    }
    if selector == "all" {
        return Ok((0..hosts.len()).collect());
    }
    let items: Vec<&str> = selector.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(SelectError::Empty);
    }
    let mut out: Vec<usize> = Vec::new();
    for item in items {
        let mac: Option<MacAddr> = item.replace('-', ":").parse().ok();
        let uuid: Option<ClientUuid> = item.parse().ok();
        let mut matched = false;
        for (i, h) in hosts.iter().enumerate() {
            let hit = (mac.is_some() && h.mac == mac)
                || (uuid.is_some() && h.uuid == uuid)
                || h.hostname.as_deref().is_some_and(|n| glob(item, n));
            if hit {
                matched = true;
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        if !matched {
            return Err(SelectError::NoMatch(item.to_owned()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `*` matches any run of characters, `?` one; everything else itself. Iterative, with one
/// backtrack point: linear in practice, never recursive.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
