//! The XDP decision logic as built for the host (`pxe_ebpf`): an arbitrary frame (or UDP
//! payload) classified a few times under an arbitrary policy, with a clock that may stall or go
//! backwards.
//!
//! Input: a 12-byte header, then the frame (or payload):
//! - `[0]`: policy flags (bits 0-3); bit 4: the rest is a UDP payload (the userspace
//!   fallback's input), not a frame; bit 5: the MAC is on the deny-list; bit 6: on the
//!   allow-list;
//! - `[1..5]`, `[5..9]`: `rate_per_sec`, `burst` (little endian);
//! - `[9]`: how many times the packet is classified (1 to 16);
//! - `[10..12]`: the clock step between them, signed milliseconds (little endian).
//!
//! Checks: no panic (overflow checks are on); every offset the parser hands to `forget_path`
//! is below the XDP side's `0x800` mask; the parser read through an XDP-like accessor (no byte
//! beyond `MAX_FRAME_OFF`) judges a frame exactly as the slice does, or leaves it unjudged when
//! the frame is longer than that; a frame and its own UDP payload are judged alike (the XDP
//! program and the fallback); the verdict is the documented order (deny-list, allow-list, not
//! a boot client, rate limit) and a bucket is charged only for a metered request that got that
//! far; a bucket never holds more than its burst nor lets more through than burst + rate x
//! elapsed time; and whenever the bounded walk judges a payload, the responder's reading of it
//! (`pxe_server::xdp::request_info`, the DHCP decoder), when it accepts the payload, agrees on
//! what the policy reads: the MAC, the message type and whether it is a boot client
//! (`DhcpInfo::policy_reading`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_ebpf::{
    DhcpInfo, MAX_BURST, MAX_FRAME_OFF, MAX_RATE_PER_SEC, POLICY_ALLOW_LIST, POLICY_DENY_LIST,
    POLICY_DROP_NON_PXE, POLICY_RATE_LIMIT, PacketBytes, ParseError, Policy, PolicyEnv,
    TokenBucket, Verdict,
};
use pxe_proto::consts::{ETH_P_8021AD, ETH_P_8021Q};

const HEADER: usize = 12;
const NS_PER_TOKEN: u128 = 1_000_000_000;

/// Reads like the XDP program's accessor (`src/main.rs`): nothing past `MAX_FRAME_OFF`, and
/// `forget_path` is `off % 0x800`, which must leave every offset it is given unchanged.
struct XdpLike<'a>(&'a [u8]);

impl PacketBytes for XdpLike<'_> {
    fn byte(&self, off: usize) -> Option<u8> {
        if off > MAX_FRAME_OFF {
            return None;
        }
        self.0.get(off).copied()
    }

    fn forget_path(&self, off: usize) -> usize {
        assert!(
            off < 0x800,
            "forget_path({off}): the XDP side's mask would change it"
        );
        off % 0x800
    }
}

/// The map look-ups, answering from the header's bits, with one bucket for the packet's MAC.
struct Env {
    denied: bool,
    allowed: bool,
    mac: Option<[u8; 6]>,
    bucket: Option<TokenBucket>,
    now_ns: u64,
    /// Time of the first charge (the bucket was created full then), the latest time of any
    /// charge, and how many charges passed.
    first_ns: u64,
    latest_ns: u64,
    passed: u64,
    /// What the last classification did to the bucket: `None` = not charged.
    charged: Option<bool>,
}

impl PolicyEnv for Env {
    fn is_allowed(&mut self, _mac: &[u8; 6]) -> bool {
        self.allowed
    }

    fn is_denied(&mut self, _mac: &[u8; 6]) -> bool {
        self.denied
    }

    fn take_token(&mut self, mac: &[u8; 6], policy: &Policy) -> bool {
        assert!(
            self.charged.is_none(),
            "a bucket charged twice for one packet"
        );
        if let Some(m) = self.mac {
            assert_eq!(&m, mac, "one packet, one MAC");
        }
        self.mac = Some(*mac);
        let now = self.now_ns;
        let before = match self.bucket {
            Some(b) => b,
            None => {
                self.first_ns = now;
                self.latest_ns = now;
                TokenBucket::full(now, policy)
            }
        };
        let (ok, after) = before.take(now, policy);
        let cap = u64::from(policy.burst.min(MAX_BURST)) * NS_PER_TOKEN as u64;
        assert!(
            after.nano_tokens <= cap,
            "{after:?} over the burst of {policy:?}"
        );
        assert_eq!(after.last_ns, before.last_ns.max(now), "the bucket's clock");
        self.latest_ns = self.latest_ns.max(now);
        if ok {
            self.passed += 1;
        }
        // Never more than the burst plus what the rate refilled since the bucket was made.
        let rate = u128::from(policy.rate_per_sec.min(MAX_RATE_PER_SEC));
        let allowance = u128::from(cap) + rate * u128::from(self.latest_ns - self.first_ns);
        assert!(
            u128::from(self.passed) * NS_PER_TOKEN <= allowance,
            "{} passed, allowance {allowance} nano-tokens, {policy:?}",
            self.passed
        );
        self.bucket = Some(after);
        self.charged = Some(ok);
        ok
    }
}

/// The UDP payload of a frame `parse_frame` accepted, found independently of it: the tags, the
/// IP header length and the UDP length field.
fn udp_payload(frame: &[u8]) -> &[u8] {
    let be16 = |off: usize| u16::from_be_bytes([frame[off], frame[off + 1]]);
    let mut off = 12;
    let mut tags = 0;
    while tags < 2 && matches!(be16(off), ETH_P_8021Q | ETH_P_8021AD) {
        off += 4;
        tags += 1;
    }
    let ip = off + 2;
    let udp = ip + usize::from(frame[ip] & 0x0f) * 4;
    let udp_len = usize::from(be16(udp + 4));
    frame
        .get(udp + 8..udp + udp_len)
        .expect("an accepted frame holds the whole UDP datagram it announces")
}

/// The verdict the documented order gives, from what the environment did.
fn expected(info: &DhcpInfo, policy: &Policy, env: &Env) -> Verdict {
    if policy.has(POLICY_DENY_LIST) && env.denied || policy.has(POLICY_ALLOW_LIST) && !env.allowed {
        return Verdict::DropDenied;
    }
    if policy.has(POLICY_DROP_NON_PXE) && !info.is_boot_client() {
        return Verdict::DropNotPxe;
    }
    if policy.has(POLICY_RATE_LIMIT) && info.is_metered() {
        return match env.charged {
            Some(true) => Verdict::Pass,
            Some(false) => Verdict::DropRateLimited,
            None => panic!("a metered request passed the rate limit without a charge"),
        };
    }
    Verdict::Pass
}

/// The filter's and the responder's readings of one payload agree.
fn agree(payload: &[u8], walk: &DhcpInfo) {
    if let Some(decoded) = pxe_server::xdp::request_info(payload) {
        assert_eq!(
            decoded.policy_reading(),
            walk.policy_reading(),
            "MAC, message type, boot client: walk {walk:?}, decoder {decoded:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((h, packet)) = data.split_first_chunk::<HEADER>() else {
        return;
    };
    let policy = Policy {
        flags: u32::from(h[0] & 0x0f),
        rate_per_sec: u32::from_le_bytes([h[1], h[2], h[3], h[4]]),
        burst: u32::from_le_bytes([h[5], h[6], h[7], h[8]]),
        _pad: 0,
    };
    let payload_mode = h[0] & 0x10 != 0;
    let repeats = 1 + usize::from(h[9] % 16);
    let step_ns = i64::from(i16::from_le_bytes([h[10], h[11]])) * 1_000_000;

    // The parse, through both accessors and (for a frame) on its payload alone.
    let parsed = if payload_mode {
        let slice = pxe_ebpf::parse_dhcp(packet, 0, packet.len());
        let xdp = pxe_ebpf::parse_dhcp(&XdpLike(packet), 0, packet.len());
        assert_eq!(
            xdp, slice,
            "the XDP accessor and the slice read the payload differently"
        );
        if let Ok(info) = &slice {
            agree(packet, info);
        }
        slice
    } else {
        let slice = pxe_ebpf::parse_frame(packet);
        let xdp = pxe_ebpf::parse_frame(&XdpLike(packet));
        if packet.len() <= MAX_FRAME_OFF + 1 {
            assert_eq!(
                xdp, slice,
                "the XDP accessor and the slice read the frame differently"
            );
        } else if xdp.is_ok() {
            assert_eq!(
                xdp, slice,
                "a frame the XDP side judged is judged otherwise on the host"
            );
        }
        if let Ok(info) = &slice {
            let payload = udp_payload(packet);
            assert_eq!(
                pxe_ebpf::parse_dhcp(payload, 0, payload.len()),
                Ok(*info),
                "the frame and its UDP payload are judged differently"
            );
            agree(payload, info);
        }
        slice
    };

    // The decision, repeated on a moving clock: the bucket carries over.
    let mut env = Env {
        denied: h[0] & 0x20 != 0,
        allowed: h[0] & 0x40 != 0,
        mac: None,
        bucket: None,
        now_ns: 1 << 50,
        first_ns: 0,
        latest_ns: 0,
        passed: 0,
        charged: None,
    };
    for _ in 0..repeats {
        env.charged = None;
        let verdict = if payload_mode {
            pxe_ebpf::classify_payload(packet, packet.len(), &policy, &mut env)
        } else {
            pxe_ebpf::classify_frame(packet, &policy, &mut env)
        };
        match &parsed {
            Ok(info) => assert_eq!(
                verdict,
                expected(info, &policy, &env),
                "{info:?} {policy:?}"
            ),
            Err(e) => {
                assert!(env.charged.is_none(), "an unparsed packet charged a bucket");
                let want = match (payload_mode, e) {
                    (false, ParseError::NotDhcp) => Verdict::NotDhcp,
                    _ => Verdict::Malformed,
                };
                assert_eq!(verdict, want);
            }
        }
        assert!(
            !verdict.is_drop() || parsed.is_ok(),
            "dropped what it could not parse"
        );
        env.now_ns = env.now_ns.saturating_add_signed(step_ns);
    }

    // The bucket's arithmetic on a state no earlier call produced.
    let odd = TokenBucket {
        nano_tokens: u64::from_le_bytes([h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]]),
        last_ns: env.now_ns.wrapping_mul(u64::from(h[9]) + 1),
    };
    let (_, after) = odd.take(env.now_ns, &policy);
    assert!(after.nano_tokens <= u64::from(policy.burst.min(MAX_BURST)) * NS_PER_TOKEN as u64);
    assert!(after.last_ns >= odd.last_ns);
});
