//! `pxe-server store migrate`: copies a site's leases, next-boot actions and install tokens
//! from one store to another (redb to PostgreSQL, or back), written in one transaction. A
//! target that holds anything is refused unless `force` (which replaces what it holds). The
//! source is read as it is: stop the servers that write it first (a running server holds the
//! redb file's lock anyway).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::postgres::{Fail, PgStore, StoreError, leases as pg_leases};
use crate::dhcp::leases::{self, Lease, RedbLeaseStore};
use crate::nextboot::{self, HostData, NextBootStore};

/// One side of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Redb(PathBuf),
    Postgres {
        url: String,
        password_file: Option<PathBuf>,
        /// TLS verified against this CA (`--ca-file`).
        ca_file: Option<PathBuf>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Redb(p) => write!(f, "redb {}", p.display()),
            Endpoint::Postgres { url, .. } => write!(f, "postgres {url}"),
        }
    }
}

/// What was copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub leases: usize,
    pub next_boot: usize,
    pub tokens: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} leases, {} next-boot records, {} install tokens",
            self.leases, self.next_boot, self.tokens
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{endpoint}: {reason}")]
    Io { endpoint: String, reason: String },
    #[error("{endpoint} is not empty ({counts}): pass --force to replace what it holds")]
    NotEmpty { endpoint: String, counts: Counts },
}

/// Everything a store holds.
struct Snapshot {
    leases: Vec<Lease>,
    hosts: HostData,
}

impl Snapshot {
    fn counts(&self) -> Counts {
        Counts {
            leases: self.leases.len(),
            next_boot: self.hosts.records.len(),
            tokens: self.hosts.tokens.len(),
        }
    }
}

/// The instance name the migration writes with.
const INSTANCE: &str = "store-migrate";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a PostgreSQL endpoint (called only on one).
fn open_pg(end: &Endpoint) -> Result<Arc<PgStore>, MigrateError> {
    let Endpoint::Postgres {
        url,
        password_file,
        ca_file,
    } = end
    else {
        unreachable!("open_pg on {end}");
    };
    let password = password_file
        .as_deref()
        .map(super::postgres::read_password)
        .transpose()?;
    Ok(PgStore::open_with(
        url,
        password.as_deref(),
        ca_file.as_deref(),
        1,
        INSTANCE,
        (TIMEOUT, TIMEOUT, TIMEOUT),
    )?)
}

fn read(from: &Endpoint) -> Result<Snapshot, MigrateError> {
    let io = |reason: String| MigrateError::Io {
        endpoint: from.to_string(),
        reason,
    };
    match from {
        Endpoint::Redb(path) => {
            if !path.exists() {
                return Err(io("no such file".into()));
            }
            let db = leases::open_database(path).map_err(|e| io(e.to_string()))?;
            let leases = leases::read_all(Arc::clone(&db)).map_err(|e| io(e.to_string()))?;
            let hosts = NextBootStore::open(db)
                .map_err(|e| io(e.to_string()))?
                .export();
            Ok(Snapshot { leases, hosts })
        }
        Endpoint::Postgres { .. } => {
            let pg = open_pg(from)?;
            let leases = read_pg_leases(&pg).map_err(|e| io(e.to_string()))?;
            let hosts = NextBootStore::open_postgres(pg)
                .map_err(|e| io(e.to_string()))?
                .export();
            Ok(Snapshot { leases, hosts })
        }
    }
}

/// Every lease row of `pg`.
fn read_pg_leases(pg: &PgStore) -> Result<Vec<Lease>, Fail> {
    pg.run(async {
        let c = pg.client().await?;
        pg_leases::all(&**c).await
    })
}

fn write(to: &Endpoint, snap: &Snapshot, force: bool) -> Result<(), MigrateError> {
    let endpoint = to.to_string();
    let io = |reason: String| MigrateError::Io {
        endpoint: endpoint.clone(),
        reason,
    };
    match to {
        Endpoint::Redb(path) => {
            let db = leases::open_database(path).map_err(|e| io(e.to_string()))?;
            let held = Snapshot {
                leases: RedbLeaseStore::open_shared(Arc::clone(&db))
                    .map_err(|e| io(e.to_string()))?
                    .memory()
                    .iter()
                    .copied()
                    .collect(),
                hosts: NextBootStore::open(Arc::clone(&db))
                    .map_err(|e| io(e.to_string()))?
                    .export(),
            };
            refuse_unless_empty(to, held.counts(), force)?;
            let txn = db.begin_write().map_err(|e| io(e.to_string()))?;
            leases::write_all(&txn, &snap.leases, force).map_err(|e| io(e.to_string()))?;
            nextboot::write_redb(&txn, &snap.hosts, force).map_err(|e| io(e.to_string()))?;
            txn.commit().map_err(|e| io(e.to_string()))
        }
        Endpoint::Postgres { .. } => {
            let pg = open_pg(to)?;
            let held: Counts = pg
                .run(async {
                    let c = pg.client().await?;
                    let n = |t: &'static str| {
                        let c = &c;
                        async move {
                            let r = c
                                .query_one(&format!("SELECT count(*) FROM {t}"), &[])
                                .await?;
                            Ok::<usize, Fail>(usize::try_from(r.get::<_, i64>(0)).unwrap_or(0))
                        }
                    };
                    Ok(Counts {
                        leases: n("leases").await?,
                        next_boot: n("next_boot").await?,
                        tokens: n("install_tokens").await?,
                    })
                })
                .map_err(|e| io(e.to_string()))?;
            refuse_unless_empty(to, held, force)?;
            pg.run(async {
                let mut c = pg.client().await?;
                let tx = c.transaction().await?;
                if force {
                    tx.batch_execute(
                        "DELETE FROM leases; DELETE FROM next_boot; DELETE FROM install_tokens",
                    )
                    .await?;
                }
                for l in &snap.leases {
                    pg_leases::insert(&*tx, l, INSTANCE).await?;
                }
                for (k, r) in &snap.hosts.records {
                    tx.execute(
                        "INSERT INTO next_boot (host, action, changed) VALUES ($1, $2, $3)",
                        &[
                            k,
                            &i16::from(nextboot::code(r.action)),
                            &i64::try_from(r.changed_unix).unwrap_or(i64::MAX),
                        ],
                    )
                    .await?;
                }
                for (k, t) in &snap.hosts.tokens {
                    tx.execute(
                        "INSERT INTO install_tokens (host, token) VALUES ($1, $2)",
                        &[k, &&t.bytes()[..]],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
            .map_err(|e| io(e.to_string()))
        }
    }
}

fn refuse_unless_empty(to: &Endpoint, held: Counts, force: bool) -> Result<(), MigrateError> {
    if force || held == Counts::default() {
        return Ok(());
    }
    Err(MigrateError::NotEmpty {
        endpoint: to.to_string(),
        counts: held,
    })
}

/// Copies everything `from` holds into `to` (see the module doc); returns what was copied.
pub fn migrate(from: &Endpoint, to: &Endpoint, force: bool) -> Result<Counts, MigrateError> {
    let snap = read(from)?;
    write(to, &snap, force)?;
    Ok(snap.counts())
}
