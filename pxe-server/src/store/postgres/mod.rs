//! The PostgreSQL store: a pool of connections (tokio-postgres through deadpool-postgres) on
//! the store's own tokio runtime, the schema ([`schema`]), the lease table with its
//! in-memory mirror ([`PgLeaseStore`]), next-boot actions and install tokens ([`hostdata`]),
//! and the heartbeat of this instance among its peers.
//!
//! The runtime is a current-thread one, so that opening the store (connecting, migrating,
//! loading the mirror) makes no thread: the daemon drops its privileges while it has one
//! thread. [`PgStore::start`] then gives the runtime its one driver thread, which runs the
//! connections, the heartbeat and the lease follower; the DHCP, HTTP and control threads wait
//! for their statements with `Handle::block_on`, each bounded by `connect_timeout_ms`.
//!
//! Health: the first failure of a connection (or a statement that times out) marks the store
//! down and empties the pool. While it is down, a lease write fails at once
//! ([`LeaseError::Unavailable`]), so the DHCP thread never waits on a dead database; the
//! heartbeat task tries again every second (at most) and marks it up when a statement
//! succeeds. The password is read from its file when the store opens, before the daemon
//! drops its privileges; a reconnection after the drop needs only `socket`/`connect`.

mod hostdata;
pub(crate) mod leases;
pub mod schema;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PgSettings, unix_socket_url, url_problem};
use crate::dhcp::leases::LeaseError;
use crate::metrics::{Histogram, LATENCY_BOUNDS, LogLimiter, counters};

pub use hostdata::{ActionRow, HostRows};
pub use leases::PgLeaseStore;
pub(crate) use leases::{bound_address, lease_counts};

/// What the heartbeat calls with the names of the live instances (sorted; this one among
/// them while the database answers; empty when it does not).
pub type LiveCallback = Arc<dyn Fn(&[String]) + Send + Sync>;

/// Why the PostgreSQL store did not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store.password_file {}: cannot read: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store.password_file {}: the first line is empty", path.display())]
    EmptyPassword { path: PathBuf },
    #[error("store.ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("PostgreSQL at {url}: TLS: {reason}")]
    Tls { url: String, reason: String },
    #[error("store.url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("PostgreSQL at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "database schema version {db} is newer than this binary's {binary}: upgrade pxe-server"
    )]
    Newer { db: i32, binary: i32 },
    #[error("PostgreSQL at {url}: {reason}")]
    Db { url: String, reason: String },
    #[error("the store's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

counters!(StoreMetrics, StoreSnapshot, "PostgreSQL store";
    /// Transactions committed (lease batches, next-boot changes, tokens).
    commits,
    /// Failures by cause: a lost or refused connection,
    errors_connection,
    /// a statement that did not answer within `connect_timeout_ms`,
    errors_timeout,
    /// an error the database reported (a constraint, a deadlock, ...),
    errors_query,
    /// a write refused at once because the database is down.
    errors_down,
    /// Lease writes the database refused because another client holds the address.
    lease_conflicts,
);

/// How a database operation failed.
#[derive(Debug, Clone)]
pub enum Fail {
    /// The connection is lost or cannot be made: the store goes down.
    Connection(String),
    /// No answer within the timeout: the store goes down.
    Timeout,
    /// The database refused the statement; the connection is fine.
    Query(String),
    /// Refused without trying: the store is down (the reason it went down).
    Down(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Connection(r) => write!(f, "connection: {r}"),
            Fail::Timeout => f.write_str("no answer within store.connect_timeout_ms"),
            Fail::Query(r) => write!(f, "{r}"),
            Fail::Down(r) => write!(f, "database down ({r})"),
        }
    }
}

impl From<Fail> for LeaseError {
    fn from(f: Fail) -> LeaseError {
        LeaseError::Unavailable {
            reason: f.to_string(),
        }
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        match e.code() {
            // Connection exceptions, operator intervention (shutdown), insufficient resources.
            Some(c) if !["08", "57", "53"].contains(&&c.code()[..2]) => Fail::Query(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.to_string()),
            ),
            _ => Fail::Connection(error_text(&e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Fail {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Timeout(_) => Fail::Timeout,
            e => Fail::Connection(e.to_string()),
        }
    }
}

/// An error with its sources (tokio-postgres puts the reason in the source).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// A peer as the heartbeat last read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub name: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: u64,
    /// The buckets it reported owning (`None` until its balancer reported).
    pub buckets: Option<u16>,
}

/// The store as `pxe-server status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    /// `redb` or `postgres`.
    pub backend: String,
    /// The redb file, or the URL (which carries no password).
    pub location: String,
    pub up: bool,
    /// `postgres URL (up)`, `postgres URL (down: reason)`, `redb FILE`.
    pub summary: String,
    /// Why it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This instance (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The buckets this instance owns of 256, as its balancer last reported
    /// ([`PgStore::set_owned_buckets`]); `None` before it reports (or on redb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u16>,
    /// The live instances, this one included (PostgreSQL).
    #[serde(default)]
    pub peers: Vec<PeerView>,
}

/// Buckets value meaning "not reported".
const NO_BUCKETS: u32 = u32::MAX;
/// How often a down store is tried again (at most).
const RETRY: Duration = Duration::from_secs(1);
/// How often the lease mirror reads the other instances' writes.
const FOLLOW: Duration = Duration::from_millis(250);

/// A shared PostgreSQL store.
pub struct PgStore {
    url: String,
    instance: String,
    heartbeat: Duration,
    failover: Duration,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
    pool: Pool,
    started: AtomicBool,
    stopping: Arc<tokio::sync::Notify>,
    driver: Mutex<Option<JoinHandle<()>>>,
    up: AtomicBool,
    down_reason: Mutex<String>,
    pub metrics: StoreMetrics,
    /// Seconds each commit took.
    pub commit_seconds: Histogram,
    /// Lease rows read by the follower, not yet in the mirror (with their `rev`).
    incoming: Mutex<Vec<leases::Fetched>>,
    /// The follower reads rows written by transactions from this id on.
    follow_from: AtomicI64,
    follow: AtomicBool,
    peers: Mutex<Vec<PeerView>>,
    own_buckets: AtomicU32,
    warn: LogLimiter,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Reads the password: the first line of `path`.
pub(crate) fn read_password(path: &Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(StoreError::EmptyPassword {
            path: path.to_path_buf(),
        });
    }
    Ok(line.to_owned())
}

/// The TLS connector that trusts only the CA certificates (PEM) in `path`: the server's
/// certificate must chain to one of them and name the URL's host (its DNS name or IP address).
/// Read once, when the store opens (before the daemon drops its privileges).
pub(crate) fn tls_connector(path: &Path) -> Result<MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| StoreError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    // ring, not aws-lc-rs (no C/cmake build, no OpenSSL): rustls 0.23.48 marks ring's
    // provider deprecated only because it lacks the post-quantum key exchange; its X25519 and
    // ECDHE groups and TLS 1.3/1.2 suites are what PostgreSQL offers today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Why a connection failed in its TLS handshake (the certificate did not verify, the server
/// does not offer TLS), `None` for any other failure.
fn tls_failure(e: &deadpool_postgres::PoolError) -> Option<String> {
    let deadpool_postgres::PoolError::Backend(e) = e else {
        return None;
    };
    if !e.to_string().starts_with("error performing TLS handshake") {
        return None;
    }
    Some(std::error::Error::source(e).map_or_else(|| e.to_string(), error_text))
}

/// Whether a plaintext connection to `url` crosses a network: a TCP host that is not loopback.
fn plaintext_over_network(url: &str) -> bool {
    let Ok(c) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    match c.get_hosts() {
        [Host::Tcp(name)] => {
            name != "localhost"
                && !name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        _ => false,
    }
}

/// The client configuration of `url` with the password and timeouts; a TCP host name is
/// resolved here, once (no resolver thread later, and none before the privileges drop).
fn client_config(
    url: &str,
    password: Option<&str>,
    timeout: Duration,
    instance: &str,
) -> Result<tokio_postgres::Config, StoreError> {
    let bad = |reason: String| StoreError::Url {
        url: url.to_owned(),
        reason,
    };
    if let Some(reason) = url_problem(url) {
        return Err(bad(reason));
    }
    let mut c: tokio_postgres::Config = url.parse().map_err(|e| bad(format!("{e}")))?;
    if let Some(p) = password {
        c.password(p);
    }
    c.connect_timeout(timeout);
    c.application_name(format!("pxe-server {instance}"));
    let hosts = c.get_hosts().to_vec();
    let port = c.get_ports().first().copied().unwrap_or(5432);
    if let [Host::Tcp(name)] = &hosts[..]
        && name.parse::<std::net::IpAddr>().is_err()
    {
        use std::net::ToSocketAddrs;
        let addr = (name.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| StoreError::Unreachable {
                url: url.to_owned(),
                reason: format!("cannot resolve {name}"),
            })?;
        c.hostaddr(addr.ip());
    }
    Ok(c)
}

impl PgStore {
    /// Connects to the database of `s` (reading the password file first), applies the
    /// schema migrations, and returns the store, not started ([`PgStore::start`]). Makes no
    /// thread. An unreachable database is an error: the start does not wait for it.
    pub fn open(s: &PgSettings) -> Result<Arc<PgStore>, StoreError> {
        let password = s.password_file.as_deref().map(read_password).transpose()?;
        if s.ca_file.is_none() && plaintext_over_network(&s.url) {
            tracing::warn!(
                url = %s.url,
                "the connection to PostgreSQL is not encrypted: leases and install tokens cross \
                 the network in clear text; set [store] ca_file (and sslmode=require in the URL)"
            );
        }
        Self::open_with(
            &s.url,
            password.as_deref(),
            s.ca_file.as_deref(),
            s.pool_size,
            &s.instance,
            (s.heartbeat, s.failover, s.connect_timeout),
        )
    }

    /// [`open`](Self::open) with the password given (the `store migrate` command); TLS
    /// verified against `ca_file` when given, required whatever the URL's `sslmode`.
    pub fn open_with(
        url: &str,
        password: Option<&str>,
        ca_file: Option<&Path>,
        pool_size: usize,
        instance: &str,
        (heartbeat, failover, timeout): (Duration, Duration, Duration),
    ) -> Result<Arc<PgStore>, StoreError> {
        let tls = ca_file.map(tls_connector).transpose()?;
        let mut config = client_config(url, password, timeout, instance)?;
        if tls.is_some() {
            if unix_socket_url(url) != Some(false) {
                return Err(StoreError::Url {
                    url: url.to_owned(),
                    reason: "TLS (store.ca_file) needs one TCP host; a Unix socket never uses it"
                        .into(),
                });
            }
            // No fallback to plaintext, whatever the URL says (`prefer` would allow one).
            config.ssl_mode(SslMode::Require);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, recycling()),
            None => Manager::from_config(config, NoTls, recycling()),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Url {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let store = Arc::new(PgStore {
            url: url.to_owned(),
            instance: instance.to_owned(),
            heartbeat,
            failover,
            timeout,
            rt,
            pool,
            started: AtomicBool::new(false),
            stopping: Arc::new(tokio::sync::Notify::new()),
            driver: Mutex::new(None),
            up: AtomicBool::new(true),
            down_reason: Mutex::new(String::new()),
            metrics: StoreMetrics::default(),
            commit_seconds: Histogram::new(LATENCY_BOUNDS),
            incoming: Mutex::new(Vec::new()),
            follow_from: AtomicI64::new(0),
            follow: AtomicBool::new(false),
            peers: Mutex::new(Vec::new()),
            own_buckets: AtomicU32::new(NO_BUCKETS),
            warn: LogLimiter::new(Duration::from_secs(10)),
        });
        let unreachable = |reason: String| StoreError::Unreachable {
            url: url.to_owned(),
            reason,
        };
        let mut client =
            store
                .block(async { store.pool.get().await })
                .map_err(|e| match tls_failure(&e) {
                    Some(reason) => StoreError::Tls {
                        url: url.to_owned(),
                        reason,
                    },
                    None => unreachable(Fail::from(e).to_string()),
                })?;
        store.block(schema::migrate(&mut client, &store.url))?;
        drop(client);
        Ok(store)
    }

    /// The URL (no password in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs `f` to completion on the store's runtime, within the statement timeout.
    pub(crate) fn run<T>(&self, f: impl Future<Output = Result<T, Fail>>) -> Result<T, Fail> {
        let r = self.block(self.bounded(f));
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// `f`, or [`Fail::Timeout`] after `store.connect_timeout_ms`.
    async fn bounded<T>(&self, f: impl Future<Output = Result<T, Fail>>) -> Result<T, Fail> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or(Err(Fail::Timeout))
    }

    /// Waits for `f` on the store's runtime (driven by its own thread once started).
    fn block<F: Future>(&self, f: F) -> F::Output {
        if self.started.load(Ordering::Acquire) {
            self.rt.handle().block_on(f)
        } else {
            self.rt.block_on(f)
        }
    }

    /// Whether the database answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Refuses at once when the store is down.
    pub(crate) fn check_up(&self) -> Result<(), Fail> {
        if self.is_up() {
            return Ok(());
        }
        crate::metrics::inc(&self.metrics.errors_down);
        Err(Fail::Down(self.reason()))
    }

    fn reason(&self) -> String {
        self.down_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a failure; a lost connection or a timeout marks the store down.
    pub(crate) fn failed(&self, f: &Fail) {
        use crate::metrics::inc;
        match f {
            Fail::Connection(_) => inc(&self.metrics.errors_connection),
            Fail::Timeout => inc(&self.metrics.errors_timeout),
            Fail::Query(_) => inc(&self.metrics.errors_query),
            Fail::Down(_) => {}
        }
        if matches!(f, Fail::Connection(_) | Fail::Timeout) {
            self.mark_down(&f.to_string());
        }
    }

    fn mark_down(&self, reason: &str) {
        *self.down_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_owned();
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(url = %self.url, %reason,
                "PostgreSQL store down: full-mode DHCP answers nothing that needs a commit \
                 until it is back (tried again every second)");
        }
        // Connections that were open may be dead too.
        self.pool.retain(|_, _| false);
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(url = %self.url, "PostgreSQL store back: serving again");
        }
    }

    /// A pooled connection, or `Down` at once while the store is down.
    pub(crate) async fn client(&self) -> Result<Object, Fail> {
        self.check_up()?;
        Ok(self.pool.get().await?)
    }

    /// Counts a commit that took `since.elapsed()`.
    pub(crate) fn committed(&self, since: Instant) {
        crate::metrics::inc(&self.metrics.commits);
        self.commit_seconds.observe(since.elapsed());
    }

    /// One warning per 10 s (a fallback to the last value seen, ...).
    pub(crate) fn warn(&self, what: &str, f: &Fail) {
        if let Some(held) = self.warn.allow() {
            tracing::warn!(url = %self.url, held_back = held, "PostgreSQL store: {what}: {f}");
        }
    }

    /// The buckets this instance owns (its balancer reports them; the heartbeat publishes
    /// them to the peers and `status` shows them).
    pub fn set_owned_buckets(&self, n: u16) {
        self.own_buckets.store(u32::from(n), Ordering::Relaxed);
    }

    fn owned_buckets(&self) -> Option<u16> {
        u16::try_from(self.own_buckets.load(Ordering::Relaxed)).ok()
    }

    /// What `status` shows.
    pub fn view(&self) -> StoreView {
        let up = self.is_up();
        let reason = (!up).then(|| self.reason());
        StoreView {
            backend: "postgres".into(),
            location: self.url.clone(),
            up,
            summary: match &reason {
                None => format!("postgres {} (up)", self.url),
                Some(r) => format!("postgres {} (down: {r})", self.url),
            },
            reason,
            instance: Some(self.instance.clone()),
            buckets: self.owned_buckets(),
            peers: self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Gives the runtime its driver thread and starts the heartbeat (calling `on_live`) and
    /// the lease follower. Call after the privileges are dropped.
    pub fn start(self: &Arc<Self>, on_live: LiveCallback) -> std::io::Result<()> {
        let me = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let stop = Arc::clone(&me.stopping);
                me.rt.block_on(async {
                    let beat = tokio::spawn(Arc::clone(&me).heartbeat_task(on_live));
                    let follow = tokio::spawn(Arc::clone(&me).follow_task());
                    stop.notified().await;
                    beat.abort();
                    follow.abort();
                });
            })?;
        self.started.store(true, Ordering::Release);
        *self.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Stops the driver thread (the daemon's shutdown).
    pub fn stop(&self) {
        self.stopping.notify_one();
        let handle = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::warn!("store thread panicked");
        }
    }

    /// Every `heartbeat` (every second at most while down): writes this instance's row, reads
    /// the live ones, calls `on_live` with their names.
    async fn heartbeat_task(self: Arc<Self>, on_live: LiveCallback) {
        let started = std::time::SystemTime::now();
        loop {
            match self.bounded(self.beat(started)).await {
                Ok(peers) => {
                    self.mark_up();
                    let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
                    *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = peers;
                    on_live(&names);
                }
                Err(f) => {
                    self.failed(&f);
                    if matches!(f, Fail::Query(_)) {
                        self.warn("heartbeat", &f);
                    }
                    self.peers.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    on_live(&[]);
                }
            }
            let pause = if self.is_up() {
                self.heartbeat
            } else {
                self.heartbeat.min(RETRY)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One heartbeat: this instance's row, then the live instances, sorted by name.
    async fn beat(&self, started: std::time::SystemTime) -> Result<Vec<PeerView>, Fail> {
        let client = self.pool.get().await?;
        let buckets = self.owned_buckets().map(i32::from);
        let write = client
            .prepare_cached(
                "INSERT INTO instances (name, heartbeat, started, buckets, version) \
                 VALUES ($1, now(), $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                 heartbeat = now(), started = EXCLUDED.started, buckets = EXCLUDED.buckets, \
                 version = EXCLUDED.version",
            )
            .await?;
        client
            .execute(
                &write,
                &[
                    &self.instance,
                    &started,
                    &buckets,
                    &env!("CARGO_PKG_VERSION"),
                ],
            )
            .await?;
        let failover_ms = i64::try_from(self.failover.as_millis()).unwrap_or(i64::MAX);
        let read = client
            .prepare_cached(
                "SELECT name, (extract(epoch FROM now() - heartbeat) * 1000)::bigint, buckets \
                 FROM instances WHERE heartbeat > now() - $1::float8 * interval '1 millisecond' \
                 ORDER BY name",
            )
            .await?;
        let rows = client.query(&read, &[&(failover_ms as f64)]).await?;
        Ok(rows
            .iter()
            .map(|r| PeerView {
                name: r.get(0),
                heartbeat_age_ms: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                buckets: r
                    .get::<_, Option<i32>>(2)
                    .and_then(|b| u16::try_from(b).ok()),
            })
            .collect())
    }

    /// Every [`FOLLOW`], while a lease mirror follows and the store is up: the lease rows
    /// written since the last read, queued for the mirror.
    async fn follow_task(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FOLLOW).await;
            if !self.follow.load(Ordering::Acquire) || !self.is_up() {
                continue;
            }
            let from = self.follow_from.load(Ordering::Acquire);
            match self.bounded(leases::changes_since(&self, from)).await {
                Ok((next, rows)) => {
                    if !rows.is_empty() {
                        self.incoming
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(rows);
                    }
                    self.follow_from.store(next, Ordering::Release);
                }
                Err(f) => self.failed(&f),
            }
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stopping.notify_one();
    }
}
