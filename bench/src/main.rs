//! pxe-bench: load generator for PXE boot servers (ours or any other).

mod boot_client;
mod boot_html;
mod boot_storm;
mod dhcp_client;
mod dhcp_flood;
mod dhcp_storm;
mod http_client;
mod server_view;
mod storm;
mod tftp_client;
mod udp_limit;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pxe_proto::consts::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, TFTP_PORT};

#[derive(Parser)]
#[command(
    name = "pxe-bench",
    about = "Boot-storm load generator for PXE servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of its largest variant (`boot`'s flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// N TFTP clients fetch one file at the same moment; prints throughput and completion times.
    TftpStorm {
        /// Server address.
        #[arg(long)]
        server: IpAddr,
        #[arg(long, default_value_t = TFTP_PORT)]
        port: u16,
        /// File name to request.
        #[arg(long)]
        file: String,
        /// Local copy of the file: every block received is compared with it.
        #[arg(long)]
        verify: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// blksize to ask for (none: RFC 1350's 512).
        #[arg(long)]
        blksize: Option<u16>,
        /// windowsize to ask for (RFC 7440).
        #[arg(long)]
        windowsize: Option<u16>,
        /// Do not ask for tsize.
        #[arg(long)]
        no_tsize: bool,
        /// Client retransmit timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 8)]
        retries: u32,
        /// Abandon every client after this many seconds.
        #[arg(long, default_value_t = 300)]
        deadline_s: u64,
        /// First local address the clients bind to; client i uses this address + (i mod
        /// --source-count), so each simulated machine has its own address (they must be
        /// configured on the interface). Default: the wildcard address.
        #[arg(long)]
        source_base: Option<std::net::Ipv4Addr>,
        #[arg(long, default_value_t = 1)]
        source_count: u32,
        /// Runtime worker threads (0 = one per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// N simulated PXE ROMs do DHCP at once over one shared socket (port 68); prints latency
    /// percentiles, failures by cause and the simulator's own CPU time. Exit status 1 if any
    /// client failed.
    DhcpStorm {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[command(flatten)]
        dhcp: DhcpArgs,
        /// Where DISCOVERs and REQUESTs go (port 67).
        #[arg(long, default_value = "255.255.255.255")]
        server: std::net::Ipv4Addr,
        /// Unfinished clients are counted as failed after this many seconds.
        #[arg(long, default_value_t = 120)]
        deadline_s: u64,
        #[arg(long)]
        json: bool,
    },
    /// Whole-boot simulator: N machines do DHCP, then TFTP of the boot file (with their
    /// firmware's options), then the kernel and initrd as iPXE would (over TFTP, or over HTTP
    /// with --http-base). One thread, one epoll loop, one socket per TFTP transfer, one
    /// keep-alive TCP connection per client for HTTP. Exit status 1 if any client failed.
    Boot {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[command(flatten)]
        dhcp: DhcpArgs,
        /// Where DISCOVERs and REQUESTs go (port 67).
        #[arg(long, default_value = "255.255.255.255")]
        dhcp_server: std::net::Ipv4Addr,
        /// TFTP server (default: the DHCP answer's next-server, else its server identifier).
        #[arg(long)]
        tftp_server: Option<std::net::Ipv4Addr>,
        #[arg(long, default_value_t = TFTP_PORT)]
        tftp_port: u16,
        /// No DHCP: the boot file (--boot-file), kernel and initrd only. Without --boot-file the
        /// clients start with the kernel (or the initrd). --tftp-server is needed for every
        /// phase done over TFTP.
        #[arg(long)]
        skip_dhcp: bool,
        /// Boot file to fetch instead of the one the DHCP answer names.
        #[arg(long)]
        boot_file: Option<String>,
        /// Fetched after the boot file (blksize 1432 + tsize, as iPXE does).
        #[arg(long)]
        kernel: Option<String>,
        /// Fetched after the kernel (or the boot file).
        #[arg(long)]
        initrd: Option<String>,
        /// windowsize asked in every TFTP phase instead of the firmware's (0: none).
        #[arg(long)]
        windowsize: Option<u16>,
        /// Fetch the kernel and initrd over HTTP/1.1 instead of TFTP, as iPXE does after its
        /// script: `GET PREFIX/KERNEL` then `GET PREFIX/INITRD` on one keep-alive connection
        /// per client (a new one only if the server closes it), from the client's source
        /// address. URL: http://IPv4[:PORT][/PREFIX/].
        #[arg(long, value_name = "URL")]
        http_base: Option<String>,
        /// HTTP connect timeout, and the longest silence while a request is in flight, in
        /// milliseconds (then the client fails with http-connect-timeout / http-timeout).
        #[arg(long, default_value_t = 10_000)]
        http_timeout_ms: u64,
        /// Every fetched file is compared byte-exact with DIR/NAME; a mismatch is a failure.
        #[arg(long)]
        verify_dir: Option<PathBuf>,
        /// First TFTP source address: client i binds this + (i mod --source-count) (the
        /// addresses must be on the interface). Default: the wildcard address.
        #[arg(long)]
        source_base: Option<std::net::Ipv4Addr>,
        #[arg(long, default_value_t = 1)]
        source_count: u32,
        /// Each client's transfers (TFTP and HTTP) leave from the address its DHCP server
        /// leased it, as firmware's do, so the server can tie them to the client (boot
        /// journeys). Every address of the pool must be on the interface (as the test and
        /// compare.sh add them). Clients without a lease (--skip-dhcp, proxy mode) use
        /// --source-base, or the wildcard.
        #[arg(long)]
        source_from_lease: bool,
        /// A fixed TFTP retransmission timeout for every phase, in milliseconds, instead of the
        /// firmware's schedule (iPXE: 0.25 s doubling up to 10 s, giving up after 15.75 s of
        /// silence; a UEFI boot file: 4 s, 6 retries).
        #[arg(long)]
        tftp_timeout_ms: Option<u64>,
        /// With --tftp-timeout-ms: retransmissions without progress before a client gives up.
        #[arg(long, default_value_t = 6, requires = "tftp_timeout_ms")]
        tftp_retries: u32,
        /// Unfinished clients are counted as failed after this many seconds.
        #[arg(long, default_value_t = 300)]
        deadline_s: u64,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Also write a self-contained HTML report (storm curve, latency curves, table).
        #[arg(long)]
        html: Option<PathBuf>,
        /// No live progress display (it is also off when stderr is not a terminal).
        #[arg(long)]
        no_progress: bool,
        /// Receive TFTP one datagram at a time (no UDP GRO): a window sent with GSO then costs
        /// one receive per block, as without offloads.
        #[arg(long)]
        no_gro: bool,
        /// The first --stall-clients clients stop after this phase: they end it well (the
        /// last block ACKed) and never ask for the next file, like machines hung there. A
        /// server should report them stuck; the report counts them apart, not as failures.
        #[arg(long, value_enum, requires = "stall_clients")]
        stall_after: Option<StallArg>,
        /// How many clients stall (with --stall-after).
        #[arg(long, value_name = "N", requires = "stall_after")]
        stall_clients: Option<usize>,
        /// The server's Prometheus endpoint, scraped while the storm runs (before it, every
        /// --metrics-interval-ms, and after it); its CPU, memory, active sessions, refusals and
        /// bytes sent go beside the clients' view in the report. A failed scrape is counted,
        /// never fatal. URL: http://IPv4[:PORT]/PATH, e.g. http://10.0.0.1:9469/metrics.
        #[arg(long, value_name = "URL")]
        metrics_url: Option<String>,
        /// Time between scrapes, and the longest one scrape may take, in milliseconds.
        #[arg(long, default_value_t = 1000, requires = "metrics_url")]
        metrics_interval_ms: u64,
    },
    /// A flood of DHCPDISCOVERs (for the XDP filter's benchmark).
    DhcpFlood {
        /// non-pxe: dhclient-like DISCOVERs from --macs MACs; same-mac: one PXE ROM's DISCOVERs.
        #[arg(long, value_enum, default_value_t = FloodKindArg::NonPxe)]
        kind: FloodKindArg,
        #[arg(long, default_value_t = 65536)]
        macs: u32,
        /// The MAC of same-mac.
        #[arg(long, default_value = "02:42:ff:00:00:01")]
        mac: String,
        /// Packets per second over all threads; 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        #[arg(long)]
        interface: Option<String>,
        #[arg(long, default_value = "255.255.255.255")]
        dest: std::net::Ipv4Addr,
        #[arg(long, default_value_t = DHCP_SERVER_PORT)]
        dport: u16,
        /// Source port (0: ephemeral; use it when a dhcp-storm shares the host).
        #[arg(long, default_value_t = DHCP_CLIENT_PORT)]
        sport: u16,
        /// Sending threads, each with its own socket.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Datagrams per sendmmsg (1..=64).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// The raw UDP limit of a path (sendmmsg, optionally GSO, same datagram size as TFTP), to
    /// quote TFTP results as a percentage of it.
    UdpLimit(udp_limit::Args),
}

/// The DHCP flags of `boot` and `dhcp-storm`. The client count, the DHCP server and the
/// deadline stay with each command: their defaults (and the server's flag name) differ.
#[derive(clap::Args)]
struct DhcpArgs {
    /// full: DISCOVER/OFFER/REQUEST/ACK from one server. proxy: an address offer plus a
    /// ProxyDHCP offer, then (if the proxy offer names no boot file) a REQUEST to port 4011.
    #[arg(long, value_enum, default_value_t = ModeArg::Full)]
    mode: ModeArg,
    /// Architecture mix, weights: bios, uefi (x64), ipxe (BIOS + user class iPXE).
    #[arg(long, default_value = "bios=50,uefi=40,ipxe=10")]
    arch_mix: String,
    /// MAC of client 0; client i has this + i.
    #[arg(long, default_value = "02:42:00:00:00:00")]
    mac_base: String,
    /// storm (all at t=0), ramp:N/s (arrival rate grows by N/s each second), rate:N/s.
    #[arg(long, default_value = "storm")]
    arrival: String,
    /// Interface to send and receive on (SO_BINDTODEVICE, every socket).
    #[arg(long)]
    interface: Option<String>,
    /// Multiplies the PXE DHCP retransmission timeouts (4, 8, 16, 32 s).
    #[arg(long, default_value_t = 1.0)]
    timeout_scale: f64,
    /// Seed of the transaction ids (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Local port of the shared DHCP client socket.
    #[arg(long, default_value_t = DHCP_CLIENT_PORT)]
    client_port: u16,
}

impl DhcpArgs {
    /// The run's DHCP half, with the command's own client count, DHCP server and deadline.
    fn params(
        self,
        clients: usize,
        server: std::net::Ipv4Addr,
        deadline_s: u64,
    ) -> anyhow::Result<dhcp_storm::DhcpParams> {
        Ok(dhcp_storm::DhcpParams {
            clients,
            mode: self.mode.into(),
            arch_mix: dhcp_storm::parse_arch_mix(&self.arch_mix)?,
            mac_base: dhcp_storm::parse_mac(&self.mac_base)?,
            arrival: dhcp_storm::Arrival::parse(&self.arrival)?,
            interface: self.interface,
            server,
            timeout_scale: self.timeout_scale,
            deadline: Duration::from_secs(deadline_s),
            seed: seed_or_clock(self.seed),
            client_port: self.client_port,
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Full,
    Proxy,
}

/// `--source-base B --source-count N`: the addresses B, B+1, ... B+N-1 (N at least 1); none
/// without a base (the wildcard address).
fn source_addrs(base: Option<std::net::Ipv4Addr>, count: u32) -> Vec<std::net::Ipv4Addr> {
    match base {
        Some(base) => (0..count.max(1))
            .map(|i| std::net::Ipv4Addr::from(u32::from(base).wrapping_add(i)))
            .collect(),
        None => Vec::new(),
    }
}

impl From<ModeArg> for dhcp_client::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Full => dhcp_client::Mode::Full,
            ModeArg::Proxy => dhcp_client::Mode::Proxy,
        }
    }
}

/// The phases a client can stall after (`--stall-after`).
#[derive(Clone, Copy, clap::ValueEnum)]
enum StallArg {
    Dhcp,
    BootFile,
    Kernel,
}

impl StallArg {
    fn step(self) -> boot_client::Step {
        match self {
            StallArg::Dhcp => boot_client::Step::Dhcp,
            StallArg::BootFile => boot_client::Step::BootFile,
            StallArg::Kernel => boot_client::Step::Kernel,
        }
    }
}

/// `--stall-after PHASE --stall-clients N`, checked against the run: the phase must be one
/// the plan runs and not its last one (a client stopping there would just be done).
fn stall(
    after: Option<StallArg>,
    clients: Option<usize>,
    total: usize,
    plan: &boot_client::BootPlan,
) -> anyhow::Result<Option<(boot_client::Step, usize)>> {
    let (Some(after), Some(n)) = (after, clients) else {
        return Ok(None);
    };
    let step = after.step();
    if n > total {
        anyhow::bail!("--stall-clients {n}: more than the {total} clients (--clients)");
    }
    let runs = match step {
        boot_client::Step::Dhcp => !plan.skip_dhcp,
        boot_client::Step::BootFile => !plan.skip_dhcp || plan.boot_file.is_some(),
        boot_client::Step::Kernel => plan.kernel.is_some(),
        boot_client::Step::Initrd => false,
    };
    if !runs {
        anyhow::bail!("--stall-after {}: this run has no such phase", step.key());
    }
    if plan.step_after(step).is_none() {
        anyhow::bail!(
            "--stall-after {}: the last phase of this run (a client stopping there is done)",
            step.key()
        );
    }
    Ok(Some((step, n)))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FloodKindArg {
    NonPxe,
    SameMac,
}

/// Prints a report (JSON with `--json`, else its text form); exits with status 1 when `failed`.
fn print_report<R: serde::Serialize + std::fmt::Display>(
    report: &R,
    json: bool,
    failed: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn seed_or_clock(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Boot {
            clients,
            dhcp,
            dhcp_server,
            tftp_server,
            tftp_port,
            skip_dhcp,
            boot_file,
            kernel,
            initrd,
            windowsize,
            http_base,
            http_timeout_ms,
            verify_dir,
            source_base,
            source_count,
            source_from_lease,
            tftp_timeout_ms,
            tftp_retries,
            deadline_s,
            json,
            html,
            no_progress,
            no_gro,
            stall_after,
            stall_clients,
            metrics_url,
            metrics_interval_ms,
        } => {
            let http = match &http_base {
                Some(url) => Some(Arc::new(
                    http_client::HttpBase::parse(url)
                        .map_err(|e| anyhow::anyhow!("--http-base {e}"))?,
                )),
                None => None,
            };
            if http.is_some() && kernel.is_none() && initrd.is_none() {
                anyhow::bail!("--http-base needs --kernel and/or --initrd (the files it serves)");
            }
            if skip_dhcp {
                if boot_file.is_none() && kernel.is_none() && initrd.is_none() {
                    anyhow::bail!("--skip-dhcp needs --boot-file, --kernel or --initrd");
                }
                let tftp_phase = boot_file.is_some()
                    || (http.is_none() && (kernel.is_some() || initrd.is_some()));
                if tftp_phase && tftp_server.is_none() {
                    anyhow::bail!("--skip-dhcp with a TFTP phase needs --tftp-server");
                }
            }
            if let Some(dir) = &verify_dir
                && !dir.is_dir()
            {
                anyhow::bail!("--verify-dir {}: not a directory", dir.display());
            }
            let sources = source_addrs(source_base, source_count);
            let plan = boot_client::BootPlan {
                skip_dhcp,
                boot_file,
                kernel,
                initrd,
                tftp_server,
                tftp_port,
                windowsize,
                tftp_retry: tftp_timeout_ms.map(|ms| tftp_client::Retry::Fixed {
                    timeout: Duration::from_millis(ms.max(1)),
                    retries: tftp_retries,
                }),
                http,
                http_timeout: Duration::from_millis(http_timeout_ms.max(1)),
            };
            let params = boot_storm::BootParams {
                dhcp: dhcp.params(clients, dhcp_server, deadline_s)?,
                stall: stall(stall_after, stall_clients, clients, &plan)?,
                plan,
                verify_dir,
                sources,
                source_from_lease,
                progress: !no_progress,
                gro: !no_gro,
                metrics: match &metrics_url {
                    Some(url) => Some((
                        server_view::Target::parse(url)
                            .map_err(|e| anyhow::anyhow!("--metrics-url {e}"))?,
                        Duration::from_millis(metrics_interval_ms.max(10)),
                    )),
                    None => None,
                },
            };
            let report = boot_storm::run(&params)?;
            if let Some(path) = &html {
                let command = std::env::args().collect::<Vec<_>>().join(" ");
                std::fs::write(path, boot_html::render(&report, &command))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print_report(&report, json, report.failed > 0)?;
        }
        Cmd::TftpStorm {
            server,
            port,
            file,
            verify,
            clients,
            blksize,
            windowsize,
            no_tsize,
            timeout_ms,
            retries,
            deadline_s,
            source_base,
            source_count,
            threads,
            json,
        } => {
            let sources: Vec<IpAddr> = source_addrs(source_base, source_count)
                .into_iter()
                .map(IpAddr::from)
                .collect();
            let expected = match verify {
                Some(path) => Some(Arc::<[u8]>::from(
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )),
                None => None,
            };
            let params = storm::StormParams {
                server,
                port,
                file,
                expected,
                clients,
                options: tftp_client::ClientOptions {
                    blksize,
                    windowsize,
                    tsize: !no_tsize,
                    retry: tftp_client::Retry::Fixed {
                        timeout: Duration::from_millis(timeout_ms),
                        retries,
                    },
                },
                deadline: Duration::from_secs(deadline_s),
                sources,
            };
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if threads > 0 {
                rt.worker_threads(threads);
            }
            let report = rt.enable_all().build()?.block_on(storm::run(params))?;
            print_report(&report, json, report.failed > 0)?;
        }
        Cmd::DhcpStorm {
            clients,
            dhcp,
            server,
            deadline_s,
            json,
        } => {
            let report = dhcp_storm::run(&dhcp.params(clients, server, deadline_s)?)?;
            print_report(&report, json, report.failed > 0)?;
        }
        Cmd::DhcpFlood {
            kind,
            macs,
            mac,
            rate,
            duration_s,
            interface,
            dest,
            dport,
            sport,
            threads,
            batch,
            json,
        } => {
            let params = dhcp_flood::FloodParams {
                kind: match kind {
                    FloodKindArg::NonPxe => dhcp_flood::FloodKind::NonPxe,
                    FloodKindArg::SameMac => dhcp_flood::FloodKind::SameMac,
                },
                macs,
                rate,
                duration: Duration::from_secs_f64(duration_s.max(0.0)),
                interface,
                dest,
                dport,
                sport,
                threads,
                batch,
                mac: dhcp_storm::parse_mac(&mac)?,
            };
            let report = dhcp_flood::run(&params)?;
            print_report(&report, json, false)?;
        }
        Cmd::UdpLimit(args) => udp_limit::main(&args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
