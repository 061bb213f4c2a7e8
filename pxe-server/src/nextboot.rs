//! Boot-once reinstall: each `[[hosts]]` entry has a next-boot action, `install` (serve the
//! installer) or `local` (boot from the local disk). The action starts as the host's
//! `next_boot` in the config; `pxe-server host ... reinstall|local` and the installer's
//! callback change it, and the change is persisted (fsync) in the lease database's file, in
//! table `next_boot`, before it is acknowledged.
//!
//! Hosts are keyed by MAC (`mac:52:54:00:12:34:56`), else by UUID (`uuid:...`): the identity
//! the DHCP side matches them by. [`select`] resolves an operator's selector (names, MACs,
//! UUIDs, globs over hostnames, `all`) to config entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::HostConfig;
use crate::dhcp::leases::LeaseError;
use pxe_proto::{ClientUuid, MacAddr};

/// `key -> [action, changed_unix (8 bytes, big endian)]`.
const NEXT_BOOT: TableDefinition<&str, &[u8]> = TableDefinition::new("next_boot");

/// What a host boots next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NextBoot {
    /// The installer (kernel, initrd and install template of the host's profile).
    Install,
    /// The local disk.
    #[default]
    Local,
}

impl NextBoot {
    fn code(self) -> u8 {
        match self {
            NextBoot::Install => 1,
            NextBoot::Local => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(NextBoot::Install),
            2 => Some(NextBoot::Local),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NextBoot::Install => "install",
            NextBoot::Local => "local",
        }
    }
}

/// The stable key of a host: its MAC, else its UUID; `None` for an entry with neither (the
/// config refuses those).
pub fn host_key(h: &HostConfig) -> Option<String> {
    if let Some(m) = h.mac {
        return Some(format!("mac:{m}"));
    }
    h.uuid.map(|u| format!("uuid:{u}"))
}

/// A host's name for people: its hostname, else its key.
pub fn host_label(h: &HostConfig) -> String {
    h.hostname
        .clone()
        .or_else(|| host_key(h))
        .unwrap_or_else(|| "(unnamed)".to_owned())
}

/// A recorded action and when it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub action: NextBoot,
    pub changed_unix: u64,
}

/// The persisted next-boot actions, with an in-memory copy for reads.
pub struct NextBootStore {
    db: Arc<Database>,
    mem: Mutex<HashMap<String, Record>>,
}

impl std::fmt::Debug for NextBootStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextBootStore").finish_non_exhaustive()
    }
}

impl NextBootStore {
    /// Opens the table in `db` (creating it) and loads every record; records that do not
    /// decode are skipped with a warning (the host falls back to its config default).
    pub fn open(db: Arc<Database>) -> Result<Self, LeaseError> {
        let txn = db.begin_write()?;
        txn.open_table(NEXT_BOOT)?;
        txn.commit()?;
        let mut mem = HashMap::new();
        {
            let read = db.begin_read()?;
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
            db,
            mem: Mutex::new(mem),
        })
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The action for `host`: its record, else its config default.
    pub fn action(&self, host: &HostConfig) -> NextBoot {
        host_key(host)
            .and_then(|k| self.mem().get(&k).copied())
            .map_or(host.next_boot, |r| r.action)
    }

    /// The record of `host`, if one was set.
    pub fn record(&self, host: &HostConfig) -> Option<Record> {
        host_key(host).and_then(|k| self.mem().get(&k).copied())
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
        let mut changes: Vec<String> = Vec::new();
        {
            let mem = self.mem();
            for h in hosts {
                if let Some(k) = host_key(h)
                    && mem.get(&k).map(|r| r.action) != Some(action)
                    && !changes.contains(&k)
                {
                    changes.push(k);
                }
            }
        }
        if changes.is_empty() {
            return Ok(0);
        }
        let record = Record {
            action,
            changed_unix: now_unix,
        };
        let bytes = encode(record);
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(NEXT_BOOT)?;
            for k in &changes {
                table.insert(k.as_str(), &bytes[..])?;
            }
        }
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
    b[0] = r.action.code();
    b[1..].copy_from_slice(&r.changed_unix.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Record> {
    let (&code, rest) = b.split_first()?;
    Some(Record {
        action: NextBoot::from_code(code)?,
        changed_unix: u64::from_be_bytes(rest.try_into().ok()?),
    })
}

/// A selector that matched nothing, or an empty one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("empty host selector")]
    Empty,
    #[error("no [[hosts]] entry matches {0:?}")]
    NoMatch(String),
}

/// The `[[hosts]]` entries (indices, in config order, no duplicates) that `selector` names:
/// `all`, or a comma-separated list of hostnames, MACs (any case, `:` or `-`), UUIDs, and
/// globs (`*`, `?`) over hostnames. Every item must match at least one host.
pub fn select(hosts: &[HostConfig], selector: &str) -> Result<Vec<usize>, SelectError> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err(SelectError::Empty);
    }
    if selector == "all" {
        return Ok((0..hosts.len()).collect());
    }
    let items: Vec<&str> = selector.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(SelectError::Empty);
    }
    let mut out: Vec<usize> = Vec::new();
    for item in items {
        let mac: Option<MacAddr> = item.replace('-', ":").parse().ok();
        let uuid: Option<ClientUuid> = item.parse().ok();
        let mut matched = false;
        for (i, h) in hosts.iter().enumerate() {
            let hit = (mac.is_some() && h.mac == mac)
                || (uuid.is_some() && h.uuid == uuid)
                || h.hostname.as_deref().is_some_and(|n| glob(item, n));
            if hit {
                matched = true;
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        if !matched {
            return Err(SelectError::NoMatch(item.to_owned()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `*` matches any run of characters, `?` one; everything else itself. Iterative, with one
/// backtrack point: linear in practice, never recursive.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(mac: Option<&str>, uuid: Option<&str>, name: Option<&str>) -> HostConfig {
        HostConfig {
            mac: mac.map(|m| m.parse().unwrap()),
            uuid: uuid.map(|u| u.parse().unwrap()),
            hostname: name.map(str::to_owned),
            address: None,
            boot: Default::default(),
            next_boot: NextBoot::Local,
            vars: toml::Table::new(),
        }
    }

    const UUID: &str = "4c4c4544-0031-3510-8047-b4c04f4d3232";

    fn hosts() -> Vec<HostConfig> {
        vec![
            host(Some("52:54:00:00:00:01"), None, Some("rack1-n01")),
            host(Some("52:54:00:00:00:02"), None, Some("rack1-n02")),
            host(None, Some(UUID), Some("rack2-n01")),
            host(Some("52:54:00:00:00:04"), None, None),
        ]
    }

    #[test]
    fn selectors() {
        let h = hosts();
        assert_eq!(select(&h, "all").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(select(&h, "rack1-*").unwrap(), vec![0, 1]);
        assert_eq!(select(&h, "*-n01").unwrap(), vec![0, 2]);
        assert_eq!(select(&h, "rack?-n0?").unwrap(), vec![0, 1, 2]);
        assert_eq!(select(&h, "52-54-00-00-00-04").unwrap(), vec![3]);
        assert_eq!(select(&h, "52:54:00:00:00:02, rack1-n02").unwrap(), vec![1]);
        assert_eq!(select(&h, &UUID.to_uppercase()).unwrap(), vec![2]);
        assert_eq!(
            select(&h, "rack1-n01,rack9-*"),
            Err(SelectError::NoMatch("rack9-*".into()))
        );
        assert_eq!(select(&h, " "), Err(SelectError::Empty));
        assert_eq!(select(&h, "a,,b"), Err(SelectError::Empty));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(!glob("n?", "n"));
    }

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
/// the JSON document both the daemon's control socket and the offline CLI print:
/// `{"ok": true, "changed": N, "hosts": [{"name", "key", "next_boot", "changed_unix"}]}` or
/// `{"ok": false, "error": "..."}`.
pub fn host_command(
    store: &NextBootStore,
    hosts: &[HostConfig],
    action: HostAction,
    selector: &str,
    now_unix: u64,
) -> serde_json::Value {
    let picked = match select(hosts, selector) {
        Ok(p) => p,
        Err(e) => return serde_json::json!({ "ok": false, "error": e.to_string() }),
    };
    let chosen: Vec<&HostConfig> = picked.iter().map(|&i| &hosts[i]).collect();
    let changed = match action {
        HostAction::Show => 0,
        HostAction::Reinstall | HostAction::Local => {
            let to = if action == HostAction::Reinstall {
                NextBoot::Install
            } else {
                NextBoot::Local
            };
            match store.set(&chosen, to, now_unix) {
                Ok(n) => n,
                Err(e) => {
                    return serde_json::json!({
                        "ok": false,
                        "error": format!("not recorded: {e}"),
                    });
                }
            }
        }
    };
    let rows: Vec<serde_json::Value> = chosen
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": host_label(h),
                "key": host_key(h),
                "next_boot": store.action(h).name(),
                "changed_unix": store.record(h).map(|r| r.changed_unix),
            })
        })
        .collect();
    serde_json::json!({ "ok": true, "changed": changed, "hosts": rows })
}

#[cfg(test)]
mod command_tests {
    use super::*;

    #[test]
    fn host_command_sets_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let store = NextBootStore::open(Arc::new(
            Database::create(dir.path().join("l.redb")).unwrap(),
        ))
        .unwrap();
        let hosts: Vec<HostConfig> = (1..=3)
            .map(|i| HostConfig {
                mac: Some(format!("52:54:00:00:00:0{i}").parse().unwrap()),
                uuid: None,
                hostname: Some(format!("n{i}")),
                address: None,
                boot: Default::default(),
                next_boot: NextBoot::Local,
                vars: toml::Table::new(),
            })
            .collect();
        let v = host_command(&store, &hosts, HostAction::Reinstall, "n1,n3", 7);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["changed"], 2);
        assert_eq!(v["hosts"][1]["name"], "n3");
        assert_eq!(v["hosts"][1]["next_boot"], "install");
        assert_eq!(v["hosts"][1]["changed_unix"], 7);
        let v = host_command(&store, &hosts, HostAction::Show, "all", 8);
        let boots: Vec<&str> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["next_boot"].as_str().unwrap())
            .collect();
        assert_eq!(boots, ["install", "local", "install"]);
        let v = host_command(&store, &hosts, HostAction::Local, "n9", 9);
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains("n9"));
        assert_eq!("reinstall".parse::<HostAction>(), Ok(HostAction::Reinstall));
        assert!("wipe".parse::<HostAction>().is_err());
    }
}
