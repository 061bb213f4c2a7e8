//! How every service defines its counters ([`counters!`]) and counts ([`inc`], [`add`]):
//! process-wide, shared by every thread. Relaxed atomics: they are statistics.

use std::sync::atomic::{AtomicU64, Ordering};

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
