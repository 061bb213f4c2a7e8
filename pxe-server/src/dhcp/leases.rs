//! Leases: `ip -> (mac, uuid, expiry, state, link)` with an index `mac -> ip`.
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
//!
//! Records: a fixed-size value per address, its first byte the format version. Version 2
//! (written since the per-link bound) adds the [`Link`] the lease was given through: a relay
//! address or an interface name, both stable across restarts (an interface index is not).
//! Version 1 records (33 bytes, written before) are still read, with no link: such a lease
//! counts against no link until its client's next REQUEST rewrites it as version 2 with the
//! link it came through. A binary older than version 2 skips version 2 records (it logs
//! "unreadable lease record skipped"): downgrading loses the leases written since.

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

/// An interface name as the kernel spells it (at most 15 bytes, `IFNAMSIZ` - 1), NUL-padded:
/// a fixed-size, copyable key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IfName([u8; IF_NAME_LEN]);

/// Bytes of an [`IfName`] (`IFNAMSIZ`).
pub const IF_NAME_LEN: usize = 16;

impl IfName {
    /// `None` for an empty name, one of 16 bytes or more, or one with a NUL.
    pub fn new(name: &str) -> Option<IfName> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= IF_NAME_LEN || b.contains(&0) {
            return None;
        }
        let mut n = [0u8; IF_NAME_LEN];
        n[..b.len()].copy_from_slice(b);
        Some(IfName(n))
    }

    /// No name (the interface is not known).
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..self.len()]).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.0.iter().position(|&b| b == 0).unwrap_or(IF_NAME_LEN)
    }
}

impl std::fmt::Display for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The link a client's requests come through: the relay (giaddr) for a relayed request, else
/// the interface it arrived on. What `[dhcp] max_leases_per_link` bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    Relay(Ipv4Addr),
    Interface(IfName),
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Relay(ip) => write!(f, "relay {ip}"),
            Link::Interface(n) => write!(f, "interface {n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub uuid: Option<ClientUuid>,
    /// Seconds since the Unix epoch.
    pub expires: u64,
    pub state: LeaseState,
    /// The link it was given through; `None` for a record read from format version 1.
    pub link: Option<Link>,
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
    /// The shared store (PostgreSQL) holds `ip` for another client: another instance took it
    /// first. Nothing was written; the store's in-memory view now shows that holder, so the
    /// caller can pick another address.
    #[error("address {ip} is held by another client in the shared store")]
    Conflict { ip: Ipv4Addr },
    /// The shared store cannot be reached or refused the transaction (`reason`): nothing was
    /// committed. Full-mode DHCP answers nothing that needs a commit until it is back.
    #[error("lease store unavailable: {reason}")]
    Unavailable { reason: String },
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
    /// Calls `f` with every record, in no particular order (rebuilding per-link counts).
    fn for_each(&self, f: &mut dyn FnMut(&Lease));
    /// The name of the instance that wrote the record of `ip`, in a store several instances
    /// share (for an `Offered` record: the instance that made the offer); `None` when unknown
    /// or when the store is this server's alone (memory, redb).
    fn written_by(&self, _ip: Ipv4Addr) -> Option<&str> {
        None
    }
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

    /// Sets the record of `ip` as it was (`None`: no record), index untouched: a shared
    /// store undoing a failed batch.
    pub fn restore(&mut self, ip: Ipv4Addr, lease: Option<Lease>) {
        match lease {
            Some(l) => self.by_ip.insert(ip, l),
            None => self.by_ip.remove(&ip),
        };
    }

    /// Sets the index entry of `mac` as it was (with [`MemoryLeaseStore::restore`]).
    pub fn restore_index(&mut self, mac: MacAddr, ip: Option<Ipv4Addr>) {
        match ip {
            Some(ip) => self.by_mac.insert(mac, ip),
            None => self.by_mac.remove(&mac),
        };
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
    fn for_each(&self, f: &mut dyn FnMut(&Lease)) {
        self.by_ip.values().for_each(f);
    }
}

const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");
const BY_MAC: TableDefinition<&[u8], u32> = TableDefinition::new("leases_by_mac");
/// The format written. Layout (big-endian numbers): version, state, MAC (6), expiry (8), UUID
/// flag, UUID (16), then since version 2: link kind (0 none, 1 relay, 2 interface), link (16:
/// the relay's IPv4 address in the first 4 bytes, or the interface name NUL-padded).
const RECORD_VERSION: u8 = 2;
/// Bytes of a version 1 record (no link).
const RECORD_V1_LEN: usize = 33;
const RECORD_LEN: usize = RECORD_V1_LEN + 1 + IF_NAME_LEN;

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

/// Leases held at a moment, by state (the `/metrics` scrape reads them in one read
/// transaction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    pub offered: u64,
    pub bound: u64,
    /// Declined addresses still withheld.
    pub declined: u64,
}

/// Counts the leases of the database that hold their address at `now_unix` (released and
/// expired records do not). A record it cannot read is not counted.
pub fn lease_counts(db: &Database, now_unix: u64) -> Result<LeaseCounts, LeaseError> {
    let read = db.begin_read()?;
    let table = match read.open_table(LEASES) {
        Ok(t) => t,
        // No lease written yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LeaseCounts::default()),
        Err(e) => return Err(e.into()),
    };
    let mut counts = LeaseCounts::default();
    for row in table.iter()? {
        let (ip, rec) = row?;
        let Some(lease) = decode_record(ip.value(), rec.value()) else {
            continue;
        };
        if !lease.is_active(now_unix) {
            continue;
        }
        match lease.state {
            LeaseState::Offered => counts.offered += 1,
            LeaseState::Bound => counts.bound += 1,
            LeaseState::Declined => counts.declined += 1,
            LeaseState::Released => {}
        }
    }
    Ok(counts)
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
    match l.link {
        None => {}
        Some(Link::Relay(ip)) => {
            b[33] = 1;
            b[34..38].copy_from_slice(&ip.octets());
        }
        Some(Link::Interface(name)) => {
            b[33] = 2;
            b[34..].copy_from_slice(&name.0);
        }
    }
    b
}

/// Reads a record of format version 2, or 1 (no link). `None` for anything else.
fn decode_record(ip: u32, b: &[u8]) -> Option<Lease> {
    let link = match (b.first()?, b.len()) {
        (1, RECORD_V1_LEN) => None,
        (2, RECORD_LEN) => decode_link(&b[RECORD_V1_LEN..])?,
        _ => return None,
    };
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
        link,
    })
}

/// The link of a version 2 record (kind, then 16 bytes): `Some(None)` for none, `None` when
/// it does not decode.
fn decode_link(b: &[u8]) -> Option<Option<Link>> {
    let (kind, v) = b.split_first()?;
    let v: [u8; IF_NAME_LEN] = v.try_into().ok()?;
    match kind {
        0 => Some(None),
        1 => Some(Some(Link::Relay(Ipv4Addr::new(v[0], v[1], v[2], v[3])))),
        2 => {
            let name = IfName(v);
            let valid = !name.is_empty() && std::str::from_utf8(&v[..name.len()]).is_ok();
            valid.then_some(Some(Link::Interface(name)))
        }
        _ => None,
    }
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
    fn for_each(&self, f: &mut dyn FnMut(&Lease)) {
        self.mem.for_each(f);
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

/// Every record of `db` (`store migrate`).
pub fn read_all(db: Arc<Database>) -> Result<Vec<Lease>, LeaseError> {
    Ok(RedbLeaseStore::open_shared(db)?
        .mem
        .iter()
        .copied()
        .collect())
}

/// Writes `leases` as they are in `txn` (`store migrate`; the caller commits): the records,
/// and for each client the index entry of its record that is not declined, not released if
/// it has one, the latest to expire. `replace` empties both tables first.
pub fn write_all(
    txn: &redb::WriteTransaction,
    leases: &[Lease],
    replace: bool,
) -> Result<(), LeaseError> {
    {
        if replace {
            txn.delete_table(LEASES)?;
            txn.delete_table(BY_MAC)?;
        }
        let mut table = txn.open_table(LEASES)?;
        let mut index = txn.open_table(BY_MAC)?;
        let mut best: HashMap<MacAddr, Lease> = HashMap::new();
        for l in leases {
            table.insert(u32::from(l.ip), &encode_record(l)[..])?;
            if l.state == LeaseState::Declined {
                continue;
            }
            let rank = |x: &Lease| (x.state != LeaseState::Released, x.expires);
            if best.get(&l.mac).is_none_or(|b| rank(l) > rank(b)) {
                best.insert(l.mac, *l);
            }
        }
        for (mac, l) in best {
            index.insert(&mac.0[..], u32::from(l.ip))?;
        }
    }
    Ok(())
}

/// Writes `leases` into the database at `path` as the format version 1 records (and index
/// entries) that binaries before version 2 wrote, bytes laid out by hand: what a database
/// left by such a binary holds.
#[cfg(test)]
pub(crate) fn write_v1_records(path: &Path, leases: &[Lease]) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(LEASES).unwrap();
        let mut index = txn.open_table(BY_MAC).unwrap();
        for l in leases {
            let mut b = vec![1u8, 0];
            b[1] = match l.state {
                LeaseState::Offered => 1,
                LeaseState::Bound => 2,
                LeaseState::Declined => 3,
                LeaseState::Released => 4,
            };
            b.extend_from_slice(&l.mac.0);
            b.extend_from_slice(&l.expires.to_be_bytes());
            b.push(u8::from(l.uuid.is_some()));
            b.extend_from_slice(&l.uuid.map_or([0; 16], |u| u.0));
            assert_eq!(b.len(), RECORD_V1_LEN);
            table.insert(u32::from(l.ip), &b[..]).unwrap();
            index.insert(&l.mac.0[..], u32::from(l.ip)).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// The format version of the record stored for `ip` (tests: what a rewrite left on disk).
#[cfg(test)]
pub(crate) fn record_version(db: &Database, ip: Ipv4Addr) -> Option<u8> {
    let read = db.begin_read().ok()?;
    let rec = read.open_table(LEASES).ok()?.get(u32::from(ip)).ok()??;
    rec.value().first().copied()
}

#[cfg(test)]
mod tests;
