//! Next-boot actions (`next_boot`: host key, action code, when it changed) and install tokens
//! (`install_tokens`: host key, 16 bytes) in PostgreSQL, as raw rows; `nextboot` gives them
//! their meaning. Every write commits (durably) before it returns.

use std::time::Instant;

use super::{Fail, PgStore};

/// A `next_boot` row: action code and change time.
pub type ActionRow = (i16, i64);

/// Every `next_boot` row and every `install_tokens` row.
pub type HostRows = (Vec<(String, ActionRow)>, Vec<(String, Vec<u8>)>);

impl PgStore {
    /// Every next-boot row and every token.
    pub fn host_rows(&self) -> Result<HostRows, Fail> {
        self.run(async {
            let c = self.client().await?;
            let actions = c
                .query("SELECT host, action, changed FROM next_boot", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect();
            let tokens = c
                .query("SELECT host, token FROM install_tokens", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            Ok((actions, tokens))
        })
    }

    /// The next-boot row of `host` as the database has it now.
    pub fn action_row(&self, host: &str) -> Result<Option<ActionRow>, Fail> {
        self.run(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached("SELECT action, changed FROM next_boot WHERE host = $1")
                .await?;
            Ok(c.query_opt(&st, &[&host])
                .await?
                .map(|r| (r.get(0), r.get(1))))
        })
    }

    /// The token of `host` as the database has it now.
    pub fn token_row(&self, host: &str) -> Result<Option<Vec<u8>>, Fail> {
        self.run(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached("SELECT token FROM install_tokens WHERE host = $1")
                .await?;
            Ok(c.query_opt(&st, &[&host]).await?.map(|r| r.get(0)))
        })
    }

    /// Sets `row` for every host of `hosts` whose action differs (or has none) and writes
    /// `tokens`, in one transaction; returns the hosts whose action changed.
    pub fn write_hosts(
        &self,
        hosts: &[String],
        row: ActionRow,
        tokens: &[(String, Vec<u8>)],
    ) -> Result<Vec<String>, Fail> {
        let started = Instant::now();
        let changed = self.run(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let set = tx
                .prepare_cached(
                    "INSERT INTO next_boot AS n (host, action, changed) VALUES ($1, $2, $3) \
                     ON CONFLICT (host) DO UPDATE SET action = EXCLUDED.action, \
                     changed = EXCLUDED.changed WHERE n.action <> EXCLUDED.action",
                )
                .await?;
            let mut changed = Vec::new();
            for h in hosts {
                if tx.execute(&set, &[h, &row.0, &row.1]).await? > 0 {
                    changed.push(h.clone());
                }
            }
            let put = tx
                .prepare_cached(
                    "INSERT INTO install_tokens (host, token) VALUES ($1, $2) \
                     ON CONFLICT (host) DO UPDATE SET token = EXCLUDED.token",
                )
                .await?;
            for (h, t) in tokens {
                tx.execute(&put, &[h, t]).await?;
            }
            tx.commit().await?;
            Ok(changed)
        })?;
        self.committed(started);
        Ok(changed)
    }

    /// Gives `host` the token `fresh` unless it has one (another instance may have made it
    /// first); returns the token it has.
    pub fn first_token(&self, host: &str, fresh: &[u8]) -> Result<Vec<u8>, Fail> {
        let started = Instant::now();
        let t = self.run(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached(
                    "WITH ins AS (INSERT INTO install_tokens (host, token) VALUES ($1, $2) \
                     ON CONFLICT (host) DO NOTHING RETURNING token) \
                     SELECT token FROM ins UNION ALL \
                     SELECT token FROM install_tokens WHERE host = $1 LIMIT 1",
                )
                .await?;
            if let Some(r) = c.query_opt(&st, &[&host, &fresh]).await? {
                return Ok(r.get(0));
            }
            // Made by another instance after this statement's snapshot: read it now.
            Ok(
                c.query_one("SELECT token FROM install_tokens WHERE host = $1", &[&host])
                    .await?
                    .get(0),
            )
        })?;
        self.committed(started);
        Ok(t)
    }
}
