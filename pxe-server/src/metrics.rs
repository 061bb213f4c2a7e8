//! How every service defines its counters ([`counters!`]) and counts ([`inc`], [`add`]):
//! process-wide, shared by every thread. Relaxed atomics: they are statistics. A refusal under
//! load is counted every time and logged through a [`LogLimiter`], at most once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts one event.
#[inline]
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts `n` (bytes, packets ...).
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Defines a struct of named `AtomicU64` counters (`$metrics`), a plain copy of it
/// (`$snapshot`), `snapshot()`, and a `name=value ...` Display for the copy. Used by every
/// service so that their counters log alike.
macro_rules! counters {
    ($metrics:ident, $snapshot:ident, $what:literal; $($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[doc = concat!("Counters of the ", $what, ".")]
        #[derive(Debug, Default)]
        pub struct $metrics { $($(#[$doc])* pub $name: std::sync::atomic::AtomicU64,)* }

        #[doc = concat!("A point-in-time copy of [`", stringify!($metrics), "`].")]
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct $snapshot { $(pub $name: u64,)* }

        impl $metrics {
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $($name: self.$name.load(std::sync::atomic::Ordering::Relaxed),)* }
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
}
