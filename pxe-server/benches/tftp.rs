//! Micro-benchmarks of the TFTP hot path: parsing, header encoding, and one session step
//! (an ACK in, a window of DATA transmits out).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pxe_proto::tftp::{self as packet, Mode, Packet, RequestKind, RequestOptions};
use pxe_server::images::Image;
use pxe_server::tftp::session::{Session, SessionConfig, Transmit};

fn rrq_bytes() -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let opts = RequestOptions {
        blksize: Some(1468),
        tsize: Some(0),
        timeout: None,
        windowsize: Some(4),
    };
    let n = packet::emit_request(
        RequestKind::Read,
        b"boot/vmlinuz",
        Mode::Octet,
        &opts,
        &mut buf,
    )
    .expect("an RRQ fits in 512 bytes");
    buf.truncate(n);
    buf
}

fn codec(c: &mut Criterion) {
    let rrq = rrq_bytes();
    c.bench_function("parse RRQ with 3 options", |b| {
        b.iter(|| packet::parse(black_box(&rrq)))
    });
    let mut ack = [0u8; 4];
    packet::emit_ack(4242, &mut ack);
    c.bench_function("parse ACK", |b| b.iter(|| packet::parse(black_box(&ack))));
    c.bench_function("DATA header", |b| {
        b.iter(|| packet::data_header(black_box(4242)))
    });
}

/// Drives a whole transfer of an 8 MiB image through the session with a perfect peer: each
/// iteration is one ACK in and one window (64 blocks) out.
fn session_step(c: &mut Criterion) {
    let image = Arc::new(Image::from_bytes(vec![0x5a; 8 << 20]));
    let rrq = rrq_bytes();
    let Ok(Packet::Request(mut req)) = packet::parse(&rrq) else {
        panic!("the RRQ above parses");
    };
    req.options.windowsize = Some(64);
    let peer: SocketAddr = "10.0.0.2:2000".parse().expect("literal address");
    let cfg = SessionConfig::default();
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(64));
    group.bench_function("ACK in, 64-block window out", |b| {
        let now = Instant::now();
        let mut session = Session::new(peer, &req, Arc::clone(&image), &cfg, now);
        let mut buf = [0u8; 1024];
        let mut ack = [0u8; 4];
        let mut last: u16 = 0;
        b.iter(|| {
            if session.outcome().is_some() {
                session = Session::new(peer, &req, Arc::clone(&image), &cfg, now);
                last = 0;
            }
            let n = packet::emit_ack(last, &mut ack);
            session.handle_datagram(now, peer, &ack[..n]);
            while let Some(t) = session.poll_transmit(now, &mut buf) {
                if let Transmit::Data { header, payload } = t {
                    last = u16::from_be_bytes([header[2], header[3]]);
                    black_box(&session.payload()[payload]);
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec, session_step);
criterion_main!(benches);
