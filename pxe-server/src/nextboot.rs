//! Boot-once reinstall: each `[[hosts]]` entry has a next-boot action, `install` (serve the
//! installer) or `local` (boot from the local disk). The action starts as the host's
//! `next_boot` in the config; `pxe-server host ... reinstall|local` and the installer's
//! callback change it, and the change is persisted (fsync) in the lease database's file, in
//! table `next_boot`, before it is acknowledged.
//!
//! Records are kept under each host's key ([`HostConfig::key`]). The same file holds each
//! host's install token (table `install_tokens`, see [`tokens`]), rotated by `reinstall`.
//!
//! On PostgreSQL ([`NextBootStore::open_postgres`]) the same records live in the tables
//! `next_boot` and `install_tokens` that every instance shares: writes commit before they are
//! acknowledged, and [`NextBootStore::action`] and [`NextBootStore::current_token`] read
//! through to the database, so that a host switched (or a token rotated) on one instance is
//! seen by all at once. While the database is down they answer the last value seen, with a
//! warning at most every 10 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use serde::{Deserialize, Serialize};

use crate::dhcp::leases::LeaseError;
use crate::hosts::{HostConfig, HostIndex, NextBoot};
use crate::store::PgStore;

mod tokens;
pub use tokens::{RandomError, TOKEN_BYTES, Token};

/// Why host state was not changed: the database, or (for a new token) the OS random source.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Db(#[from] LeaseError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// `key -> [action, changed_unix (8 bytes, big endian)]`.
const NEXT_BOOT: TableDefinition<&str, &[u8]> = TableDefinition::new("next_boot");

pub(crate) fn code(action: NextBoot) -> u8 {
    match action {
        NextBoot::Install => 1,
        NextBoot::Local => 2,
    }
}

fn from_code(c: u8) -> Option<NextBoot> {
    match c {
        1 => Some(NextBoot::Install),
        2 => Some(NextBoot::Local),
        _ => None,
    }
}

/// A recorded action and when it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub action: NextBoot,
    pub changed_unix: u64,
}

/// Where the records are persisted.
enum Backend {
    Redb(Arc<Database>),
    Postgres(Arc<PgStore>),
}

/// The persisted next-boot actions and install tokens, with an in-memory copy for reads.
pub struct NextBootStore {
    backend: Backend,
    mem: Mutex<HashMap<String, Record>>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl std::fmt::Debug for NextBootStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextBootStore").finish_non_exhaustive()
    }
}

impl NextBootStore {
    /// Opens the tables in `db` (creating them: a database of an older version gets its
    /// `install_tokens` table here) and loads every record; records that do not decode are
    /// skipped with a warning (the host falls back to its config default, or gets a new
    /// token).
    pub fn open(db: Arc<Database>) -> Result<Self, LeaseError> {
        let txn = db.begin_write()?;
        txn.open_table(NEXT_BOOT)?;
        txn.open_table(tokens::INSTALL_TOKENS)?;
        txn.commit()?;
        let mut mem = HashMap::new();
        let tokens;
        {
            let read = db.begin_read()?;
            tokens = tokens::load(&read.open_table(tokens::INSTALL_TOKENS)?)?;
            let table = read.open_table(NEXT_BOOT)?;
            for row in table.iter()? {
                let (k, v) = row?;
                let (key, value) = (k.value().to_owned(), v.value());
                match decode(value) {
                    Some(r) => {
                        mem.insert(key, r);
                    }
                    None => tracing::warn!(host = %key, "undecodable next_boot record skipped"),
                }
            }
        }
        Ok(NextBootStore {
            backend: Backend::Redb(db),
            mem: Mutex::new(mem),
            tokens: Mutex::new(tokens),
        })
    }

    /// The records in the PostgreSQL store `pg`, loaded (the schema is there since the store
    /// opened).
    pub fn open_postgres(pg: Arc<PgStore>) -> Result<Self, LeaseError> {
        let (actions, tokens) = pg.host_rows()?;
        let mem = actions
            .into_iter()
            .filter_map(|(k, row)| match record_of(row) {
                Some(r) => Some((k, r)),
                None => {
                    tracing::warn!(host = %k, "undecodable next_boot record skipped");
                    None
                }
            })
            .collect();
        let tokens = tokens
            .into_iter()
            .filter_map(|(k, t)| match Token::from_bytes(&t) {
                Some(t) => Some((k, t)),
                None => {
                    tracing::warn!(host = %k, "undecodable install token skipped");
                    None
                }
            })
            .collect();
        Ok(NextBootStore {
            backend: Backend::Postgres(pg),
            mem: Mutex::new(mem),
            tokens: Mutex::new(tokens),
        })
    }

    /// The PostgreSQL store's current record for `key` into memory (read-through); on
    /// failure memory stays as it is, with a rate-limited warning.
    fn refresh(&self, key: &str) {
        let Backend::Postgres(pg) = &self.backend else {
            return;
        };
        match pg.action_row(key) {
            Ok(Some(row)) => {
                if let Some(r) = record_of(row) {
                    self.mem().insert(key.to_owned(), r);
                }
            }
            Ok(None) => {
                self.mem().remove(key);
            }
            Err(f) => pg.warn("next-boot action: the last value seen is used", &f),
        }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The action for `host`: its record, else its config default.
    pub fn action(&self, host: &HostConfig) -> NextBoot {
        self.record(host).map_or(host.next_boot, |r| r.action)
    }

    /// The record of `host`, if one was set.
    pub fn record(&self, host: &HostConfig) -> Option<Record> {
        let key = host.key()?;
        self.refresh(&key);
        self.mem().get(&key).copied()
    }

    /// Sets `action` for every host in `hosts` in one durable commit; returns how many changed
    /// (a host already at `action` with a record is left as it is). Memory is updated only
    /// after the commit.
    pub fn set(
        &self,
        hosts: &[&HostConfig],
        action: NextBoot,
        now_unix: u64,
    ) -> Result<usize, LeaseError> {
        self.commit(hosts, action, &[], now_unix)
    }

    /// [`set`](Self::set) `install` for `hosts` and give each a new install token, in one
    /// commit (even a host already at `install` gets a new token): URLs rendered before stop
    /// working as soon as this returns. Returns how many next-boot actions changed.
    pub fn reinstall(&self, hosts: &[&HostConfig], now_unix: u64) -> Result<usize, StateError> {
        let mut keys: Vec<String> = hosts.iter().filter_map(|h| h.key()).collect();
        keys.sort();
        keys.dedup();
        let fresh = tokens::fresh(&keys)?;
        // Held across the commit: a host's first token made meanwhile ([`Self::token`]) cannot
        // land in the database after these and be shadowed by them in memory.
        let mut published = self.tokens();
        let changed = self.commit(hosts, NextBoot::Install, &fresh, now_unix)?;
        published.extend(fresh);
        Ok(changed)
    }

    /// Sets `action` for `hosts` and writes `new_tokens`, in one durable commit.
    fn commit(
        &self,
        hosts: &[&HostConfig],
        action: NextBoot,
        new_tokens: &[(String, Token)],
        now_unix: u64,
    ) -> Result<usize, LeaseError> {
        let mut changes: Vec<String> = Vec::new();
        {
            let mem = self.mem();
            for h in hosts {
                if let Some(k) = h.key()
                    && mem.get(&k).map(|r| r.action) != Some(action)
                    && !changes.contains(&k)
                {
                    changes.push(k);
                }
            }
        }
        if changes.is_empty() && new_tokens.is_empty() {
            return Ok(0);
        }
        let record = Record {
            action,
            changed_unix: now_unix,
        };
        let db = match &self.backend {
            Backend::Redb(db) => db,
            Backend::Postgres(pg) => {
                // Every selected host: another instance may have changed what memory shows.
                let mut keys: Vec<String> = hosts.iter().filter_map(|h| h.key()).collect();
                keys.sort();
                keys.dedup();
                let tokens: Vec<(String, Vec<u8>)> = new_tokens
                    .iter()
                    .map(|(k, t)| (k.clone(), t.bytes().to_vec()))
                    .collect();
                let row = (
                    i16::from(code(action)),
                    i64::try_from(now_unix).unwrap_or(i64::MAX),
                );
                let changed = pg.write_hosts(&keys, row, &tokens)?;
                let mut mem = self.mem();
                for k in &keys {
                    if changed.contains(k) || !mem.contains_key(k) {
                        mem.insert(k.clone(), record);
                    }
                }
                return Ok(changed.len());
            }
        };
        let bytes = encode(record);
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(NEXT_BOOT)?;
            for k in &changes {
                table.insert(k.as_str(), &bytes[..])?;
            }
        }
        tokens::write(&txn, new_tokens)?;
        txn.commit()?;
        let mut mem = self.mem();
        for k in &changes {
            mem.insert(k.clone(), record);
        }
        Ok(changes.len())
    }
}

fn encode(r: Record) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = code(r.action);
    b[1..].copy_from_slice(&r.changed_unix.to_be_bytes());
    b
}

/// Every next-boot record and install token of a store (`store migrate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostData {
    pub records: Vec<(String, Record)>,
    pub tokens: Vec<(String, Token)>,
}

impl NextBootStore {
    /// What the store holds (as loaded at open, with this process's changes since).
    pub fn export(&self) -> HostData {
        let mut records: Vec<_> = self.mem().iter().map(|(k, r)| (k.clone(), *r)).collect();
        let mut tokens: Vec<_> = self.tokens().iter().map(|(k, t)| (k.clone(), *t)).collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        tokens.sort_by(|a, b| a.0.cmp(&b.0));
        HostData { records, tokens }
    }
}

/// Writes `data` in `txn` (the caller commits); `replace` empties both tables first.
pub fn write_redb(
    txn: &redb::WriteTransaction,
    data: &HostData,
    replace: bool,
) -> Result<(), LeaseError> {
    if replace {
        txn.delete_table(NEXT_BOOT)?;
        txn.delete_table(tokens::INSTALL_TOKENS)?;
    }
    {
        let mut table = txn.open_table(NEXT_BOOT)?;
        for (k, r) in &data.records {
            table.insert(k.as_str(), &encode(*r)[..])?;
        }
    }
    tokens::write(txn, &data.tokens)
}

/// A PostgreSQL `next_boot` row as a record.
fn record_of((action, changed): crate::store::postgres::ActionRow) -> Option<Record> {
    Some(Record {
        action: from_code(u8::try_from(action).ok()?)?,
        changed_unix: u64::try_from(changed).ok()?,
    })
}

fn decode(b: &[u8]) -> Option<Record> {
    let (&code, rest) = b.split_first()?;
    Some(Record {
        action: from_code(code)?,
        changed_unix: u64::from_be_bytes(rest.try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::testing::hosts;

    #[test]
    fn actions_persist_and_default_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let h = hosts();
        let mut installer = h[1].clone();
        installer.next_boot = NextBoot::Install;
        {
            let store = NextBootStore::open(Arc::new(Database::create(&path).unwrap())).unwrap();
            assert_eq!(store.action(&h[0]), NextBoot::Local);
            assert_eq!(store.action(&installer), NextBoot::Install);
            assert_eq!(
                store
                    .set(&[&h[0], &h[2], &h[0]], NextBoot::Install, 100)
                    .unwrap(),
                2
            );
            // Already there: nothing to write.
            assert_eq!(store.set(&[&h[0]], NextBoot::Install, 101).unwrap(), 0);
            assert_eq!(store.set(&[&installer], NextBoot::Local, 102).unwrap(), 1);
        }
        // Reopened: the records survive, others keep their config default.
        let store = NextBootStore::open(Arc::new(Database::create(&path).unwrap())).unwrap();
        assert_eq!(store.action(&h[0]), NextBoot::Install);
        assert_eq!(
            store.record(&h[2]),
            Some(Record {
                action: NextBoot::Install,
                changed_unix: 100
            })
        );
        assert_eq!(store.action(&installer), NextBoot::Local);
        assert_eq!(store.action(&h[3]), NextBoot::Local);
        assert_eq!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode(&[1, 0]), None);
    }

    /// A database written before install tokens (leases and next-boot records, no
    /// `install_tokens` table) opens; its records stay; each host gets a token when first
    /// needed, kept across restarts; `reinstall` replaces it, durably.
    #[test]
    fn a_database_without_tokens_gets_them() {
        use redb::TableHandle;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let h = hosts();
        {
            // The previous version's file: its lease tables and one next-boot record.
            let db = Arc::new(Database::create(&path).unwrap());
            crate::dhcp::leases::RedbLeaseStore::open_shared(Arc::clone(&db)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(NEXT_BOOT)
                .unwrap()
                .insert(
                    h[0].key().unwrap().as_str(),
                    &encode(Record {
                        action: NextBoot::Install,
                        changed_unix: 5,
                    })[..],
                )
                .unwrap();
            txn.commit().unwrap();
            let read = db.begin_read().unwrap();
            let tables: Vec<String> = read
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_owned())
                .collect();
            assert!(!tables.iter().any(|t| t == "install_tokens"), "{tables:?}");
        }
        let open = || NextBootStore::open(Arc::new(Database::create(&path).unwrap())).unwrap();
        let first = {
            let store = open();
            assert_eq!(store.action(&h[0]), NextBoot::Install);
            assert_eq!(store.current_token(&h[0]), None);
            let t = store.token(&h[0]).unwrap().unwrap();
            assert_eq!(store.token(&h[0]).unwrap(), Some(t));
            assert_eq!(store.current_token(&h[0]), Some(t));
            assert_ne!(store.token(&h[1]).unwrap(), Some(t));
            t
        };
        let second = {
            let store = open();
            assert_eq!(store.current_token(&h[0]), Some(first));
            assert_eq!(store.record(&h[0]).map(|r| r.changed_unix), Some(5));
            // Already to install: no next-boot change, but a new token all the same.
            assert_eq!(store.reinstall(&[&h[0]], 9).unwrap(), 0);
            let t = store.current_token(&h[0]).unwrap();
            assert_ne!(t, first);
            t
        };
        assert_eq!(open().current_token(&h[0]), Some(second));
    }
}

/// The answer to a `host` request: `{"ok": true, "changed": N, "hosts": [...]}` when carried
/// out, `{"ok": false, "error": "..."}` when refused (the shape of the daemon's error
/// answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAnswer {
    pub ok: bool,
    /// How many hosts' next boot changed (present when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<usize>,
    /// The selected hosts, in config order (present when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostRow>>,
    /// Why the request was refused (present when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostAnswer {
    pub fn done(changed: usize, hosts: Vec<HostRow>) -> HostAnswer {
        HostAnswer {
            ok: true,
            changed: Some(changed),
            hosts: Some(hosts),
            error: None,
        }
    }

    pub fn refused(error: impl Into<String>) -> HostAnswer {
        HostAnswer {
            ok: false,
            changed: None,
            hosts: None,
            error: Some(error.into()),
        }
    }
}

/// One host in a [`HostAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// Its hostname, else its key.
    pub name: String,
    /// `mac:...` or `uuid:...`.
    pub key: Option<String>,
    pub next_boot: NextBoot,
    /// When its next boot was last set (none: the config's default applies).
    pub changed_unix: Option<u64>,
    /// Its install token (`show` only: the control socket is root's, the offline CLI needs
    /// the database file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// What `pxe-server host SELECTOR ACTION` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    /// Install at the next boot, then boot locally (the installer's callback flips it).
    Reinstall,
    /// Boot from the local disk.
    Local,
    /// Only print the hosts and their next boot.
    Show,
}

impl HostAction {
    const ALL: [HostAction; 3] = [HostAction::Reinstall, HostAction::Local, HostAction::Show];

    /// The word on the command line and in control requests.
    pub fn name(self) -> &'static str {
        match self {
            HostAction::Reinstall => "reinstall",
            HostAction::Local => "local",
            HostAction::Show => "show",
        }
    }
}

impl std::str::FromStr for HostAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HostAction::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown host action {s:?} (reinstall, local, show)"))
    }
}

/// Carries out a host command against `store` for the hosts `selector` names; the answer is
/// what both the daemon's control socket and the offline CLI give back: the selected hosts
/// with their next boot, or why the command was refused.
pub fn host_command(
    store: &NextBootStore,
    hosts: &HostIndex,
    action: HostAction,
    selector: &str,
    now_unix: u64,
) -> HostAnswer {
    let picked = match hosts.select(selector) {
        Ok(p) => p,
        Err(e) => return HostAnswer::refused(e.to_string()),
    };
    let chosen: Vec<&HostConfig> = picked.iter().map(|&i| hosts.get(i)).collect();
    let changed = match action {
        HostAction::Show => Ok(0),
        HostAction::Reinstall => store.reinstall(&chosen, now_unix),
        HostAction::Local => store
            .set(&chosen, NextBoot::Local, now_unix)
            .map_err(StateError::from),
    };
    let changed = match changed {
        Ok(n) => n,
        Err(e) => return HostAnswer::refused(format!("not recorded: {e}")),
    };
    let mut rows = Vec::with_capacity(chosen.len());
    for h in &chosen {
        let token = if action == HostAction::Show {
            match store.token(h) {
                Ok(t) => t.map(|t| t.hex()),
                Err(e) => return HostAnswer::refused(format!("no install token: {e}")),
            }
        } else {
            None
        };
        rows.push(HostRow {
            name: h.label(),
            key: h.key(),
            next_boot: store.action(h),
            changed_unix: store.record(h).map(|r| r.changed_unix),
            token,
        });
    }
    HostAnswer::done(changed, rows)
}

#[cfg(test)]
mod command_tests {
    use super::*;

    /// The answer as the control socket and `pxe-server host --json` carry it.
    fn json(answer: HostAnswer) -> serde_json::Value {
        serde_json::to_value(answer).unwrap()
    }

    #[test]
    fn host_command_sets_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let store = NextBootStore::open(Arc::new(
            Database::create(dir.path().join("l.redb")).unwrap(),
        ))
        .unwrap();
        let hosts = HostIndex::new(
            (1..=3)
                .map(|i| HostConfig {
                    mac: Some(format!("52:54:00:00:00:0{i}").parse().unwrap()),
                    uuid: None,
                    hostname: Some(format!("n{i}")),
                    address: None,
                    boot: Default::default(),
                    next_boot: NextBoot::Local,
                    vars: toml::Table::new(),
                })
                .collect(),
        );
        let v = json(host_command(
            &store,
            &hosts,
            HostAction::Reinstall,
            "n1,n3",
            7,
        ));
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["changed"], 2);
        assert_eq!(v["hosts"][1]["name"], "n3");
        assert_eq!(v["hosts"][1]["next_boot"], "install");
        assert_eq!(v["hosts"][1]["changed_unix"], 7);
        let v = json(host_command(&store, &hosts, HostAction::Show, "all", 8));
        let boots: Vec<&str> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["next_boot"].as_str().unwrap())
            .collect();
        assert_eq!(boots, ["install", "local", "install"]);
        let v = json(host_command(&store, &hosts, HostAction::Local, "n9", 9));
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains("n9"));
        assert_eq!("reinstall".parse::<HostAction>(), Ok(HostAction::Reinstall));
        assert!("wipe".parse::<HostAction>().is_err());
    }
}
