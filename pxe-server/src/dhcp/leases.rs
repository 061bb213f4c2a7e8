//! Leases: `ip -> (mac, uuid, expiry, state)` with an index `mac -> ip`.
//!
//! The responder sees the store through [`LeaseStore`]. [`MemoryLeaseStore`] is the
//! in-process table (unit tests, fuzzing); [`RedbLeaseStore`] persists every change in one
//! redb file and keeps the same table in memory for reads.
//!
//! Durability: [`LeaseStore::put`] returns only after the change is committed. For
//! [`LeaseState::Bound`], [`LeaseState::Declined`] and [`LeaseState::Released`] the commit is
//! durable (fsync'd: redb `Durability::Immediate`), so an ACK that went out is never lost, even
//! to `kill -9`. An [`LeaseState::Offered`] record is committed non-durably (redb
//! `Durability::None`, made durable by the next durable commit): losing an offer in a crash is
//! harmless, the client's REQUEST is checked against the bound leases again.
//!
//! Batches: between [`LeaseStore::begin_batch`] and [`LeaseStore::commit_batch`] every `put`
//! goes into one write transaction and is visible to later reads at once; the batch is made
//! durable by one commit (one fsync if any change in it needs one). A server that answers a
//! batch of requests sends the answers only after `commit_batch` returned `Ok`, which keeps the
//! rule that no ACK leaves before its lease is durable. If the commit fails, the in-memory table
//! is reloaded from the database: the batch's changes vanish, and its answers must be dropped.
//!
//! Expiry is lazy: a record whose `expires` has passed is simply free (the responder checks it);
//! it stays in the table, keeping the client's affinity to its last address, until the address
//! is given to another client.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// Opens (or creates) the database file at `path`, creating its directory. One process may
/// hold it; a second gets an error naming the lock.
pub fn open_database(path: &Path) -> Result<Arc<Database>, LeaseError> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| LeaseError::Db(redb::Error::Io(e)))?;
    }
    Ok(Arc::new(Database::create(path)?))
}

use pxe_proto::{ClientUuid, MacAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Offered,
    Bound,
    /// The client reported the address in use (DECLINE); unusable until `expires`.
    Declined,
    /// The client gave it back (RELEASE); free, `expires` is the release time.
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub uuid: Option<ClientUuid>,
    /// Seconds since the Unix epoch.
    pub expires: u64,
    pub state: LeaseState,
}

impl Lease {
    /// The address is held (by `mac`) at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.expires > now && self.state != LeaseState::Released
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease database: {0}")]
    Db(#[from] redb::Error),
    /// A `put` of the current batch failed; the batch can only be dropped.
    #[error("an earlier change of this batch failed")]
    BatchFailed,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for LeaseError {
            fn from(e: $t) -> Self {
                LeaseError::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What the responder needs from a lease table.
pub trait LeaseStore {
    /// The record for `ip`, active or not.
    fn get(&self, ip: Ipv4Addr) -> Option<Lease>;
    /// The address last leased to `mac` (declined addresses are not the client's).
    fn ip_of(&self, mac: &MacAddr) -> Option<Ipv4Addr>;
    /// Stores `lease`, replacing the record for its address, and makes `lease.mac` point to it
    /// (to nothing for a declined lease). A record this client held at another address is
    /// released in the same commit. Committed (durably unless `Offered`) before it returns.
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError>;
    /// Number of records.
    fn len(&self) -> usize;
    /// Starts a batch: the following `put`s are committed together by
    /// [`LeaseStore::commit_batch`] (see the module doc). No-op for an in-memory table.
    fn begin_batch(&mut self) {}
    /// Commits the batch begun by [`LeaseStore::begin_batch`]; durable if any change in it
    /// needs durability. On `Err` the batch's changes are gone.
    fn commit_batch(&mut self) -> Result<(), LeaseError> {
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory table; also the read side of [`RedbLeaseStore`].
#[derive(Debug, Default, Clone)]
pub struct MemoryLeaseStore {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
}

impl MemoryLeaseStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes `put(lease)` makes: records to write and index entries to set or remove.
    fn plan(&self, lease: &Lease) -> Plan {
        let mut plan = Plan {
            records: vec![*lease],
            index_set: None,
            index_remove: Vec::new(),
        };
        // The previous holder of this address loses its index entry.
        if let Some(prev) = self.by_ip.get(&lease.ip)
            && prev.mac != lease.mac
            && self.by_mac.get(&prev.mac) == Some(&lease.ip)
        {
            plan.index_remove.push(prev.mac);
        }
        if lease.state == LeaseState::Declined {
            if self.by_mac.get(&lease.mac) == Some(&lease.ip) {
                plan.index_remove.push(lease.mac);
            }
        } else {
            // This client's record at another address is released.
            if let Some(old_ip) = self.by_mac.get(&lease.mac).copied()
                && old_ip != lease.ip
                && let Some(old) = self.by_ip.get(&old_ip)
                && old.mac == lease.mac
                && old.state != LeaseState::Declined
            {
                plan.records.push(Lease {
                    state: LeaseState::Released,
                    expires: 0,
                    ..*old
                });
            }
            plan.index_set = Some((lease.mac, lease.ip));
        }
        plan
    }

    fn apply(&mut self, plan: &Plan) {
        for r in &plan.records {
            self.by_ip.insert(r.ip, *r);
        }
        for m in &plan.index_remove {
            self.by_mac.remove(m);
        }
        if let Some((m, ip)) = plan.index_set {
            self.by_mac.insert(m, ip);
        }
    }

    /// Every record (tests, inspection).
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }
}

struct Plan {
    records: Vec<Lease>,
    index_set: Option<(MacAddr, Ipv4Addr)>,
    index_remove: Vec<MacAddr>,
}

impl LeaseStore for MemoryLeaseStore {
    fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.by_ip.get(&ip).copied()
    }
    fn ip_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        self.by_mac.get(mac).copied()
    }
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        let plan = self.plan(lease);
        self.apply(&plan);
        Ok(())
    }
    fn len(&self) -> usize {
        self.by_ip.len()
    }
}

const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");
const BY_MAC: TableDefinition<&[u8], u32> = TableDefinition::new("leases_by_mac");
const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 33;

/// The address bound to `mac` and not yet expired at `now_unix`, read from the database (for
/// readers outside the DHCP thread, e.g. the install templates). `None` when there is none
/// or the database cannot be read.
pub fn bound_address(db: &Database, mac: &MacAddr, now_unix: u64) -> Option<Ipv4Addr> {
    let read = db.begin_read().ok()?;
    let ip = read.open_table(BY_MAC).ok()?.get(&mac.0[..]).ok()??.value();
    let rec = read.open_table(LEASES).ok()?.get(ip).ok()??;
    let lease = decode_record(ip, rec.value())?;
    (lease.mac == *mac && lease.state == LeaseState::Bound && lease.expires > now_unix)
        .then_some(lease.ip)
}

fn encode_record(l: &Lease) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[0] = RECORD_VERSION;
    b[1] = match l.state {
        LeaseState::Offered => 1,
        LeaseState::Bound => 2,
        LeaseState::Declined => 3,
        LeaseState::Released => 4,
    };
    b[2..8].copy_from_slice(&l.mac.0);
    b[8..16].copy_from_slice(&l.expires.to_be_bytes());
    if let Some(u) = l.uuid {
        b[16] = 1;
        b[17..33].copy_from_slice(&u.0);
    }
    b
}

fn decode_record(ip: u32, b: &[u8]) -> Option<Lease> {
    let b: &[u8; RECORD_LEN] = b.try_into().ok()?;
    if b[0] != RECORD_VERSION {
        return None;
    }
    let state = match b[1] {
        1 => LeaseState::Offered,
        2 => LeaseState::Bound,
        3 => LeaseState::Declined,
        4 => LeaseState::Released,
        _ => return None,
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&b[2..8]);
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&b[8..16]);
    let uuid = (b[16] == 1).then(|| {
        let mut u = [0u8; 16];
        u.copy_from_slice(&b[17..33]);
        ClientUuid(u)
    });
    Some(Lease {
        ip: Ipv4Addr::from(ip),
        mac: MacAddr(mac),
        uuid,
        expires: u64::from_be_bytes(exp),
        state,
    })
}

/// Leases in a redb file, mirrored in memory.
pub struct RedbLeaseStore {
    db: Arc<Database>,
    mem: MemoryLeaseStore,
    batch: Option<Batch>,
}

/// An open batch: the write transaction (opened by its first `put`), whether it must be
/// durable, and whether a `put` in it failed (then it can only be aborted).
#[derive(Default)]
struct Batch {
    txn: Option<redb::WriteTransaction>,
    durable: bool,
    failed: bool,
}

impl std::fmt::Debug for RedbLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbLeaseStore")
            .field("leases", &self.mem.len())
            .finish()
    }
}

impl RedbLeaseStore {
    /// Opens (or creates) the database at `path` and loads every record. Records that do not
    /// decode (a future format) are skipped with a warning; index entries that disagree with
    /// the records are dropped.
    pub fn open(path: &Path) -> Result<Self, LeaseError> {
        Self::open_shared(Arc::new(Database::create(path)?))
    }

    /// The same over a database others share (the next-boot table lives in the same file).
    pub fn open_shared(db: Arc<Database>) -> Result<Self, LeaseError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(LEASES)?;
            txn.open_table(BY_MAC)?;
        }
        txn.commit()?;
        let mem = Self::load(&db)?;
        Ok(RedbLeaseStore {
            db,
            mem,
            batch: None,
        })
    }

    /// Reads every record and the index into a fresh in-memory table.
    fn load(db: &Database) -> Result<MemoryLeaseStore, LeaseError> {
        let mut mem = MemoryLeaseStore::new();
        let read = db.begin_read()?;
        let leases = read.open_table(LEASES)?;
        for row in leases.iter()? {
            let (k, v) = row?;
            match decode_record(k.value(), v.value()) {
                Some(l) => {
                    mem.by_ip.insert(l.ip, l);
                }
                None => {
                    tracing::warn!(ip = %Ipv4Addr::from(k.value()), "unreadable lease record skipped")
                }
            }
        }
        let index = read.open_table(BY_MAC)?;
        for row in index.iter()? {
            let (k, v) = row?;
            let (Ok(mac), ip) = (<[u8; 6]>::try_from(k.value()), Ipv4Addr::from(v.value())) else {
                continue;
            };
            let mac = MacAddr(mac);
            if mem.by_ip.get(&ip).is_some_and(|l| l.mac == mac) {
                mem.by_mac.insert(mac, ip);
            }
        }
        drop((leases, index, read));
        Ok(mem)
    }

    /// Writes `plan` into `txn`.
    fn write_plan(txn: &redb::WriteTransaction, plan: &Plan) -> Result<(), LeaseError> {
        let mut leases = txn.open_table(LEASES)?;
        for r in &plan.records {
            leases.insert(u32::from(r.ip), &encode_record(r)[..])?;
        }
        let mut index = txn.open_table(BY_MAC)?;
        for m in &plan.index_remove {
            index.remove(&m.0[..])?;
        }
        if let Some((m, ip)) = plan.index_set {
            index.insert(&m.0[..], u32::from(ip))?;
        }
        Ok(())
    }

    /// `put` inside a batch: the change is written to the batch's transaction and applied to
    /// the in-memory table at once.
    fn put_batched(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        let plan = self.mem.plan(lease);
        let batch = self.batch.get_or_insert_with(Batch::default);
        if batch.failed {
            return Err(LeaseError::BatchFailed);
        }
        let result = (|| {
            if batch.txn.is_none() {
                let mut txn = self.db.begin_write()?;
                txn.set_durability(Durability::None)?;
                batch.txn = Some(txn);
            }
            let Some(txn) = batch.txn.as_mut() else {
                return Err(LeaseError::BatchFailed);
            };
            if lease.state != LeaseState::Offered && !batch.durable {
                txn.set_durability(Durability::Immediate)?;
                batch.durable = true;
            }
            Self::write_plan(txn, &plan)
        })();
        match result {
            Ok(()) => {
                self.mem.apply(&plan);
                Ok(())
            }
            Err(e) => {
                batch.failed = true;
                Err(e)
            }
        }
    }

    pub fn memory(&self) -> &MemoryLeaseStore {
        &self.mem
    }
}

impl LeaseStore for RedbLeaseStore {
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
        let plan = self.mem.plan(lease);
        let mut txn = self.db.begin_write()?;
        if lease.state == LeaseState::Offered {
            txn.set_durability(Durability::None)?;
        }
        Self::write_plan(&txn, &plan)?;
        txn.commit()?;
        // Only a committed change becomes visible.
        self.mem.apply(&plan);
        Ok(())
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn begin_batch(&mut self) {
        if self.batch.is_none() {
            self.batch = Some(Batch::default());
        }
    }
    fn commit_batch(&mut self) -> Result<(), LeaseError> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let result = match (batch.txn, batch.failed) {
            (None, _) => return Ok(()),
            (Some(txn), false) => txn.commit().map_err(LeaseError::from),
            (Some(txn), true) => {
                let _ = txn.abort();
                Err(LeaseError::BatchFailed)
            }
        };
        if result.is_err() {
            // The batch's changes are in memory but not on disk: forget them.
            match Self::load(&self.db) {
                Ok(mem) => self.mem = mem,
                Err(e) => tracing::error!(%e, "lease store: reload after a failed batch failed"),
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4], mac: u8, expires: u64, state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            uuid: mac.is_multiple_of(2).then_some(ClientUuid([mac; 16])),
            expires,
            state,
        }
    }

    fn exercise(s: &mut dyn LeaseStore) {
        let a = lease([10, 0, 0, 10], 1, 100, LeaseState::Offered);
        s.put(&a).unwrap();
        assert_eq!(s.get(a.ip), Some(a));
        assert_eq!(s.ip_of(&a.mac), Some(a.ip));
        // The client moves to another address: the old record is released in the same put.
        let b = lease([10, 0, 0, 11], 1, 200, LeaseState::Bound);
        s.put(&b).unwrap();
        assert_eq!(s.ip_of(&b.mac), Some(b.ip));
        let old = s.get(a.ip).unwrap();
        assert_eq!((old.state, old.expires), (LeaseState::Released, 0));
        assert!(!old.is_active(0));
        // Another client takes the old address: its index moves, client 1 keeps 11.
        let c = lease([10, 0, 0, 10], 2, 300, LeaseState::Bound);
        s.put(&c).unwrap();
        assert_eq!(s.ip_of(&c.mac), Some(c.ip));
        assert_eq!(s.ip_of(&b.mac), Some(b.ip));
        // Client 2 declines: the address is held, but no longer the client's.
        let d = Lease {
            state: LeaseState::Declined,
            expires: 900,
            ..c
        };
        s.put(&d).unwrap();
        assert_eq!(s.ip_of(&c.mac), None);
        assert!(s.get(c.ip).unwrap().is_active(899));
        assert!(!s.get(c.ip).unwrap().is_active(900));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn memory_store_semantics() {
        exercise(&mut MemoryLeaseStore::new());
    }

    #[test]
    fn redb_store_semantics_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let mut s = RedbLeaseStore::open(&path).unwrap();
        exercise(&mut s);
        let before: Vec<Lease> = {
            let mut v: Vec<Lease> = s.memory().iter().copied().collect();
            v.sort_by_key(|l| l.ip);
            v
        };
        let idx1 = s.ip_of(&MacAddr([2, 0, 0, 0, 0, 1]));
        drop(s);
        let s = RedbLeaseStore::open(&path).unwrap();
        let mut after: Vec<Lease> = s.memory().iter().copied().collect();
        after.sort_by_key(|l| l.ip);
        assert_eq!(after, before);
        assert_eq!(s.ip_of(&MacAddr([2, 0, 0, 0, 0, 1])), idx1);
        assert_eq!(s.ip_of(&MacAddr([2, 0, 0, 0, 0, 2])), None);
        assert_eq!(
            s.get(Ipv4Addr::new(10, 0, 0, 11)).unwrap().state,
            LeaseState::Bound
        );
    }

    #[test]
    fn redb_batch_is_visible_at_once_and_durable_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let mut s = RedbLeaseStore::open(&path).unwrap();
        s.begin_batch();
        let a = lease([10, 0, 0, 10], 1, 100, LeaseState::Offered);
        let b = lease([10, 0, 0, 11], 2, 100, LeaseState::Bound);
        s.put(&a).unwrap();
        s.put(&b).unwrap();
        // Later requests of the same batch see the earlier changes.
        assert_eq!(s.get(a.ip), Some(a));
        assert_eq!(s.ip_of(&b.mac), Some(b.ip));
        s.commit_batch().unwrap();
        // An empty batch commits nothing and fails nothing.
        s.begin_batch();
        s.commit_batch().unwrap();
        // A batch never committed is lost with the process.
        s.begin_batch();
        s.put(&lease([10, 0, 0, 12], 3, 100, LeaseState::Bound))
            .unwrap();
        drop(s);
        let s = RedbLeaseStore::open(&path).unwrap();
        assert_eq!(s.get(a.ip), Some(a));
        assert_eq!(s.get(b.ip), Some(b));
        assert_eq!(s.ip_of(&b.mac), Some(b.ip));
        assert_eq!(s.get(Ipv4Addr::new(10, 0, 0, 12)), None);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn records_round_trip() {
        for st in [
            LeaseState::Offered,
            LeaseState::Bound,
            LeaseState::Declined,
            LeaseState::Released,
        ] {
            for mac in [1, 2] {
                let l = lease([192, 168, 1, 2], mac, u64::MAX - 1, st);
                assert_eq!(decode_record(u32::from(l.ip), &encode_record(&l)), Some(l));
            }
        }
        assert_eq!(decode_record(0, &[0; 5]), None);
        let mut b = encode_record(&lease([1, 2, 3, 4], 1, 5, LeaseState::Bound));
        b[0] = 9;
        assert_eq!(decode_record(0, &b), None);
    }

    const CHILD_ENV: &str = "PXE_LEASE_KILL9_DB";

    /// Child half of `kill9_mid_storm_loses_no_committed_lease`: binds leases in a loop and
    /// prints `committed N` after each put returns. Does nothing unless the parent set the
    /// environment variable.
    #[test]
    #[ignore = "run by kill9_mid_storm_loses_no_committed_lease as a child process"]
    fn kill9_child_writer() {
        use std::io::Write;
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let mut s = RedbLeaseStore::open(Path::new(&path)).unwrap();
        let mut out = std::io::stdout().lock();
        for i in 0..100_000u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            let mac = MacAddr([2, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 7]);
            // An offer first (non-durable), then the bind (durable), like a DORA exchange.
            let mut l = Lease {
                ip,
                mac,
                uuid: None,
                expires: 1_000_000 + u64::from(i),
                state: LeaseState::Offered,
            };
            s.put(&l).unwrap();
            l.state = LeaseState::Bound;
            s.put(&l).unwrap();
            writeln!(out, "committed {i}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn kill9_mid_storm_loses_no_committed_lease() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "dhcp::leases::tests::kill9_child_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("committed ") {
                    let _ = tx.send(n.parse::<u32>().unwrap());
                }
            }
        });
        // Let it commit a few dozen leases (bounded in time), then SIGKILL it mid-loop.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while seen.len() < 40 && Instant::now() < deadline {
            if let Ok(n) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push(n);
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child must have been killed: {status:?}"
        );
        reader.join().unwrap();
        // Lines still in the pipe were committed before the kill too.
        seen.extend(rx.try_iter());
        assert!(
            seen.len() >= 40,
            "child committed only {} leases",
            seen.len()
        );

        let s = RedbLeaseStore::open(&path).unwrap();
        for &i in &seen {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            let l = s
                .get(ip)
                .unwrap_or_else(|| panic!("lease {i} reported committed is lost"));
            assert_eq!(l.state, LeaseState::Bound);
            assert_eq!(s.ip_of(&l.mac), Some(ip));
        }
        // No address has two owners: every index entry points to a record of that MAC.
        for l in s.memory().iter() {
            if let Some(ip) = s.ip_of(&l.mac) {
                assert_eq!(s.get(ip).unwrap().mac, l.mac);
            }
        }
    }
}
