//! `pxe-server`: the command line. `serve` runs the TFTP engine and, when `dhcp.enabled` /
//! `http.enabled`, the DHCP / HTTP services in their own threads; `check` validates a config;
//! `status` and `host` talk to a running server. The work is done in [`pxe_server::daemon`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pxe_server::config::{Config, ConfigError};
use pxe_server::daemon::socket as control;
use pxe_server::daemon::{self, Overrides, client};
use pxe_server::engine::EngineChoice;
use pxe_server::journey::Phase;
use pxe_server::nextboot::HostAction;
use pxe_server::store::migrate;

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "pxe-server",
    version,
    about = "High-throughput PXE boot server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve TFTP (and DHCP / HTTP when enabled) until SIGINT or SIGTERM.
    Serve {
        /// The TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// TFTP engine (overrides `tftp.engine`).
        #[arg(long, value_enum)]
        engine: Option<EngineChoice>,
        /// Engine threads, 0 = one per CPU (overrides `tftp.threads`).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Log lines on stderr: `text` for people, `json` for log shippers (one object per
        /// line: timestamp, level, target, fields with the message).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Print a running server's status (counters, XDP placement, last reload) from its
    /// control socket.
    Status {
        /// The server's config file (for `[control] socket`).
        #[arg(long, value_name = "FILE", conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// The control socket (default: /run/pxe-server/control.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the JSON document as the server sent it.
        #[arg(long)]
        json: bool,
        /// Each host's boot journey instead: MAC, address, hostname, phase, time since its
        /// last progress, stuck, last error (stuck first, then the latest progress first).
        #[arg(long)]
        hosts: bool,
        /// With --hosts: only hosts whose current phase is P (discover, offer, ack,
        /// boot_file, script, kernel, initrd, template, callback).
        #[arg(long, value_name = "P", requires = "hosts")]
        phase: Option<Phase>,
        /// With --hosts: only stuck hosts.
        #[arg(long, requires = "hosts")]
        stuck: bool,
    },
    /// Show or set what hosts boot next: `reinstall` (the installer once, then the local
    /// disk), `local`, or `show`. SELECTOR: `all`, or comma-separated hostnames, MACs, UUIDs
    /// and globs over hostnames (`rack1-*`). Goes through the running server's control
    /// socket; with no server running, changes the database named in the config directly.
    Host {
        /// Which hosts.
        selector: String,
        /// reinstall | local | show
        action: HostAction,
        /// The server's config file ([[hosts]], [control] socket, dhcp.lease_db).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// The state store: `store migrate` copies leases, next-boot actions and install tokens
    /// between redb and PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Validate a configuration file and print the effective configuration.
    Check {
        /// The TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy a site's leases, next-boot actions and install tokens, in one transaction:
    /// `--from redb FILE --to postgres URL` or `--from postgres URL --to redb FILE`. Stop the
    /// servers first. A target that holds anything is refused unless --force.
    Migrate {
        /// `redb FILE` or `postgres URL`.
        #[arg(long, num_args = 2, value_names = ["KIND", "WHERE"], required = true)]
        from: Vec<String>,
        /// `redb FILE` or `postgres URL`.
        #[arg(long, num_args = 2, value_names = ["KIND", "WHERE"], required = true)]
        to: Vec<String>,
        /// The PostgreSQL password (first line of the file); never in the URL.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// The CA (PEM) the PostgreSQL server's certificate must chain to: TLS, verified.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Replace what the target holds.
        #[arg(long)]
        force: bool,
    },
}

/// How `serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.command {
        Command::Serve { log_format, .. } => log_format,
        _ => LogFormat::Text,
    };
    init_tracing(format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Store {
            command:
                StoreCommand::Migrate {
                    from,
                    to,
                    password_file,
                    ca_file,
                    force,
                },
        } => store_migrate(&from, &to, (password_file, ca_file), force),
        Command::Host {
            selector,
            action,
            config,
            json,
        } => host(&selector, action, &config, json),
        Command::Status {
            config,
            socket,
            json,
            hosts: true,
            phase,
            stuck,
        } => hosts(config.as_deref(), socket, json, phase, stuck),
        Command::Status {
            config,
            socket,
            json,
            ..
        } => status(config.as_deref(), socket, json),
        Command::Serve {
            config,
            engine,
            threads,
            log_format: _,
        } => serve(config, Overrides { engine, threads }),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line; the event's fields (with `message`) under "fields", the
        // current span's fields (none on the service threads) under "span".
        LogFormat::Json => fmt.json().with_span_list(false).init(),
    }
}

/// An unusable config file: its error (file, line, key) and exit status 2.
fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

/// `KIND WHERE` of `store migrate` as an endpoint.
fn endpoint(
    arg: &str,
    v: &[String],
    (password_file, ca_file): &(Option<PathBuf>, Option<PathBuf>),
) -> Result<migrate::Endpoint, String> {
    match v {
        [kind, at] if kind == "redb" => Ok(migrate::Endpoint::Redb(PathBuf::from(at))),
        [kind, url] if kind == "postgres" => {
            if let Some(reason) = pxe_server::config::url_problem(url) {
                return Err(format!("--{arg} postgres {url:?}: {reason}"));
            }
            if let Some((_, reason)) = pxe_server::config::tls_problem(url, ca_file.is_some()) {
                return Err(format!("--{arg} postgres {url:?}: {reason}"));
            }
            Ok(migrate::Endpoint::Postgres {
                url: url.clone(),
                password_file: password_file.clone(),
                ca_file: ca_file.clone(),
            })
        }
        _ => Err(format!("--{arg}: expected `redb FILE` or `postgres URL`")),
    }
}

fn store_migrate(
    from: &[String],
    to: &[String],
    files: (Option<PathBuf>, Option<PathBuf>),
    force: bool,
) -> ExitCode {
    let ends = endpoint("from", from, &files).and_then(|f| Ok((f, endpoint("to", to, &files)?)));
    let (from, to) = match ends {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pxe-server store migrate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if from == to {
        eprintln!("pxe-server store migrate: --from and --to are the same store");
        return ExitCode::from(EXIT_CONFIG);
    }
    match migrate::migrate(&from, &to, force) {
        Ok(counts) => {
            println!("copied {counts} from {from} to {to}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pxe-server store migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match daemon::load(path) {
        Ok((config, _)) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => config_error(&e),
    }
}

fn serve(config_path: PathBuf, overrides: Overrides) -> ExitCode {
    let (config, templates) = match daemon::load(&config_path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    match daemon::serve(config, templates, config_path, overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

fn status(config: Option<&Path>, socket: Option<PathBuf>, json: bool) -> ExitCode {
    let path = match client::status_socket(config, socket) {
        Ok(p) => p,
        Err(e) => return config_error(&e),
    };
    match client::status(&path) {
        Ok(doc) if json => println!("{doc}"),
        Ok(doc) => print!("{}", control::render_text(&doc)),
        Err(e) => {
            eprintln!("pxe-server status: {e} (is the server running?)");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn hosts(
    config: Option<&Path>,
    socket: Option<PathBuf>,
    json: bool,
    phase: Option<Phase>,
    stuck: bool,
) -> ExitCode {
    let path = match client::status_socket(config, socket) {
        Ok(p) => p,
        Err(e) => return config_error(&e),
    };
    match client::hosts(&path, phase, stuck) {
        Ok(doc) if doc.get("ok").and_then(|v| v.as_bool()) == Some(false) => {
            eprintln!(
                "pxe-server status --hosts: {}",
                doc["error"].as_str().unwrap_or("refused")
            );
            ExitCode::FAILURE
        }
        Ok(doc) if json => {
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Ok(doc) => {
            print!("{}", client::render_hosts_text(&doc));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pxe-server status --hosts: {e} (is the server running?)");
            ExitCode::FAILURE
        }
    }
}

fn host(selector: &str, action: HostAction, path: &Path, json: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let answer = match client::host(&config, action, selector) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pxe-server host: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string(&answer) {
            Ok(doc) => println!("{doc}"),
            Err(e) => eprintln!("pxe-server host: {e}"),
        }
    } else {
        print!("{}", client::render_host_text(&answer, action));
    }
    if answer.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "pxe-server host: {}",
            answer.error.as_deref().unwrap_or("refused")
        );
        ExitCode::FAILURE
    }
}
