//! Waiting for sockets: `poll` for a few, a level-triggered `epoll` set for thousands.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, epoll};

pub use rustix::event::epoll::EventFlags;

/// `d` as a timespec (at most an hour: a wait is always re-armed by its loop).
fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(3600) as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (a signal also ends the wait).
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) {
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    let _ = rustix::event::poll(&mut p, Some(&timespec(timeout)));
}

/// A level-triggered epoll instance whose registrations carry a `u64` token.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<epoll::Event>,
}

impl Epoll {
    /// A new set; one [`wait`](Self::wait) reports at most `capacity` ready descriptors.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        Ok(Epoll {
            fd: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            events: Vec::with_capacity(capacity.max(1)),
        })
    }

    /// Watches `fd` for `events` (`EventFlags::IN`, `OUT`, ...), reported with `token`.
    pub fn add(&self, fd: impl AsFd, token: u64, events: EventFlags) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            fd,
            epoll::EventData::new_u64(token),
            events,
        )?)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: impl AsFd, token: u64, events: EventFlags) -> io::Result<()> {
        Ok(epoll::modify(
            &self.fd,
            fd,
            epoll::EventData::new_u64(token),
            events,
        )?)
    }

    /// Waits up to `timeout` (rounded up to whole milliseconds, at most a minute); returns the
    /// number of ready descriptors (read them with [`token`](Self::token) and
    /// [`events`](Self::events)), 0 on a timeout, a signal or an error.
    pub fn wait(&mut self, timeout: Duration) -> usize {
        let ms = timeout.as_micros().div_ceil(1000).min(60_000) as u64;
        self.events.clear();
        match epoll::wait(
            &self.fd,
            rustix::buffer::spare_capacity(&mut self.events),
            Some(&timespec(Duration::from_millis(ms))),
        ) {
            Ok(n) => n,
            Err(_) => {
                self.events.clear();
                0
            }
        }
    }

    /// The token of ready descriptor `k` of the last wait.
    pub fn token(&self, k: usize) -> u64 {
        let e = self.events[k];
        e.data.u64()
    }

    /// What happened on ready descriptor `k` of the last wait.
    pub fn events(&self, k: usize) -> EventFlags {
        let e = self.events[k];
        e.flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Instant;

    #[test]
    fn epoll_reports_readable_sockets_by_token() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ep = Epoll::new(8).unwrap();
        ep.add(&a, 7, EventFlags::IN).unwrap();
        ep.add(&b, 1 << 40, EventFlags::IN).unwrap();
        let t = Instant::now();
        assert_eq!(ep.wait(Duration::from_millis(30)), 0);
        assert!(t.elapsed() >= Duration::from_millis(29));
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        assert_eq!(ep.wait(Duration::from_secs(5)), 1);
        assert_eq!(ep.token(0), 7);
        assert!(ep.events(0).contains(EventFlags::IN));
        // Level-triggered: still readable until drained.
        assert_eq!(ep.wait(Duration::ZERO), 1);
        ep.modify(&b, 1 << 40, EventFlags::IN | EventFlags::OUT)
            .unwrap();
        let n = ep.wait(Duration::from_secs(5));
        let tokens: Vec<u64> = (0..n).map(|k| ep.token(k)).collect();
        assert!(tokens.contains(&(1 << 40)), "{tokens:?}");
    }

    #[test]
    fn wait_readable_returns_on_data_or_timeout() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Instant::now();
        wait_readable(&[a.as_fd()], Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(19));
        a.send_to(b"x", a.local_addr().unwrap()).unwrap();
        let t = Instant::now();
        wait_readable(&[a.as_fd()], Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
