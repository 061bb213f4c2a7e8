//! The store of leases, next-boot actions and install tokens: the embedded redb file (one
//! server, nothing to set up) or PostgreSQL ([`postgres`], several servers sharing one
//! database). [`Store`] is the handle the daemon's threads share; the DHCP thread gets its
//! own lease table from it ([`Store::lease_store`]), the install routes and the next-boot
//! commands a [`NextBootStore`].

pub mod migrate;
pub mod postgres;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::StoreSettings;
use crate::dhcp::leases::{self, LeaseCounts, LeaseError, RedbLeaseStore};
use crate::dhcp::server::ServiceStore;
use crate::nextboot::NextBootStore;
use pxe_proto::MacAddr;

pub use postgres::{LiveCallback, PeerView, PgLeaseStore, PgStore, StoreError, StoreView};

/// Why the store did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("lease database {}: {source}", path.display())]
    Redb {
        path: PathBuf,
        #[source]
        source: LeaseError,
    },
    #[error(transparent)]
    Postgres(#[from] StoreError),
}

/// The store the daemon runs with.
#[derive(Debug, Clone)]
pub enum Store {
    Redb {
        db: Arc<redb::Database>,
        path: PathBuf,
    },
    Postgres(Arc<PgStore>),
}

impl Store {
    /// Opens the store `settings` name: the redb file (created if missing), or the
    /// PostgreSQL database (reachable, its schema migrated; see [`PgStore::open`]).
    pub fn open(settings: &StoreSettings) -> Result<Store, OpenError> {
        match settings {
            StoreSettings::Redb { path } => Ok(Store::Redb {
                db: leases::open_database(path).map_err(|source| OpenError::Redb {
                    path: path.clone(),
                    source,
                })?,
                path: path.clone(),
            }),
            StoreSettings::Postgres(s) => Ok(Store::Postgres(PgStore::open(s)?)),
        }
    }

    /// The lease table of the full-mode DHCP service.
    pub fn lease_store(&self) -> Result<ServiceStore, LeaseError> {
        Ok(match self {
            Store::Redb { db, .. } => {
                ServiceStore::Redb(Box::new(RedbLeaseStore::open_shared(Arc::clone(db))?))
            }
            Store::Postgres(pg) => {
                ServiceStore::Postgres(Box::new(PgLeaseStore::open(Arc::clone(pg))?))
            }
        })
    }

    /// The next-boot actions and install tokens.
    pub fn next_boot(&self) -> Result<NextBootStore, LeaseError> {
        match self {
            Store::Redb { db, .. } => NextBootStore::open(Arc::clone(db)),
            Store::Postgres(pg) => NextBootStore::open_postgres(Arc::clone(pg)),
        }
    }

    /// The address bound to `mac` and not expired at `now_unix` (the install routes).
    pub fn bound_address(&self, mac: &MacAddr, now_unix: u64) -> Option<Ipv4Addr> {
        match self {
            Store::Redb { db, .. } => leases::bound_address(db, mac, now_unix),
            Store::Postgres(pg) => postgres::bound_address(pg, mac, now_unix),
        }
    }

    /// Leases holding their address at `now_unix`, by state (`/metrics`).
    pub fn lease_counts(&self, now_unix: u64) -> Result<LeaseCounts, LeaseError> {
        match self {
            Store::Redb { db, .. } => leases::lease_counts(db, now_unix),
            Store::Postgres(pg) => postgres::lease_counts(pg, now_unix),
        }
    }

    /// Starts the PostgreSQL store's thread, heartbeat and lease follower (after the
    /// privileges are dropped); nothing to start for redb.
    pub fn start(&self, on_live: LiveCallback) -> std::io::Result<()> {
        match self {
            Store::Redb { .. } => Ok(()),
            Store::Postgres(pg) => pg.start(on_live),
        }
    }

    /// Stops what [`Store::start`] started.
    pub fn stop(&self) {
        if let Store::Postgres(pg) = self {
            pg.stop();
        }
    }

    /// What `pxe-server status` shows.
    pub fn view(&self) -> StoreView {
        match self {
            Store::Redb { path, .. } => StoreView {
                backend: "redb".into(),
                location: path.display().to_string(),
                up: true,
                summary: format!("redb {}", path.display()),
                reason: None,
                instance: None,
                buckets: None,
                peers: Vec::new(),
            },
            Store::Postgres(pg) => pg.view(),
        }
    }

    /// The PostgreSQL store, if that is the backend.
    pub fn postgres(&self) -> Option<&Arc<PgStore>> {
        match self {
            Store::Postgres(pg) => Some(pg),
            Store::Redb { .. } => None,
        }
    }
}
