//! The XDP program: [`pxe_ebpf::classify_frame`] on every received frame, answered from BPF
//! maps; drops only on a `Drop*` verdict, passes everything else (never XDP_ABORTED).
//!
//! Maps (names are the loader's interface, see `pxe-server/src/xdp.rs`):
//! - `COUNTERS`: per-CPU array of [`pxe_ebpf::COUNTER_COUNT`] u64 ([`pxe_ebpf::Counter`]);
//! - `CONFIG`: array of one [`pxe_ebpf::Policy`] (absent entry = pass everything);
//! - `BUCKETS`: LRU hash MAC -> [`pxe_ebpf::TokenBucket`];
//! - `ALLOW`, `DENY`: hash MAC -> u8 (the value is ignored).
//!
//! For the host this file is an empty `main` so the workspace builds on stable.
#![cfg_attr(target_arch = "bpf", no_std, no_main, feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::bindings::xdp_action;
    use aya_ebpf::helpers::bpf_ktime_get_ns;
    use aya_ebpf::macros::{map, xdp};
    use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
    use aya_ebpf::programs::XdpContext;
    use pxe_ebpf::{
        COUNTER_COUNT, Counter, MAX_FRAME_OFF, PacketBytes, Policy, PolicyEnv, TokenBucket,
        classify_frame,
    };

    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);
    #[map]
    static CONFIG: Array<Policy> = Array::with_max_entries(1, 0);
    #[map]
    static BUCKETS: LruHashMap<[u8; 6], TokenBucket> = LruHashMap::with_max_entries(65536, 0);
    #[map]
    static ALLOW: HashMap<[u8; 6], u8> = HashMap::with_max_entries(65536, 0);
    #[map]
    static DENY: HashMap<[u8; 6], u8> = HashMap::with_max_entries(65536, 0);

    struct Frame {
        start: usize,
        end: usize,
    }

    impl PacketBytes for Frame {
        #[inline(always)]
        fn byte(&self, off: usize) -> Option<u8> {
            // The constant bound gives the verifier the range of the variable offset.
            if off > MAX_FRAME_OFF {
                return None;
            }
            // The verifier learns a readable range only from `pkt + k > pkt_end` with a
            // constant k > 0 in the pointer register; LLVM rewrites `p + 1 > end` into
            // `p >= end`, which proves nothing. The `+ 1` is therefore done in asm, opaque
            // to LLVM, on the packet pointer itself, and the byte is read at `q - 1`.
            let mut q = self.start + off;
            // SAFETY: an addition on a register, no memory access.
            unsafe { core::arch::asm!("{q} += 1", q = inout(reg) q) };
            if q > self.end {
                return None;
            }
            // SAFETY: start <= q - 1 < end: inside the frame the kernel handed to us.
            Some(unsafe { *((q - 1) as *const u8) })
        }

        #[inline(always)]
        fn forget_path(&self, off: usize) -> usize {
            // off <= MAX_FRAME_OFF < 0x800, so the modulo changes nothing; but the verifier
            // tracks no bounds through BPF_MOD: the offset becomes an unknown scalar, the same
            // whatever path led here, and the bound checks that follow give it one range.
            let mut x = off;
            // SAFETY: an operation on a register, no memory access.
            unsafe { core::arch::asm!("{x} %= 0x800", x = inout(reg) x) };
            x
        }
    }

    struct Maps {
        now_ns: u64,
    }

    impl PolicyEnv for Maps {
        #[inline(always)]
        fn is_allowed(&mut self, mac: &[u8; 6]) -> bool {
            // SAFETY: the value is only tested for presence, never read.
            unsafe { ALLOW.get(mac).is_some() }
        }

        #[inline(always)]
        fn is_denied(&mut self, mac: &[u8; 6]) -> bool {
            // SAFETY: as above.
            unsafe { DENY.get(mac).is_some() }
        }

        #[inline(always)]
        fn take_token(&mut self, mac: &[u8; 6], policy: &Policy) -> bool {
            match BUCKETS.get_ptr_mut(mac) {
                Some(b) => {
                    // SAFETY: a map value pointer, valid for this program run. Two CPUs may
                    // update one MAC's bucket at once; a lost update only mis-counts a token.
                    let (ok, next) = unsafe { *b }.take(self.now_ns, policy);
                    unsafe { *b = next };
                    ok
                }
                None => {
                    let (ok, next) =
                        TokenBucket::full(self.now_ns, policy).take(self.now_ns, policy);
                    // A failed insert (map full is impossible for an LRU map) only forgets.
                    let _ = BUCKETS.insert(mac, &next, 0);
                    ok
                }
            }
        }
    }

    #[inline(always)]
    fn count(c: Counter) {
        if let Some(v) = COUNTERS.get_ptr_mut(c as u32) {
            // SAFETY: per-CPU value pointer, no other writer on this CPU during the run.
            unsafe { *v += 1 };
        }
    }

    #[xdp]
    fn pxe_xdp(ctx: XdpContext) -> u32 {
        let policy = match CONFIG.get(0) {
            Some(p) => *p,
            None => Policy::default(),
        };
        let frame = Frame {
            start: ctx.data(),
            end: ctx.data_end(),
        };
        // SAFETY: a helper without arguments.
        let now_ns = unsafe { bpf_ktime_get_ns() };
        let verdict = classify_frame(&frame, &policy, &mut Maps { now_ns });
        if let Some(c) = verdict.counter() {
            count(Counter::Seen);
            count(c);
        }
        if verdict.is_drop() {
            xdp_action::XDP_DROP
        } else {
            xdp_action::XDP_PASS
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
