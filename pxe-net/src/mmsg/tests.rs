//! (The first three tests come from the simulators' batches, `bench/src/mmsg.rs`.)

use super::*;
use crate::poll::wait_readable;
use crate::socket::{UdpOptions, enable_gro, open_udp, set_pktinfo, set_udp_segment};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};

fn v4(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        a => panic!("{a} is not IPv4"),
    }
}

#[test]
fn batch_round_trip_on_loopback() {
    let rx = open_udp(&UdpOptions::loopback()).unwrap();
    let tx = open_udp(&UdpOptions::loopback()).unwrap();
    let to = v4(&rx);
    let mut b = SendBatch::new();
    for i in 0..100u8 {
        if b.is_full() {
            assert_eq!(b.flush(tx.as_raw_fd(), &mut ErrorCounts::new()), 64);
        }
        let s = b.slot();
        s.clear();
        s.extend_from_slice(&[i; 10]);
        b.commit(to);
    }
    let mut errors = ErrorCounts::new();
    assert_eq!(b.flush(tx.as_raw_fd(), &mut errors), 36);
    assert!(errors.is_empty());
    let mut r = RecvBatch::new();
    let mut got = vec![];
    for _ in 0..100 {
        wait_readable(&[rx.as_fd()], Duration::from_millis(100));
        r.recv(rx.as_raw_fd()).unwrap();
        for i in 0..r.len() {
            let (d, from) = r.datagram(i);
            assert_eq!(d.len(), 10);
            assert_eq!(from.ip(), &Ipv4Addr::LOCALHOST);
            got.push(d[0]);
        }
        if got.len() == 100 {
            break;
        }
    }
    assert_eq!(got, (0..100).collect::<Vec<u8>>());
    assert_eq!(r.recv(rx.as_raw_fd()).unwrap(), 0);
    let (u, s) = crate::cpu::cpu_time();
    assert!(u + s > Duration::ZERO);
}

#[test]
fn segments_split_at_the_gro_size() {
    let d: Vec<u8> = (0..25u8).collect();
    let parts: Vec<&[u8]> = split_segments(&d, 10).collect();
    assert_eq!(parts, vec![&d[..10], &d[10..20], &d[20..]]);
    assert_eq!(split_segments(&d, 25).count(), 1);
    assert_eq!(
        split_segments(&[], 10).collect::<Vec<_>>(),
        vec![&[] as &[u8]]
    );
}

#[test]
fn gro_receive_hands_a_gso_burst_over_whole_and_splits_it_back() {
    let rx = open_udp(&UdpOptions::loopback()).unwrap();
    enable_gro(&rx).unwrap();
    let tx = open_udp(&UdpOptions::loopback()).unwrap();
    // The sender cuts every send into 1000-byte datagrams (UDP GSO).
    set_udp_segment(&tx, 1000).expect("UDP_SEGMENT");
    let to = rx.local_addr().unwrap();
    let burst: Vec<u8> = (0..10_300u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(tx.send_to(&burst, to).unwrap(), burst.len());
    let mut b = RecvBatch::gro();
    wait_readable(&[rx.as_fd()], Duration::from_secs(2));
    assert_eq!(
        b.recv(rx.as_raw_fd()).unwrap(),
        1,
        "the burst is one receive"
    );
    let (segs, from) = b.segments(0);
    let segs: Vec<&[u8]> = segs.collect();
    assert_eq!(from.ip(), &Ipv4Addr::LOCALHOST);
    assert_eq!(segs.len(), 11);
    assert!(segs[..10].iter().all(|s| s.len() == 1000));
    assert_eq!(segs[10].len(), 300);
    assert_eq!(segs.concat(), burst);
    assert_eq!(b.truncated(), 0);
    // A plain datagram is one segment of its own size.
    tx.send_to(&burst[..700], to).unwrap();
    wait_readable(&[rx.as_fd()], Duration::from_secs(2));
    assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
    let (segs, _) = b.segments(0);
    assert_eq!(segs.collect::<Vec<_>>(), vec![&burst[..700]]);
    assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 0);
}

/// The DHCP server's use: a batch received with IP_PKTINFO tells each datagram's local address
/// and interface; answers sent with IP_PKTINFO leave from the address given.
#[test]
fn pktinfo_both_ways_in_batches() {
    let rx = open_udp(&UdpOptions {
        bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        ..UdpOptions::loopback()
    })
    .unwrap();
    set_pktinfo(&rx, true).unwrap();
    let port = v4(&rx).port();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..3u8 {
        client.send_to(&[i; 20], ("127.0.0.1", port)).unwrap();
    }
    client.send_to(&[9; 3000], ("127.0.0.1", port)).unwrap();
    let mut r = RecvBatch::with_capacity(16, 2048).with_control();
    let mut seen = 0;
    let mut s = SendBatch::with_capacity(16, 1500);
    while seen < 4 {
        wait_readable(&[rx.as_fd()], Duration::from_secs(2));
        let n = r.recv(rx.as_raw_fd()).unwrap();
        assert!(n > 0, "datagrams within 2 s");
        for j in 0..n {
            let info = r.pktinfo(j).expect("IP_PKTINFO on every datagram");
            assert_eq!(info.local, Ipv4Addr::LOCALHOST);
            assert_eq!(info.header_dst, Ipv4Addr::LOCALHOST);
            assert_eq!(info.ifindex, 1, "loopback");
            assert_eq!(r.source(j), Some(v4(&client)));
            if r.is_truncated(j) {
                assert_eq!(r.data(j).len(), 2048);
            } else {
                let d = r.data(j).to_vec();
                s.slot().clone_from(&d);
                s.commit_with_pktinfo(r.source(j).unwrap(), PktInfo::from_local(info.local, 0));
            }
            seen += 1;
        }
    }
    assert_eq!(r.truncated(), 1);
    assert_eq!(s.len(), 3);
    let mut refused = 0;
    let sent = s.flush_with(rx.as_raw_fd(), Retry::INTERRUPTED, |_, _| refused += 1);
    assert_eq!((sent, refused, s.len()), (3, 0, 0));
    let mut buf = [0u8; 64];
    let mut firsts = vec![];
    for _ in 0..3 {
        let (len, from) = client.recv_from(&mut buf).expect("an answer");
        assert_eq!((len, from.port()), (20, port));
        assert_eq!(from.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
        firsts.push(buf[0]);
    }
    firsts.sort_unstable();
    assert_eq!(firsts, vec![0, 1, 2]);
}

#[test]
fn refused_datagrams_are_counted_and_the_rest_sent() {
    let rx = open_udp(&UdpOptions::loopback()).unwrap();
    let tx = open_udp(&UdpOptions::loopback()).unwrap();
    let mut b = SendBatch::with_capacity(4, 16);
    for (i, len) in [10usize, 70_000, 10].into_iter().enumerate() {
        b.slot().clear();
        b.slot().resize(len, i as u8);
        b.commit(v4(&rx));
    }
    let mut errors = ErrorCounts::new();
    assert_eq!(b.flush(tx.as_raw_fd(), &mut errors), 2);
    assert_eq!(errors.get("EMSGSIZE"), Some(&1), "{errors:?}");
    assert!(b.is_empty());
    // A wrong descriptor fails every datagram, and the batch still ends.
    b.fill(2, v4(&rx));
    let mut errors = ErrorCounts::new();
    assert_eq!(b.flush(-1, &mut errors), 0);
    assert_eq!(errors.get("errno 9"), Some(&2), "EBADF: {errors:?}");
}

#[test]
fn errno_names() {
    assert_eq!(errno_name(libc::ENOBUFS), "ENOBUFS");
    assert_eq!(errno_name(libc::EAGAIN), "EAGAIN");
    assert_eq!(errno_name(libc::EMSGSIZE), "EMSGSIZE");
    assert_eq!(errno_name(libc::EBADF), "errno 9");
}
