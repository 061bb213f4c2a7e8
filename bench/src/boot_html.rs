//! The boot storm's self-contained HTML report: a summary table and two inline SVG charts (the
//! storm curve: clients booted over time; the latency percentile curves per phase). No script,
//! no external resource.

use std::fmt::Write;

use crate::boot_storm::BootReport;
use crate::server_view::{ServerPoint, ServerView};

const W: f64 = 760.0;
const H: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 45.0;
const COLORS: [&str; 5] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step for about `n` ticks over `0..max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let m = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

struct Chart {
    svg: String,
    x_max: f64,
    y_max: f64,
}

impl Chart {
    fn new(title: &str, x_label: &str, y_label: &str, x_max: f64, y_max: f64) -> Chart {
        let x_max = if x_max > 0.0 { x_max } else { 1.0 };
        let y_max = if y_max > 0.0 { y_max } else { 1.0 };
        let mut svg = String::new();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11"><title>{t}</title><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>"##,
            t = esc(title),
            pw = W - LEFT - RIGHT,
            ph = H - TOP - BOTTOM,
        );
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="middle">{l}</text><text transform="translate(14,{ym}) rotate(-90)" text-anchor="middle">{yl}</text>"#,
            x = LEFT + (W - LEFT - RIGHT) / 2.0,
            y = H - 8.0,
            l = esc(x_label),
            ym = TOP + (H - TOP - BOTTOM) / 2.0,
            yl = esc(y_label),
        );
        let mut c = Chart { svg, x_max, y_max };
        let ys = nice_step(y_max, 5.0);
        let mut v = 0.0;
        while v <= y_max * 1.0001 {
            let y = c.py(v);
            let _ = write!(
                c.svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
                x2 = W - RIGHT,
                tx = LEFT - 4.0,
                ty = y + 4.0,
                v = fmt_num(v),
            );
            v += ys;
        }
        c
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x / self.x_max).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y / self.y_max).clamp(0.0, 1.0) * (H - TOP - BOTTOM)
    }

    fn x_tick(&mut self, x: f64, label: &str) {
        let px = self.px(x);
        let _ = write!(
            self.svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{yb}" stroke="#eee"/><text x="{px:.1}" y="{ty}" text-anchor="middle">{l}</text>"##,
            yb = H - BOTTOM,
            ty = H - BOTTOM + 14.0,
            l = esc(label),
        );
    }

    fn polyline(&mut self, pts: &[(f64, f64)], color: &str, label: &str, slot: usize) {
        if pts.is_empty() {
            return;
        }
        self.svg
            .push_str(r#"<polyline fill="none" stroke-width="2" stroke=""#);
        self.svg.push_str(color);
        self.svg.push_str(r#"" points=""#);
        for &(x, y) in pts {
            let _ = write!(self.svg, "{:.1},{:.1} ", self.px(x), self.py(y));
        }
        self.svg.push_str(r#""/>"#);
        let ly = TOP + 14.0 + 14.0 * slot as f64;
        let _ = write!(
            self.svg,
            r#"<rect x="{lx}" y="{ry}" width="12" height="4" fill="{color}"/><text x="{tx}" y="{ty}">{l}</text>"#,
            lx = LEFT + 10.0,
            ry = ly - 4.0,
            tx = LEFT + 26.0,
            ty = ly,
            l = esc(label),
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

fn fmt_num(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Cumulative count over time as a step curve, at most ~2000 points.
fn cumulative(times: &[f64]) -> Vec<(f64, f64)> {
    let n = times.len();
    let every = n.div_ceil(2000).max(1);
    let mut pts = vec![(0.0, 0.0)];
    for (k, &t) in times.iter().enumerate() {
        if (k + 1) % every == 0 || k + 1 == n {
            pts.push((t, (k + 1) as f64));
        }
    }
    pts
}

/// The time axis every chart over time shares (clients' and server's): seconds since the start.
fn time_max(r: &BootReport) -> f64 {
    let c = &r.curves;
    let server_last = r
        .server
        .as_ref()
        .and_then(|s| s.series.last())
        .map_or(0.0, |p| p.t_s);
    c.completions
        .last()
        .copied()
        .unwrap_or(0.0)
        .max(c.failures.last().copied().unwrap_or(0.0))
        .max(r.last_finished_s)
        .max(server_last)
        * 1.02
}

/// A chart over the run's time axis, with its ticks.
fn time_chart(r: &BootReport, title: &str, y_label: &str, y_max: f64) -> Chart {
    let mut ch = Chart::new(
        title,
        "seconds since the start",
        y_label,
        time_max(r),
        y_max,
    );
    let step = nice_step(ch.x_max, 8.0);
    let mut x = 0.0;
    while x <= ch.x_max {
        ch.x_tick(x, &fmt_num(x));
        x += step;
    }
    ch
}

/// The storm curve: successful (and failed) clients over seconds since the start.
pub(crate) fn storm_svg(r: &BootReport) -> String {
    let c = &r.curves;
    let mut ch = time_chart(r, "clients booted over time", "clients", r.clients as f64);
    ch.polyline(&cumulative(&c.completions), COLORS[0], "booted", 0);
    if !c.failures.is_empty() {
        ch.polyline(&cumulative(&c.failures), COLORS[4], "failed", 1);
    }
    ch.finish()
}

/// Lines of `(t, y)` points with their labels on one time chart (an empty line is left out).
fn lines_svg(
    r: &BootReport,
    title: &str,
    y_label: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let y_max = lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.25; // headroom: the legend sits at the top
    let mut ch = time_chart(r, title, y_label, y_max);
    let shown = lines.iter().filter(|(_, pts)| !pts.is_empty());
    for (slot, (label, pts)) in shown.enumerate() {
        ch.polyline(pts, COLORS[slot % COLORS.len()], label, slot);
    }
    ch.finish()
}

/// The server's charts, on the storm curve's time axis: its CPU, its active sessions and
/// refusals, and its send rate per protocol.
fn server_svgs(r: &BootReport, s: &ServerView) -> [String; 3] {
    let pts = &s.series;
    let of = |f: &dyn Fn(&ServerPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        pts.iter().filter_map(|p| Some((p.t_s, f(p)?))).collect()
    };
    // Mbit/s between consecutive scrapes.
    let rate = |f: fn(&ServerPoint) -> Option<u64>| -> Vec<(f64, f64)> {
        pts.windows(2)
            .filter_map(|w| {
                let dt = w[1].t_s - w[0].t_s;
                let bytes = f(&w[1])?.saturating_sub(f(&w[0])?);
                (dt > 0.0).then(|| (w[1].t_s, bytes as f64 * 8.0 / dt / 1e6))
            })
            .collect()
    };
    let cpu = lines_svg(
        r,
        "server CPU over time",
        "% of one core",
        &[("server CPU", of(&|p| p.cpu_percent))],
    );
    let sessions = lines_svg(
        r,
        "server sessions and refusals over time",
        "count",
        &[
            ("TFTP sessions", of(&|p| p.tftp_sessions.map(|v| v as f64))),
            (
                "HTTP connections",
                of(&|p| p.http_connections.map(|v| v as f64)),
            ),
            ("refusals since the start", of(&|p| Some(p.refusals as f64))),
        ],
    );
    let sent = lines_svg(
        r,
        "server send rate over time",
        "Mbit/s",
        &[
            ("TFTP", rate(|p| p.tftp_sent_bytes)),
            ("HTTP", rate(|p| p.http_sent_bytes)),
        ],
    );
    [cpu, sessions, sent]
}

/// The server's view: its totals over the run and its charts.
fn server_section(h: &mut String, r: &BootReport, s: &ServerView) {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let optf = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let _ = write!(
        h,
        "<h2>Server view</h2><p>From <code>{}</code>: {} scrapes{}.</p><table>\
         <tr><th class=l>server CPU during the run (s)</th><td>{}</td></tr>\
         <tr><th class=l>server CPU, mean / highest interval (% of one core)</th><td>{} / {}</td></tr>\
         <tr><th class=l>RSS at most (bytes)</th><td>{}</td></tr>\
         <tr><th class=l>open files at most</th><td>{}</td></tr>\
         <tr><th class=l>TFTP sessions / HTTP connections at most</th><td>{} / {}</td></tr>\
         <tr><th class=l>sent TFTP / HTTP (bytes)</th><td>{} / {}</td></tr>\
         <tr><th class=l>refusals</th><td{}>{}</td></tr></table>",
        esc(&s.url),
        s.scrapes,
        if s.scrape_failures.is_empty() {
            String::new()
        } else {
            esc(&format!(", failed: {:?}", s.scrape_failures))
        },
        s.cpu_seconds.map_or("-".to_owned(), |v| format!("{v:.3}")),
        optf(s.cpu_percent_mean),
        optf(s.cpu_percent_max),
        opt(s.rss_max_bytes),
        opt(s.open_fds_max),
        opt(s.tftp_sessions_max),
        opt(s.http_connections_max),
        opt(s.tftp_sent_bytes),
        opt(s.http_sent_bytes),
        if s.refusals_total() > 0 {
            " class=bad"
        } else {
            ""
        },
        s.refusals_total(),
    );
    if s.refusals_total() > 0 {
        h.push_str(
            "<table><tr><th class=l>service</th><th class=l>cause</th><th>refusals</th></tr>",
        );
        for (service, causes) in &s.refusals {
            for (cause, n) in causes.iter().filter(|(_, n)| **n > 0) {
                let _ = write!(
                    h,
                    "<tr><td class=l>{service}</td><td class=l>{}</td><td class=bad>{n}</td></tr>",
                    esc(cause)
                );
            }
        }
        h.push_str("</table>");
    }
    for svg in server_svgs(r, s) {
        h.push_str(&svg);
    }
}

/// Latency per phase against the percentile, x = -log10(1 - q) (0 = p0, 1 = p90, 2 = p99, ...).
pub(crate) fn latency_svg(r: &BootReport) -> String {
    let qs = &r.curves.quantiles;
    let y_max = qs
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|&(_, us)| us as f64 / 1000.0))
        .fold(0.0, f64::max)
        * 1.05;
    let mut ch = Chart::new(
        "latency by percentile, per phase",
        "percentile",
        "milliseconds",
        4.0,
        y_max,
    );
    for (x, l) in [
        (0.0, "p0"),
        (0.301, "p50"),
        (1.0, "p90"),
        (2.0, "p99"),
        (3.0, "p99.9"),
        (4.0, "p99.99"),
    ] {
        ch.x_tick(x, l);
    }
    for (slot, (name, pts)) in qs.iter().enumerate() {
        let line: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(q, us)| (-(1.0 - q).max(1e-12).log10(), us as f64 / 1000.0))
            .collect();
        ch.polyline(&line, COLORS[slot % COLORS.len()], name, slot);
    }
    ch.finish()
}

/// The whole page.
pub(crate) fn render(r: &BootReport, command: &str) -> String {
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pxe-bench boot report</title>\
         <style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;\
         margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         th{background:#eee}td.l,th.l{text-align:left}code{background:#f3f3f3;padding:2px}\
         .bad{color:#b00}</style></head><body>\n",
    );
    let _ = write!(
        h,
        "<h1>pxe-bench boot</h1><p><code>{}</code></p>",
        esc(command)
    );
    let _ = write!(
        h,
        "<table><tr><th class=l>clients</th><td>{}</td></tr><tr><th class=l>ok</th><td>{}</td></tr>\
         <tr><th class=l>failed</th><td{}>{}</td></tr><tr><th class=l>mode / arrival</th><td>{} / {}</td></tr>\
         <tr><th class=l>phases (transport)</th><td>{}</td></tr>\
         <tr><th class=l>last client booted (s)</th><td>{:.3}</td></tr><tr><th class=l>wall (s)</th><td>{:.3}</td></tr>\
         <tr><th class=l>payload received</th><td>{} bytes</td></tr><tr><th class=l>goodput (Mbit/s)</th><td>{:.1}</td></tr>\
         <tr><th class=l>retransmits dhcp / tftp</th><td>{} / {}</td></tr>\
         <tr><th class=l>simulator CPU (user + system, % of one core)</th><td>{:.2} + {:.2} s, {:.1}%</td></tr></table>",
        r.clients,
        r.ok,
        if r.failed > 0 { " class=bad" } else { "" },
        r.failed,
        r.mode,
        esc(&r.arrival),
        esc(&r
            .transports
            .iter()
            .map(|(phase, how)| format!("{phase} {how}"))
            .collect::<Vec<_>>()
            .join(", ")),
        r.last_finished_s,
        r.wall_s,
        r.bytes,
        r.goodput_mbit_s,
        r.retransmits.dhcp,
        r.retransmits.tftp,
        r.cpu_user_s,
        r.cpu_system_s,
        r.cpu_percent
    );
    if let Some(phase) = r.stalled_after {
        let _ = write!(
            h,
            "<p>{} clients stopped on purpose after {phase} (<code>--stall-after</code>): \
             not counted as failures.</p>",
            r.stalled
        );
    }
    if !r.failures.is_empty() {
        h.push_str("<h2>Failures</h2><table><tr><th class=l>cause</th><th>clients</th></tr>");
        for (cause, n) in &r.failures {
            let _ = write!(
                h,
                "<tr><td class=l>{}</td><td class=bad>{n}</td></tr>",
                esc(cause)
            );
        }
        h.push_str("</table>");
    }
    h.push_str(
        "<h2>Latency per phase (ms)</h2><table><tr><th class=l>phase</th><th>n</th><th>p50</th>\
         <th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    let p = &r.phases;
    for (name, l) in [
        ("dhcp", &p.dhcp),
        ("boot_file", &p.boot_file),
        ("kernel", &p.kernel),
        ("initrd", &p.initrd),
        ("total", &p.total),
    ] {
        if l.count == 0 {
            continue;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = write!(
            h,
            "<tr><td class=l>{name}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            l.count,
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    }
    h.push_str("</table>");
    h.push_str("<h2>Storm curve: clients booted over time</h2>");
    h.push_str(&storm_svg(r));
    if let Some(s) = &r.server {
        server_section(&mut h, r, s);
    }
    h.push_str("<h2>Latency distribution per phase</h2>");
    h.push_str(&latency_svg(r));
    h.push_str("\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_and_numbers() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 8.0), 1.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(esc("<a&b>"), "&lt;a&amp;b&gt;");
    }

    #[test]
    fn cumulative_is_monotone_and_bounded() {
        let t: Vec<f64> = (0..10_000).map(|k| f64::from(k) / 1000.0).collect();
        let c = cumulative(&t);
        assert!(c.len() <= 2002);
        assert_eq!(c.last(), Some(&(9.999, 10_000.0)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(cumulative(&[]), vec![(0.0, 0.0)]);
    }
}
