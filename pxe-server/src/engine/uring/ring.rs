//! The ring and the `user_data` encoding of its operations.

use std::io;
use std::time::Duration;

use io_uring::{IoUring, squeue, types};

use super::{
    CQ_ENTRIES, GEN_MASK, K_CANCEL, K_LISTENER, K_SEND, K_SESSION, KIND_SHIFT, Op, Ring, SQ_ENTRIES,
};

impl Op {
    pub(super) fn encode(self) -> u64 {
        match self {
            Op::ListenerRecv(i) => (K_LISTENER << KIND_SHIFT) | u64::from(i),
            Op::SessionRecv { idx, generation } => {
                (K_SESSION << KIND_SHIFT)
                    | (u64::from(generation & GEN_MASK) << 32)
                    | u64::from(idx)
            }
            Op::Send(s) => (K_SEND << KIND_SHIFT) | u64::from(s),
            Op::Cancel => K_CANCEL << KIND_SHIFT,
        }
    }

    pub(super) fn decode(ud: u64) -> Option<Op> {
        let low = ud as u32;
        match ud >> KIND_SHIFT {
            K_LISTENER => Some(Op::ListenerRecv(low)),
            K_SESSION => Some(Op::SessionRecv {
                idx: low,
                generation: ((ud >> 32) as u32) & GEN_MASK,
            }),
            K_SEND => Some(Op::Send(low)),
            K_CANCEL => Some(Op::Cancel),
            _ => None,
        }
    }
}

impl Ring {
    pub(super) fn new() -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })?;
        Ok(Ring {
            ring,
            backlog: Vec::with_capacity(CQ_ENTRIES as usize),
            inflight: 0,
        })
    }

    /// Queues an SQE; when the submission queue is full, submits what is queued and retries.
    /// Returns false if the kernel keeps refusing (the caller then undoes its bookkeeping).
    ///
    /// # Safety
    /// Every buffer `entry` references must stay valid and unmoved until its completion has
    /// been reaped.
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..64 {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.inflight += 1;
                return true;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ overflow: take completions off the ring (handled later) so the kernel
                    // accepts submissions again.
                    self.reap();
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring submit failed");
                    self.reap();
                }
            }
        }
        false
    }

    /// Moves the completions on the ring into `backlog`.
    pub(super) fn reap(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in cq {
            self.backlog.push((cqe.user_data(), cqe.result()));
        }
    }

    /// Submits everything queued and waits up to `wait` for one completion.
    pub(super) fn submit_and_wait(&mut self, wait: Duration) -> io::Result<()> {
        let r = if wait.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
