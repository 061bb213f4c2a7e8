//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
//! (`cdp.py`, run by the system python3: no WebSocket client, no extra package), for the tests
//! of pages pxe-server serves. A run is a list of [`Step`]s on one page; every wait is bounded
//! and the browser is killed at the end.

use std::path::Path;
use std::time::Duration;

use crate::caps::require_program;
use crate::netns::Netns;
use crate::process::run_command;

/// The driver (see its header for the protocol).
const CDP_PY: &str = include_str!("cdp.py");
/// Where Debian installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// One step of a browser run.
#[derive(Debug, Clone)]
pub enum Step {
    /// Polls the JavaScript expression until it is truthy, for at most `timeout`; on failure
    /// the run reports the value of `explain` (an expression) or the last script error.
    Wait {
        expr: String,
        timeout: Duration,
        explain: Option<String>,
    },
    /// Evaluates the expression and keeps its (JSON) value.
    Eval(String),
    /// Saves a PNG of what the 1400x1000 window shows.
    Screenshot(std::path::PathBuf),
}

impl Step {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Step::Wait {
                expr,
                timeout,
                explain,
            } => serde_json::json!({
                "wait": expr,
                "timeout": timeout.as_secs_f64(),
                "explain": explain,
            }),
            Step::Eval(expr) => serde_json::json!({ "eval": expr }),
            Step::Screenshot(path) => serde_json::json!({ "screenshot": path }),
        }
    }
}

/// Opens `url` in headless Chromium inside `ns` and runs `steps`; returns the value of each
/// step. Fails the test, with the driver's report and the browser's log, if a step fails or
/// the whole run takes more than `limit`.
pub fn browse(
    ns: &Netns,
    dir: &Path,
    url: &str,
    steps: &[Step],
    limit: Duration,
) -> Vec<serde_json::Value> {
    require_program(CHROMIUM);
    require_program("/usr/bin/python3");
    let steps = serde_json::Value::Array(
        steps
            .iter()
            .map(|s| match s {
                // `explain: null` would be printed as the failure's explanation; leave it out.
                Step::Wait { explain: None, .. } => {
                    let mut v = s.to_json();
                    v.as_object_mut().map(|o| o.remove("explain"));
                    v
                }
                s => s.to_json(),
            })
            .collect(),
    );
    let log = dir.join("chromium.log");
    let mut cmd = ns.command("/usr/bin/python3");
    cmd.args(["-c", CDP_PY, CHROMIUM, url, &steps.to_string()])
        .env("CDP_LOG", &log);
    let run = run_command(cmd, limit);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser run gave no report ({e}):\n{run}\n--- chromium log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        report["ok"] == true && run.success(),
        "browser run failed: {report:#}\n--- chromium log (tail) ---\n{}",
        tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40)
    );
    report["results"].as_array().cloned().unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
