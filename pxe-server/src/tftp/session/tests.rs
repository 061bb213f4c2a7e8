use super::*;
use pxe_proto::tftp::{RequestKind, RequestOptions};

fn peer() -> SocketAddr {
    "10.1.0.2:40000".parse().unwrap()
}

fn request(mode: Mode, options: RequestOptions) -> Request<'static> {
    Request {
        kind: RequestKind::Read,
        filename: b"boot.img",
        mode,
        options,
    }
}

fn opts(blksize: Option<u16>, windowsize: Option<u16>) -> RequestOptions {
    RequestOptions {
        blksize,
        windowsize,
        ..Default::default()
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn session(content: Vec<u8>, mode: Mode, o: RequestOptions, config: &SessionConfig) -> Session {
    session_at(content, mode, o, config, Instant::now())
}

fn session_at(
    content: Vec<u8>,
    mode: Mode,
    o: RequestOptions,
    config: &SessionConfig,
    now: Instant,
) -> Session {
    Session::new(
        peer(),
        &request(mode, o),
        Arc::new(Image::from_bytes(content)),
        config,
        now,
    )
}

#[derive(Debug, PartialEq)]
enum Sent {
    Data(u16, Vec<u8>),
    Oack(packet::AcceptedOptions),
    Error(u16),
}

fn drain(s: &mut Session, now: Instant) -> Vec<Sent> {
    let mut buf = [0u8; 512];
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit(now, &mut buf) {
        assert!(
            out.len() <= usize::from(MAX_WINDOW),
            "poll_transmit never ends"
        );
        out.push(match t {
            Transmit::Data { header, payload } => {
                assert_eq!(&header[..2], &[0, 3]);
                assert!(payload.len() <= usize::from(s.blksize()));
                Sent::Data(
                    u16::from_be_bytes([header[2], header[3]]),
                    s.payload()[payload].to_vec(),
                )
            }
            Transmit::Control { len } => match packet::parse(&buf[..len]).unwrap() {
                Packet::Oack(o) => Sent::Oack(o),
                Packet::Error { code, .. } => Sent::Error(code),
                other => panic!("unexpected control packet {other:?}"),
            },
        });
    }
    out
}

fn blocks(sent: &[Sent]) -> Vec<u16> {
    sent.iter()
        .map(|s| match s {
            Sent::Data(b, _) => *b,
            other => panic!("expected DATA, got {other:?}"),
        })
        .collect()
}

fn ack(s: &mut Session, now: Instant, block: u16) -> Received {
    let mut b = [0u8; 4];
    packet::emit_ack(block, &mut b);
    s.handle_datagram(now, peer(), &b)
}

/// A perfect client: ACKs the last DATA of every burst. Returns the bytes and wire numbers.
fn run_lossless(s: &mut Session, now: Instant) -> (Vec<u8>, Vec<u16>) {
    let mut data = Vec::new();
    let mut wires = Vec::new();
    for _ in 0..1_000_000 {
        let sent = drain(s, now);
        let Some(last) = sent.last() else {
            panic!("stalled with nothing to send");
        };
        let ack_no = match last {
            Sent::Oack(_) => 0,
            Sent::Data(b, _) => *b,
            Sent::Error(c) => panic!("server sent ERROR {c}"),
        };
        for p in sent {
            if let Sent::Data(b, bytes) = p {
                wires.push(b);
                data.extend_from_slice(&bytes);
            }
        }
        assert_eq!(ack(s, now, ack_no), Received::Progress);
        if s.outcome().is_some() {
            assert_eq!(s.outcome(), Some(Outcome::Completed));
            assert!(drain(s, now).is_empty());
            assert_eq!(s.poll_timeout(), None);
            return (data, wires);
        }
    }
    panic!("transfer did not finish");
}

#[test]
fn session_is_small() {
    assert!(
        std::mem::size_of::<Session>() <= 256,
        "Session is {} bytes",
        std::mem::size_of::<Session>()
    );
}

#[test]
fn no_options_sends_data_1_directly() {
    let content = pattern(1000);
    let cfg = SessionConfig::default();
    let mut s = session(
        content.clone(),
        Mode::Octet,
        RequestOptions::default(),
        &cfg,
    );
    let now = Instant::now();
    assert_eq!(s.blksize(), 512);
    assert_eq!(s.windowsize(), 1);
    assert!(s.accepted_options().is_empty());
    assert_eq!(
        drain(&mut s, now),
        vec![Sent::Data(1, content[..512].to_vec())]
    );
    assert_eq!(s.poll_timeout(), Some(now + cfg.default_timeout));
    assert_eq!(ack(&mut s, now, 1), Received::Progress);
    assert_eq!(
        drain(&mut s, now),
        vec![Sent::Data(2, content[512..].to_vec())]
    );
    assert_eq!(ack(&mut s, now, 2), Received::Progress);
    assert_eq!(s.outcome(), Some(Outcome::Completed));
    assert_eq!(s.poll_timeout(), None);
    assert!(drain(&mut s, now).is_empty());
    // Late duplicates change nothing.
    assert_eq!(ack(&mut s, now, 2), Received::Ignored);
    assert!(drain(&mut s, now).is_empty());
    assert_eq!(
        s.stats(),
        SessionStats {
            packets_sent: 2,
            retransmitted: 0,
            payload_bytes_sent: 1000,
            acknowledged: true,
        }
    );
}

#[test]
fn negotiation_clamps_and_oack_waits_for_ack_0() {
    let content = pattern(200_000);
    let cfg = SessionConfig::default();
    let o = RequestOptions {
        blksize: Some(65464),
        tsize: Some(0),
        timeout: Some(3),
        windowsize: Some(1000),
    };
    let now = Instant::now();
    let mut s = session_at(content.clone(), Mode::Octet, o, &cfg, now);
    let expected = packet::AcceptedOptions {
        blksize: Some(1468),
        tsize: Some(200_000),
        timeout: Some(3),
        windowsize: Some(64),
    };
    assert_eq!(s.accepted_options(), expected);
    assert_eq!(drain(&mut s, now), vec![Sent::Oack(expected)]);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(3)));
    // Nothing else until ACK 0; an ACK of a data block is ignored meanwhile.
    assert!(drain(&mut s, now).is_empty());
    assert_eq!(ack(&mut s, now, 1), Received::Ignored);
    assert!(drain(&mut s, now).is_empty());
    assert_eq!(ack(&mut s, now, 0), Received::Progress);
    let sent = drain(&mut s, now);
    assert_eq!(blocks(&sent), (1..=64).collect::<Vec<u16>>());
    assert_eq!(sent[0], Sent::Data(1, content[..1468].to_vec()));
    // Duplicate ACK 0 after the OACK was acknowledged: no burst.
    assert_eq!(ack(&mut s, now, 0), Received::Ignored);
    assert!(drain(&mut s, now).is_empty());
}

#[test]
fn smaller_requests_are_granted_as_asked() {
    let cfg = SessionConfig::default();
    let s = session(pattern(10), Mode::Octet, opts(Some(8), Some(4)), &cfg);
    assert_eq!((s.blksize(), s.windowsize()), (8, 4));
    assert_eq!(
        s.accepted_options(),
        packet::AcceptedOptions {
            blksize: Some(8),
            windowsize: Some(4),
            ..Default::default()
        }
    );
    // Config caps, and the hard window cap.
    let cfg2 = SessionConfig {
        max_blksize: 1024,
        max_windowsize: u16::MAX,
        ..SessionConfig::default()
    };
    let s = session(
        pattern(10),
        Mode::Octet,
        opts(Some(1468), Some(65535)),
        &cfg2,
    );
    assert_eq!((s.blksize(), s.windowsize()), (1024, MAX_WINDOW));
}

#[test]
fn tsize_only_uses_default_blksize_and_window() {
    let cfg = SessionConfig::default();
    let o = RequestOptions {
        tsize: Some(0),
        ..Default::default()
    };
    let content = pattern(1500);
    let mut s = session(content.clone(), Mode::Octet, o, &cfg);
    let now = Instant::now();
    assert_eq!(
        drain(&mut s, now),
        vec![Sent::Oack(packet::AcceptedOptions {
            tsize: Some(1500),
            ..Default::default()
        })]
    );
    assert_eq!(ack(&mut s, now, 0), Received::Progress);
    let (data, wires) = run_lossless(&mut s, now);
    assert_eq!(data, content);
    assert_eq!(wires, vec![1, 2, 3]);
}

#[test]
fn netascii_payload_and_tsize() {
    let cfg = SessionConfig::default();
    let o = RequestOptions {
        tsize: Some(0),
        ..Default::default()
    };
    let content = b"line1\nline2\r\nend\r".to_vec();
    let mut s = session(content.clone(), Mode::Netascii, o, &cfg);
    let now = Instant::now();
    let wire_form = b"line1\r\nline2\r\0\r\nend\r\0".to_vec();
    assert_eq!(s.payload(), &wire_form[..]);
    assert_eq!(
        drain(&mut s, now),
        vec![Sent::Oack(packet::AcceptedOptions {
            tsize: Some(wire_form.len() as u64),
            ..Default::default()
        })]
    );
    assert_eq!(ack(&mut s, now, 0), Received::Progress);
    let (data, _) = run_lossless(&mut s, now);
    assert_eq!(data, wire_form);
    // Octet mode sends the bytes unchanged.
    let mut s = session(content.clone(), Mode::Octet, o, &cfg);
    let (data, _) = run_lossless(&mut s, now);
    assert_eq!(data, content);
}

#[test]
fn final_block_sizes() {
    let cfg = SessionConfig::default();
    let now = Instant::now();
    // 0 bytes: one empty DATA 1.
    let mut s = session(Vec::new(), Mode::Octet, RequestOptions::default(), &cfg);
    assert_eq!(drain(&mut s, now), vec![Sent::Data(1, Vec::new())]);
    assert_eq!(ack(&mut s, now, 1), Received::Progress);
    assert_eq!(s.outcome(), Some(Outcome::Completed));
    // Exactly 512: a full block then an empty one.
    let mut s = session(pattern(512), Mode::Octet, RequestOptions::default(), &cfg);
    let (data, wires) = run_lossless(&mut s, now);
    assert_eq!((data, wires), (pattern(512), vec![1, 2]));
    // k * blksize with a window: k full blocks plus an empty one.
    for k in [1usize, 3, 4, 5] {
        let mut s = session(
            pattern(k * 1468),
            Mode::Octet,
            opts(Some(1468), Some(4)),
            &cfg,
        );
        let (data, wires) = run_lossless(&mut s, now);
        assert_eq!(data, pattern(k * 1468));
        assert_eq!(wires.len(), k + 1);
        assert_eq!(s.stats().payload_bytes_sent, (k * 1468) as u64);
    }
    // One byte short of a multiple: no extra empty block.
    let mut s = session(
        pattern(3 * 1468 - 1),
        Mode::Octet,
        opts(Some(1468), Some(4)),
        &cfg,
    );
    let (_, wires) = run_lossless(&mut s, now);
    assert_eq!(wires, vec![1, 2, 3]);
}

fn rollover_case(rollover_to: u16, windowsize: u16, nblocks: usize) {
    let cfg = SessionConfig {
        rollover_to,
        max_windowsize: 64,
        ..SessionConfig::default()
    };
    // nblocks full blocks plus a short final one.
    let content = pattern(nblocks * 8 + 3);
    let mut s = session(
        content.clone(),
        Mode::Octet,
        opts(Some(8), Some(windowsize)),
        &cfg,
    );
    let (data, wires) = run_lossless(&mut s, Instant::now());
    assert!(data == content, "received bytes differ");
    assert_eq!(wires.len(), nblocks + 1);
    // The wire sequence: 1..=65535, then rollover_to..=65535 repeatedly.
    let mut expect: u16 = 1;
    for (i, &w) in wires.iter().enumerate() {
        assert_eq!(w, expect, "block {}", i + 1);
        expect = if expect == u16::MAX {
            rollover_to
        } else {
            expect + 1
        };
    }
}

#[test]
fn rollover_to_0_past_65535_blocks() {
    rollover_case(0, 64, 140_000);
    rollover_case(0, 1, 70_000);
}

#[test]
fn rollover_to_1_past_65535_blocks() {
    rollover_case(1, 64, 140_000);
    rollover_case(1, 7, 70_000);
}

#[test]
fn ack_numbers_map_inside_window_across_rollover() {
    for r in [0u16, 1] {
        let cfg = SessionConfig {
            rollover_to: r,
            ..SessionConfig::default()
        };
        let mut s = session(
            pattern(70_000 * 8),
            Mode::Octet,
            opts(Some(8), Some(8)),
            &cfg,
        );
        let now = Instant::now();
        drain(&mut s, now);
        assert_eq!(ack(&mut s, now, 0), Received::Progress);
        // Walk to block 65532 by acking every window end.
        let mut last = 0u16;
        while last != 65528 {
            let sent = blocks(&drain(&mut s, now));
            last = *sent.last().unwrap();
            assert_eq!(ack(&mut s, now, last), Received::Progress);
        }
        // Window now covers 65529..=65536 (wire 65529..=65535, then r).
        let sent = blocks(&drain(&mut s, now));
        assert_eq!(
            sent,
            vec![65529, 65530, 65531, 65532, 65533, 65534, 65535, r]
        );
        if r == 1 {
            // 0 is never a data block number after rollover to 1.
            assert_eq!(ack(&mut s, now, 0), Received::Ignored);
        }
        // An old number (before the window) is stale, not a rolled-over block.
        assert_eq!(ack(&mut s, now, 65527), Received::Ignored);
        assert!(drain(&mut s, now).is_empty());
        // ACK of the rolled-over block (65536) completes the window.
        assert_eq!(ack(&mut s, now, r), Received::Progress);
        let sent = blocks(&drain(&mut s, now));
        assert_eq!(sent[0], r + 1);
        assert_eq!(sent.len(), 8);
        // Mid-window ACK after rollover: restart right after it.
        assert_eq!(ack(&mut s, now, r + 3), Received::Progress);
        let sent = blocks(&drain(&mut s, now));
        assert_eq!(sent[0], r + 4);
        assert_eq!(sent.len(), 8);
    }
}

#[test]
fn mid_window_ack_restarts_window() {
    let cfg = SessionConfig::default();
    let mut s = session(
        pattern(100 * 512),
        Mode::Octet,
        opts(Some(512), Some(4)),
        &cfg,
    );
    let now = Instant::now();
    drain(&mut s, now);
    assert_eq!(ack(&mut s, now, 0), Received::Progress);
    assert_eq!(blocks(&drain(&mut s, now)), vec![1, 2, 3, 4]);
    // Client got 1 and 2, lost 3: ACK 2 restarts from 3.
    assert_eq!(ack(&mut s, now, 2), Received::Progress);
    let sent = drain(&mut s, now);
    assert_eq!(blocks(&sent), vec![3, 4, 5, 6]);
    assert_eq!(
        sent[0],
        Sent::Data(3, pattern(100 * 512)[1024..1536].to_vec())
    );
    assert_eq!(s.stats().retransmitted, 2);
    // ACK of the window end moves on.
    assert_eq!(ack(&mut s, now, 6), Received::Progress);
    assert_eq!(blocks(&drain(&mut s, now)), vec![7, 8, 9, 10]);
    assert_eq!(s.stats().retransmitted, 2);
    assert_eq!(s.stats().packets_sent, 1 + 12);
}

#[test]
fn duplicate_and_stale_acks_cause_no_burst() {
    let cfg = SessionConfig::default();
    let mut s = session(
        pattern(100 * 512),
        Mode::Octet,
        opts(Some(512), Some(4)),
        &cfg,
    );
    let now = Instant::now();
    drain(&mut s, now);
    ack(&mut s, now, 0);
    drain(&mut s, now);
    assert_eq!(ack(&mut s, now, 4), Received::Progress);
    assert_eq!(blocks(&drain(&mut s, now)), vec![5, 6, 7, 8]);
    let before = s.stats();
    for stale in [4u16, 4, 3, 1, 0, 9, 100, 65535] {
        assert_eq!(ack(&mut s, now, stale), Received::Ignored, "ACK {stale}");
        assert!(drain(&mut s, now).is_empty(), "ACK {stale} caused a send");
    }
    assert_eq!(s.stats(), before);
}

#[test]
fn timeout_retransmits_window_and_gives_up() {
    let cfg = SessionConfig {
        max_retries: 3,
        default_timeout: Duration::from_millis(500),
        ..SessionConfig::default()
    };
    let mut s = session(
        pattern(100 * 512),
        Mode::Octet,
        opts(Some(512), Some(4)),
        &cfg,
    );
    let mut now = Instant::now();
    drain(&mut s, now);
    ack(&mut s, now, 0);
    drain(&mut s, now);
    ack(&mut s, now, 2); // window 3..=6
    assert_eq!(blocks(&drain(&mut s, now)), vec![3, 4, 5, 6]);
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_millis(500));
    // Early call: nothing.
    s.handle_timeout(deadline - Duration::from_millis(1));
    assert!(drain(&mut s, now).is_empty());
    let retrans_before = s.stats().retransmitted;
    for i in 1..=3u64 {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        assert_eq!(blocks(&drain(&mut s, now)), vec![3, 4, 5, 6], "retry {i}");
        assert_eq!(s.stats().retransmitted, retrans_before + 4 * i);
        assert_eq!(s.outcome(), None);
    }
    now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
    assert!(drain(&mut s, now).is_empty());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(ack(&mut s, now, 6), Received::Ignored);
}

#[test]
fn progress_resets_retry_count() {
    let cfg = patient(SessionConfig {
        max_retries: 2,
        ..SessionConfig::default()
    });
    let mut s = session(
        pattern(10 * 512),
        Mode::Octet,
        RequestOptions::default(),
        &cfg,
    );
    let mut now = Instant::now();
    drain(&mut s, now);
    for _ in 0..2 {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        assert_eq!(blocks(&drain(&mut s, now)), vec![1]);
    }
    assert_eq!(ack(&mut s, now, 1), Received::Progress);
    assert_eq!(blocks(&drain(&mut s, now)), vec![2]);
    for _ in 0..2 {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        assert_eq!(blocks(&drain(&mut s, now)), vec![2]);
    }
    assert_eq!(s.outcome(), None);
    now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
}

#[test]
fn oack_is_retransmitted_and_client_timeout_option_is_used() {
    let cfg = patient(SessionConfig {
        max_retries: 1,
        max_client_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    });
    let o = RequestOptions {
        timeout: Some(7),
        ..Default::default()
    };
    let mut s = session(pattern(10), Mode::Octet, o, &cfg);
    let now = Instant::now();
    let oack = Sent::Oack(packet::AcceptedOptions {
        timeout: Some(7),
        ..Default::default()
    });
    assert_eq!(drain(&mut s, now), vec![oack]);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(7)));
    let t1 = now + Duration::from_secs(7);
    s.handle_timeout(t1);
    assert_eq!(drain(&mut s, t1).len(), 1);
    assert_eq!(s.stats().retransmitted, 1);
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(7)));
    s.handle_timeout(t1 + Duration::from_secs(7));
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
}

/// `cfg` with the unverified limits out of the way, for tests about retransmission itself.
fn patient(cfg: SessionConfig) -> SessionConfig {
    SessionConfig {
        unverified_retries: cfg.max_retries,
        unverified_lifetime: Duration::from_secs(3600),
        ..cfg
    }
}

fn timeout_opt(timeout: u8) -> RequestOptions {
    RequestOptions {
        timeout: Some(timeout),
        ..Default::default()
    }
}

#[test]
fn client_timeout_above_the_cap_is_granted_the_cap() {
    // The cap bounds every retransmission, also those of a verified transfer: the unverified
    // limits (which would end this one at 4 s) are tested on their own.
    let cfg = patient(SessionConfig::default());
    assert_eq!(cfg.max_client_timeout, Duration::from_secs(5));
    let mut s = session(pattern(10), Mode::Octet, timeout_opt(255), &cfg);
    let mut now = Instant::now();
    let granted = packet::AcceptedOptions {
        timeout: Some(5),
        ..Default::default()
    };
    assert_eq!(s.accepted_options(), granted);
    assert!(s.timeout_capped());
    assert_eq!(drain(&mut s, now), vec![Sent::Oack(granted)]);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(5)));
    // A silent client: the OACK goes out max_retries more times, 5 s apart, and the transfer
    // ends 6 x 5 s after it started instead of 6 x 255 s.
    let start = now;
    for _ in 0..cfg.max_retries {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        assert_eq!(drain(&mut s, now), vec![Sent::Oack(granted)]);
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(5)));
    }
    now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
    assert_eq!(now - start, Duration::from_secs(30));
}

#[test]
fn client_timeout_cap_is_whole_seconds_and_at_least_one() {
    for (cap, want) in [(2999, 2), (1000, 1), (500, 1), (0, 1), (300_000, 255)] {
        let cfg = patient(SessionConfig {
            max_client_timeout: Duration::from_millis(cap),
            ..SessionConfig::default()
        });
        let mut s = session(pattern(10), Mode::Octet, timeout_opt(255), &cfg);
        let now = Instant::now();
        assert_eq!(s.accepted_options().timeout, Some(want), "cap {cap} ms");
        assert_eq!(s.timeout_capped(), want < 255, "cap {cap} ms");
        assert_eq!(drain(&mut s, now).len(), 1, "cap {cap} ms");
        assert_eq!(
            s.poll_timeout(),
            Some(now + Duration::from_secs(want.into())),
            "cap {cap} ms"
        );
    }
}

#[test]
fn client_timeout_at_or_under_the_cap_is_echoed() {
    let cfg = patient(SessionConfig::default());
    for asked in [1u8, 3, 5] {
        let mut s = session(pattern(10), Mode::Octet, timeout_opt(asked), &cfg);
        let now = Instant::now();
        let echoed = packet::AcceptedOptions {
            timeout: Some(asked),
            ..Default::default()
        };
        assert_eq!(
            drain(&mut s, now),
            vec![Sent::Oack(echoed)],
            "asked {asked}"
        );
        assert!(!s.timeout_capped(), "asked {asked}");
        assert_eq!(
            s.poll_timeout(),
            Some(now + Duration::from_secs(asked.into())),
            "asked {asked}"
        );
    }
}

#[test]
fn client_timeout_0_is_ignored() {
    // Only possible for a hand-built request (the parser refuses 0): no OACK, the default
    // timeout, and nothing counted as capped.
    let cfg = SessionConfig::default();
    let mut s = session(pattern(10), Mode::Octet, timeout_opt(0), &cfg);
    let now = Instant::now();
    assert_eq!(s.accepted_options(), packet::AcceptedOptions::default());
    assert!(!s.timeout_capped());
    assert_eq!(blocks(&drain(&mut s, now)), vec![1]);
    assert_eq!(s.poll_timeout(), Some(now + cfg.default_timeout));
}

#[test]
fn client_error_ends_session() {
    let cfg = SessionConfig::default();
    let mut buf = [0u8; 64];
    // Option negotiation refused by the client (code 8) in answer to the OACK.
    let mut s = session(pattern(10), Mode::Octet, opts(Some(1024), None), &cfg);
    let now = Instant::now();
    drain(&mut s, now);
    let n = packet::emit_error(ErrorCode::OptionNegotiation, "no", &mut buf);
    assert_eq!(
        s.handle_datagram(now, peer(), &buf[..n]),
        Received::Progress
    );
    assert_eq!(s.outcome(), Some(Outcome::ClientError(8)));
    assert!(drain(&mut s, now).is_empty());
    assert_eq!(s.poll_timeout(), None);
    // Mid-transfer ERROR with any code.
    let mut s = session(pattern(5000), Mode::Octet, RequestOptions::default(), &cfg);
    drain(&mut s, now);
    ack(&mut s, now, 1);
    drain(&mut s, now);
    let n = packet::emit_error_bytes(0, b"user abort", &mut buf);
    assert_eq!(
        s.handle_datagram(now, peer(), &buf[..n]),
        Received::Progress
    );
    assert_eq!(s.outcome(), Some(Outcome::ClientError(0)));
    assert!(drain(&mut s, now).is_empty());
}

#[test]
fn foreign_tid_leaves_session_untouched() {
    let cfg = SessionConfig::default();
    let mut s = session(pattern(5000), Mode::Octet, RequestOptions::default(), &cfg);
    let now = Instant::now();
    drain(&mut s, now);
    let before = (s.stats(), s.poll_timeout());
    let mut buf = [0u8; 64];
    let strangers: [SocketAddr; 2] = [
        "10.1.0.2:40001".parse().unwrap(), // same host, other port
        "10.1.0.3:40000".parse().unwrap(), // other host, same port
    ];
    for src in strangers {
        let n = packet::emit_ack(1, &mut buf);
        assert_eq!(s.handle_datagram(now, src, &buf[..n]), Received::ForeignTid);
        let n = packet::emit_error(ErrorCode::NotDefined, "x", &mut buf);
        assert_eq!(s.handle_datagram(now, src, &buf[..n]), Received::ForeignTid);
        assert_eq!(
            s.handle_datagram(now, src, b"garbage"),
            Received::ForeignTid
        );
    }
    assert!(drain(&mut s, now).is_empty());
    assert_eq!((s.stats(), s.poll_timeout()), before);
    assert_eq!(s.outcome(), None);
    // The real peer still drives it.
    assert_eq!(ack(&mut s, now, 1), Received::Progress);
    assert_eq!(blocks(&drain(&mut s, now)), vec![2]);
}

#[test]
fn malformed_and_unexpected_packets_are_dropped() {
    let cfg = SessionConfig::default();
    let mut s = session(pattern(5000), Mode::Octet, opts(Some(512), Some(2)), &cfg);
    let now = Instant::now();
    drain(&mut s, now);
    let mut buf = [0u8; 600];
    let rrq = packet::emit_request(
        RequestKind::Read,
        b"boot.img",
        Mode::Octet,
        &RequestOptions::default(),
        &mut buf,
    )
    .unwrap();
    let rrq = buf[..rrq].to_vec();
    let n = packet::emit_data(1, b"abc", &mut buf).unwrap();
    let data = buf[..n].to_vec();
    let accepted = packet::AcceptedOptions {
        blksize: Some(512),
        ..Default::default()
    };
    let n = packet::emit_oack(&accepted, &mut buf);
    let oack = buf[..n].to_vec();
    let inputs: [&[u8]; 7] = [
        b"",
        b"\x00",
        b"\x00\x04\x00",
        b"\x00\x09\x00\x00",
        &rrq,
        &data,
        &oack,
    ];
    for phase in 0..2u16 {
        for bytes in inputs {
            assert_eq!(
                s.handle_datagram(now, peer(), bytes),
                Received::Malformed,
                "phase {phase}: {bytes:?}"
            );
            assert!(drain(&mut s, now).is_empty());
            assert_eq!(s.outcome(), None);
        }
        // Phase 0 is before ACK 0 (OACK out), phase 1 mid-transfer.
        let a = 2 * phase;
        assert_eq!(ack(&mut s, now, a), Received::Progress);
        assert_eq!(blocks(&drain(&mut s, now)), vec![a + 1, a + 2]);
    }
}

// ---- seeded network simulation ------------------------------------------------------------

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug)]
struct NetParams {
    loss: f64,
    dup: f64,
    reorder: f64,
}

/// (delivery time, sequence, towards the client?, bytes), earliest first.
type InFlight = Reverse<(Duration, u64, bool, Vec<u8>)>;

/// A lossy, duplicating, reordering datagram pipe with simulated time.
struct Net {
    rng: SmallRng,
    p: NetParams,
    seq: u64,
    queue: BinaryHeap<InFlight>,
}

impl Net {
    fn send(&mut self, t: Duration, to_client: bool, bytes: Vec<u8>) {
        if self.rng.gen_bool(self.p.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.p.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = Duration::from_millis(1);
            if self.rng.gen_bool(self.p.reorder) {
                delay += Duration::from_micros(self.rng.gen_range(1..4000));
            }
            self.seq += 1;
            self.queue
                .push(Reverse((t + delay, self.seq, to_client, bytes.clone())));
        }
    }
}

/// An RFC 7440 receiver written independently of the session: ACKs the last in-order block
/// at the end of each window, once on a gap, on its own timeout, and the final block again
/// for any DATA after the end.
struct Client {
    rollover_to: u16,
    wants_oack: bool,
    got_oack: bool,
    blksize: usize,
    window: u16,
    /// Wire number of the last in-order block (0 before any).
    last_wire: u16,
    in_window: u16,
    gap_acked: bool,
    done: bool,
    data: Vec<u8>,
    timeout: Duration,
    deadline: Option<Duration>,
    outbox: Vec<Vec<u8>>,
}

impl Client {
    fn new(options: &RequestOptions, rollover_to: u16, t: Duration) -> Client {
        let timeout = Duration::from_millis(250);
        Client {
            rollover_to,
            wants_oack: *options != RequestOptions::default(),
            got_oack: false,
            blksize: 512,
            window: 1,
            last_wire: 0,
            in_window: 0,
            gap_acked: false,
            done: false,
            data: Vec::new(),
            timeout,
            deadline: Some(t + timeout),
            outbox: Vec::new(),
        }
    }

    fn next_wire(&self) -> u16 {
        if self.last_wire == u16::MAX {
            self.rollover_to
        } else {
            self.last_wire + 1
        }
    }

    fn send_ack(&mut self, t: Duration) {
        let mut b = vec![0u8; 4];
        packet::emit_ack(self.last_wire, &mut b);
        self.outbox.push(b);
        self.in_window = 0;
        if !self.done {
            self.deadline = Some(t + self.timeout);
        }
    }

    fn receive(&mut self, t: Duration, bytes: &[u8]) {
        match packet::parse(bytes).expect("server sent an unparseable packet") {
            Packet::Oack(o) => {
                assert!(self.wants_oack, "OACK without options");
                if !self.got_oack {
                    self.got_oack = true;
                    self.blksize = o.blksize.map_or(512, usize::from);
                    self.window = o.windowsize.unwrap_or(1);
                }
                if self.data.is_empty() && self.last_wire == 0 {
                    self.send_ack(t);
                }
            }
            Packet::Data { block, payload } => {
                assert!(!self.wants_oack || self.got_oack, "DATA before OACK");
                assert!(payload.len() <= self.blksize);
                if self.done {
                    self.send_ack(t);
                } else if block == self.next_wire() {
                    self.data.extend_from_slice(payload);
                    self.last_wire = block;
                    self.in_window += 1;
                    self.gap_acked = false;
                    if payload.len() < self.blksize {
                        self.done = true;
                        self.deadline = None;
                        self.send_ack(t);
                    } else if self.in_window >= self.window {
                        self.send_ack(t);
                    } else {
                        self.deadline = Some(t + self.timeout);
                    }
                } else if !self.gap_acked {
                    self.gap_acked = true;
                    self.send_ack(t);
                }
            }
            other => panic!("server sent {other:?}"),
        }
    }

    fn timeout(&mut self, t: Duration) {
        // Before the OACK arrives the server retransmits it; afterwards re-ACK.
        if !self.wants_oack || self.got_oack {
            self.send_ack(t);
        } else {
            self.deadline = Some(t + self.timeout);
        }
    }
}

struct SimResult {
    received: Vec<u8>,
    steps: u64,
    stats: SessionStats,
}

fn simulate(
    seed: u64,
    content: &[u8],
    mode: Mode,
    options: RequestOptions,
    rollover_to: u16,
    p: NetParams,
) -> SimResult {
    // The simulated client never repeats its request: a lost first packet is recovered by
    // the server alone, so the unverified limits are lifted here.
    let cfg = patient(SessionConfig {
        rollover_to,
        max_retries: 40,
        default_timeout: Duration::from_millis(100),
        ..SessionConfig::default()
    });
    let t0 = Instant::now();
    let mut t = Duration::ZERO;
    let mut server = Session::new(
        peer(),
        &request(mode, options),
        Arc::new(Image::from_bytes(content.to_vec())),
        &cfg,
        t0,
    );
    let mut client = Client::new(&options, rollover_to, t);
    let mut net = Net {
        rng: SmallRng::seed_from_u64(seed),
        p,
        seq: 0,
        queue: BinaryHeap::new(),
    };
    let blocks = (content.len() * 2 / 8 + 1) as u64;
    let max_steps = 400 * blocks + 20_000;
    let mut buf = [0u8; 512];
    let mut steps = 0u64;
    let mut quiet = false; // the last datagram to the server made no progress
    loop {
        steps += 1;
        assert!(
            steps < max_steps,
            "seed {seed}: no completion in {max_steps} steps"
        );
        let now = t0 + t;
        let mut sent = 0;
        while let Some(tx) = server.poll_transmit(now, &mut buf) {
            sent += 1;
            let bytes = match tx {
                Transmit::Data { header, payload } => {
                    assert!(payload.end <= server.payload().len());
                    let mut v = header.to_vec();
                    v.extend_from_slice(&server.payload()[payload]);
                    v
                }
                Transmit::Control { len } => buf[..len].to_vec(),
            };
            net.send(t, true, bytes);
        }
        assert!(
            !(quiet && sent > 0),
            "seed {seed}: a datagram without progress caused a transmission"
        );
        quiet = false;
        for b in std::mem::take(&mut client.outbox) {
            net.send(t, false, b);
        }
        if server.outcome().is_some() {
            break;
        }
        let next_pkt = net.queue.peek().map(|Reverse((at, ..))| *at);
        let server_t = server.poll_timeout().map(|d| d - t0);
        let next = [next_pkt, server_t, client.deadline]
            .into_iter()
            .flatten()
            .min()
            .expect("something must be pending");
        t = t.max(next);
        let now = t0 + t;
        if next_pkt == Some(next) {
            let Reverse((_, _, to_client, bytes)) = net.queue.pop().unwrap();
            if to_client {
                client.receive(t, &bytes);
            } else {
                let r = server.handle_datagram(now, peer(), &bytes);
                assert_ne!(r, Received::Malformed);
                quiet = r != Received::Progress;
            }
        } else if server_t == Some(next) {
            server.handle_timeout(now);
        } else {
            client.timeout(t);
        }
    }
    assert_eq!(
        server.outcome(),
        Some(Outcome::Completed),
        "seed {seed} {p:?} {options:?}"
    );
    assert!(
        client.done,
        "server completed before the client got the last block"
    );
    SimResult {
        received: client.data,
        steps,
        stats: server.stats(),
    }
}

#[test]
fn seeded_loss_duplication_reordering_matrix() {
    let files: Vec<(Vec<u8>, Mode)> = vec![
        (Vec::new(), Mode::Octet),
        (pattern(512), Mode::Octet),
        (pattern(3 * 1468), Mode::Octet),
        (pattern(40_001), Mode::Octet),
        (
            b"some\r\ntext\nwith\rline ends\n".repeat(400),
            Mode::Netascii,
        ),
    ];
    let mut seed = 0u64;
    let mut runs = 0;
    for loss in [0.0, 0.05, 0.20] {
        for (dup, reorder) in [(0.0, 0.0), (0.05, 0.0), (0.0, 0.2), (0.05, 0.2)] {
            let p = NetParams { loss, dup, reorder };
            for window in [None, Some(1), Some(4), Some(64)] {
                for blksize in [512u16, 1468] {
                    let options = match (window, blksize) {
                        (None, 512) => RequestOptions::default(),
                        (None, _) => continue,
                        (Some(w), b) => RequestOptions {
                            blksize: Some(b),
                            windowsize: Some(w),
                            tsize: Some(0),
                            ..Default::default()
                        },
                    };
                    for (content, mode) in &files {
                        seed += 1;
                        let r = simulate(seed, content, *mode, options, 0, p);
                        let expect: &[u8] = match mode {
                            Mode::Octet => content,
                            Mode::Netascii => &crate::images::to_netascii(content),
                        };
                        assert!(r.received == expect, "seed {seed}: bytes differ");
                        if loss == 0.0 && dup == 0.0 && reorder == 0.0 {
                            assert_eq!(r.stats.retransmitted, 0, "seed {seed}");
                        }
                        runs += 1;
                    }
                }
            }
        }
    }
    assert_eq!(runs, 3 * 4 * 7 * 5);
}

#[test]
fn seeded_matrix_past_rollover() {
    // 66_000 blocks of 8 bytes plus a short one: crosses 65535 -> rollover_to.
    let content = pattern(66_000 * 8 + 5);
    let mut seed = 1000u64;
    for rollover_to in [0u16, 1] {
        for (window, p) in [
            (
                64,
                NetParams {
                    loss: 0.0,
                    dup: 0.0,
                    reorder: 0.0,
                },
            ),
            (
                64,
                NetParams {
                    loss: 0.05,
                    dup: 0.02,
                    reorder: 0.05,
                },
            ),
            (
                4,
                NetParams {
                    loss: 0.05,
                    dup: 0.02,
                    reorder: 0.05,
                },
            ),
        ] {
            seed += 1;
            let o = RequestOptions {
                blksize: Some(8),
                windowsize: Some(window),
                ..Default::default()
            };
            let r = simulate(seed, &content, Mode::Octet, o, rollover_to, p);
            assert!(r.received == content, "seed {seed}: bytes differ");
            assert!(r.steps > 0);
        }
    }
}

// ---- unverified sessions ------------------------------------------------------------------

/// Sends nothing but what the session wants, never acknowledges, and steps its timeouts until
/// it ends. Returns (UDP payload bytes sent, datagrams sent, time from start to the end).
fn run_silent(s: &mut Session, start: Instant) -> (usize, usize, Duration) {
    let mut buf = [0u8; 600];
    let (mut bytes, mut datagrams) = (0, 0);
    let mut now = start;
    for _ in 0..1000 {
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            datagrams += 1;
            bytes += match t {
                Transmit::Data { header, payload } => header.len() + payload.len(),
                Transmit::Control { len } => len,
            };
        }
        match s.poll_timeout() {
            Some(t) => {
                now = t;
                s.handle_timeout(now);
            }
            None => return (bytes, datagrams, now - start),
        }
    }
    panic!("the session never ended");
}

/// A peer that never answers gets the first DATA once and one retransmission one timeout
/// later, then nothing; the session ends as timed out and unacknowledged at the unverified
/// lifetime (4 s), not after `max_retries` + 1 timeouts.
#[test]
fn unverified_session_retransmits_once_and_ends_early() {
    let cfg = SessionConfig::default();
    assert_eq!((cfg.unverified_retries, cfg.max_retries), (1, 5));
    let start = Instant::now();
    let mut s = session_at(
        pattern(5000),
        Mode::Octet,
        RequestOptions::default(),
        &cfg,
        start,
    );
    assert_eq!(blocks(&drain(&mut s, start)), vec![1]);
    assert_eq!(s.poll_timeout(), Some(start + Duration::from_secs(1)));
    let t1 = start + Duration::from_secs(1);
    s.handle_timeout(t1);
    assert_eq!(blocks(&drain(&mut s, t1)), vec![1]);
    let t2 = start + Duration::from_secs(2);
    assert_eq!(s.poll_timeout(), Some(t2));
    s.handle_timeout(t2);
    assert!(drain(&mut s, t2).is_empty(), "no second retransmission");
    assert_eq!(s.outcome(), None);
    assert_eq!(s.poll_timeout(), Some(start + cfg.unverified_lifetime));
    s.handle_timeout(start + cfg.unverified_lifetime);
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
    assert!(!s.acknowledged() && !s.stats().acknowledged);
    assert_eq!(s.stats().packets_sent, 2);
}

/// An ACK that comes late, after the retransmissions to an unverified peer have stopped but
/// within its lifetime, still verifies the session and the transfer goes on.
#[test]
fn a_late_first_ack_within_the_lifetime_verifies() {
    let cfg = SessionConfig::default();
    let start = Instant::now();
    let o = RequestOptions::default();
    let mut s = session_at(pattern(5000), Mode::Octet, o, &cfg, start);
    drain(&mut s, start);
    for secs in [1, 2] {
        let t = start + Duration::from_secs(secs);
        s.handle_timeout(t);
        drain(&mut s, t);
    }
    let late = start + Duration::from_secs(3);
    assert_eq!(ack(&mut s, late, 1), Received::Progress);
    assert!(s.acknowledged());
    assert_eq!(blocks(&drain(&mut s, late)), vec![2]);
    assert_eq!(s.poll_timeout(), Some(late + cfg.default_timeout));
}

/// The lifetime bounds an unverified session whatever timeout the client was granted: with
/// 5 s granted and 4 s of life, the OACK goes out once and the session ends at 4 s.
#[test]
fn unverified_lifetime_caps_a_long_granted_timeout() {
    let cfg = SessionConfig::default();
    let start = Instant::now();
    let mut s = session_at(pattern(5000), Mode::Octet, timeout_opt(5), &cfg, start);
    let (_, datagrams, lived) = run_silent(&mut s, start);
    assert_eq!((datagrams, lived), (1, cfg.unverified_lifetime));
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
}

/// Once the peer has acknowledged anything the unverified limits no longer apply: the
/// transfer gets `max_retries` retransmissions and lives past the unverified lifetime.
#[test]
fn an_acknowledged_session_gets_every_retry() {
    let cfg = SessionConfig::default();
    let start = Instant::now();
    let mut s = session_at(
        pattern(5000),
        Mode::Octet,
        opts(Some(512), None),
        &cfg,
        start,
    );
    drain(&mut s, start);
    assert!(!s.acknowledged());
    assert_eq!(ack(&mut s, start, 0), Received::Progress);
    assert!(s.acknowledged());
    assert!(!s.last_block_sent());
    let (_, datagrams, lived) = run_silent(&mut s, start);
    assert_eq!(datagrams, 1 + usize::from(cfg.max_retries));
    assert_eq!(
        lived,
        cfg.default_timeout * (u32::from(cfg.max_retries) + 1)
    );
    assert_eq!(s.outcome(), Some(Outcome::TimedOut));
    assert!(s.stats().acknowledged);
}

/// A stale or foreign ACK does not verify a session: only an ACK that advances does.
#[test]
fn only_a_progressing_ack_from_the_peer_verifies() {
    let cfg = SessionConfig::default();
    let mut s = session(pattern(5000), Mode::Octet, RequestOptions::default(), &cfg);
    let now = Instant::now();
    drain(&mut s, now);
    assert_eq!(ack(&mut s, now, 7), Received::Ignored);
    let mut b = [0u8; 4];
    packet::emit_ack(1, &mut b);
    let stranger: SocketAddr = "10.1.0.9:40000".parse().unwrap();
    assert_eq!(s.handle_datagram(now, stranger, &b), Received::ForeignTid);
    assert!(!s.acknowledged());
    assert_eq!(ack(&mut s, now, 1), Received::Progress);
    assert!(s.acknowledged());
}

/// `last_block_sent` turns true when the final block goes out the first time, before its ACK.
#[test]
fn last_block_sent_is_known_before_the_final_ack() {
    let cfg = SessionConfig::default();
    let mut s = session(pattern(1000), Mode::Octet, RequestOptions::default(), &cfg);
    let now = Instant::now();
    drain(&mut s, now);
    assert!(!s.last_block_sent());
    ack(&mut s, now, 1);
    assert_eq!(blocks(&drain(&mut s, now)), vec![2]);
    assert!(s.last_block_sent() && s.outcome().is_none());
    ack(&mut s, now, 2);
    assert_eq!(s.outcome(), Some(Outcome::Completed));
}

/// Amplification: the most a request from a spoofed address can make the server send to that
/// address, computed from the session machine with the default settings. The worst request is
/// the shortest one (a one-letter name, no options: 10 bytes) for a file of at least 512
/// bytes: DATA 1 (516 bytes) goes out 1 + `unverified_retries` = 2 times, 1032 bytes, 103.2
/// bytes per request byte in UDP payload, 28.6 on the wire (20-byte IPv4 and 8-byte UDP
/// headers on each datagram). A request with options (a longer RRQ) gets an OACK back instead,
/// about its own size. The bound is (1 + unverified_retries) x 516 whatever the request.
#[test]
fn amplification() {
    let cfg = SessionConfig::default();
    const IP_UDP: usize = 28;
    let image = Arc::new(Image::from_bytes(pattern(100_000)));
    let mut figures = Vec::new();
    for (what, rrq) in [
        ("one-letter name, no options", &b"\0\x01a\0octet\0"[..]),
        (
            "undionly.kpxe, no options",
            &b"\0\x01undionly.kpxe\0octet\0"[..],
        ),
        (
            "every option",
            &b"\0\x01a\0octet\0blksize\x0065464\0tsize\x000\0timeout\x00255\0windowsize\x0065535\0"
                [..],
        ),
    ] {
        let Ok(Packet::Request(request)) = packet::parse(rrq) else {
            panic!("{what}: not a request");
        };
        let start = Instant::now();
        let mut s = Session::new(peer(), &request, Arc::clone(&image), &cfg, start);
        let (bytes, datagrams, lived) = run_silent(&mut s, start);
        assert!(!s.acknowledged());
        let bound = (1 + usize::from(cfg.unverified_retries)) * (4 + 512);
        assert!(bytes <= bound, "{what}: {bytes} bytes sent, bound {bound}");
        assert!(lived <= cfg.unverified_lifetime, "{what}: lived {lived:?}");
        let payload = bytes as f64 / rrq.len() as f64;
        let wire = (bytes + datagrams * IP_UDP) as f64 / (rrq.len() + IP_UDP) as f64;
        figures.push((what, rrq.len(), bytes, datagrams, payload, wire));
    }
    for f in &figures {
        eprintln!(
            "{}: {}-byte RRQ -> {} bytes in {} datagrams: {:.1}x payload, {:.1}x on the wire",
            f.0, f.1, f.2, f.3, f.4, f.5
        );
    }
    // The worst case, as the docs state it.
    let worst = figures[0];
    assert_eq!((worst.1, worst.2, worst.3), (10, 1032, 2));
    assert!((worst.4 - 103.2).abs() < 0.01 && (worst.5 - 28.63).abs() < 0.01);
    // With options the answer is an OACK, not a block of the file.
    assert!(figures[2].4 < 2.0, "{:?}", figures[2]);
}
