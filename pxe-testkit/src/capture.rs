//! Packet captures on a test link: tcpdump writing a pcap file, and the DHCP ACKs read back from
//! it by a small decoder of this module's own (the classic pcap format, Ethernet, IPv4, UDP,
//! BOOTP and its options), written independently of the workspace's DHCP code so that it
//! checks the servers' bytes from the outside.
//!
//! The pcap format is three fixed headers and a length per record; a decoder of 100 lines
//! needs no crate, and a capture a test cannot read fails the test.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Signal;
use crate::netns::Netns;
use crate::process::Proc;

/// tcpdump running in a namespace, writing every packet it sees to a pcap file.
pub struct Capture {
    proc: Proc,
    file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i IFACE -w <dir>/<tag>.pcap FILTER` in `ns` (full packets, handed over
    /// and written as they arrive, a 64 MiB kernel buffer so that a storm is not dropped) and
    /// waits until it listens.
    pub fn start(ns: &Netns, iface: &str, dir: &Path, tag: &str, filter: &str) -> Capture {
        let file = dir.join(format!("{tag}.pcap"));
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", iface, "-n", "-s", "0", "-U", "--immediate-mode"])
            .args(["-B", "65536", "-w"])
            .arg(&file)
            .arg(filter);
        let mut proc = Proc::spawn(cmd, dir, tag);
        proc.wait_for_within("listening on", Duration::from_secs(10));
        Capture { proc, file }
    }

    /// Stops tcpdump once its file has stopped growing (SIGINT, bounded waits), checks that it
    /// wrote every packet its filter took and the kernel dropped none (a capture with holes
    /// proves nothing), and returns the pcap file.
    pub fn stop(mut self) -> PathBuf {
        let size = |f: &Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        let mut last = size(&self.file);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            let now = size(&self.file);
            if now == last {
                break;
            }
            last = now;
        }
        self.proc.signal(Signal::INT);
        assert!(
            self.proc.wait_timeout(Duration::from_secs(10)).is_some(),
            "tcpdump did not stop"
        );
        let stats = self.proc.stderr();
        assert!(
            stats
                .lines()
                .any(|l| l.trim() == "0 packets dropped by kernel"),
            "capture incomplete:\n{stats}"
        );
        let count = |what: &str| {
            stats
                .lines()
                .find_map(|l| l.trim().strip_suffix(what))
                .and_then(|n| n.trim().parse::<u64>().ok())
        };
        let (captured, filtered) = (
            count("packets captured"),
            count("packets received by filter"),
        );
        assert!(
            captured.is_some() && captured == filtered,
            "tcpdump wrote {captured:?} of the {filtered:?} packets its filter took:\n{stats}"
        );
        self.file.clone()
    }
}

/// One captured frame: its time (Unix seconds) and its bytes from the Ethernet header on.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub at: f64,
    pub data: Vec<u8>,
}

/// The frames of a classic pcap file (either byte order, microsecond or nanosecond
/// timestamps, link type Ethernet). Panics, naming the problem, on anything else: the test
/// wrote the file itself.
pub fn read_pcap(bytes: &[u8]) -> Vec<Frame> {
    assert!(
        bytes.len() >= 24,
        "pcap: {} bytes, no file header",
        bytes.len()
    );
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => panic!("pcap: unknown magic {m:#010x} (pcapng? tcpdump -w writes pcap)"),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(bytes, 20) & 0x0fff_ffff;
    assert_eq!(link, 1, "pcap: link type {link}, not Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        assert!(at + 16 <= bytes.len(), "pcap: record header cut at {at}");
        let secs = u32_at(bytes, at) as f64;
        let frac = u32_at(bytes, at + 4) as f64;
        let caplen = u32_at(bytes, at + 8) as usize;
        let start = at + 16;
        // A file cut by the test stopping tcpdump mid-write ends with a partial record.
        if start + caplen > bytes.len() {
            break;
        }
        frames.push(Frame {
            at: secs + frac / if nanos { 1e9 } else { 1e6 },
            data: bytes[start..start + caplen].to_vec(),
        });
        at = start + caplen;
    }
    frames
}

/// A DHCP reply (BOOTREPLY) seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct DhcpReply {
    /// Capture time, Unix seconds.
    pub at: f64,
    /// Option 53 (5 = ACK, 2 = OFFER, 6 = NAK).
    pub msg_type: u8,
    pub xid: u32,
    /// The client's hardware address (chaddr), `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub yiaddr: Ipv4Addr,
    /// The IPv4 source address: the server that sent it (option 54 may name another, e.g. a
    /// dead instance whose offer a peer took over).
    pub src: Ipv4Addr,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 51.
    pub lease_secs: Option<u32>,
}

/// The DHCP ACK message type (option 53).
pub const DHCPACK: u8 = 5;

/// The BOOTREPLYs among `frames` (Ethernet II, IPv4 without fragments, UDP to port 68 or 67),
/// in capture order. Frames that are not DHCP replies are skipped.
pub fn dhcp_replies(frames: &[Frame]) -> Vec<DhcpReply> {
    frames.iter().filter_map(decode_reply).collect()
}

/// The ACKs in the pcap file at `path`.
pub fn acks_in_pcap(path: &Path) -> Vec<DhcpReply> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    dhcp_replies(&read_pcap(&bytes))
        .into_iter()
        .filter(|r| r.msg_type == DHCPACK)
        .collect()
}

fn decode_reply(f: &Frame) -> Option<DhcpReply> {
    let d = &f.data;
    // Ethernet II, IPv4.
    if d.len() < 14 || d[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &d[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let udp = ip.get(ihl..)?;
    if udp.len() < 8 {
        return None;
    }
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != 68 && dport != 67 {
        return None;
    }
    let b = &udp[8..];
    // op 2 (BOOTREPLY), the fixed header and the magic cookie.
    if b.len() < 240 || b[0] != 2 || b[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let hlen = usize::from(b[2]).min(16);
    let mac = b[28..28 + hlen]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let (mut msg_type, mut server_id, mut lease_secs) = (None, None, None);
    let mut opts = &b[240..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            0 => opts = rest,
            255 => break,
            _ => {
                let (&len, rest) = rest.split_first()?;
                let val = rest.get(..usize::from(len))?;
                match (code, val.len()) {
                    (53, 1) => msg_type = Some(val[0]),
                    (54, 4) => server_id = Some(Ipv4Addr::new(val[0], val[1], val[2], val[3])),
                    (51, 4) => lease_secs = Some(u32::from_be_bytes(val.try_into().unwrap())),
                    _ => {}
                }
                opts = &rest[usize::from(len)..];
            }
        }
    }
    Some(DhcpReply {
        at: f.at,
        msg_type: msg_type?,
        xid: u32::from_be_bytes(b[4..8].try_into().unwrap()),
        mac,
        yiaddr: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        server_id,
        lease_secs,
    })
}

/// Two ACKs that bound one address to two hardware addresses for overlapping times (each ACK
/// holds its address from its capture time for its lease time).
pub fn overlapping_bindings(acks: &[DhcpReply]) -> Option<(&DhcpReply, &DhcpReply)> {
    let mut by_ip: HashMap<Ipv4Addr, Vec<&DhcpReply>> = HashMap::new();
    for a in acks {
        by_ip.entry(a.yiaddr).or_default().push(a);
    }
    let end = |a: &DhcpReply| a.at + f64::from(a.lease_secs.unwrap_or(u32::MAX));
    by_ip.values().find_map(|list| {
        list.iter().enumerate().find_map(|(i, a)| {
            list[i + 1..].iter().find_map(|b| {
                let overlap = a.at < end(b) && b.at < end(a);
                (a.mac != b.mac && overlap).then_some((*a, *b))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file (little-endian, microseconds) of `frames`.
    fn pcap(frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut f = Vec::new();
        for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        // The version is two u16s, written above as one u32: 2.4 little-endian.
        f[4..8].copy_from_slice(&[2, 0, 4, 0]);
        for (s, us, data) in frames {
            for w in [*s, *us, data.len() as u32, data.len() as u32] {
                f.extend_from_slice(&w.to_le_bytes());
            }
            f.extend_from_slice(data);
        }
        f
    }

    /// An Ethernet/IPv4/UDP frame to port 68 with a BOOTREPLY of `msg_type` for `mac`.
    fn reply(msg_type: u8, mac: [u8; 6], yiaddr: [u8; 4], lease: u32) -> Vec<u8> {
        let mut bootp = vec![0u8; 240];
        bootp[0] = 2;
        bootp[1] = 1;
        bootp[2] = 6;
        bootp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        bootp[16..20].copy_from_slice(&yiaddr);
        bootp[28..34].copy_from_slice(&mac);
        bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
        bootp.extend_from_slice(&[53, 1, msg_type, 0, 54, 4, 10, 0, 0, 1, 51, 4]);
        bootp.extend_from_slice(&lease.to_be_bytes());
        bootp.push(255);
        let mut udp = vec![0, 67, 0, 68];
        udp.extend_from_slice(&((8 + bootp.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&bootp);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 255, 255, 255, 255,
        ];
        let total = (20 + udp.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&udp);
        let mut eth = vec![0xff; 6];
        eth.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        eth
    }

    #[test]
    fn acks_are_read_from_a_pcap_and_other_frames_skipped() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        let file = pcap(&[
            (
                100,
                500_000,
                reply(2, [2, 0, 0, 0, 0, 7], [10, 0, 1, 7], 600),
            ),
            (100, 600_000, arp),
            (101, 0, reply(5, [2, 0, 0, 0, 0, 7], [10, 0, 1, 7], 600)),
        ]);
        let frames = read_pcap(&file);
        assert_eq!(frames.len(), 3);
        let replies = dhcp_replies(&frames);
        assert_eq!(replies.len(), 2, "{replies:?}");
        let ack = &replies[1];
        assert_eq!(ack.msg_type, DHCPACK);
        assert_eq!(ack.mac, "02:00:00:00:00:07");
        assert_eq!(ack.yiaddr, Ipv4Addr::new(10, 0, 1, 7));
        assert_eq!(ack.server_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(ack.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ack.lease_secs, Some(600));
        assert_eq!(ack.xid, 0x1234_5678);
        assert!((ack.at - 101.0).abs() < 1e-9 && (replies[0].at - 100.5).abs() < 1e-9);
    }

    #[test]
    fn a_record_cut_at_the_end_is_left_out() {
        let mut file = pcap(&[(1, 0, reply(5, [2; 6], [10, 0, 1, 1], 60))]);
        let whole = file.len();
        file.extend_from_slice(&pcap(&[(2, 0, reply(5, [3; 6], [10, 0, 1, 2], 60))])[24..]);
        file.truncate(whole + 16 + 10);
        assert_eq!(read_pcap(&file).len(), 1);
    }

    #[test]
    fn one_address_to_two_macs_at_once_is_found_and_after_expiry_is_not() {
        let ack = |at: f64, mac: &str, ip: [u8; 4]| DhcpReply {
            at,
            msg_type: DHCPACK,
            xid: 0,
            mac: mac.into(),
            yiaddr: ip.into(),
            src: Ipv4Addr::UNSPECIFIED,
            server_id: None,
            lease_secs: Some(60),
        };
        let a = ack(0.0, "02:00:00:00:00:01", [10, 0, 1, 1]);
        let renewed = ack(30.0, "02:00:00:00:00:01", [10, 0, 1, 1]);
        let other = ack(10.0, "02:00:00:00:00:02", [10, 0, 1, 2]);
        assert_eq!(overlapping_bindings(&[a.clone(), renewed, other]), None);
        let thief = ack(59.0, "02:00:00:00:00:03", [10, 0, 1, 1]);
        let both = [a.clone(), thief.clone()];
        let (x, y) = overlapping_bindings(&both).expect("a double binding");
        assert_eq!(
            (x.mac.as_str(), y.mac.as_str()),
            (a.mac.as_str(), thief.mac.as_str())
        );
        let later = ack(61.0, "02:00:00:00:00:03", [10, 0, 1, 1]);
        assert_eq!(overlapping_bindings(&[a, later]), None);
    }
}
