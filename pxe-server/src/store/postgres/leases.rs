//! Leases in PostgreSQL, mirrored in memory for reads.
//!
//! Every `put` is one conditional upsert: the row for the address is written only if it is
//! this client's, or its holder's lease is no longer active by the database's clock (released
//! or expired). The address is the table's primary key, so two instances writing the same
//! address are serialized by the database, and the second one's condition sees the first
//! one's holder: it writes nothing and gets [`LeaseError::Conflict`], after which the mirror
//! shows that holder. No address can have two holders, whatever the timing.
//!
//! A batch is one transaction: an offer-only batch commits with `synchronous_commit = off`
//! (an offer lost in a crash is harmless), a batch with a bind, decline or release commits
//! durably. If the connection fails, the batch is dropped, the mirror changes it made are
//! undone, and the error is [`LeaseError::Unavailable`]; while the store is down, a write
//! fails at once.
//!
//! The mirror follows the other instances' writes: the store's follower reads every row
//! written by a transaction not yet finished at its previous read (by transaction id: a
//! sequence's values commit out of order, transaction snapshots do not lie), and the DHCP
//! thread applies them at its next batch, keeping per address the highest `rev` seen (a row's
//! `rev` grows with every write of that row, in commit order).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Fail, PgStore};
use crate::dhcp::leases::{
    IfName, Lease, LeaseCounts, LeaseError, LeaseState, LeaseStore, Link, MemoryLeaseStore,
};
use pxe_proto::{ClientUuid, MacAddr};

const COLUMNS: &str = "ip, mac, uuid, expires, state, relay, iface, rev, instance";

/// The conditional upsert (see the module doc). `$9` is this instance.
const UPSERT: &str = "INSERT INTO leases AS l (ip, mac, uuid, expires, state, relay, iface, \
     instance, rev, xid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, nextval('lease_rev'), \
     pg_current_xact_id()::text::bigint) \
     ON CONFLICT (ip) DO UPDATE SET mac = EXCLUDED.mac, uuid = EXCLUDED.uuid, \
     expires = EXCLUDED.expires, state = EXCLUDED.state, relay = EXCLUDED.relay, \
     iface = EXCLUDED.iface, instance = EXCLUDED.instance, rev = nextval('lease_rev'), \
     xid = EXCLUDED.xid \
     WHERE l.mac = EXCLUDED.mac OR l.state = 4 \
        OR l.expires <= extract(epoch FROM now())::bigint \
     RETURNING rev";

/// Releases this client's record at another address, if it still holds it.
const RELEASE: &str = "UPDATE leases SET state = 4, expires = 0, instance = $3, \
     rev = nextval('lease_rev'), xid = pg_current_xact_id()::text::bigint \
     WHERE ip = $1 AND mac = $2 AND state <> 3 RETURNING rev";

fn state_code(s: LeaseState) -> i16 {
    match s {
        LeaseState::Offered => 1,
        LeaseState::Bound => 2,
        LeaseState::Declined => 3,
        LeaseState::Released => 4,
    }
}

fn state_of(c: i16) -> Option<LeaseState> {
    Some(match c {
        1 => LeaseState::Offered,
        2 => LeaseState::Bound,
        3 => LeaseState::Declined,
        4 => LeaseState::Released,
        _ => return None,
    })
}

/// A lease row as read from the database: the lease, its `rev`, and the instance that wrote
/// it.
#[derive(Debug)]
pub(super) struct Fetched {
    lease: Lease,
    rev: i64,
    by: String,
}

/// What the mirror knows of a row besides the lease: its `rev` and the instance that wrote it
/// (an `Arc` shared by every row of that instance, so that recording it allocates nothing).
#[derive(Debug, Clone)]
struct Written {
    rev: i64,
    by: Arc<str>,
}

/// A row of [`COLUMNS`]; `None` (logged) when it does not decode.
fn decode(r: &Row) -> Option<Fetched> {
    let ip = match r.get::<_, IpAddr>(0) {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => return None,
    };
    let mac: Vec<u8> = r.get(1);
    let uuid: Option<Vec<u8>> = r.get(2);
    let link = match (r.get::<_, Option<IpAddr>>(5), r.get::<_, Option<String>>(6)) {
        (Some(IpAddr::V4(relay)), _) => Some(Link::Relay(relay)),
        (None, Some(name)) => IfName::new(&name).map(Link::Interface),
        _ => None,
    };
    let lease = Lease {
        ip,
        mac: MacAddr(mac.as_slice().try_into().ok()?),
        uuid: match uuid {
            Some(u) => Some(ClientUuid(u.as_slice().try_into().ok()?)),
            None => None,
        },
        expires: u64::try_from(r.get::<_, i64>(3)).ok()?,
        state: state_of(r.get(4))?,
        link,
    };
    Some(Fetched {
        lease,
        rev: r.get(7),
        by: r.get(8),
    })
}

fn decode_logged(r: &Row) -> Option<Fetched> {
    let d = decode(r);
    if d.is_none() {
        tracing::warn!("PostgreSQL store: unreadable lease row skipped");
    }
    d
}

/// Writes `l` with the conditional upsert; `Some(rev)` when written, `None` when another
/// client holds the address.
async fn upsert(c: &Object, l: &Lease, instance: &str) -> Result<Option<i64>, Fail> {
    let st = c.prepare_cached(UPSERT).await?;
    let v = Values::of(l);
    let row = c.query_opt(&st, &v.params(&instance)).await?;
    Ok(row.map(|r| r.get(0)))
}

/// A lease as the values of the first 7 columns of [`UPSERT`].
struct Values {
    ip: IpAddr,
    mac: Vec<u8>,
    uuid: Option<Vec<u8>>,
    expires: i64,
    state: i16,
    relay: Option<IpAddr>,
    iface: Option<String>,
}

impl Values {
    fn of(l: &Lease) -> Values {
        let (relay, iface) = match l.link {
            Some(Link::Relay(ip)) => (Some(IpAddr::V4(ip)), None),
            Some(Link::Interface(n)) => (None, Some(n.as_str().to_owned())),
            None => (None, None),
        };
        Values {
            ip: IpAddr::V4(l.ip),
            mac: l.mac.0.to_vec(),
            uuid: l.uuid.map(|u| u.0.to_vec()),
            expires: i64::try_from(l.expires).unwrap_or(i64::MAX),
            state: state_code(l.state),
            relay,
            iface,
        }
    }

    /// The statement's parameters, `instance` the 8th.
    fn params<'a>(&'a self, instance: &'a &str) -> [&'a (dyn ToSql + Sync); 8] {
        [
            &self.ip,
            &self.mac,
            &self.uuid,
            &self.expires,
            &self.state,
            &self.relay,
            &self.iface,
            instance,
        ]
    }
}

/// The row of `ip`, if any.
async fn read_one(c: &Object, ip: Ipv4Addr) -> Result<Option<Fetched>, Fail> {
    let st = c
        .prepare_cached(&format!("SELECT {COLUMNS} FROM leases WHERE ip = $1"))
        .await?;
    let row = c.query_opt(&st, &[&IpAddr::V4(ip)]).await?;
    Ok(row.as_ref().and_then(decode_logged))
}

/// The rows written by transactions from id `from` on, and where the next read starts: the
/// oldest transaction still running at this read (all older ones are finished, so their rows
/// are in this read or an earlier one).
pub(super) async fn changes_since(store: &PgStore, from: i64) -> Result<(i64, Vec<Fetched>), Fail> {
    let mut c = store.pool.get().await?;
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let next: i64 = tx
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .get(0);
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM leases WHERE xid >= $1"),
            &[&from],
        )
        .await?;
    tx.commit().await?;
    Ok((next, rows.iter().filter_map(decode_logged).collect()))
}

/// What the mirror held for the addresses and clients a `put` touched, to put back if its
/// batch fails.
#[derive(Debug)]
struct Undo {
    leases: Vec<(Ipv4Addr, Option<Lease>, Option<Written>)>,
    index: Vec<(MacAddr, Option<Ipv4Addr>)>,
}

/// An open batch: its connection and transaction (from its first `put`), whether it must
/// commit durably, whether a `put` failed, and what to undo.
#[derive(Default)]
struct Batch {
    client: Option<Object>,
    durable: bool,
    failed: Option<Fail>,
    undo: Vec<Undo>,
}

/// Leases in PostgreSQL (see the module doc).
pub struct PgLeaseStore {
    store: Arc<PgStore>,
    mem: MemoryLeaseStore,
    /// Per address in the mirror: the `rev` of its row and who wrote it.
    revs: HashMap<Ipv4Addr, Written>,
    /// Every instance name seen in a row, shared by [`Written::by`].
    names: Vec<Arc<str>>,
    /// This instance's name, as [`Written::by`] of its own writes.
    me: Arc<str>,
    batch: Option<Batch>,
}

impl std::fmt::Debug for PgLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeaseStore")
            .field("leases", &self.mem.len())
            .finish_non_exhaustive()
    }
}

impl PgLeaseStore {
    /// Loads every lease into the mirror and starts following the other instances' writes.
    pub fn open(store: Arc<PgStore>) -> Result<PgLeaseStore, LeaseError> {
        let (next, rows) = store.run(changes_since(&store, 0))?;
        let me: Arc<str> = Arc::from(store.instance());
        let mut s = PgLeaseStore {
            store,
            mem: MemoryLeaseStore::new(),
            revs: HashMap::new(),
            names: vec![Arc::clone(&me)],
            me,
            batch: None,
        };
        for row in rows {
            s.apply_remote(row);
        }
        s.store.follow_from.store(next, Ordering::Release);
        s.store.follow.store(true, Ordering::Release);
        Ok(s)
    }

    pub fn memory(&self) -> &MemoryLeaseStore {
        &self.mem
    }

    /// The shared name `by` (allocated once per instance name).
    fn name(&mut self, by: &str) -> Arc<str> {
        if let Some(n) = self.names.iter().find(|n| &***n == by) {
            return Arc::clone(n);
        }
        let n: Arc<str> = Arc::from(by);
        self.names.push(Arc::clone(&n));
        n
    }

    /// Applies a row read from the database unless the mirror knows a newer one.
    fn apply_remote(&mut self, row: Fetched) {
        let Fetched { lease: l, rev, by } = row;
        if self.revs.get(&l.ip).is_some_and(|w| w.rev >= rev) {
            return;
        }
        let by = self.name(&by);
        self.revs.insert(l.ip, Written { rev, by });
        if self.mem.get(l.ip) != Some(l) {
            // Its own write released the client's other record; that row comes too.
            let _ = self.mem.put(&l);
        }
    }

    /// Applies what the follower read since the last batch.
    fn catch_up(&mut self) {
        let rows = std::mem::take(
            &mut *self
                .store
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for row in rows {
            self.apply_remote(row);
        }
    }

    /// The record this client holds at another address that `put(lease)` releases.
    fn released_by(&self, lease: &Lease) -> Option<Ipv4Addr> {
        if lease.state == LeaseState::Declined {
            return None;
        }
        let old = self.mem.ip_of(&lease.mac).filter(|&ip| ip != lease.ip)?;
        let rec = self.mem.get(old)?;
        (rec.mac == lease.mac && rec.state != LeaseState::Declined).then_some(old)
    }

    fn undo_of(&self, lease: &Lease, released: Option<Ipv4Addr>) -> Undo {
        let ips = std::iter::once(lease.ip).chain(released);
        let prev_holder = self.mem.get(lease.ip).map(|l| l.mac);
        let macs = std::iter::once(lease.mac).chain(prev_holder);
        Undo {
            leases: ips
                .map(|ip| (ip, self.mem.get(ip), self.revs.get(&ip).cloned()))
                .collect(),
            index: macs.map(|m| (m, self.mem.ip_of(&m))).collect(),
        }
    }

    /// The write of one `put` inside the open batch.
    fn put_batched(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        let released = self.released_by(lease);
        let undo = self.undo_of(lease, released);
        let store = Arc::clone(&self.store);
        let Some(batch) = self.batch.as_mut() else {
            return Err(LeaseError::BatchFailed);
        };
        if batch.failed.is_some() {
            return Err(LeaseError::BatchFailed);
        }
        let durable = lease.state != LeaseState::Offered && !batch.durable;
        let client = batch.client.take();
        let result = store.run(async {
            let c = match client {
                Some(c) => c,
                None => {
                    let c = store.client().await?;
                    c.batch_execute("BEGIN; SET LOCAL synchronous_commit TO off")
                        .await?;
                    c
                }
            };
            let r = async {
                if durable {
                    c.batch_execute("SET LOCAL synchronous_commit TO on")
                        .await?;
                }
                let Some(rev) = upsert(&c, lease, store.instance()).await? else {
                    return Ok(Err(read_one(&c, lease.ip).await?));
                };
                let mut revs = vec![(lease.ip, rev)];
                if let Some(old) = released {
                    let st = c.prepare_cached(RELEASE).await?;
                    let row = c
                        .query_opt(
                            &st,
                            &[&IpAddr::V4(old), &&lease.mac.0[..], &store.instance()],
                        )
                        .await?;
                    if let Some(r) = row {
                        revs.push((old, r.get(0)));
                    }
                }
                Ok(Ok(revs))
            }
            .await;
            Ok((c, r))
        });
        let (client, outcome) = match result {
            Ok(v) => v,
            Err(f) => {
                batch.failed = Some(f.clone());
                return Err(f.into());
            }
        };
        batch.client = Some(client);
        match outcome {
            Ok(Ok(revs)) => {
                if durable {
                    batch.durable = true;
                }
                batch.undo.push(undo);
                let _ = self.mem.put(lease);
                for (ip, rev) in revs {
                    let by = Arc::clone(&self.me);
                    self.revs.insert(ip, Written { rev, by });
                }
                Ok(())
            }
            Ok(Err(holder)) => {
                crate::metrics::inc(&self.store.metrics.lease_conflicts);
                if let Some(row) = holder {
                    self.apply_remote(row);
                }
                Err(LeaseError::Conflict { ip: lease.ip })
            }
            Err(f) => {
                self.store.failed(&f);
                batch.failed = Some(f.clone());
                Err(f.into())
            }
        }
    }

    /// Puts back what the failed batch changed in the mirror.
    fn undo(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            for (ip, lease, rev) in u.leases.into_iter().rev() {
                self.mem.restore(ip, lease);
                match rev {
                    Some(w) => self.revs.insert(ip, w),
                    None => self.revs.remove(&ip),
                };
            }
            for (mac, ip) in u.index.into_iter().rev() {
                self.mem.restore_index(mac, ip);
            }
        }
    }
}

impl LeaseStore for PgLeaseStore {
    fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.mem.get(ip)
    }
    fn ip_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        self.mem.ip_of(mac)
    }
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        if self.batch.is_some() {
            return self.put_batched(lease);
        }
        self.begin_batch();
        match self.put_batched(lease) {
            Ok(()) => self.commit_batch(),
            Err(e) => {
                // Nothing to commit; the connection goes back (or is dropped if it failed).
                let _ = self.commit_batch();
                Err(e)
            }
        }
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn for_each(&self, f: &mut dyn FnMut(&Lease)) {
        self.mem.for_each(f);
    }
    fn written_by(&self, ip: Ipv4Addr) -> Option<&str> {
        self.revs.get(&ip).map(|w| &*w.by)
    }
    fn begin_batch(&mut self) {
        if self.batch.is_none() {
            self.catch_up();
            self.batch = Some(Batch::default());
        }
    }
    fn commit_batch(&mut self) -> Result<(), LeaseError> {
        let Some(mut batch) = self.batch.take() else {
            return Ok(());
        };
        let Some(client) = batch.client.take() else {
            return match batch.failed {
                Some(f) => {
                    self.undo(std::mem::take(&mut batch.undo));
                    Err(f.into())
                }
                None => Ok(()),
            };
        };
        let started = Instant::now();
        let result = match batch.failed.take() {
            Some(f) => {
                // The connection may be dead: it is not given back.
                drop(Object::take(client));
                Err(f)
            }
            None => {
                let r = self.store.run(async {
                    client.batch_execute("COMMIT").await?;
                    Ok(client)
                });
                match r {
                    Ok(_client) => {
                        self.store.committed(started);
                        Ok(())
                    }
                    Err(f) => Err(f),
                }
            }
        };
        result.map_err(|f| {
            self.undo(std::mem::take(&mut batch.undo));
            f.into()
        })
    }
}

/// The address bound to `mac` and not expired at `now_unix`, read from the database.
pub(crate) fn bound_address(store: &PgStore, mac: &MacAddr, now_unix: u64) -> Option<Ipv4Addr> {
    let r = store.run(async {
        let c = store.client().await?;
        let row = c
            .query_opt(
                "SELECT ip FROM leases WHERE mac = $1 AND state = 2 AND expires > $2 \
                 ORDER BY expires DESC LIMIT 1",
                &[&&mac.0[..], &i64::try_from(now_unix).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, IpAddr>(0)))
    });
    match r {
        Ok(Some(IpAddr::V4(ip))) => Some(ip),
        Ok(_) => None,
        Err(f) => {
            store.warn("reading a host's lease", &f);
            None
        }
    }
}

/// Leases holding their address at `now_unix`, by state.
pub(crate) fn lease_counts(store: &PgStore, now_unix: u64) -> Result<LeaseCounts, LeaseError> {
    let rows = store.run(async {
        let c = store.client().await?;
        Ok(c.query(
            "SELECT state, count(*) FROM leases WHERE state <> 4 AND expires > $1 GROUP BY state",
            &[&i64::try_from(now_unix).unwrap_or(i64::MAX)],
        )
        .await?)
    })?;
    let mut counts = LeaseCounts::default();
    for r in rows {
        let n = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
        match state_of(r.get(0)) {
            Some(LeaseState::Offered) => counts.offered += n,
            Some(LeaseState::Bound) => counts.bound += n,
            Some(LeaseState::Declined) => counts.declined += n,
            _ => {}
        }
    }
    Ok(counts)
}

/// Every lease row (`store migrate`).
pub(crate) async fn all(c: &impl tokio_postgres::GenericClient) -> Result<Vec<Lease>, Fail> {
    let rows = c
        .query(&format!("SELECT {COLUMNS} FROM leases"), &[])
        .await?;
    Ok(rows
        .iter()
        .filter_map(decode_logged)
        .map(|f| f.lease)
        .collect())
}

/// Writes `l` as it is, unconditionally (`store migrate` into an emptied table).
pub(crate) async fn insert(
    c: &impl tokio_postgres::GenericClient,
    l: &Lease,
    instance: &str,
) -> Result<(), Fail> {
    let v = Values::of(l);
    c.execute(
        "INSERT INTO leases (ip, mac, uuid, expires, state, relay, iface, instance, rev, xid) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, nextval('lease_rev'), \
         pg_current_xact_id()::text::bigint)",
        &v.params(&instance),
    )
    .await?;
    Ok(())
}
