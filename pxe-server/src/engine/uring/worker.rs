//! A worker's life: set-up, the loop (submit, wait, completions, timers), the listeners, and
//! the quiesce before its buffers may be freed.

// An impl split of the parent's types: it sees what the parent sees.
use super::sessions::send_ctrl;
use super::*;

impl Worker {
    pub(super) fn new(
        service: Arc<TftpService>,
        listeners: Vec<Listener>,
        gso: bool,
        hooks: Hooks,
    ) -> Result<Worker, EngineError> {
        let ring = Ring::new()?;
        let n = listeners.len() * LISTENER_DEPTH;
        let lbufs = RecvBuf::boxed_slice(n);
        let mut unknown_tid = [0u8; 64];
        let unknown_tid_len = packet::emit_error(
            ErrorCode::UnknownTid,
            ErrorCode::UnknownTid.default_message(),
            &mut unknown_tid,
        );
        Ok(Worker {
            ring,
            metrics: Arc::clone(&service.metrics),
            service,
            listeners,
            lbufs,
            larmed: vec![false; n],
            sessions: Slab::default(),
            rbuf_pool: Vec::new(),
            slots: SendSlots::new(SEND_SLOTS),
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            spare_cqes: Vec::with_capacity(CQ_ENTRIES as usize),
            scratch: Box::new([0; CTRL_LEN]),
            unknown_tid,
            unknown_tid_len,
            gso,
            hooks,
            quiescing: false,
            last_bind_warning: None,
            next_revoked_scan: Instant::now(),
            revoked: Vec::new(),
        })
    }

    pub(super) fn run(
        &mut self,
        shutdown: &AtomicBool,
        stop: &AtomicBool,
    ) -> Result<(), EngineError> {
        for i in 0..self.lbufs.len() {
            self.arm_listener(i);
        }
        let mut now = Instant::now();
        let mut result = Ok(());
        while !shutdown.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            self.process_ready(now);
            let wait = self.wait_time(now);
            if let Err(e) = self.ring.submit_and_wait(wait) {
                result = Err(e.into());
                break;
            }
            now = Instant::now();
            self.handle_completions(now);
            self.fire_timers(now);
            self.end_revoked(now);
        }
        self.quiesce();
        result
    }

    /// How long the ring may sleep: not at all when work is pending, else until the earliest
    /// timer, capped so shutdown is noticed.
    pub(super) fn wait_time(&self, now: Instant) -> Duration {
        if !self.ring.backlog.is_empty() || (!self.ready.is_empty() && self.slots.available() > 0) {
            return Duration::ZERO;
        }
        let max = if self.service.revoked_pending() > 0 {
            REVOKED_SCAN
        } else {
            MAX_WAIT
        };
        match self.timers.peek() {
            Some(Reverse((t, _, _))) => max.min(t.saturating_duration_since(now)),
            None => max,
        }
    }

    pub(super) fn handle_completions(&mut self, now: Instant) {
        self.ring.reap();
        let mut batch = std::mem::take(&mut self.spare_cqes);
        std::mem::swap(&mut batch, &mut self.ring.backlog);
        for &(ud, res) in &batch {
            self.ring.inflight = self.ring.inflight.saturating_sub(1);
            match Op::decode(ud) {
                Some(Op::ListenerRecv(i)) => self.on_listener_recv(i as usize, res, now),
                Some(Op::SessionRecv { idx, generation }) => {
                    self.on_session_recv(idx, generation, res, now)
                }
                Some(Op::Send(s)) => self.on_send(s, res),
                Some(Op::Cancel) | None => {}
            }
        }
        batch.clear();
        self.spare_cqes = batch;
    }

    // ----- listeners -----

    pub(super) fn arm_listener(&mut self, i: usize) {
        let fd = self.listeners[i / LISTENER_DEPTH].sock.as_raw_fd();
        let msg = self.lbufs[i].prepare();
        let sqe = opcode::RecvMsg::new(types::Fd(fd), msg)
            .build()
            .user_data(Op::ListenerRecv(i as u32).encode());
        // SAFETY: `lbufs` is a boxed slice allocated when the worker starts, never resized, and
        // freed only when no operation is in flight (quiesce, or leaked by worker_main); this
        // buffer is not touched again until its completion. The socket lives as long.
        self.larmed[i] = unsafe { self.ring.push(&sqe) };
        if !self.larmed[i] {
            tracing::error!("could not queue a receive on a TFTP listener");
        }
    }

    pub(super) fn on_listener_recv(&mut self, i: usize, res: i32, now: Instant) {
        let Some(armed) = self.larmed.get_mut(i) else {
            return;
        };
        *armed = false;
        if self.quiescing {
            return;
        }
        let li = i / LISTENER_DEPTH;
        if res == -libc::EAGAIN || res == -libc::EINTR {
            // Several receives are armed per listener: when one datagram wakes them all, the
            // ones that lose the race find the queue empty. Nothing failed: arm again.
            self.arm_listener(i);
            return;
        }
        if res < 0 {
            let l = &mut self.listeners[li];
            l.errors += 1;
            if l.errors.is_power_of_two() {
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    consecutive = l.errors,
                    "receive on a TFTP listener failed"
                );
            }
            if l.errors < MAX_LISTENER_ERRORS {
                self.arm_listener(i);
            }
            return;
        }
        self.listeners[li].errors = 0;
        let n = (res as usize).min(RECV_LEN);
        let rb = &self.lbufs[i];
        if let Some(peer) = rb.source() {
            if rb.truncated() {
                metrics::inc(&self.metrics.requests_received);
                metrics::inc(&self.metrics.malformed);
            } else {
                let local = self.listeners[li]
                    .local
                    .or_else(|| rb.pktinfo().map(|p| IpAddr::V4(p.local)))
                    .unwrap_or(match peer {
                        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    });
                let outcome =
                    self.service
                        .handle_request(now, peer, &rb.buf[..n], &mut self.scratch[..]);
                match outcome {
                    RequestOutcome::Start { session, permit } => {
                        self.start_session(session, permit, local)
                    }
                    RequestOutcome::Reply { len } => {
                        let fd = self.listeners[li].sock.as_raw_fd();
                        let bytes = &self.scratch[..len.min(CTRL_LEN)];
                        send_ctrl(
                            &mut self.ring,
                            &mut self.slots,
                            fd,
                            peer,
                            Owner::Listener,
                            bytes,
                        );
                    }
                    RequestOutcome::Drop => {}
                }
            }
        }
        self.arm_listener(i);
    }

    /// Stops accepting, cancels every receive and waits (bounded) until the kernel has nothing
    /// of ours in flight.
    pub(super) fn quiesce(&mut self) {
        self.quiescing = true;
        for i in 0..self.larmed.len() {
            if self.larmed[i] {
                let sqe = opcode::AsyncCancel::new(Op::ListenerRecv(i as u32).encode())
                    .build()
                    .user_data(Op::Cancel.encode());
                // SAFETY: a cancel request references no memory.
                unsafe { self.ring.push(&sqe) };
            }
        }
        let mut cancels = Vec::new();
        for (idx, generation, e) in self.sessions.iter_mut() {
            if e.recv_armed {
                cancels.push(Op::SessionRecv { idx, generation }.encode());
            }
        }
        for target in cancels {
            let sqe = opcode::AsyncCancel::new(target)
                .build()
                .user_data(Op::Cancel.encode());
            // SAFETY: a cancel request references no memory.
            unsafe { self.ring.push(&sqe) };
        }
        let deadline = Instant::now() + QUIESCE_LIMIT;
        while self.ring.inflight > 0 && Instant::now() < deadline {
            let _ = self.ring.submit_and_wait(Duration::from_millis(20));
            self.handle_completions(Instant::now());
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Normal exits quiesce in `run` (and `worker_main` leaks a worker that still has
        // operations in flight), so this only acts when a worker unwinds from a panic.
        if self.ring.inflight > 0 {
            self.quiesce();
            if self.ring.inflight > 0 {
                tracing::error!(
                    inflight = self.ring.inflight,
                    "io_uring worker dropped with operations in flight; aborting rather than \
                     freeing buffers the kernel may still write"
                );
                std::process::abort();
            }
        }
    }
}
