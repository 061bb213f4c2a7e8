//! How every service defines its counters ([`counters!`]) and counts ([`inc`], [`add`]): each
//! [`Counter`] is sharded per thread ([`shard`], one cache line per shard) and summed when read,
//! so the serving threads never write the same line. Relaxed atomics: they are statistics.
//! Gauges and admission gates ([`Gauge`]: open connections compared against a limit) stay one
//! exact atomic. A refusal under load is counted every time and logged through a
//! [`LogLimiter`], at most once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;

/// A monotonic count, one cache-padded atomic per [`shard`]: a thread adds to its own shard
/// (uncontended), a reader sums them.
#[derive(Debug, Default)]
pub struct Counter([CachePadded<AtomicU64>; SHARDS]);

impl Counter {
    /// The sum of the shards.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

/// A value that goes up and down, or a setting, read exactly: one atomic shared by every
/// thread (`fetch_add`/`fetch_sub`/`store` on it directly).
pub type Gauge = AtomicU64;

/// What a [`counters!`] struct's fields are: read into its snapshot.
pub trait Read {
    fn read(&self) -> u64;
}

impl Read for Counter {
    fn read(&self) -> u64 {
        self.get()
    }
}

impl Read for Gauge {
    fn read(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
}

/// Counts one event.
#[inline]
pub fn inc(counter: &Counter) {
    add(counter, 1);
}

/// Counts `n` (bytes, packets ...).
#[inline]
pub fn add(counter: &Counter, n: u64) {
    counter.0[shard()].fetch_add(n, Ordering::Relaxed);
}

/// Defines a struct of named counters (`$metrics`), a plain copy of it (`$snapshot`),
/// `snapshot()`, and a `name=value ...` Display for the copy. Used by every service so that
/// their counters log alike. A field is a [`Counter`]; one written `name: gauge` is a
/// [`Gauge`]. After a `;`, `name => Type` fields (any `Default` type: tables of counters by
/// label) are part of the struct but not of the snapshot or the log line.
macro_rules! counters {
    ($metrics:ident, $snapshot:ident, $what:literal;
     $($(#[$doc:meta])* $name:ident $(: $kind:ident)?),* $(,)?
     $(; $($(#[$xdoc:meta])* $xname:ident => $xty:ty),+ $(,)?)?) => {
        #[doc = concat!("Counters of the ", $what, ".")]
        #[derive(Debug, Default)]
        pub struct $metrics {
            $($(#[$doc])* pub $name: $crate::metrics::counter_type!($($kind)?),)*
            $($($(#[$xdoc])* pub $xname: $xty,)+)?
        }

        #[doc = concat!("A point-in-time copy of [`", stringify!($metrics), "`].")]
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct $snapshot { $(pub $name: u64,)* }

        impl $metrics {
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $($name: $crate::metrics::Read::read(&self.$name),)* }
            }
        }

        impl std::fmt::Display for $snapshot {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut first = true;
                $(
                    if !first { f.write_str(" ")?; }
                    first = false;
                    write!(f, "{}={}", stringify!($name), self.$name)?;
                )*
                let _ = first;
                Ok(())
            }
        }
    };
}
pub(crate) use counters;

/// The field type of a [`counters!`] entry: [`Counter`], or [`Gauge`] for `gauge`.
macro_rules! counter_type {
    () => {
        $crate::metrics::Counter
    };
    (gauge) => {
        $crate::metrics::Gauge
    };
}
pub(crate) use counter_type;

/// Lets one warning through per interval and counts the ones it holds back, so that a flood
/// of refusals (each counted by its counter) cannot fill the log, and the warning that does
/// get through says how many it stands for. Shared by every thread that refuses.
#[derive(Debug)]
pub struct LogLimiter {
    epoch: Instant,
    interval_ms: u64,
    /// Milliseconds since `epoch` before which no warning is let through.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now; `n` warnings were held back since the last one let through.
    pub fn allow(&self) -> Option<u64> {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.allow_at(now_ms)
    }

    /// [`LogLimiter::allow`] at `now_ms` milliseconds after the limiter was made.
    pub fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        let due = now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if due {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Shards of a [`Histogram`] (and of any per-thread statistic): each thread writes to its own
/// cache line, picked once per thread, so the serving threads never share one; a scrape sums
/// them.
pub const SHARDS: usize = 16;

/// The shard of the calling thread: threads take the next one in turn when they first count.
#[inline]
pub fn shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

/// Upper bounds (seconds) of [`Histogram`]s of answer latencies: 100 µs to 5 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds (seconds) of [`Histogram`]s of transfer durations: 10 ms to 10 min.
pub const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Most bounds a [`Histogram`] takes (the `+Inf` bucket is extra).
pub const MAX_BOUNDS: usize = 16;

/// One thread's share of a [`Histogram`].
#[derive(Debug, Default)]
struct HistogramShard {
    /// Observations at or below each bound (not cumulative), then above the last one.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of the observations, in microseconds.
    sum_us: AtomicU64,
}

/// A fixed-bucket histogram of durations, per thread ([`shard`]) and summed when read:
/// observing is a bucket search over at most [`MAX_BOUNDS`] bounds and two uncontended
/// atomic adds, no allocation.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    shards: Box<[crossbeam::utils::CachePadded<HistogramShard>]>,
}

/// A point-in-time sum of a [`Histogram`]'s shards.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// The upper bound of each bucket but the last (`+Inf`).
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    pub buckets: Vec<u64>,
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending, at most [`MAX_BOUNDS`]).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BOUNDS, "at most {MAX_BOUNDS} bounds");
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
        }
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        let s = &self.shards[shard()];
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        s.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let n = self.bounds.len() + 1;
        let mut buckets = vec![0u64; n];
        let mut sum_us = 0u64;
        for s in self.shards.iter() {
            for (total, b) in buckets.iter_mut().zip(&s.buckets[..n]) {
                *total = total.wrapping_add(b.load(Ordering::Relaxed));
            }
            sum_us = sum_us.wrapping_add(s.sum_us.load(Ordering::Relaxed));
        }
        HistogramSnapshot {
            bounds: self.bounds,
            count: buckets.iter().sum(),
            buckets,
            sum: sum_us as f64 / 1e6,
        }
    }
}

impl HistogramSnapshot {
    /// The `q` quantile (0..=1) in seconds, interpolated linearly inside its bucket, as
    /// Prometheus's `histogram_quantile` does; `None` with no observations. Beyond the last
    /// bound it answers the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += n;
        }
        self.bounds.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_lets_one_through_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow_at(0), Some(0));
        assert_eq!(l.allow_at(1), None);
        assert_eq!(l.allow_at(9_999), None);
        assert_eq!(l.allow_at(10_000), Some(2));
        assert_eq!(l.allow_at(10_001), None);
        assert_eq!(l.allow_at(60_000), Some(1));
        // Across threads: exactly one of many simultaneous callers is let through.
        let l = std::sync::Arc::new(LogLimiter::new(Duration::from_secs(10)));
        let through: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let l = &l;
                    s.spawn(move || (0..1000).filter(|_| l.allow_at(5).is_some()).count() as u64)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(through, 1);
        assert_eq!(l.allow_at(10_005), Some(3999));
    }

    mod probe {
        #![allow(unreachable_pub)]
        crate::metrics::counters! {
            Probe, ProbeSnapshot, "test";
            events,
            open: gauge,
        }
    }
    use probe::{Probe, ProbeSnapshot};

    #[test]
    fn counters_sum_their_shards_and_gauges_stay_exact() {
        let m = Probe::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        inc(&m.events);
                        m.open.fetch_add(1, Ordering::AcqRel);
                    }
                    add(&m.events, 5);
                    m.open.fetch_sub(999, Ordering::AcqRel);
                });
            }
        });
        // 8 threads over SHARDS shards: the sum is exact wherever each thread counted.
        assert_eq!(
            m.snapshot(),
            ProbeSnapshot {
                events: 8040,
                open: 8
            }
        );
        assert_eq!(m.snapshot().to_string(), "events=8040 open=8");
        let written = m
            .events
            .0
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) > 0)
            .count();
        assert!(written > 1, "the threads counted on {written} shard(s)");
    }

    #[test]
    fn histogram_sums_its_shards_and_answers_quantiles() {
        let h = std::sync::Arc::new(Histogram::new(&[0.001, 0.01, 0.1]));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let h = &h;
                s.spawn(move || {
                    for _ in 0..25 {
                        h.observe(Duration::from_micros(500)); // <= 1 ms
                        h.observe(Duration::from_millis(5)); // <= 10 ms
                    }
                    h.observe(Duration::from_secs(2)); // +Inf
                });
            }
        });
        let snap = h.snapshot();
        assert_eq!(snap.buckets, vec![100, 100, 0, 4]);
        assert_eq!(snap.count, 204);
        assert!((snap.sum - (100.0 * 0.0005 + 100.0 * 0.005 + 4.0 * 2.0)).abs() < 1e-6);
        // Rank 102 of 204 is the 2nd of the second bucket's 100: 2% into (1 ms, 10 ms]; rank
        // 153 is 53% into it.
        let p50 = snap.quantile(0.5).unwrap();
        assert!((0.00117..=0.00119).contains(&p50), "{p50}");
        let p75 = snap.quantile(0.75).unwrap();
        assert!((0.00576..=0.00578).contains(&p75), "{p75}");
        assert_eq!(snap.quantile(1.0), Some(0.1));
        assert_eq!(Histogram::new(&[1.0]).snapshot().quantile(0.5), None);
    }
}
