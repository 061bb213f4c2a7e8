//! Drives one Session with an arbitrary sequence of datagrams and timeouts.
//!
//! Checks: no panic; DATA ranges always inside `payload()` and at most blksize long; every
//! transmitted header/control packet is well-formed; a datagram that does not make progress
//! never causes a transmission; a finished session transmits nothing and has no deadline.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pxe_proto::tftp::{self as packet, Mode, Packet, Request, RequestKind, RequestOptions};
use pxe_server::images::Image;
use pxe_server::tftp::session::{Received, Session, SessionConfig, Transmit};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(flags), Some(bs), Some(ws), Some(size)) =
        (input.u8(), input.u16(), input.u8(), input.u16())
    else {
        return;
    };
    // A fixed-shape request whose knobs come from the first bytes.
    let options = if flags & 1 != 0 {
        RequestOptions {
            blksize: Some(bs.clamp(8, 1468)),
            tsize: (flags & 2 != 0).then_some(0),
            timeout: (flags & 4 != 0).then_some(1),
            windowsize: Some(u16::from(ws).max(1)),
        }
    } else {
        RequestOptions::default()
    };
    let request = Request {
        kind: RequestKind::Read,
        filename: b"boot.img",
        mode: if flags & 8 != 0 {
            Mode::Netascii
        } else {
            Mode::Octet
        },
        options,
    };
    let config = SessionConfig {
        max_retries: 3,
        rollover_to: u16::from(flags & 16 != 0),
        ..SessionConfig::default()
    };
    let content: Vec<u8> = (0..usize::from(size) % 20_000)
        .map(|i| b"abc\r\ndef\n\rxyz"[i % 13])
        .collect();
    let image = Arc::new(Image::from_bytes(content));
    let peer: SocketAddr = "10.0.0.2:2000".parse().unwrap();
    let stranger: SocketAddr = "10.0.0.3:2000".parse().unwrap();
    let mut now = Instant::now();
    let mut session = Session::new(peer, &request, image, &config, now);
    let mut buf = [0u8; 1500];
    let mut last_wire: u16 = 0;

    let mut drain = |session: &mut Session, now: Instant, last_wire: &mut u16| -> usize {
        let mut sent = 0usize;
        while let Some(t) = session.poll_transmit(now, &mut buf) {
            sent += 1;
            assert!(sent <= 70_000, "poll_transmit never ends");
            match t {
                Transmit::Data { header, payload } => {
                    assert_eq!(&header[..2], &[0, 3]);
                    assert!(payload.start <= payload.end);
                    assert!(payload.end <= session.payload().len());
                    assert!(payload.len() <= 1468);
                    *last_wire = u16::from_be_bytes([header[2], header[3]]);
                }
                Transmit::Control { len } => {
                    assert!(len <= buf.len());
                    match packet::parse(&buf[..len]) {
                        Ok(Packet::Oack(o)) => assert!(!o.is_empty()),
                        Ok(Packet::Error { .. }) => {}
                        other => panic!("bad control packet {other:?}"),
                    }
                    *last_wire = 0;
                }
            }
        }
        if session.outcome().is_some() {
            assert_eq!(session.poll_timeout(), None);
        }
        sent
    };

    drain(&mut session, now, &mut last_wire);
    let mut pkt = [0u8; 600];
    for _ in 0..2_000 {
        let Some(op) = input.u8() else { break };
        let received = match op % 8 {
            0 => {
                // The deadline passes.
                if let Some(d) = session.poll_timeout() {
                    assert!(d >= now);
                    now = d;
                }
                session.handle_timeout(now);
                None
            }
            1 => {
                // Some time passes (maybe not enough).
                now += Duration::from_millis(u64::from(input.u8().unwrap_or(0)) * 8);
                session.handle_timeout(now);
                None
            }
            2 => {
                let block = input.u16().unwrap_or(0);
                let n = packet::emit_ack(block, &mut pkt);
                Some(session.handle_datagram(now, peer, &pkt[..n]))
            }
            3 => {
                // ACK of the last block we saw sent, or an offset from it.
                let delta = input.u8().unwrap_or(0);
                let block = last_wire.wrapping_sub(u16::from(delta & 3));
                let n = packet::emit_ack(block, &mut pkt);
                Some(session.handle_datagram(now, peer, &pkt[..n]))
            }
            4 => {
                let len = usize::from(input.u8().unwrap_or(0));
                let raw = input.bytes(len).to_vec();
                Some(session.handle_datagram(now, peer, &raw))
            }
            5 => {
                let block = input.u16().unwrap_or(0);
                let n = packet::emit_ack(block, &mut pkt);
                let r = session.handle_datagram(now, stranger, &pkt[..n]);
                assert_eq!(r, Received::ForeignTid);
                Some(r)
            }
            6 => {
                let code = input.u16().unwrap_or(0);
                let n = packet::emit_error_bytes(code, b"stop", &mut pkt);
                Some(session.handle_datagram(now, peer, &pkt[..n]))
            }
            _ => {
                // A burst of in-order ACKs, like a healthy client.
                let n = packet::emit_ack(last_wire, &mut pkt);
                Some(session.handle_datagram(now, peer, &pkt[..n]))
            }
        };
        let sent = drain(&mut session, now, &mut last_wire);
        if matches!(
            received,
            Some(Received::Ignored | Received::ForeignTid | Received::Malformed)
        ) {
            assert_eq!(sent, 0, "a datagram without progress caused a transmission");
        }
    }
    let stats = session.stats();
    assert!(stats.retransmitted <= stats.packets_sent);
});
