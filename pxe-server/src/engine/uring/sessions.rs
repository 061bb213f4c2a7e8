//! A worker's sessions: started from a request, fed their ACKs, stepped into sends, timed out
//! and finished.

// An impl split of the parent's types: it sees what the parent sees.
use super::*;

impl Worker {
    pub(super) fn start_session(&mut self, session: Session, permit: SessionPermit, local: IpAddr) {
        let sock = match bind_transfer_socket(local) {
            Ok(s) => s,
            Err(e) => {
                metrics::inc(&self.metrics.sessions_aborted);
                let now = Instant::now();
                if self
                    .last_bind_warning
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.last_bind_warning = Some(now);
                    tracing::warn!(error = %e, %local, peer = %session.peer(),
                        "cannot open a transfer socket; request dropped");
                }
                return;
            }
        };
        if self.hooks.no_check_tx {
            let _ = pxe_net::set_no_check(&sock);
        }
        let rbuf = self.rbuf_pool.pop().unwrap_or_else(RecvBuf::boxed);
        let (idx, generation) = self.sessions.insert(Entry {
            session,
            permit: Some(permit),
            sock,
            rbuf,
            recv_armed: false,
            sends: 0,
            closing: false,
            queued: false,
            timer_at: None,
            recv_errors: 0,
            gso_ok: true,
        });
        self.arm_session_recv(idx, generation);
        self.mark_ready(idx);
    }

    // ----- sessions -----

    pub(super) fn arm_session_recv(&mut self, idx: u32, generation: u32) {
        let Some(e) = self.sessions.get(idx, generation) else {
            return;
        };
        let msg = e.rbuf.prepare();
        let sqe = opcode::RecvMsg::new(types::Fd(e.sock.as_raw_fd()), msg)
            .build()
            .user_data(Op::SessionRecv { idx, generation }.encode());
        // SAFETY: `rbuf` is boxed (its address never changes) and owned by the entry together
        // with the socket; an entry leaves the slab only when `recv_armed` is false, i.e. after
        // this receive's completion was reaped (or, at shutdown, after quiesce saw no operation
        // in flight).
        e.recv_armed = unsafe { self.ring.push(&sqe) };
    }

    pub(super) fn on_session_recv(&mut self, idx: u32, generation: u32, res: i32, now: Instant) {
        let Some(e) = self.sessions.get(idx, generation) else {
            return;
        };
        e.recv_armed = false;
        if e.closing || self.quiescing {
            self.maybe_remove(idx);
            return;
        }
        if res < 0 {
            e.recv_errors = e.recv_errors.saturating_add(1);
            if e.recv_errors < MAX_RECV_ERRORS {
                self.arm_session_recv(idx, generation);
            } else {
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    peer = %e.session.peer(),
                    "receive on a transfer socket keeps failing; leaving the session to its timeout"
                );
            }
            return;
        }
        e.recv_errors = 0;
        let n = (res as usize).min(RECV_LEN);
        match e.rbuf.source() {
            Some(src) if !e.rbuf.truncated() => {
                match e.session.handle_datagram(now, src, &e.rbuf.buf[..n]) {
                    Received::ForeignTid => {
                        metrics::inc(&self.metrics.unknown_tid);
                        let fd = e.sock.as_raw_fd();
                        let owner = Owner::Session { idx, generation };
                        if send_ctrl(
                            &mut self.ring,
                            &mut self.slots,
                            fd,
                            src,
                            owner,
                            &self.unknown_tid[..self.unknown_tid_len],
                        ) {
                            e.sends += 1;
                        }
                    }
                    Received::Malformed => metrics::inc(&self.metrics.malformed),
                    Received::Progress | Received::Ignored => {}
                }
            }
            _ => metrics::inc(&self.metrics.malformed),
        }
        self.arm_session_recv(idx, generation);
        self.mark_ready(idx);
    }

    pub(super) fn mark_ready(&mut self, idx: u32) {
        if let Some((_, e)) = self.sessions.get_any(idx)
            && !e.queued
            && !e.closing
        {
            e.queued = true;
            self.ready.push(idx);
        }
    }

    /// Steps every ready session; the ones that found no free send slot stay ready.
    pub(super) fn process_ready(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.ready);
        let mut done = 0;
        for &idx in &list {
            if !self.step_session(idx, now) {
                break;
            }
            done += 1;
        }
        list.drain(..done);
        list.append(&mut self.ready);
        self.ready = list;
    }

    /// Sends what the session has to send and re-arms its timer or ends it. False when the
    /// send slots ran out (the session keeps the rest for later).
    pub(super) fn step_session(&mut self, idx: u32, now: Instant) -> bool {
        let Some((generation, e)) = self.sessions.get_any(idx) else {
            return true;
        };
        if e.closing {
            e.queued = false;
            return true;
        }
        if e.permit.as_ref().is_some_and(SessionPermit::is_revoked) {
            e.queued = false;
            self.finish(idx, generation, Outcome::Evicted);
            return true;
        }
        let starved = drain_transmits(
            &mut self.ring,
            &mut self.slots,
            &mut self.scratch,
            self.gso && e.gso_ok,
            Owner::Session { idx, generation },
            e,
            now,
        );
        if let Some(p) = e.permit.as_mut() {
            p.observe(&e.session);
        }
        if starved {
            return false;
        }
        e.queued = false;
        if let Some(outcome) = e.session.outcome() {
            self.finish(idx, generation, outcome);
            return true;
        }
        if let Some(t) = e.session.poll_timeout()
            && e.timer_at.is_none_or(|queued| t < queued)
        {
            e.timer_at = Some(t);
            self.timers.push(Reverse((t, idx, generation)));
        }
        true
    }

    /// Counts a finished session, releases its permit, and closes its socket once nothing is
    /// in flight on it.
    pub(super) fn finish(&mut self, idx: u32, generation: u32, outcome: Outcome) {
        let m = &self.metrics;
        let Some(e) = self.sessions.get(idx, generation) else {
            m.record_end(outcome, SessionStats::default());
            return;
        };
        m.record_end(outcome, e.session.stats());
        e.closing = true;
        e.permit = None;
        if e.recv_armed {
            let sqe = opcode::AsyncCancel::new(Op::SessionRecv { idx, generation }.encode())
                .build()
                .user_data(Op::Cancel.encode());
            // SAFETY: a cancel request references no memory.
            if !unsafe { self.ring.push(&sqe) } {
                tracing::warn!("could not queue the cancel of a finished session's receive");
            }
        }
        self.maybe_remove(idx);
    }

    /// Ends the sessions whose permit the service revoked (evicted for a newer request), at
    /// most every [`REVOKED_SCAN`]: their sockets close now rather than at their next timer.
    pub(super) fn end_revoked(&mut self, now: Instant) {
        if self.service.revoked_pending() == 0 || now < self.next_revoked_scan {
            return;
        }
        self.next_revoked_scan = now + REVOKED_SCAN;
        let mut revoked = std::mem::take(&mut self.revoked);
        revoked.extend(self.sessions.iter_mut().filter_map(|(idx, generation, e)| {
            let gone = !e.closing && e.permit.as_ref().is_some_and(SessionPermit::is_revoked);
            gone.then_some((idx, generation))
        }));
        for &(idx, generation) in &revoked {
            self.finish(idx, generation, Outcome::Evicted);
        }
        revoked.clear();
        self.revoked = revoked;
    }

    pub(super) fn maybe_remove(&mut self, idx: u32) {
        let Some((_, e)) = self.sessions.get_any(idx) else {
            return;
        };
        if !(e.closing && !e.recv_armed && e.sends == 0) {
            return;
        }
        if let Some(entry) = self.sessions.remove(idx)
            && self.rbuf_pool.len() < RECV_POOL_KEEP
        {
            self.rbuf_pool.push(entry.rbuf);
            // The socket closes here; nothing of the ring refers to it any more.
        }
    }

    pub(super) fn on_send(&mut self, s: u32, res: i32) {
        let gso_failed = res < 0
            && self.slots.used_gso(s)
            && matches!(-res, libc::EIO | libc::EINVAL | libc::EMSGSIZE);
        if self.slots.used_gso(s) {
            self.hooks.gso_sends.fetch_add(1, Ordering::Relaxed);
        }
        if gso_failed {
            self.hooks.gso_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        if gso_failed && -res == libc::EMSGSIZE {
            // Segments larger than this path's MTU: GSO cannot work for this session only.
            if let Owner::Session { idx, generation } = self.slots.owner(s)
                && let Some(e) = self.sessions.get(idx, generation)
            {
                e.gso_ok = false;
            }
        } else if gso_failed {
            if self.gso {
                self.gso = false;
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    "UDP GSO send failed: GSO disabled for the rest of the run, resending \
                     the packets one by one"
                );
            }
        } else if res < 0 {
            metrics::inc(&self.metrics.send_errors);
        }
        if (gso_failed || self.slots.in_fallback(s))
            && !self.quiescing
            && let Some(sqe) = self.slots.next_fallback(s)
        {
            let sqe = sqe.user_data(Op::Send(s).encode());
            // SAFETY: the same slot and buffers as the original send (see `submit_slot`); the
            // slot stays allocated until this completion.
            if unsafe { self.ring.push(&sqe) } {
                return;
            }
        }
        if let Owner::Session { idx, generation } = self.slots.release(s) {
            if let Some(e) = self.sessions.get(idx, generation) {
                e.sends = e.sends.saturating_sub(1);
            }
            self.maybe_remove(idx);
        }
    }

    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, idx, generation))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.sessions.get(idx, generation) else {
                continue;
            };
            if e.closing || e.timer_at != Some(t) {
                continue;
            }
            e.timer_at = None;
            if e.permit.as_ref().is_some_and(SessionPermit::is_revoked) {
                self.finish(idx, generation, Outcome::Evicted);
                continue;
            }
            match e.session.poll_timeout() {
                Some(d) if d <= now => {
                    e.session.handle_timeout(now);
                    self.mark_ready(idx);
                }
                Some(d) => {
                    e.timer_at = Some(d);
                    self.timers.push(Reverse((d, idx, generation)));
                }
                None => {}
            }
        }
    }
}

/// Queues a control packet (copied into a slot). True if it was queued.
pub(super) fn send_ctrl(
    ring: &mut Ring,
    slots: &mut SendSlots,
    fd: RawFd,
    dst: SocketAddr,
    owner: Owner,
    bytes: &[u8],
) -> bool {
    let Some(s) = slots.alloc() else {
        return false;
    };
    slots.fill_ctrl(s, fd, dst, owner, bytes);
    submit_slot(ring, slots, s, false)
}

/// Builds a slot's `sendmsg` and queues it; frees the slot if it could not be queued.
fn submit_slot(ring: &mut Ring, slots: &mut SendSlots, s: u32, gso: bool) -> bool {
    let sqe = slots.build(s, gso).user_data(Op::Send(s).encode());
    // SAFETY: the msghdr, iovecs, address, control message and header bytes live in the slot
    // pool's boxed slice, which never moves and outlives every operation in flight (quiesce);
    // the slot is released only by the completion of this send. Payload iovecs point into the
    // image whose `Arc` the slot holds. The fd belongs to a listener (lives as long as the
    // worker) or to a session entry, which is not removed while `sends` counts this slot.
    if unsafe { ring.push(&sqe) } {
        true
    } else {
        slots.release(s);
        false
    }
}

/// Turns a session's pending transmits into sends. Returns true when it stopped because no
/// send slot was free (the session keeps its remaining transmits).
fn drain_transmits(
    ring: &mut Ring,
    slots: &mut SendSlots,
    scratch: &mut [u8; CTRL_LEN],
    gso: bool,
    owner: Owner,
    e: &mut Entry,
    now: Instant,
) -> bool {
    let fd = e.sock.as_raw_fd();
    let peer = e.session.peer();
    let mut open: Option<u32> = None;
    let flush = |ring: &mut Ring, slots: &mut SendSlots, e: &mut Entry, s: u32| {
        if submit_slot(ring, slots, s, gso) {
            e.sends += 1;
        }
    };
    let starved = loop {
        // One free slot must remain for whatever the next transmit turns out to be.
        if slots.available() == 0 {
            break true;
        }
        let Some(t) = e.session.poll_transmit(now, &mut scratch[..]) else {
            break false;
        };
        match t {
            Transmit::Control { len } => {
                if let Some(s) = open.take() {
                    flush(ring, slots, e, s);
                }
                if send_ctrl(ring, slots, fd, peer, owner, &scratch[..len.min(CTRL_LEN)]) {
                    e.sends += 1;
                }
            }
            Transmit::Data { header, payload } => {
                if e.session.payload().get(payload.clone()).is_none() {
                    tracing::error!("session produced a DATA range outside its payload");
                    continue;
                }
                let plen = payload.len();
                if let Some(s) = open {
                    if gso && slots.can_append(s, plen) {
                        if let Some(bytes) = e.session.payload().get(payload) {
                            // SAFETY: `bytes` is a slice of `session.payload()`, memory owned
                            // by `session.image()`, whose Arc this slot holds since
                            // `start_data`.
                            unsafe { slots.append(s, header, bytes) };
                        }
                        if slots.is_sealed(s) {
                            open = None;
                            flush(ring, slots, e, s);
                        }
                        continue;
                    }
                    open = None;
                    flush(ring, slots, e, s);
                }
                let Some(s) = slots.alloc() else {
                    // Not reachable (checked above); the session's retransmit would recover.
                    break true;
                };
                slots.start_data(s, fd, peer, owner, e.session.image());
                if let Some(bytes) = e.session.payload().get(payload) {
                    // SAFETY: as above, `bytes` lies in the image just given to `start_data`.
                    unsafe { slots.append(s, header, bytes) };
                }
                if gso && !slots.is_sealed(s) {
                    open = Some(s);
                } else {
                    flush(ring, slots, e, s);
                }
            }
        }
    };
    if let Some(s) = open {
        flush(ring, slots, e, s);
    }
    starved
}
