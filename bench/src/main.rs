//! pxe-bench: load generator for PXE boot servers (ours or any other).

mod dhcp_client;
mod storm;
mod tftp_client;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pxe-bench",
    about = "Boot-storm load generator for PXE servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N TFTP clients fetch one file at the same moment; prints throughput and completion times.
    TftpStorm {
        /// Server address.
        #[arg(long)]
        server: IpAddr,
        #[arg(long, default_value_t = 69)]
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
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
            let sources: Vec<IpAddr> = match source_base {
                Some(base) => (0..source_count.max(1))
                    .map(|i| IpAddr::from(std::net::Ipv4Addr::from(u32::from(base) + i)))
                    .collect(),
                None => Vec::new(),
            };
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
                    timeout: Duration::from_millis(timeout_ms),
                    max_retries: retries,
                },
                deadline: Duration::from_secs(deadline_s),
                sources,
            };
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if threads > 0 {
                rt.worker_threads(threads);
            }
            let report = rt.enable_all().build()?.block_on(storm::run(params))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            if report.failed > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
