//! A real Prometheus server (Debian's `prometheus`) as a peer: started in a namespace with a
//! config of the test's (its own storage in the test's directory, a short scrape interval),
//! queried through its HTTP API, killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::caps::require_program;
use crate::netns::Netns;
use crate::process::{Proc, wait_until};

/// How long Prometheus may take to be ready (it replays an empty WAL, loads the config).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `prometheus` running in a namespace, scraping `targets` every second.
pub struct Prometheus {
    proc: Proc,
    ns: String,
    listen: SocketAddr,
}

impl Prometheus {
    /// Writes `<dir>/prometheus.yml` (one job `pxe`, `scrape_interval: 1s`, `targets`),
    /// starts `prometheus` in `ns` listening on `listen` with its storage in
    /// `<dir>/prometheus-data`, and waits (bounded) until it answers `/-/ready`.
    pub fn start(ns: &Netns, dir: &Path, listen: SocketAddr, targets: &[SocketAddr]) -> Prometheus {
        require_program("prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: pxe\n    static_configs:\n      \
                 - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let mut cmd = ns.command("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn");
        let mut p = Prometheus {
            proc: Proc::spawn(cmd, dir, "prometheus"),
            ns: ns.name().to_owned(),
            listen,
        };
        let ready = wait_until(READY_WITHIN, || {
            assert!(
                p.proc.is_running(),
                "prometheus exited:\n{}",
                p.proc.stderr()
            );
            p.get("/-/ready", &[]).is_some_and(|b| b.contains("Ready"))
        });
        assert!(
            ready,
            "prometheus not ready in {READY_WITHIN:?}:\n{}",
            p.proc.stderr()
        );
        p
    }

    /// GET `path` of the HTTP API with `query` form fields (URL-encoded by curl); the body, or
    /// `None` if the request failed.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<String> {
        let mut cmd = crate::netns::exec_in(&self.ns, "curl");
        cmd.args(["-sf", "--max-time", "5", "-G"]);
        for (k, v) in query {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        cmd.arg(format!("http://{}{path}", self.listen));
        let run = crate::process::run_command(cmd, Duration::from_secs(10));
        run.success().then_some(run.stdout)
    }

    /// The value of an instant query whose answer is one sample (`sum(...)`, one series);
    /// `None` while it has no sample (nothing scraped yet) or the query failed.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let body = self.get("/api/v1/query", &[("query", expr)])?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = doc["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Prometheus's own log so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.proc.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ---\n{}\n--- end ---",
                self.proc.stderr()
            );
        }
    }
}
