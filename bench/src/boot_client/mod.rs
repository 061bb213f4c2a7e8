//! One simulated machine's whole network boot as a sans-IO state machine: the firmware's DHCP
//! (a [`DhcpClient`]), then TFTP of the boot file with the options that firmware asks, then, if
//! configured, the kernel and the initrd as the loaded iPXE fetches them (each a
//! [`TftpClient`]). Datagrams and the time go in; datagrams (with where they go) and the next
//! deadline come out. The driver (`boot_storm`) owns the sockets: it opens a fresh one for every
//! TFTP transfer (a real client's TID) when [`BootClient::awaiting_transfer`] names a file, and
//! hands the expected contents (for byte-exact verification) to
//! [`BootClient::start_transfer`].
//!
//! With an HTTP base in the plan, the kernel and the initrd come over HTTP/1.1 instead (one
//! keep-alive connection, an [`HttpConn`]): the driver connects when
//! [`BootClient::poll_http_connect`] names the server, writes [`BootClient::http_output`], and
//! feeds the socket's bytes, end or error to the `handle_http_*` methods.
//!
//! Call pattern after any input (`handle_*`, `start_transfer`): drain
//! [`BootClient::poll_transmit`] until it returns `None` (phase changes happen there, after the
//! last ACK of a transfer has been handed out), then look at `awaiting_transfer`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dhcp_client::{self, Arch, ClientConfig, DhcpClient, Verdict};
use crate::http_client::{HttpBase, HttpConn, HttpFailure};
use crate::tftp_client::{self, ClientOptions, Retry, TftpClient};

/// The phases of a boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Step {
    Dhcp,
    BootFile,
    Kernel,
    Initrd,
}

impl Step {
    pub(crate) const ALL: [Step; 4] = [Step::Dhcp, Step::BootFile, Step::Kernel, Step::Initrd];

    /// The phase's key in reports and failure causes.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Step::Dhcp => "dhcp",
            Step::BootFile => "boot_file",
            Step::Kernel => "kernel",
            Step::Initrd => "initrd",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What every client of a run does (shared by all of them).
#[derive(Debug, Clone)]
pub(crate) struct BootPlan {
    /// Start with TFTP (`boot_file` and `tftp_server` must be set).
    pub skip_dhcp: bool,
    /// Fetch this instead of the boot file the DHCP answer names.
    pub boot_file: Option<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    /// TFTP server instead of the DHCP answer's next-server.
    pub tftp_server: Option<Ipv4Addr>,
    pub tftp_port: u16,
    /// Overrides the windowsize asked in every TFTP phase (0: ask none).
    pub windowsize: Option<u16>,
    /// Every TFTP phase retransmits on this schedule instead of its firmware's (None: UEFI PXE
    /// for a UEFI boot file, iPXE's backoff for everything else).
    pub tftp_retry: Option<Retry>,
    /// Kernel and initrd over HTTP from here (TFTP when None).
    pub http: Option<Arc<HttpBase>>,
    /// HTTP connect timeout, and the longest silence while a request is in flight.
    pub http_timeout: Duration,
}

impl BootPlan {
    /// The phase is fetched over HTTP.
    pub(crate) fn uses_http(&self, step: Step) -> bool {
        self.http.is_some() && matches!(step, Step::Kernel | Step::Initrd)
    }

    /// How the phase is done, for the report: "dhcp", "tftp" or "http".
    pub(crate) fn transport(&self, step: Step) -> &'static str {
        match step {
            Step::Dhcp => "dhcp",
            s if self.uses_http(s) => "http",
            _ => "tftp",
        }
    }

    /// The phase after `step` (None: the boot is complete).
    pub(crate) fn step_after(&self, step: Step) -> Option<Step> {
        match step {
            Step::Dhcp => Some(Step::BootFile),
            Step::BootFile if self.kernel.is_some() => Some(Step::Kernel),
            Step::BootFile | Step::Kernel if self.initrd.is_some() => Some(Step::Initrd),
            _ => None,
        }
    }
}

/// The TFTP options a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TftpAsk {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    pub retry: Retry,
}

/// What the firmware (boot file) or the loaded iPXE (kernel, initrd) asks for, as real ones do:
/// a BIOS PXE ROM (iPXE's, as in QEMU) and iPXE blksize 1432 + tsize with iPXE's retry backoff;
/// OVMF's UEFI PXE blksize 1468 + windowsize 4 + tsize, retrying every 4 s six times.
/// `windowsize` overrides the window in every phase (0: none asked).
pub(crate) fn firmware_options(arch: Arch, step: Step, windowsize: Option<u16>) -> TftpAsk {
    let mut ask = match (arch, step) {
        (Arch::UefiX64, Step::BootFile) => TftpAsk {
            blksize: Some(1468),
            windowsize: Some(4),
            tsize: true,
            retry: Retry::UEFI_PXE,
        },
        _ => TftpAsk {
            blksize: Some(1432),
            windowsize: None,
            tsize: true,
            retry: Retry::IPXE,
        },
    };
    if let Some(w) = windowsize {
        ask.windowsize = (w > 0).then_some(w);
    }
    ask
}

/// Why a boot failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BootFailure {
    Dhcp(dhcp_client::Failure),
    /// The DHCP answer named no usable TFTP server and none was configured.
    NoTftpServer,
    /// The boot file is a URL (iPXE script over HTTP): not something TFTP can fetch.
    NotTftp(Step),
    TftpTimeout(Step),
    TftpError(u16, Step),
    VerifyMismatch(Step),
    ShortFile(Step),
    TftpProtocol(Step),
    /// An HTTP fetch failed (connect refused/timeout, reset, status, short body, …).
    Http(HttpFailure, Step),
    /// Something on this side (a socket that could not be opened, a file missing from the
    /// verify directory): the short name given by the driver.
    Local(String, Step),
}

impl BootFailure {
    /// A short stable name, the key of the report's failure table.
    pub(crate) fn cause(&self) -> String {
        match self {
            BootFailure::Dhcp(f) => format!("dhcp-{}", f.cause()),
            BootFailure::NoTftpServer => "no-tftp-server".into(),
            BootFailure::NotTftp(s) => format!("not-tftp-{}", s.key()),
            BootFailure::TftpTimeout(s) => format!("tftp-timeout-{}", s.key()),
            BootFailure::TftpError(c, s) => format!("tftp-error-{c}-{}", s.key()),
            BootFailure::VerifyMismatch(s) => format!("verify-mismatch-{}", s.key()),
            BootFailure::ShortFile(s) => format!("short-file-{}", s.key()),
            BootFailure::TftpProtocol(s) => format!("tftp-protocol-{}", s.key()),
            BootFailure::Http(f, s) => format!("http-{}-{}", f.cause(), s.key()),
            BootFailure::Local(what, s) => format!("{what}-{}", s.key()),
        }
    }
}

/// Where a produced datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// On the shared DHCP socket.
    Dhcp(dhcp_client::Dest),
    /// On this client's socket of the current TFTP transfer.
    Tftp(SocketAddrV4),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Dhcp,
    /// The next TFTP transfer waits for the driver's `start_transfer`.
    Awaiting,
    Transferring,
    /// An HTTP fetch runs.
    Http,
    Done,
    Failed,
    /// Stopped on purpose after a phase (`stall_after`): a machine that hangs there, silent.
    Stalled,
}

pub(crate) struct BootClient {
    plan: Arc<BootPlan>,
    arch: Arch,
    state: State,
    step: Step,
    dhcp: Option<DhcpClient>,
    tftp: Option<TftpClient>,
    /// The HTTP connection (kept from the kernel to the initrd).
    http: Option<HttpConn>,
    server: Option<Ipv4Addr>,
    boot_file: Option<String>,
    started: Instant,
    step_started: Instant,
    /// When the current transfer received its last block.
    step_done: Option<Instant>,
    durations: [Option<Duration>; 4],
    finished_at: Option<Instant>,
    failure: Option<BootFailure>,
    /// The phase after which this client stops on purpose.
    stall_after: Option<Step>,
    /// Payload bytes of finished transfers.
    bytes_done: u64,
    dhcp_retransmits: u64,
    tftp_retransmits_done: u64,
}

impl BootClient {
    /// A client that starts now: its first DISCOVER (or, with `skip_dhcp`, its first RRQ once
    /// the driver starts the transfer). `dhcp` is its DHCP identity (unused with `skip_dhcp`).
    pub(crate) fn new(plan: Arc<BootPlan>, arch: Arch, dhcp: ClientConfig, now: Instant) -> Self {
        let mut c = Self {
            arch,
            state: State::Dhcp,
            step: Step::Dhcp,
            dhcp: None,
            tftp: None,
            http: None,
            server: None,
            boot_file: None,
            started: now,
            step_started: now,
            step_done: None,
            durations: [None; 4],
            finished_at: None,
            failure: None,
            stall_after: None,
            bytes_done: 0,
            dhcp_retransmits: 0,
            tftp_retransmits_done: 0,
            plan,
        };
        if c.plan.skip_dhcp {
            c.server = c.plan.tftp_server;
            match (&c.plan.boot_file, c.plan.step_after(Step::BootFile)) {
                // No boot file: straight to the kernel or the initrd.
                (None, Some(step)) => c.next_transfer(step, None, now),
                _ => c.next_transfer(Step::BootFile, c.plan.boot_file.clone(), now),
            }
        } else {
            c.dhcp = Some(DhcpClient::new(dhcp, now));
        }
        c
    }

    pub(crate) fn arch(&self) -> Arch {
        self.arch
    }

    /// The phase the client is in (or ended in).
    pub(crate) fn step(&self) -> Step {
        self.step
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed | State::Stalled)
    }

    /// The client stops for good once `step` has ended well: it sends nothing more (not even a
    /// retransmission) and never asks for the next file, as a machine hung there would. A
    /// boot server sees it stuck after that phase. Call before the phase ends.
    pub(crate) fn stall_after(&mut self, step: Step) {
        self.stall_after = Some(step);
    }

    /// Stopped on purpose (see [`stall_after`](Self::stall_after)); neither done nor failed.
    pub(crate) fn is_stalled(&self) -> bool {
        self.state == State::Stalled
    }

    pub(crate) fn failure(&self) -> Option<&BootFailure> {
        self.failure.as_ref()
    }

    /// The TFTP server (known after DHCP).
    #[cfg(test)]
    pub(crate) fn tftp_server(&self) -> Option<Ipv4Addr> {
        self.server
    }

    /// The boot file name the client fetches (known after DHCP).
    pub(crate) fn boot_file(&self) -> Option<&str> {
        self.boot_file.as_deref()
    }

    /// How long each finished phase took (DHCP: first DISCOVER to the final ACK; TFTP: first
    /// RRQ to the last block).
    pub(crate) fn duration(&self, step: Step) -> Option<Duration> {
        self.durations[step.index()]
    }

    /// Start to the end of the last phase, once done.
    pub(crate) fn total(&self) -> Option<Duration> {
        self.finished_at.map(|t| t - self.started)
    }

    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.finished_at
    }

    /// The address its DHCP server leased it (full mode), once it has one.
    pub(crate) fn leased_address(&self) -> Option<std::net::Ipv4Addr> {
        self.dhcp.as_ref().and_then(|d| d.address())
    }

    /// Payload bytes received so far (all transfers, including the current one).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes_done
            + self.tftp.as_ref().map_or(0, TftpClient::received_bytes)
            + self.http.as_ref().map_or(0, HttpConn::received)
    }

    pub(crate) fn dhcp_retransmits(&self) -> u64 {
        self.dhcp_retransmits + self.dhcp.as_ref().map_or(0, |d| d.retransmits)
    }

    pub(crate) fn tftp_retransmits(&self) -> u64 {
        self.tftp_retransmits_done + self.tftp.as_ref().map_or(0, |t| t.retransmits)
    }

    /// DHCP NAKs the client obeyed, and the fresh DISCOVERs it sent after them.
    pub(crate) fn dhcp_naks_restarts(&self) -> (u64, u64) {
        self.dhcp.as_ref().map_or((0, 0), |d| (d.naks, d.restarts))
    }

    /// DHCP replies the client ignored or could not decode.
    pub(crate) fn dhcp_ignored_malformed(&self) -> (u64, u64) {
        self.dhcp
            .as_ref()
            .map_or((0, 0), |d| (d.ignored, d.malformed))
    }

    /// While a transfer runs, the driver keeps its socket open.
    pub(crate) fn in_transfer(&self) -> bool {
        self.state == State::Transferring
    }

    /// The phase and file name of the transfer waiting for [`start_transfer`](Self::start_transfer).
    pub(crate) fn awaiting_transfer(&self) -> Option<(Step, &str)> {
        if self.state != State::Awaiting {
            return None;
        }
        let name = match self.step {
            Step::BootFile => self.boot_file.as_deref(),
            Step::Kernel => self.plan.kernel.as_deref(),
            Step::Initrd => self.plan.initrd.as_deref(),
            Step::Dhcp => None,
        };
        name.map(|n| (self.step, n))
    }

    /// The awaited (or current) phase goes over HTTP: `start_transfer` needs no TFTP socket.
    pub(crate) fn uses_http(&self) -> bool {
        self.plan.uses_http(self.step)
    }

    /// The TFTP options this client asks in the current (or next) transfer.
    pub(crate) fn tftp_ask(&self) -> TftpAsk {
        let mut ask = firmware_options(self.arch, self.step, self.plan.windowsize);
        if let Some(r) = self.plan.tftp_retry {
            ask.retry = r;
        }
        ask
    }

    /// Starts the awaited transfer (its RRQ goes out at the next poll). `expected`: the file's
    /// contents, every block is compared with them.
    pub(crate) fn start_transfer(&mut self, now: Instant, expected: Option<Arc<[u8]>>) {
        let Some((_, name)) = self.awaiting_transfer() else {
            return;
        };
        if self.uses_http() {
            let name = name.to_owned();
            let Some(base) = self.plan.http.clone() else {
                return;
            };
            let timeout = self.plan.http_timeout;
            self.http
                .get_or_insert_with(|| HttpConn::new(base, timeout, now))
                .get(now, &name, expected);
            self.step_started = now;
            self.state = State::Http;
            return;
        }
        let name = name.as_bytes().to_vec();
        let ask = self.tftp_ask();
        let opts = ClientOptions {
            blksize: ask.blksize,
            windowsize: ask.windowsize,
            tsize: ask.tsize,
            retry: ask.retry,
        };
        self.tftp = Some(TftpClient::new(&name, expected, opts, now));
        self.step_started = now;
        self.step_done = None;
        self.state = State::Transferring;
    }

    /// The driver could not do its part of the current phase (`what`: a short cause such as
    /// `socket-EMFILE` or `verify-file-missing`).
    pub(crate) fn fail_local(&mut self, what: &str) {
        if !self.is_finished() {
            self.end_transfer();
            self.fail(BootFailure::Local(what.into(), self.step));
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Dhcp => self.dhcp.as_ref().and_then(DhcpClient::deadline),
            State::Transferring => self.tftp.as_ref().and_then(TftpClient::deadline),
            State::Http => self.http.as_ref().and_then(HttpConn::deadline),
            _ => None,
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Dhcp => {
                if let Some(d) = &mut self.dhcp {
                    d.handle_timeout(now);
                }
            }
            State::Transferring => {
                if let Some(t) = &mut self.tftp {
                    t.handle_timeout(now);
                }
            }
            State::Http => {
                if let Some(h) = &mut self.http {
                    h.handle_timeout(now);
                }
                self.after_http(now);
            }
            _ => {}
        }
    }

    /// A datagram on the shared DHCP socket(s) with this client's xid.
    pub(crate) fn handle_dhcp(&mut self, now: Instant, bytes: &[u8]) -> Verdict {
        match &mut self.dhcp {
            Some(d) => d.handle_datagram(now, bytes),
            None => Verdict::Ignored,
        }
    }

    /// A datagram on this client's TFTP socket, from `from`. Datagrams from anyone but the
    /// TFTP server are dropped (returns false).
    pub(crate) fn handle_tftp(&mut self, now: Instant, from: SocketAddrV4, bytes: &[u8]) -> bool {
        if self.state != State::Transferring || Some(*from.ip()) != self.server {
            return false;
        }
        let Some(t) = &mut self.tftp else {
            return false;
        };
        t.handle_datagram(now, from.port(), bytes);
        if t.is_done() && self.step_done.is_none() {
            self.step_done = Some(now);
        }
        true
    }

    /// Where to connect the HTTP socket (once per connection the fetch needs).
    pub(crate) fn poll_http_connect(&mut self) -> Option<SocketAddrV4> {
        self.http.as_mut().and_then(HttpConn::poll_connect)
    }

    /// The driver keeps the HTTP socket open while this is true and closes it when not.
    pub(crate) fn http_wants_socket(&self) -> bool {
        self.http.as_ref().is_some_and(HttpConn::wants_socket)
    }

    /// The HTTP socket's connect is in progress.
    pub(crate) fn http_connecting(&self) -> bool {
        self.http.as_ref().is_some_and(HttpConn::is_connecting)
    }

    /// Request bytes to write on the HTTP socket.
    pub(crate) fn http_output(&self) -> &[u8] {
        self.http.as_ref().map_or(&[], HttpConn::output)
    }

    pub(crate) fn http_wrote(&mut self, now: Instant, n: usize) {
        if let Some(h) = &mut self.http {
            h.wrote(now, n);
        }
    }

    pub(crate) fn handle_http_connected(&mut self, now: Instant) {
        if let Some(h) = &mut self.http {
            h.handle_connected(now);
        }
    }

    /// Bytes read from the HTTP socket.
    pub(crate) fn handle_http_data(&mut self, now: Instant, data: &[u8]) {
        if let Some(h) = &mut self.http {
            h.handle_data(now, data);
        }
        self.after_http(now);
    }

    /// The server closed the HTTP connection.
    pub(crate) fn handle_http_eof(&mut self, now: Instant) {
        if let Some(h) = &mut self.http {
            h.handle_eof(now);
        }
        self.after_http(now);
    }

    /// The HTTP socket failed.
    pub(crate) fn handle_http_error(&mut self, now: Instant, f: HttpFailure) {
        if let Some(h) = &mut self.http {
            h.handle_io_error(now, f);
        }
        self.after_http(now);
    }

    /// The next datagram to send, encoded into `buf`; moves to the next phase when the current
    /// one has finished and has nothing left to send.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        match self.state {
            State::Dhcp => {
                let d = self.dhcp.as_mut()?;
                if let Some(dest) = d.poll_transmit(now, buf) {
                    return Some(Transmit::Dhcp(dest));
                }
                if d.is_finished() {
                    self.after_dhcp(now);
                }
                None
            }
            State::Transferring => {
                let server = self.server?;
                let t = self.tftp.as_mut()?;
                buf.resize(1024, 0);
                if let Some((dest, len)) = t.poll_transmit(buf) {
                    buf.truncate(len);
                    let port = match dest {
                        tftp_client::Dest::Listener => self.plan.tftp_port,
                        tftp_client::Dest::Transfer(p) => p,
                    };
                    return Some(Transmit::Tftp(SocketAddrV4::new(server, port)));
                }
                buf.clear();
                if t.finished() {
                    self.after_transfer(now);
                }
                None
            }
            _ => None,
        }
    }

    fn after_dhcp(&mut self, now: Instant) {
        let Some(d) = &self.dhcp else { return };
        if let Some(f) = d.failure() {
            let f = BootFailure::Dhcp(f.clone());
            return self.fail(f);
        }
        let t = d.ts;
        let end = t.ack_got.unwrap_or(now);
        let begin = t.discover_sent.or(t.started).unwrap_or(self.started);
        self.durations[Step::Dhcp.index()] = Some(end.saturating_duration_since(begin));
        if self.stall_after == Some(Step::Dhcp) {
            self.state = State::Stalled;
            return;
        }
        self.server = self.plan.tftp_server.or(d.next_server());
        let offered = d
            .boot_file()
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let file = self.plan.boot_file.clone().or(offered);
        if self.server.is_none() {
            return self.fail(BootFailure::NoTftpServer);
        }
        self.next_transfer(Step::BootFile, file, end);
    }

    /// Sets up the transfer of `step` (`file` its name), or finishes if there is none.
    fn next_transfer(&mut self, step: Step, file: Option<String>, now: Instant) {
        self.step = step;
        self.step_started = now;
        match step {
            Step::BootFile => {
                let Some(file) = file else {
                    return self.fail(BootFailure::Dhcp(dhcp_client::Failure::NoBootFile));
                };
                if self.server.is_none() {
                    return self.fail(BootFailure::NoTftpServer);
                }
                let url = file.contains("://");
                self.boot_file = Some(file);
                if url {
                    return self.fail(BootFailure::NotTftp(step));
                }
            }
            Step::Kernel | Step::Initrd if !self.plan.uses_http(step) && self.server.is_none() => {
                return self.fail(BootFailure::NoTftpServer);
            }
            Step::Kernel | Step::Initrd | Step::Dhcp => {}
        }
        self.state = State::Awaiting;
    }

    fn after_transfer(&mut self, now: Instant) {
        let Some(t) = self.tftp.take() else { return };
        self.bytes_done += t.received_bytes();
        self.tftp_retransmits_done += t.retransmits;
        if let Some(f) = t.failure() {
            let step = self.step;
            let f = match f {
                tftp_client::Failure::ServerError(code, _) => BootFailure::TftpError(*code, step),
                tftp_client::Failure::TimedOut => BootFailure::TftpTimeout(step),
                tftp_client::Failure::Corrupt(_) => BootFailure::VerifyMismatch(step),
                tftp_client::Failure::ShortFile(_) => BootFailure::ShortFile(step),
                tftp_client::Failure::Protocol(_) => BootFailure::TftpProtocol(step),
            };
            return self.fail(f);
        }
        self.complete_step(self.step_done.unwrap_or(now));
    }

    /// The HTTP fetch's outcome, once it has one.
    fn after_http(&mut self, now: Instant) {
        if self.state != State::Http {
            return;
        }
        let Some((outcome, done_at, received)) =
            self.http.as_mut().and_then(HttpConn::take_outcome)
        else {
            return;
        };
        self.bytes_done += received;
        let step = self.step;
        match outcome {
            Ok(()) => self.complete_step(done_at.unwrap_or(now)),
            Err(HttpFailure::Mismatch(_)) => self.fail(BootFailure::VerifyMismatch(step)),
            Err(HttpFailure::Length { .. }) => self.fail(BootFailure::ShortFile(step)),
            Err(f) => self.fail(BootFailure::Http(f, step)),
        }
    }

    /// The current phase ended well at `end`: on to the next one, or done.
    fn complete_step(&mut self, end: Instant) {
        self.durations[self.step.index()] = Some(end.saturating_duration_since(self.step_started));
        if self.stall_after == Some(self.step) {
            self.state = State::Stalled;
            self.http = None;
            return;
        }
        match self.plan.step_after(self.step) {
            Some(step) => self.next_transfer(step, None, end),
            None => {
                self.state = State::Done;
                self.finished_at = Some(end);
                self.http = None;
            }
        }
    }

    fn end_transfer(&mut self) {
        if let Some(t) = self.tftp.take() {
            self.bytes_done += t.received_bytes();
            self.tftp_retransmits_done += t.retransmits;
        }
    }

    fn fail(&mut self, f: BootFailure) {
        if let Some(h) = self.http.take() {
            self.bytes_done += h.received();
        }
        self.failure = Some(f);
        self.state = State::Failed;
    }
}

#[cfg(test)]
mod tests;
