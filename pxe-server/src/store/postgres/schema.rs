//! The schema, as versioned migrations embedded in the binary. At start each instance takes
//! a transaction-scoped advisory lock (so that instances starting at once migrate one after
//! the other), reads the version from `pxe_schema_version`, applies the migrations it lacks
//! and records them, all in one transaction. A database whose version is newer than the
//! binary's is refused: an older binary must not write into a schema it does not know.

use deadpool_postgres::Object;

use super::{Fail, StoreError};

/// The advisory lock key of the migrations (`pxe-serv` in ASCII).
const LOCK: i64 = 0x7078_652d_7365_7276;

/// Migration N (1-based) brings the schema from version N-1 to N. Never edit one that was
/// released: add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: leases, next-boot actions, install tokens, instances.
    "CREATE TABLE leases (
        ip inet PRIMARY KEY,          -- one holder per address: the double-binding guard
        mac bytea NOT NULL,
        uuid bytea,
        expires bigint NOT NULL,      -- seconds since the Unix epoch
        state smallint NOT NULL,      -- 1 offered, 2 bound, 3 declined, 4 released
        relay inet,                   -- the link: a relay (giaddr) ...
        iface text,                   -- ... or the interface it came in on
        instance text NOT NULL,       -- who wrote it last
        rev bigint NOT NULL,          -- per-row version, from lease_rev, in commit order per row
        xid bigint NOT NULL           -- the writing transaction (followers read by it)
    );
    CREATE SEQUENCE lease_rev;
    CREATE INDEX leases_xid ON leases (xid);
    CREATE INDEX leases_mac ON leases (mac);
    CREATE TABLE next_boot (
        host text PRIMARY KEY,
        action smallint NOT NULL,     -- 1 install, 2 local
        changed bigint NOT NULL
    );
    CREATE TABLE install_tokens (
        host text PRIMARY KEY,
        token bytea NOT NULL
    );
    CREATE TABLE instances (
        name text PRIMARY KEY,
        heartbeat timestamptz NOT NULL,  -- the database's clock
        started timestamptz NOT NULL,
        buckets integer,
        version text NOT NULL
    );",
];

/// The schema version this binary writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The version `client`'s database is at (0: empty), under no lock.
pub async fn version(client: &Object) -> Result<i32, Fail> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pxe_schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one("SELECT max(version) FROM pxe_schema_version", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Brings the database to [`VERSION`] (see the module doc).
pub async fn migrate(client: &mut Object, url: &str) -> Result<(), StoreError> {
    let db = |f: Fail| StoreError::Db {
        url: url.to_owned(),
        reason: format!("migrating the schema: {f}"),
    };
    let tx = client.transaction().await.map_err(|e| db(e.into()))?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({LOCK});
         CREATE TABLE IF NOT EXISTS pxe_schema_version (
             version integer PRIMARY KEY,
             applied timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .await
    .map_err(|e| db(e.into()))?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pxe_schema_version",
            &[],
        )
        .await
        .map_err(|e| db(e.into()))?
        .get(0);
    if current > VERSION {
        return Err(StoreError::Newer {
            db: current,
            binary: VERSION,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let v = i as i32 + 1;
        tx.batch_execute(m).await.map_err(|e| db(e.into()))?;
        tx.execute(
            "INSERT INTO pxe_schema_version (version) VALUES ($1)",
            &[&v],
        )
        .await
        .map_err(|e| db(e.into()))?;
        tracing::info!(url, version = v, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(|e| db(e.into()))
}
