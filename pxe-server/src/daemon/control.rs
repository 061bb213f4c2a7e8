//! The control thread: every [`CONTROL_TICK`] it applies a pending SIGHUP and answers the
//! clients waiting on the control socket; every [`METRICS_INTERVAL`] it logs the counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::messages::{Answer, ErrorAnswer, HostAnswer, Request};
use super::socket::ControlSocket;
use super::{DaemonState, unix_now};
use crate::nextboot::{self, HostAction};

/// How often `serve` logs the counters.
const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// How often the control thread looks at SIGHUP and the control socket.
const CONTROL_TICK: Duration = Duration::from_millis(100);

/// Runs the control loop in its own thread until `shutdown`. At the end it logs the filter
/// counters once more and drops `state`, which detaches the XDP program.
pub(super) fn spawn(
    mut state: DaemonState,
    socket: ControlSocket,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut next = Instant::now() + METRICS_INTERVAL;
            while !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(CONTROL_TICK);
                if reload.swap(false, Ordering::Relaxed) {
                    state.reload();
                }
                socket.serve_pending(|request| state.answer_line(request));
                if Instant::now() >= next {
                    state.log_metrics();
                    next += METRICS_INTERVAL;
                }
            }
            if let Some(d) = &state.dhcp {
                d.log_filter();
            }
        })
}

impl DaemonState {
    /// The JSON document answering one request line.
    pub(super) fn answer_line(&self, line: &str) -> String {
        let answer = match Request::parse(line) {
            Ok(request) => self.handle(&request),
            Err(e) => Answer::Error(ErrorAnswer::new(e.to_string())),
        };
        serde_json::to_string(&answer).unwrap_or_else(|e| {
            // Not expected: every answer is plain data with string keys.
            let error = ErrorAnswer::new(format!("answer not encoded: {e}"));
            serde_json::to_string(&error).unwrap_or_default()
        })
    }

    /// Answers one request.
    pub(super) fn handle(&self, request: &Request) -> Answer {
        match request {
            Request::Status => Answer::Status(Box::new(self.status())),
            Request::Host { action, selector } => Answer::Host(self.host(*action, selector)),
            Request::Hosts { query } => {
                let now = crate::journey::Now::current();
                match self.journeys.hosts_document(query, now) {
                    Ok(doc) if self.journeys.enabled() => Answer::Hosts(Box::new(doc)),
                    Ok(_) => Answer::Error(ErrorAnswer::new(
                        "this server keeps no journeys ([journeys] enabled = false)",
                    )),
                    Err(e) => Answer::Error(ErrorAnswer::new(format!("hosts query: {e}"))),
                }
            }
        }
    }

    fn host(&self, action: HostAction, selector: &str) -> HostAnswer {
        let Some(store) = &self.next_boot else {
            return HostAnswer::refused(
                "this server keeps no host state (it needs the lease database: [dhcp] \
                 enabled in full mode)",
            );
        };
        let answer = nextboot::host_command(store, &self.hosts, action, selector, unix_now());
        if let Some(changed @ 1..) = answer.changed {
            tracing::info!(%selector, ?action, changed, "next boot changed");
        }
        answer
    }

    fn log_metrics(&self) {
        tracing::info!(metrics = %self.tftp.snapshot(), "TFTP metrics");
        if let Some(m) = &self.http {
            tracing::info!(metrics = %m.snapshot(), "HTTP metrics");
        }
        if let Some(d) = &self.dhcp {
            tracing::info!(metrics = %d.metrics.snapshot(), "DHCP metrics");
            d.log_filter();
        }
    }
}
