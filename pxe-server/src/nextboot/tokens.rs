//! Per-host install tokens: the secret in every install and callback URL of a host
//! (`/install/KEY/TOKEN/NAME`, `/done/KEY/TOKEN`).
//!
//! - 128 bits from the OS CSPRNG (`getrandom`), written as 32 lowercase hex digits: nothing
//!   about them follows from the MAC or UUID that every DHCP broadcast shows.
//! - Kept in the lease database's file, table `install_tokens` (`key -> 16 bytes`), next to the
//!   next-boot actions. A database written before tokens existed has no such table: it is
//!   created when the store opens, and each host gets its token the first time one is needed
//!   (its iPXE script is rendered, or `host ... show` asks).
//! - Rotated by `pxe-server host ... reinstall`, in the same commit as the next-boot change;
//!   the in-memory copy the install routes check is replaced only after that commit, so the
//!   old token stops working the moment the command answers.
//! - Checked in constant time ([`subtle`]); a host without a token accepts none.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use subtle::ConstantTimeEq;

use super::{NextBootStore, StateError};
use crate::dhcp::leases::LeaseError;
use crate::hosts::HostConfig;
use pxe_proto::uri::hex_digit;

/// `key -> token (16 bytes)`.
pub(super) const INSTALL_TOKENS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("install_tokens");

/// Bytes of a token (128 bits).
pub const TOKEN_BYTES: usize = 16;

/// A host's install token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token([u8; TOKEN_BYTES]);

impl std::fmt::Debug for Token {
    // Never in a debug print or a log line by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The OS random source failed: no token can be made (the request that needed it fails).
#[derive(Debug, thiserror::Error)]
#[error("no random bytes from the OS for an install token: {0}")]
pub struct RandomError(getrandom::Error);

impl Token {
    /// A fresh token from the OS CSPRNG.
    pub fn random() -> Result<Token, RandomError> {
        let mut b = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut b).map_err(RandomError)?;
        Ok(Token(b))
    }

    /// 32 lowercase hex digits (URL-safe as it is).
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(2 * TOKEN_BYTES);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// The 16 bytes (as a database stores them).
    pub(crate) fn bytes(&self) -> &[u8; TOKEN_BYTES] {
        &self.0
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Token> {
        Some(Token(b.try_into().ok()?))
    }

    /// Whether `presented` (as it came in a URL) is this token. The comparison of the bytes
    /// takes the same time wherever they differ; a string that is not 32 hex digits is
    /// compared as all zeros and refused.
    pub fn matches(&self, presented: &str) -> bool {
        let (bytes, well_formed) = parse_hex(presented);
        (self.0.ct_eq(&bytes) & subtle::Choice::from(u8::from(well_formed))).into()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The bytes of 32 hex digits (either case), and whether that is what `s` was.
fn parse_hex(s: &str) -> ([u8; TOKEN_BYTES], bool) {
    let mut out = [0u8; TOKEN_BYTES];
    let s = s.as_bytes();
    if s.len() != 2 * TOKEN_BYTES {
        return (out, false);
    }
    let mut ok = true;
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let (hi, lo) = (hex_digit(pair[0]), hex_digit(pair[1]));
        ok &= hi.is_some() && lo.is_some();
        out[i] = (hi.unwrap_or(0) << 4) | lo.unwrap_or(0);
    }
    (out, ok)
}

/// Every token in the table; rows that do not decode are skipped with a warning (that host
/// gets a new token when it next needs one).
pub(super) fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<HashMap<String, Token>, LeaseError> {
    let mut tokens = HashMap::new();
    for row in table.iter()? {
        let (k, v) = row?;
        match Token::from_bytes(v.value()) {
            Some(t) => {
                tokens.insert(k.value().to_owned(), t);
            }
            None => tracing::warn!(host = %k.value(), "undecodable install token skipped"),
        }
    }
    Ok(tokens)
}

/// A fresh token for each of `keys`, drawn before any transaction opens.
pub(super) fn fresh(keys: &[String]) -> Result<Vec<(String, Token)>, RandomError> {
    keys.iter()
        .map(|k| Ok((k.clone(), Token::random()?)))
        .collect()
}

/// Writes `tokens` in `txn`; the caller commits, then puts them in memory.
pub(super) fn write(txn: &WriteTransaction, tokens: &[(String, Token)]) -> Result<(), LeaseError> {
    let mut table = txn.open_table(INSTALL_TOKENS)?;
    for (k, t) in tokens {
        table.insert(k.as_str(), &t.0[..])?;
    }
    Ok(())
}

impl NextBootStore {
    /// The in-memory tokens. Taken before the next-boot records' lock when both are held.
    pub(super) fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token of `host` as it stands, without making one (`None`: it has none yet, and no
    /// URL can name it).
    pub fn current_token(&self, host: &HostConfig) -> Option<Token> {
        let key = host.key()?;
        if let super::Backend::Postgres(pg) = &self.backend {
            match pg
                .token_row(&key)
                .map(|t| t.as_deref().and_then(Token::from_bytes))
            {
                Ok(Some(t)) => {
                    self.tokens().insert(key, t);
                    return Some(t);
                }
                Ok(None) => {
                    self.tokens().remove(&key);
                    return None;
                }
                Err(f) => pg.warn("install token: the last value seen is used", &f),
            }
        }
        self.tokens().get(&key).copied()
    }

    /// The token of `host`, made and committed first if it has none. `Ok(None)` for a host
    /// without a key (no MAC, no UUID: never in a valid config).
    pub fn token(&self, host: &HostConfig) -> Result<Option<Token>, StateError> {
        let Some(key) = host.key() else {
            return Ok(None);
        };
        // Shared: the database's token, if another instance made or rotated it.
        if matches!(self.backend, super::Backend::Postgres(_))
            && let Some(t) = self.current_token(host)
        {
            return Ok(Some(t));
        }
        // Held across the commit: two requests for a new host make one token, not two.
        let mut tokens = self.tokens();
        if let Some(t) = tokens.get(&key) {
            return Ok(Some(*t));
        }
        let t = Token::random()?;
        let t = match &self.backend {
            super::Backend::Redb(db) => {
                let txn = db.begin_write().map_err(LeaseError::from)?;
                write(&txn, &[(key.clone(), t)])?;
                txn.commit().map_err(LeaseError::from)?;
                t
            }
            super::Backend::Postgres(pg) => {
                let stored = pg.first_token(&key, &t.0).map_err(LeaseError::from)?;
                Token::from_bytes(&stored).ok_or_else(|| LeaseError::Unavailable {
                    reason: format!("install token of {key} does not decode"),
                })?
            }
        };
        tokens.insert(key, t);
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let (a, b) = (Token::random().unwrap(), Token::random().unwrap());
        assert_ne!(a, b);
        let hex = a.hex();
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(a.matches(&hex));
        assert!(a.matches(&hex.to_uppercase()));
        assert!(!a.matches(&b.hex()));
        assert!(!a.matches(&hex[..31]));
        assert!(!a.matches(&format!("{hex}0")));
        assert!(!a.matches(""));
        // One digit off anywhere, and a non-hex character, are refused.
        for i in [0, 17, 31] {
            let mut wrong = hex.clone().into_bytes();
            wrong[i] = if wrong[i] == b'0' { b'1' } else { b'0' };
            assert!(!a.matches(std::str::from_utf8(&wrong).unwrap()));
        }
        let zero = Token([0; TOKEN_BYTES]);
        assert!(zero.matches(&"0".repeat(32)));
        assert!(!zero.matches(&format!("{}zz", "0".repeat(30))));
        assert_eq!(format!("{a:?}"), "Token(..)");
    }
}
