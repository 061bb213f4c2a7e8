//! Finding what a TOML error is about: the line of a byte offset, the line of a key path,
//! the key path at an offset, and the best guess at the key of a syntax error.

/// 1-based line of a byte offset.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(super) fn first_line(msg: &str) -> String {
    msg.trim().lines().next().unwrap_or("").to_owned()
}

/// The line of the key at `path`, if the file sets it. An element `name[i]` steps into entry
/// `i` of an array of tables (or inline array of tables); a path that ends at such an entry
/// names the line where the entry starts.
pub(super) fn key_line<S: AsRef<str>>(
    doc: &toml_edit::ImDocument<&str>,
    text: &str,
    path: &[S],
) -> Option<usize> {
    fn indexed(p: &str) -> Option<(&str, usize)> {
        let (name, rest) = p.split_once('[')?;
        Some((name, rest.strip_suffix(']')?.parse().ok()?))
    }
    fn entry<'a>(
        table: &'a dyn toml_edit::TableLike,
        name: &str,
        i: usize,
    ) -> Option<(Option<usize>, &'a dyn toml_edit::TableLike)> {
        let item = table.get(name)?;
        if let Some(aot) = item.as_array_of_tables() {
            let t = aot.get(i)?;
            return Some((t.span().map(|s| s.start), t));
        }
        let v = item.as_array()?.get(i)?;
        Some((v.span().map(|s| s.start), v.as_inline_table()?))
    }
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let (last, parents) = path.split_last()?;
    for p in parents {
        let p = p.as_ref();
        table = match indexed(p) {
            Some((name, i)) => entry(table, name, i)?.1,
            None => table.get(p)?.as_table_like()?,
        };
    }
    let last = last.as_ref();
    if let Some((name, i)) = indexed(last) {
        return Some(line_at(text, entry(table, name, i)?.0?));
    }
    let (key, item) = table.get_key_value(last)?;
    let offset = key.span().or_else(|| item.span())?.start;
    Some(line_at(text, offset))
}

/// The dotted path (`tftp.listen[1]`) of the deepest key or value whose span holds `offset`.
pub(super) fn key_path_at(table: &dyn toml_edit::TableLike, offset: usize) -> Option<String> {
    let contains = |span: Option<std::ops::Range<usize>>| {
        span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
    };
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let here = name.to_owned();
        if let Some(p) = item
            .as_table_like()
            .and_then(|inner| key_path_at(inner, offset))
        {
            return Some(format!("{here}.{p}"));
        }
        if let Some(aot) = item.as_array_of_tables() {
            for (i, t) in aot.iter().enumerate() {
                if let Some(p) = key_path_at(t, offset) {
                    return Some(format!("{here}[{i}].{p}"));
                }
            }
        }
        if let Some(arr) = item.as_array() {
            for (i, v) in arr.iter().enumerate() {
                if contains(v.span()) {
                    return Some(format!("{here}[{i}]"));
                }
            }
        }
        if contains(key.span()) || contains(item.span()) {
            return Some(here);
        }
    }
    None
}

/// serde's "unknown field `x`, expected ..." names the key when no span does.
pub(super) fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

/// Best guess at the key a syntax error is about: `table.key` from the last `[table]` header
/// before the error and the bare key starting the error's line.
pub(super) fn syntax_key(text: &str, offset: usize) -> String {
    let end = offset.min(text.len());
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(header) = line.trim_start().strip_prefix('[') {
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        return if name.is_empty() {
            "(syntax)".to_owned()
        } else {
            name.to_owned()
        };
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_owned(),
        (Some(t), None) => t,
        (None, None) => "(syntax)".to_owned(),
    }
}
