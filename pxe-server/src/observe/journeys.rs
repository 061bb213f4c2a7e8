//! The boot journeys on the metrics listener: their `/metrics` families
//! ([`JourneyFamilies`]: hosts per phase, stuck, completed, evicted, and the DHCP-latency and
//! transfer-duration histograms of [`crate::journey::Timings`]) and what the live page reads
//! ([`JourneyLive`]). Both read at request time; the serving threads only record events.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType::{Counter, Gauge};
use pxe_proto::MacAddr;

use super::families::{by, histograms, single};
use crate::http::HttpMetrics;
use crate::journey::{Journeys, Now, Phase};
use crate::liveview::{LiveData, LiveStats, Quantiles};
use crate::tftp::metrics::TftpMetrics;

/// The journey families of `/metrics`.
#[derive(Debug)]
pub struct JourneyFamilies {
    pub journeys: Arc<Journeys>,
}

impl Collector for JourneyFamilies {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let j = &self.journeys;
        let t = j.timings();
        histograms(
            &mut e,
            "pxe_dhcp_answer_latency_seconds",
            "From the receipt of a DHCP request to the send of its answer (after the lease \
             commit in full mode).",
            t.dhcp_series().map(|(m, s)| ([("mode", m.name())], s)),
        )?;
        histograms(
            &mut e,
            "pxe_transfer_duration_seconds",
            "From the request of a file to the end of its transfer, by protocol and file class.",
            t.transfer_series()
                .map(|(p, c, s)| ([("protocol", p.name()), ("class", c.name())], s)),
        )?;
        if !j.enabled() {
            return Ok(());
        }
        let now = Now::current();
        let summary = j.summary(now);
        let unattributed = j.with(|t| t.stats().unattributed).unwrap_or(0);
        by(
            &mut e,
            "pxe_journey_hosts",
            "Hosts in the journey table, by the furthest phase of their current boot.",
            Gauge,
            "phase",
            Phase::ALL
                .iter()
                .map(|p| (p.name(), summary.phases.0[p.index()] as u64)),
        )?;
        single(
            &mut e,
            "pxe_journey_stuck_hosts",
            "Hosts not finished and without progress for [journeys] stuck_after_secs.",
            Gauge,
            summary.stuck as u64,
        )?;
        single(
            &mut e,
            "pxe_journey_completed",
            "Boots completed (initrd sent, or the installer called back).",
            Counter,
            summary.completed,
        )?;
        single(
            &mut e,
            "pxe_journey_evicted",
            "Journeys dropped to make room ([journeys] max_hosts).",
            Counter,
            summary.evicted,
        )?;
        single(
            &mut e,
            "pxe_journey_unattributed_transfers",
            "Transfers from an address no journey holds (see ARCHITECTURE.md, proxy mode).",
            Counter,
            unattributed,
        )
    }
}

/// What the live page reads: the journeys and the transfer counters.
#[derive(Debug)]
pub struct JourneyLive {
    pub journeys: Arc<Journeys>,
    pub tftp: Arc<TftpMetrics>,
    pub http: Option<Arc<HttpMetrics>>,
}

impl LiveData for JourneyLive {
    fn summary(&self) -> serde_json::Value {
        serde_json::to_value(self.journeys.summary(Now::current())).unwrap_or_default()
    }

    fn hosts(&self, query: &str) -> Result<serde_json::Value, String> {
        let doc = self
            .journeys
            .hosts_document(query, Now::current())
            .map_err(|e| e.to_string())?;
        serde_json::to_value(doc).map_err(|e| e.to_string())
    }

    fn host(&self, mac: &str) -> Option<serde_json::Value> {
        let mac: MacAddr = mac.parse().ok()?;
        let doc = self.journeys.host_document(&mac, Now::current())?;
        serde_json::to_value(doc).ok()
    }

    fn stats(&self) -> LiveStats {
        let t = self.tftp.snapshot();
        let http = self.http.as_ref().map(|h| h.snapshot());
        let timings = self.journeys.timings();
        let latency: Vec<_> = timings.dhcp_series().map(|(_, s)| s).collect();
        let transfers: Vec<_> = timings.transfer_series().map(|(_, _, s)| s).collect();
        LiveStats {
            tftp_sent_bytes: t.payload_bytes_sent,
            http_sent_bytes: http.map_or(0, |h| h.bytes_sent),
            tftp_sessions: t.running(),
            http_connections: http.map_or(0, |h| h.connections_open),
            dhcp_latency: Quantiles::of(&latency),
            transfer_duration: Quantiles::of(&transfers),
        }
    }
}
