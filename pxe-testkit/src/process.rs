//! Child processes that die with the test, and bounded runs of a command.
//!
//! Output always goes through files, so a chatty child can never block on a full pipe, and
//! every wait has a limit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::caps::cannot_run;

/// How long [`Proc::wait_for`] waits for a log line.
pub const LOG_WAIT: Duration = Duration::from_secs(15);

/// A child process, killed and reaped on drop; its stdout and stderr go to files.
pub struct Proc {
    child: Child,
    what: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` (stdin from /dev/null) with stdout and stderr to `<dir>/<tag>.out` and
    /// `<dir>/<tag>.err`. A program that cannot be started fails the test as a missing
    /// capability.
    pub fn spawn(mut cmd: Command, dir: &Path, tag: &str) -> Proc {
        let stdout = dir.join(format!("{tag}.out"));
        let stderr = dir.join(format!("{tag}.err"));
        let what = format!("{cmd:?}");
        let create = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(create(&stdout))
            .stderr(create(&stderr))
            .spawn()
            .unwrap_or_else(|e| cannot_run(&format!("cannot start {what}: {e}")));
        Proc {
            child,
            what,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The exit status if the process has exited (it is reaped then), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs. Polls after
    /// 1 ms, then less and less often (every 20 ms at most), so that a short command costs
    /// little more than its own run time.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process (nothing if it has been reaped already).
    pub fn signal(&mut self, sig: Signal) {
        if self.is_running() {
            signal_pid(self.pid(), sig);
        }
    }

    /// Kills the process (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far (where the servers log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The file that receives stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Waits (at most [`LOG_WAIT`]) until stderr contains `what`; fails the test, with the
    /// log, if the process exits first or the line does not come.
    pub fn wait_for(&mut self, what: &str) {
        self.wait_for_within(what, LOG_WAIT);
    }

    /// [`Proc::wait_for`] with a limit of `timeout`.
    pub fn wait_for_within(&mut self, what: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.stderr().contains(what) {
                return;
            }
            if let Some(s) = self.try_status() {
                if self.stderr().contains(what) {
                    return;
                }
                panic!(
                    "{} exited ({s}) before {what:?}:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no {what:?} from {} within {timeout:?}:\n{}",
            self.what,
            self.stderr()
        );
    }

    /// Waits for the exit, bounded: at `limit` the process gets `stop` (SIGKILL or SIGTERM),
    /// and after SIGTERM, `grace` later, SIGKILL. The run's status is `None` when the limit
    /// was reached.
    fn finish(mut self, start: Instant, limit: Duration, stop: Stop) -> Run {
        let pid = self.pid();
        let status = self.wait_timeout(limit.saturating_sub(start.elapsed()));
        if status.is_none() {
            if let Stop::Term { grace } = stop {
                self.signal(Signal::TERM);
                self.wait_timeout(grace);
            }
            self.kill();
        }
        Run {
            pid,
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: start.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` to `pid`, ignoring a process that is gone.
pub fn signal_pid(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// How a bounded run stops a command that reached its limit.
#[derive(Clone, Copy)]
enum Stop {
    Kill,
    /// SIGTERM, so that the command can clean up, then SIGKILL after `grace`.
    Term {
        grace: Duration,
    },
}

/// What a bounded run of a command left.
#[derive(Debug)]
pub struct Run {
    /// The process id the command ran as.
    pub pid: u32,
    /// `None` when the command was stopped at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Finished in time with exit status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The exit code, if it finished in time and was not killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// stdout, a newline, stderr.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status={:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `argv` to completion, killing it after `limit` (the status is `None` then).
pub fn run_bounded(argv: &[&str], limit: Duration) -> Run {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    run_command(cmd, limit)
}

/// Runs `cmd` to completion, killing it after `limit` (the status is `None` then).
pub fn run_command(cmd: Command, limit: Duration) -> Run {
    run_stopped_by(cmd, limit, Stop::Kill)
}

/// Runs `cmd` to completion; at `limit` it gets SIGTERM, so that it can clean up after
/// itself, and `grace` later SIGKILL (the status is `None` then).
pub fn run_command_term(cmd: Command, limit: Duration, grace: Duration) -> Run {
    run_stopped_by(cmd, limit, Stop::Term { grace })
}

fn run_stopped_by(cmd: Command, limit: Duration, stop: Stop) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    Proc::spawn(cmd, dir.path(), "run").finish(start, limit, stop)
}

/// Runs `cmd` to completion within `timeout`, with its output kept in `<dir>/<tag>.out|.err`;
/// a command still running at `timeout` is killed and fails the test, with its output.
pub fn run(cmd: Command, dir: &Path, tag: &str, timeout: Duration) -> Run {
    let start = Instant::now();
    let p = Proc::spawn(cmd, dir, tag);
    let what = p.what.clone();
    let r = p.finish(start, timeout, Stop::Kill);
    if r.status.is_none() {
        panic!(
            "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
    }
    r
}

/// Runs `cmd` (a command with `--json`), killing it and failing the test if it has not
/// finished within `limit`; returns its exit status and its JSON report (a missing or
/// unparsable report fails the test, with both output streams).
pub fn run_json(cmd: Command, what: &str, limit: Duration) -> (ExitStatus, serde_json::Value) {
    let r = run_command(cmd, limit);
    let Some(status) = r.status else {
        panic!("{what} did not finish within {limit:?}\n{r}");
    };
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: no JSON report ({e}), status {status}:\n{}\n{}",
            r.stdout, r.stderr
        )
    });
    (status, report)
}

/// Waits until `cond` holds, polling every 50 ms, for at most `timeout`; whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_bounded_run_returns_status_and_output() {
        let r = run_bounded(
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            LOG_WAIT,
        );
        assert_eq!(r.code(), Some(3));
        assert!(!r.success());
        assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));
    }

    #[test]
    fn a_run_past_its_limit_is_killed_and_has_no_status() {
        let r = run_command(
            sh("echo started; exec sleep 30"),
            Duration::from_millis(300),
        );
        assert!(r.status.is_none(), "{r}");
        assert_eq!(r.stdout, "started\n");
        assert!(r.elapsed < Duration::from_secs(10), "{r}");
    }

    #[test]
    fn sigterm_first_lets_the_command_clean_up() {
        let script = "trap 'echo cleaned; exit 0' TERM; sleep 30 & wait";
        let r = run_command_term(sh(script), Duration::from_millis(300), LOG_WAIT);
        assert!(r.status.is_none(), "stopped at the limit: {r}");
        assert_eq!(r.stdout, "cleaned\n", "{r}");
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn run_fails_the_test_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        run(
            sh("sleep 30"),
            dir.path(),
            "slow",
            Duration::from_millis(200),
        );
    }

    #[test]
    fn run_json_parses_the_report() {
        let (status, v) = run_json(sh("echo '{\"ok\": 3}'"), "echo", LOG_WAIT);
        assert!(status.success());
        assert_eq!(v["ok"], 3);
    }

    #[test]
    fn a_proc_waits_for_its_log_line_and_dies_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(sh("echo ready >&2; exec sleep 30"), dir.path(), "p");
        p.wait_for("ready");
        let pid = p.pid();
        drop(p);
        let alive = Pid::from_raw(pid as i32)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
        assert!(!alive, "pid {pid} survived its guard");
    }

    #[test]
    #[should_panic(expected = "exited (exit status: 1) before \"ready\"")]
    fn a_proc_that_dies_before_its_line_fails_the_test() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(sh("echo nope >&2; exit 1"), dir.path(), "p");
        p.wait_for("ready");
    }

    #[test]
    fn signals_reach_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(
            sh("trap 'echo hup >&2; exit 0' HUP; echo up >&2; while :; do sleep 0.05; done"),
            dir.path(),
            "p",
        );
        p.wait_for("up");
        p.signal(Signal::HUP);
        let status = p.wait_timeout(LOG_WAIT).expect("exits on SIGHUP");
        assert!(status.success());
        assert_eq!(p.stderr(), "up\nhup\n");
    }
}
