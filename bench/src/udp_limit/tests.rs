use super::*;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: Args,
}

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.a)
}

#[test]
fn arguments() {
    let a = parse(&[
        "--send-netns",
        "s",
        "--recv-netns",
        "r",
        "--dest",
        "10.1.0.2:9000",
    ])
    .unwrap();
    assert_eq!(a.send_netns.as_deref(), Some("s"));
    assert_eq!(a.recv_netns.as_deref(), Some("r"));
    assert_eq!(a.dest, "10.1.0.2:9000".parse().unwrap());
    assert_eq!((a.size, a.gso_segments, a.threads), (1468, 64, 1));
    assert_eq!(a.duration_s, 5.0);
    assert!(!a.json);
    let a = parse(&[
        "--dest",
        "10.1.0.2:9",
        "--size",
        "1472",
        "--gso-segments",
        "0",
        "--threads",
        "2",
        "--duration-s",
        "0.5",
        "--json",
    ])
    .unwrap();
    assert_eq!((a.size, a.gso_segments, a.threads), (1472, 0, 2));
    assert!(a.json && a.send_netns.is_none());
    assert!(parse(&[]).is_err(), "--dest is required");
    assert!(parse(&["--dest", "10.1.0.2"]).is_err(), "port required");
    assert!(parse(&["--dest", "10.1.0.2:9", "--size", "0"]).is_err());
    assert!(parse(&["--dest", "10.1.0.2:9", "--size", "65508"]).is_err());
    assert!(parse(&["--dest", "10.1.0.2:9", "--threads", "0"]).is_err());
    assert_eq!(thread_dest(a.dest, 1), "10.1.0.2:10".parse().unwrap());
    let mut high = a.clone();
    high.dest = "10.1.0.2:65535".parse().unwrap();
    assert!(run(&high).unwrap_err().to_string().contains("PORT+threads"));
}

#[test]
fn gso_layout() {
    let (l, note) = Layout::new(1472, 0);
    assert_eq!(
        (l.segments, l.gso, l.batch, l.message_bytes()),
        (1, false, BATCH, 1472)
    );
    assert!(note.is_none());
    // 64 x 1472 = 94208 bytes: more than one UDP message holds; 44 x 1472 = 64768 fits.
    let (l, note) = Layout::new(1472, 64);
    assert_eq!((l.segments, l.gso, l.message_bytes()), (44, true, 64_768));
    assert!(l.message_bytes() <= MAX_GSO_BYTES);
    const { assert!(45 * 1472 > MAX_GSO_BYTES) };
    assert!(note.unwrap().contains("44 per message"));
    let (l, note) = Layout::new(512, 64);
    assert_eq!((l.segments, l.message_bytes()), (64, 32_768));
    assert!(note.is_none());
    let (l, _) = Layout::new(100, 200);
    assert_eq!(l.segments, MAX_GSO_SEGMENTS, "kernel segment cap");
    let (l, _) = Layout::new(1472, 8);
    assert_eq!(l.segments, 8);
    assert_eq!(l.without_gso(), Layout::new(1472, 0).0);
    // A datagram bigger than a GSO message can hold: one segment, still GSO.
    let (l, _) = Layout::new(65_507, 4);
    assert_eq!(l.segments, 1);
    // Datagrams on the wire per accepted message (the last segment may be short).
    let (l, _) = Layout::new(1472, 44);
    assert_eq!(l.datagrams_of(64_768), 44);
    assert_eq!(l.datagrams_of(1473), 2);
    assert_eq!(l.datagrams_of(0), 0);
}

#[test]
fn rates() {
    let (l, _) = Layout::new(1472, 0);
    let r = report(
        l,
        0,
        2,
        1000,
        vec![600, 300],
        900 * 1472,
        2.0,
        2.5,
        Duration::from_millis(1500),
        Duration::from_millis(500),
        3,
        vec![],
    );
    assert_eq!(r.received_datagrams, 900);
    assert!((r.loss_percent - 10.0).abs() < 1e-9);
    // 900 x 1472 bytes x 8 / 2.5 s = 4.239 Mbit/s; 360 datagrams/s.
    assert!(
        (r.received_mbit_s - 4.239_36).abs() < 1e-6,
        "{}",
        r.received_mbit_s
    );
    assert!((r.received_pps - 360.0).abs() < 1e-9);
    assert!((r.sent_mbit_s - 1000.0 * 1472.0 * 8.0 / 2.0 / 1e6).abs() < 1e-9);
    assert!((r.sender_cpu_percent - 75.0).abs() < 1e-9);
    assert!((r.receiver_cpu_percent - 20.0).abs() < 1e-9);
    assert_eq!(r.gso_segments, 0);
    let (g, _) = Layout::new(1472, 64);
    let r = report(
        g,
        64,
        1,
        0,
        vec![0],
        0,
        1.0,
        1.0,
        Duration::ZERO,
        Duration::ZERO,
        0,
        vec![],
    );
    assert_eq!((r.gso_segments, r.gso_segments_asked), (44, 64));
    assert_eq!(r.loss_percent, 0.0, "nothing sent: no loss, not NaN");
    // The JSON carries every field of the agreed interface.
    let v = serde_json::to_value(&r).unwrap();
    for k in [
        "size",
        "gso_segments",
        "threads",
        "seconds",
        "sent_datagrams",
        "received_datagrams",
        "loss_percent",
        "received_mbit_s",
        "received_pps",
        "sender_cpu_percent",
        "receiver_cpu_percent",
    ] {
        assert!(v.get(k).is_some(), "{k} missing");
    }
}

/// The whole measurement on loopback in the current namespace (no root needed), both modes.
#[test]
fn measures_loopback() {
    for gso in [0u16, 8] {
        // Two free ports in a row (bound and released: a small race, fine for a test).
        let port = (0..100)
            .find_map(|_| {
                let a = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let p = a.local_addr().ok()?.port();
                std::net::UdpSocket::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
                Some(p)
            })
            .unwrap();
        let a = parse(&[
            "--dest",
            &format!("127.0.0.1:{port}"),
            "--size",
            "1472",
            "--gso-segments",
            &gso.to_string(),
            "--threads",
            "2",
            "--duration-s",
            "0.3",
        ])
        .unwrap();
        let r = run(&a).unwrap();
        assert!(r.sent_datagrams > 0, "{r}");
        assert!(r.received_datagrams > 0, "{r}");
        assert!(r.received_datagrams <= r.sent_datagrams, "{r}");
        assert!(r.received_mbit_s > 0.0 && r.sender_cpu_percent > 0.0, "{r}");
        assert_eq!(r.received_per_thread.len(), 2);
        assert!(r.received_per_thread.iter().all(|&n| n > 0), "{r}");
        // Every datagram arrived whole: the bytes match the count exactly.
        assert!(
            (r.received_mbit_s * 1e6 * r.seconds / 8.0 / 1472.0 - r.received_datagrams as f64)
                .abs()
                < 1.0,
            "{r}"
        );
        assert!(r.send_seconds >= 0.29 && r.seconds < 5.0, "{r}");
        if gso > 0 && r.notes.is_empty() {
            assert_eq!(r.gso_segments, 8);
        }
    }
}
