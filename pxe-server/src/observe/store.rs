//! The store's `/metrics` families: `pxe_store_up` (1 while the database answers, label
//! `backend`), commits and their duration, failures by cause, and the lease writes the
//! database refused because another instance's client holds the address. Read at scrape
//! time from the store's own counters.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType::{Counter, Gauge};

use super::families::{by, histograms, single};
use crate::store::Store;

/// The store families of `/metrics`.
#[derive(Debug)]
pub struct StoreFamilies {
    pub store: Store,
}

impl Collector for StoreFamilies {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let (backend, up) = match &self.store {
            Store::Redb { .. } => ("redb", true),
            Store::Postgres(pg) => ("postgres", pg.is_up()),
        };
        by(
            &mut e,
            "pxe_store_up",
            "1 while the store answers (PostgreSQL: the last statement or heartbeat succeeded).",
            Gauge,
            "backend",
            [(backend, u64::from(up))],
        )?;
        let Store::Postgres(pg) = &self.store else {
            return Ok(());
        };
        let m = pg.metrics.snapshot();
        single(
            &mut e,
            "pxe_store_commits",
            "Transactions the shared store committed (lease batches, next-boot changes, tokens).",
            Counter,
            m.commits,
        )?;
        histograms(
            &mut e,
            "pxe_store_commit_seconds",
            "Time from a transaction's first statement to its commit.",
            [([] as [(&str, &str); 0], pg.commit_seconds.snapshot())],
        )?;
        by(
            &mut e,
            "pxe_store_errors",
            "Store operations that failed, by cause (down: refused at once while the \
             database is unreachable).",
            Counter,
            "cause",
            [
                ("connection", m.errors_connection),
                ("timeout", m.errors_timeout),
                ("query", m.errors_query),
                ("down", m.errors_down),
            ],
        )?;
        // Conflicts are exported once, by the DHCP families (pxe_dhcp_lease_conflicts_total).
        Ok(())
    }
}
