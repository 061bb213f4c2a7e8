//! A strict reader of the Prometheus text exposition format (0.0.4; OpenMetrics text reads the
//! same for the lines used here): one sample per line, `name{label="value",...} value
//! [timestamp]`. Comments (`# HELP`, `# TYPE`, `# EOF`) and blank lines are skipped; a line that
//! does not have this shape is an error for the caller to count and skip, never a guess.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample<'a> {
    pub name: &'a str,
    /// Label names and their unescaped values, in the line's order.
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a line was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineError {
    Name,
    Labels,
    Value,
    Trailing,
}

/// `Ok(None)`: a comment or a blank line.
pub(crate) fn parse_line(line: &str) -> Result<Option<Sample<'_>>, LineError> {
    let line = line.trim_end_matches('\r').trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_len = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(LineError::Name);
    }
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    if !rest.starts_with([' ', '\t']) {
        return Err(LineError::Value);
    }
    let value = fields
        .next()
        .ok_or(LineError::Value)
        .and_then(parse_value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| LineError::Trailing)?;
    }
    if fields.next().is_some() {
        return Err(LineError::Trailing);
    }
    Ok(Some(Sample {
        name,
        labels,
        value,
    }))
}

/// Reads `name="value",...}` (after the `{`); returns what follows the `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(&'a str, String)>,
) -> Result<&'a str, LineError> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let n = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or(LineError::Labels)?;
        let name = &s[..n];
        if name.is_empty() {
            return Err(LineError::Labels);
        }
        s = s[n..]
            .trim_start()
            .strip_prefix('=')
            .ok_or(LineError::Labels)?
            .trim_start()
            .strip_prefix('"')
            .ok_or(LineError::Labels)?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next().ok_or(LineError::Labels)? {
                (k, '"') => break k,
                (_, '\\') => match chars.next().ok_or(LineError::Labels)?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return Err(LineError::Labels),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name, value));
        s = s[end + 1..].trim_start();
        match s.strip_prefix(',') {
            Some(rest) => s = rest,
            None if s.starts_with('}') => {}
            None => return Err(LineError::Labels),
        }
    }
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf`.
fn parse_value(v: &str) -> Result<f64, LineError> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        // Rust also reads "inf", "infinity" and "nan" in any case: not the format's spelling.
        _ if v
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) =>
        {
            Err(LineError::Value)
        }
        _ => v.parse().map_err(|_| LineError::Value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Sample<'_> {
        parse_line(line).unwrap().unwrap()
    }

    #[test]
    fn samples_labels_values_and_timestamps() {
        let s = ok("process_cpu_seconds_total 12.5");
        assert_eq!(
            (s.name, s.value, s.labels.len()),
            ("process_cpu_seconds_total", 12.5, 0)
        );
        let s = ok(r#"pxe_tftp_refused_total{cause="limit"} 3 1700000000000"#);
        assert_eq!(s.name, "pxe_tftp_refused_total");
        assert_eq!(s.label("cause"), Some("limit"));
        assert_eq!(s.value, 3.0);
        let s = ok(r#"m{a="x\"y\\z\nw", b = "" ,} 1e3"#);
        assert_eq!(s.label("a"), Some("x\"y\\z\nw"));
        assert_eq!(s.label("b"), Some(""));
        assert_eq!(s.value, 1000.0);
        let s = ok(r#"m{a="{},=}"} -2"#);
        assert_eq!(s.label("a"), Some("{},=}"));
        assert_eq!(ok("m +Inf").value, f64::INFINITY);
        assert_eq!(ok("m -Inf").value, f64::NEG_INFINITY);
        assert!(ok("m NaN").value.is_nan());
        assert_eq!(ok("m{} 7\r").value, 7.0);
        assert_eq!(ok("ns:m_1\t4").value, 4.0);
    }

    #[test]
    fn comments_and_blank_lines_are_no_samples() {
        for line in ["", "   ", "# HELP m help", "# TYPE m counter", "# EOF"] {
            assert_eq!(parse_line(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        for (line, why) in [
            ("{a=\"b\"} 1", LineError::Name),
            ("9m 1", LineError::Name),
            ("m{a=b} 1", LineError::Labels),
            ("m{a=\"b} 1", LineError::Labels),
            ("m{a=\"b\" c=\"d\"} 1", LineError::Labels),
            ("m{a=\"\\x\"} 1", LineError::Labels),
            ("m{=\"b\"} 1", LineError::Labels),
            ("m", LineError::Value),
            ("m{a=\"b\"}1", LineError::Value),
            ("m one", LineError::Value),
            ("m inf", LineError::Value),
            ("m 1 2.5", LineError::Trailing),
            ("m 1 2 3", LineError::Trailing),
            ("m-x 1", LineError::Value),
        ] {
            assert_eq!(parse_line(line), Err(why), "{line:?}");
        }
    }
}
