//! The service families of `/metrics`: a [`Collector`] that reads every service's counters
//! (their sums over threads, as `pxe-server status` does), the lease database and the filter
//! counters at scrape time. Nothing is kept between scrapes, so nothing is counted twice and
//! the serving threads do nothing for it.
//!
//! Names follow Prometheus's conventions: base units (`_bytes`, `_seconds`), counters get
//! `_total` from the encoder (their registered names never end in it).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::dhcp::leases::LeaseCounts;
use crate::dhcp::metrics::{DhcpMetrics, DhcpSnapshot};
use crate::http::router::{Route, STATUS_CLASSES};
use crate::http::{HttpMetrics, HttpSnapshot};
use crate::metrics::HistogramSnapshot;
use crate::tftp::metrics::{TftpMetrics, TftpSnapshot};
use crate::xdp::{FallbackCounters, XdpCounterMap};
use pxe_ebpf::{COUNTER_COUNT, COUNTER_NAMES};

/// What the collector reads at each scrape.
#[derive(Debug)]
pub struct Sources {
    pub tftp: Arc<TftpMetrics>,
    pub http: Option<Arc<HttpMetrics>>,
    pub dhcp: Option<DhcpSource>,
}

/// The DHCP service as the collector reads it.
#[derive(Debug)]
pub struct DhcpSource {
    pub metrics: Arc<DhcpMetrics>,
    /// `full` or `proxy` (the `mode` label).
    pub mode: &'static str,
    /// Full mode: the lease database and each subnet's pool size.
    pub leases: Option<LeaseSource>,
    /// The XDP program's counters, where it is attached.
    pub xdp: Option<Arc<XdpCounterMap>>,
    pub userspace: Arc<FallbackCounters>,
}

#[derive(Debug)]
pub struct LeaseSource {
    pub db: crate::store::Store,
    /// `(subnet, addresses in its range)`.
    pub pools: Vec<(String, u64)>,
}

/// One scrape's values, read from [`Sources`] (or made by a test).
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub tftp: TftpSnapshot,
    pub http: Option<HttpReadings>,
    pub dhcp: Option<DhcpReadings>,
}

#[derive(Debug, Clone, Default)]
pub struct HttpReadings {
    pub snapshot: HttpSnapshot,
    /// Responses by [`Route`] (index) and [`STATUS_CLASSES`] (index).
    pub by_route: [[u64; STATUS_CLASSES.len()]; Route::ALL.len()],
}

#[derive(Debug, Clone, Default)]
pub struct DhcpReadings {
    pub snapshot: DhcpSnapshot,
    pub mode: &'static str,
    /// `None` without a lease database, or when it could not be read (logged).
    pub leases: Option<LeaseCounts>,
    pub pools: Vec<(String, u64)>,
    pub xdp: Option<[u64; COUNTER_COUNT as usize]>,
    pub userspace: [u64; COUNTER_COUNT as usize],
}

impl Sources {
    /// Reads every source now.
    pub fn read(&self) -> Readings {
        Readings {
            tftp: self.tftp.snapshot(),
            http: self.http.as_ref().map(|m| HttpReadings {
                snapshot: m.snapshot(),
                by_route: std::array::from_fn(|r| {
                    std::array::from_fn(|c| m.by_route.get(Route::ALL[r], c))
                }),
            }),
            dhcp: self.dhcp.as_ref().map(|d| DhcpReadings {
                snapshot: d.metrics.snapshot(),
                mode: d.mode,
                leases: d.leases.as_ref().and_then(|l| {
                    l.db.lease_counts(crate::daemon::unix_now())
                        .inspect_err(|e| tracing::warn!("/metrics: leases not read: {e}"))
                        .ok()
                }),
                pools: d
                    .leases
                    .as_ref()
                    .map(|l| l.pools.clone())
                    .unwrap_or_default(),
                xdp: d.xdp.as_ref().and_then(|x| {
                    x.get()
                        .inspect_err(|e| tracing::warn!("/metrics: XDP counters not read: {e}"))
                        .ok()
                }),
                userspace: d.userspace.get(),
            }),
        }
    }
}

impl Collector for Sources {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        self.read().encode(encoder)
    }
}

/// Writes one family: its descriptor, then each `(labels, value)` series.
fn family<L: EncodeLabelSet, V: Value>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, V)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        let mut s = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => v.counter(&mut s)?,
            _ => v.gauge(&mut s)?,
        }
    }
    Ok(())
}

/// A sample value: counters are u64 (or f64 seconds), gauges i64 or f64.
pub(super) trait Value {
    fn counter(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result;
    fn gauge(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result;
}

impl Value for u64 {
    fn counter(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        m.encode_counter::<NoLabelSet, _, u64>(self, None)
    }
    fn gauge(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        m.encode_gauge(&i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl Value for f64 {
    fn counter(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        m.encode_counter::<NoLabelSet, _, u64>(self, None)
    }
    fn gauge(&self, m: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        m.encode_gauge(self)
    }
}

/// A family without labels.
pub(super) fn single<V: Value>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    v: V,
) -> std::fmt::Result {
    let none: [(&str, &str); 0] = [];
    family(e, name, help, kind, [(none, v)])
}

/// A family with one label.
pub(super) fn by<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &'a str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    family(
        e,
        name,
        help,
        kind,
        series.into_iter().map(|(v, n)| ([(label, v)], n)),
    )
}

use MetricType::{Counter, Gauge};

impl Readings {
    pub fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        self.encode_tftp(&mut e)?;
        if let Some(h) = &self.http {
            h.encode(&mut e)?;
        }
        if let Some(d) = &self.dhcp {
            d.encode(&mut e)?;
        }
        Ok(())
    }

    fn encode_tftp(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let t = &self.tftp;
        single(
            e,
            "pxe_tftp_sessions",
            "TFTP transfers running now.",
            Gauge,
            t.running(),
        )?;
        single(
            e,
            "pxe_tftp_requests",
            "Datagrams received on the TFTP listening sockets.",
            Counter,
            t.requests_received,
        )?;
        by(
            e,
            "pxe_tftp_transfers",
            "TFTP transfers ended, by how they ended.",
            Counter,
            "outcome",
            [
                ("completed", t.sessions_completed),
                ("timed_out", t.sessions_timed_out),
                ("client_error", t.sessions_client_error),
                ("aborted", t.sessions_aborted),
                ("evicted", t.sessions_evicted),
            ],
        )?;
        single(
            e,
            "pxe_tftp_sent_bytes",
            "File bytes sent in TFTP DATA packets (retransmissions included).",
            Counter,
            t.payload_bytes_sent,
        )?;
        single(
            e,
            "pxe_tftp_sent_packets",
            "TFTP packets sent.",
            Counter,
            t.packets_sent,
        )?;
        single(
            e,
            "pxe_tftp_retransmitted_packets",
            "TFTP packets sent again after a timeout or a duplicate ACK.",
            Counter,
            t.retransmitted,
        )?;
        by(
            e,
            "pxe_tftp_refused",
            "TFTP requests refused, by cause (limit: max_sessions or max_sessions_per_client).",
            Counter,
            "cause",
            [
                ("limit", t.refused_limit),
                ("write", t.refused_write),
                ("not_found", t.refused_not_found),
                ("access", t.refused_access),
                ("malformed", t.malformed),
            ],
        )
    }
}

impl HttpReadings {
    fn encode(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let h = &self.snapshot;
        single(
            e,
            "pxe_http_connections",
            "HTTP connections open now.",
            Gauge,
            h.connections_open,
        )?;
        single(
            e,
            "pxe_http_max_connections",
            "The max_connections in force (lowered to fit the open-file limit).",
            Gauge,
            h.connections_limit,
        )?;
        let series = Route::ALL.iter().flat_map(|r| {
            STATUS_CLASSES.iter().enumerate().map(move |(c, class)| {
                (
                    [("route", r.label()), ("status", class)],
                    self.by_route[*r as usize][c],
                )
            })
        });
        family(
            e,
            "pxe_http_requests",
            "HTTP responses, by route and status class.",
            Counter,
            series,
        )?;
        single(
            e,
            "pxe_http_sent_bytes",
            "Bytes written to HTTP client sockets (heads and bodies).",
            Counter,
            h.bytes_sent,
        )?;
        by(
            e,
            "pxe_http_refused",
            "HTTP connections and requests refused or cut, by cause.",
            Counter,
            "cause",
            [
                ("max_connections", h.connections_refused),
                (
                    "max_connections_per_client",
                    h.connections_refused_per_client,
                ),
                ("traversal", h.refused_traversal),
                ("bad_path", h.refused_bad_path),
                ("not_found", h.refused_not_found),
                ("access", h.refused_access),
                ("method", h.refused_method),
                ("range", h.ranges_unsatisfiable),
                ("header_timeout", h.header_timeouts),
                ("min_send_rate", h.send_rate_cuts),
                ("headers_too_large", h.headers_too_large),
                ("bad_request", h.bad_requests),
            ],
        )
    }
}

impl DhcpReadings {
    fn encode(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let d = &self.snapshot;
        family(
            e,
            "pxe_dhcp_messages",
            "DHCP messages received that decoded, by message type.",
            Counter,
            with_mode(
                self.mode,
                [
                    ("discover", d.received_discover),
                    ("request", d.received_request),
                    ("decline", d.received_decline),
                    ("release", d.received_release),
                    ("inform", d.received_inform),
                    ("other", d.received_other),
                ],
            ),
        )?;
        family(
            e,
            "pxe_dhcp_answers",
            "DHCP answers sent, by message type (ack includes INFORM and port 4011 answers).",
            Counter,
            with_mode(
                self.mode,
                [("offer", d.offers), ("ack", d.acks), ("nak", d.naks)],
            ),
        )?;
        let malformed = d.drop_truncated
            + d.drop_not_bootrequest
            + d.drop_bad_htype
            + d.drop_bad_hlen
            + d.drop_bad_magic
            + d.drop_option_overrun
            + d.drop_bad_overload
            + d.drop_missing_message_type
            + d.drop_unknown_message_type
            + d.drop_bad_option_length;
        by(
            e,
            "pxe_dhcp_dropped",
            "DHCP messages not answered, by cause.",
            Counter,
            "cause",
            [
                ("malformed", malformed),
                ("recv_truncated", d.recv_truncated),
                ("not_pxe", d.drop_not_pxe),
                ("unknown_host", d.drop_unknown_host),
                ("no_boot_file", d.drop_no_boot_file),
                ("not_for_us", d.drop_not_for_us),
                ("unexpected_type", d.drop_unexpected_type),
                ("no_server_address", d.drop_no_server_address),
                ("no_subnet", d.drop_no_subnet),
                ("pool_exhausted", d.drop_pool_exhausted),
                ("reservation_conflict", d.drop_reservation_conflict),
                ("init_reboot_unknown", d.drop_init_reboot_unknown),
                ("link_full", d.drop_link_full),
                ("not_our_bucket", d.drop_not_our_bucket),
                ("lease_conflict", d.drop_lease_conflict),
                ("store_error", d.drop_store_error),
                ("encode_error", d.drop_encode_error),
                ("batch_commit", d.drop_batch_commit),
                ("send_error", d.send_errors),
            ],
        )?;
        single(
            e,
            "pxe_dhcp_lease_conflicts",
            "Lease writes refused because another instance holds the address in the shared \
             store (a DISCOVER then tries the next address, a REQUEST is NAKed).",
            Counter,
            d.lease_conflicts,
        )?;
        single(
            e,
            "pxe_dhcp_takeovers",
            "SELECTING REQUESTs naming an instance that stopped heart-beating, ACKed by this \
             one (the client's bucket is now its own) in the dead instance's name.",
            Counter,
            d.takeovers,
        )?;
        if let Some(l) = &self.leases {
            by(
                e,
                "pxe_dhcp_leases",
                "Addresses held in the lease database now, by lease state.",
                Gauge,
                "state",
                [
                    ("offered", l.offered),
                    ("bound", l.bound),
                    ("declined", l.declined),
                ],
            )?;
        }
        if !self.pools.is_empty() {
            by(
                e,
                "pxe_dhcp_pool_addresses",
                "Addresses in each subnet's range (range_start..=range_end).",
                Gauge,
                "subnet",
                self.pools.iter().map(|(s, n)| (s.as_str(), *n)),
            )?;
        }
        let verdicts = |path: &'static str, c: &[u64; COUNTER_COUNT as usize]| {
            // Index 0 is `seen`, the sum of the others.
            (1..COUNTER_COUNT as usize)
                .map(move |i| ([("path", path), ("verdict", COUNTER_NAMES[i])], c[i]))
                .collect::<Vec<_>>()
        };
        let mut series = self
            .xdp
            .as_ref()
            .map(|c| verdicts("xdp", c))
            .unwrap_or_default();
        series.extend(verdicts("userspace", &self.userspace));
        family(
            e,
            "pxe_filter_verdicts",
            "DHCP discovery filter verdicts, in the XDP program and in userspace.",
            Counter,
            series,
        )
    }
}

/// `type` and `mode` labels for each `(type, value)`.
fn with_mode<const N: usize>(
    mode: &'static str,
    series: [(&'static str, u64); N],
) -> [([(&'static str, &'static str); 2], u64); N] {
    series.map(|(t, n)| ([("type", t), ("mode", mode)], n))
}

/// Writes one histogram family: its descriptor, then each `(labels, snapshot)` series.
pub(super) fn histograms<L: AsRef<[(&'static str, &'static str)]>>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, HistogramSnapshot)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, snap) in series {
        let buckets: Vec<(f64, u64)> = snap
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(snap.buckets.iter().copied())
            .collect();
        m.encode_family(&labels.as_ref())?
            .encode_histogram::<NoLabelSet>(snap.sum, snap.count, &buckets, None)?;
    }
    Ok(())
}
