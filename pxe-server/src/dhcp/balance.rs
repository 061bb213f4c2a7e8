//! Load balancing between several full-mode instances on one segment (RFC 3074).
//!
//! Every client falls in one of 256 hash buckets: the RFC 3074 §6 hash (Pearson's 8-bit table
//! hash, [`bucket`]) over the client identifier (option 61, type octet and identifier, when the
//! client sends a non-empty one), else over the `hlen` octets of `chaddr` ([`hash_input`]).
//! Each bucket belongs to exactly one live instance, and only its owner answers the messages
//! that start an exchange (see the responder's `Balance` rules in ARCHITECTURE.md).
//!
//! Buckets are assigned by rendezvous (highest random weight) hashing: bucket `b` goes to the
//! live instance name `n` with the highest [`weight`]`(b, n)` (ties, which need two names with
//! an equal 64-bit weight, go to the greater name). Every instance computes the same map from
//! the same sorted list of live names, without talking to the others; when an instance dies
//! only its buckets move (each to the live name that ranked second for it), and when it comes
//! back it takes exactly those back.
//!
//! [`Balance`] is shared by the heartbeat (which calls [`Balance::update`] with the live names)
//! and the DHCP threads (which call [`Balance::serves`] per DISCOVER): the owned buckets are a
//! 256-bit bitmap of atomics, so a read takes no lock. An update stores the four words one by
//! one: a request that races it may see a bucket owned by both or neither instance for that
//! instant, which costs at most a duplicate OFFER or one retransmission; the database's unique
//! address constraint, not the balancing, keeps an address from being bound twice.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use pxe_proto::dhcp::ClientRequest;

/// Hash buckets (RFC 3074: the hash is one octet).
pub const BUCKETS: usize = 256;

/// RFC 3074 §6: the mixing table of the hash, a permutation of 0..=255.
const MIX: [u8; BUCKETS] = [
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232, 31, 32, 55, 60, 152,
    58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223, 59, 3, 18, 140, 111, 166, 203, 196, 134, 243,
    124, 95, 222, 179, 197, 65, 180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97,
    16, 40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108, 244, 67, 207, 9, 178, 204,
    74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5, 20, 113, 71, 35, 128, 13, 182, 94, 25,
    226, 227, 199, 75, 27, 41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241,
    73, 88, 105, 39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84, 82,
    163, 44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239, 195, 42, 106, 198, 118,
    112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253, 137, 185, 99, 164, 102, 147, 45, 66, 231,
    52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248, 63, 240, 189, 93, 92, 51, 53, 183, 19, 171,
    72, 50, 33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125, 188, 213, 96, 235, 136,
    208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4, 216, 131, 89, 21, 28, 133, 37, 153,
    149, 80, 170, 68, 6, 169, 234, 151,
];

/// The RFC 3074 bucket of `key`: the hash starts at the key's length (mod 256) and mixes the
/// octets in from the last to the first, each through the table: `h = MIX[h ^ octet]`.
pub fn bucket(key: &[u8]) -> u8 {
    key.iter()
        .rev()
        .fold(key.len() as u8, |h, &b| MIX[usize::from(h ^ b)])
}

/// What RFC 3074 hashes for `req`: its client identifier (option 61) when it sends a non-empty
/// one, else its hardware address (`chaddr`, `hlen` = 6 octets: the decoder accepts only
/// Ethernet).
pub fn hash_input<'a>(req: &'a ClientRequest<'_>) -> &'a [u8] {
    match req.client_id {
        Some(id) if !id.is_empty() => id,
        _ => &req.chaddr.0,
    }
}

/// The rendezvous weight of `name` for `bucket`: 64-bit FNV-1a over the name's bytes, a 0xff
/// separator (never in a name) and the bucket, then the SplitMix64 finalizer so that names
/// differing in their last characters still get unrelated weights. Stable across builds,
/// machines and releases (std's `Hash` is randomized per process and may change): every
/// instance, whatever its version, must compute the same owner for a bucket.
pub fn weight(bucket: u8, name: &str) -> u64 {
    mix64(fnv1a(fnv1a(FNV_OFFSET, name.as_bytes()), &[0xff, bucket]))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`, continuing from `h`.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// SplitMix64's finalizer: every input bit affects every output bit.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The live name that owns `bucket` (`None` if `live` is empty).
fn owner(bucket: u8, live: &[String]) -> Option<&str> {
    live.iter()
        .map(|n| (weight(bucket, n), n.as_str()))
        .max()
        .map(|(_, n)| n)
}

/// What an instance owns, for `status` and the logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BalanceView {
    /// This instance's name (empty for [`Balance::all`]).
    pub me: String,
    /// Buckets this instance answers, of [`BUCKETS`].
    pub owned: u16,
    /// Buckets per live instance (this one included), sorted by name.
    pub peers: Vec<(String, u16)>,
}

/// The buckets this instance answers (see the module doc).
#[derive(Debug)]
pub struct Balance {
    me: String,
    /// Bit `b % 64` of word `b / 64`: bucket `b` is ours.
    bits: [AtomicU64; BUCKETS / 64],
    owned: AtomicU16,
    /// This instance's place among the live instances of the last update: its rank (in name
    /// order) in the high 16 bits, their count in the low 16 bits; 0 when it is not live.
    slot: AtomicU32,
    /// The live names of the last update, sorted, and the buckets each owns; also
    /// serializes updates.
    peers: Mutex<Vec<(String, u16)>>,
}

impl Balance {
    /// Instance `me` among peers; it owns nothing until the first [`Balance::update`] (a
    /// server that has not yet seen the database answers no new client).
    pub fn new(me: &str) -> Balance {
        Balance {
            me: me.to_owned(),
            bits: Default::default(),
            owned: AtomicU16::new(0),
            slot: AtomicU32::new(0),
            peers: Mutex::new(Vec::new()),
        }
    }

    /// One instance that owns every bucket (a lone server: redb, tests).
    pub fn all() -> Balance {
        let b = Balance::new("");
        b.bits
            .iter()
            .for_each(|w| w.store(u64::MAX, Ordering::Relaxed));
        b.owned.store(BUCKETS as u16, Ordering::Relaxed);
        b
    }

    /// This instance's name (empty for [`Balance::all`]).
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Recomputes the owned buckets for the instances `live` (the heartbeat's list, in any
    /// order, duplicates ignored). Not in `live` (or `live` empty: the database is lost) →
    /// this instance owns nothing. Logs the new split when the set of live names changed.
    pub fn update(&self, live: &[String]) {
        let mut names: Vec<String> = live.to_vec();
        names.sort();
        names.dedup();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut words = [0u64; BUCKETS / 64];
        let mut per_name = vec![0u16; names.len()];
        for b in 0..=u8::MAX {
            let Some(o) = owner(b, &names) else { break };
            if let Ok(i) = names.binary_search_by(|n| n.as_str().cmp(o)) {
                per_name[i] += 1;
            }
            if o == self.me {
                words[usize::from(b) / 64] |= 1 << (b % 64);
            }
        }
        let owned: u32 = words.iter().map(|w| w.count_ones()).sum();
        for (w, v) in self.bits.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        self.owned.store(owned as u16, Ordering::Relaxed);
        let slot = match names.iter().position(|n| *n == self.me) {
            Some(rank) => (rank as u32) << 16 | names.len().min(usize::from(u16::MAX)) as u32,
            None => 0,
        };
        self.slot.store(slot, Ordering::Relaxed);
        if !peers.iter().map(|p| &p.0).eq(names.iter()) {
            tracing::info!(
                instance = %self.me,
                buckets = owned,
                live = %names.join(","),
                "DHCP load balancing: this instance answers {owned}/{BUCKETS} hash buckets \
                 (RFC 3074); live instances: [{}]",
                names.join(", ")
            );
        }
        *peers = names.into_iter().zip(per_name).collect();
    }

    /// This instance answers the client whose RFC 3074 hash input ([`hash_input`]) is `key`.
    /// Lock-free and allocation-free.
    pub fn serves(&self, key: &[u8]) -> bool {
        self.owns(bucket(key))
    }

    /// Bucket `b` is ours.
    pub fn owns(&self, b: u8) -> bool {
        self.bits[usize::from(b) / 64].load(Ordering::Relaxed) & (1 << (b % 64)) != 0
    }

    /// This instance's rank among the live instances (in name order) and their count, as of
    /// the last update; `None` while it is not live (and for [`Balance::all`]). The responder
    /// starts each pool's round-robin at `rank / count` of the range, so that instances
    /// sharing a pool allocate from evenly spaced, far-apart places and rarely race for one
    /// address (see ARCHITECTURE.md).
    pub fn slot(&self) -> Option<(u16, u16)> {
        let s = self.slot.load(Ordering::Relaxed);
        (s != 0 && s & 0xffff != 0).then_some(((s >> 16) as u16, s as u16))
    }

    /// Buckets owned, of [`BUCKETS`].
    pub fn owned(&self) -> u16 {
        self.owned.load(Ordering::Relaxed)
    }

    /// `name` was live at the last update (this instance included while it is). Takes the
    /// update's lock briefly: asked only for a REQUEST that names another server and whose
    /// offer another instance made (see the responder's takeover), never per DISCOVER.
    pub fn is_live(&self, name: &str) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .is_ok()
    }

    /// The split as of the last update.
    pub fn view(&self) -> BalanceView {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        BalanceView {
            me: self.me.clone(),
            owned: self.owned(),
            peers: peers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// The owner of every bucket among `live`, as `live` indexes.
    fn owners(live: &[String]) -> Vec<usize> {
        let views: Vec<Balance> = live.iter().map(|n| Balance::new(n)).collect();
        views.iter().for_each(|b| b.update(live));
        (0..=u8::MAX)
            .map(|b| {
                let who: Vec<usize> = (0..live.len()).filter(|&i| views[i].owns(b)).collect();
                assert_eq!(who.len(), 1, "bucket {b} owned by {who:?} of {live:?}");
                who[0]
            })
            .collect()
    }

    /// A small deterministic generator (xorshift64*), for reproducible "random" MACs.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn the_table_is_a_permutation_and_the_hash_follows_rfc_3074() {
        let mut seen = [false; BUCKETS];
        MIX.iter().for_each(|&v| seen[usize::from(v)] = true);
        assert!(seen.iter().all(|&s| s));
        // Worked by hand from the table: h starts at the length, octets from the last.
        assert_eq!(bucket(&[]), 0);
        assert_eq!(bucket(&[0]), 175); // MIX[1 ^ 0]
        assert_eq!(bucket(&[0, 0]), 150); // MIX[2] = 119, MIX[119 ^ 0] = 150
        assert_eq!(bucket(&[0, 1]), 120); // MIX[2 ^ 1] = 215, MIX[215 ^ 0] = 120
        assert_eq!(bucket(&[1, 0]), 155); // MIX[2 ^ 0] = 119, MIX[119 ^ 1] = 155
    }

    #[test]
    fn the_rendezvous_weight_is_stable() {
        // Pinned (computed independently of this code): a change here would split a
        // mixed-version site's buckets differently.
        assert_eq!(weight(0, "pxe1"), 0x0520_fbf8_12f5_68cf);
        assert_eq!(weight(7, "pxe3"), 0x1333_b7c7_05e8_5a74);
        assert_ne!(weight(0, "pxe1"), weight(1, "pxe1"));
        assert_ne!(weight(0, "pxe1"), weight(0, "pxe2"));
        let pinned: Vec<usize> = owners(&names(&["pxe1", "pxe2", "pxe3"]))[..8].to_vec();
        assert_eq!(pinned, PINNED_OWNERS);
    }

    /// The owners of buckets 0..8 among pxe1, pxe2, pxe3 with the weight above.
    const PINNED_OWNERS: [usize; 8] = [2, 0, 2, 1, 2, 2, 0, 1];

    #[test]
    fn every_bucket_has_one_owner_for_every_live_set() {
        let all = names(&["a", "b", "c", "pxe-1.example", "pxe-2.example"]);
        for mask in 1u32..(1 << all.len()) {
            let live: Vec<String> = (0..all.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i].clone())
                .collect();
            owners(&live);
        }
    }

    #[test]
    fn buckets_spread_evenly_and_so_do_clients() {
        let live = names(&["pxe1", "pxe2", "pxe3"]);
        let owner = owners(&live);
        let mut buckets = [0u32; 3];
        owner.iter().for_each(|&o| buckets[o] += 1);
        // Binomial(256, 1/3): mean 85.3, sd 7.5; these names are well inside 4 sd.
        assert!(
            buckets.iter().all(|&n| (56..=115).contains(&n)),
            "{buckets:?}"
        );
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut per_bucket = [0u32; BUCKETS];
        let mut clients = [0u32; 3];
        for _ in 0..100_000 {
            let r = rng.next().to_be_bytes();
            let mac = [0x52, 0x54, r[0], r[1], r[2], r[3]];
            let b = bucket(&mac);
            per_bucket[usize::from(b)] += 1;
            clients[owner[usize::from(b)]] += 1;
        }
        // 390.6 per bucket expected (sd 19.7).
        let (lo, hi) = (
            per_bucket.iter().min().unwrap(),
            per_bucket.iter().max().unwrap(),
        );
        assert!(*lo >= 300 && *hi <= 480, "per bucket {lo}..{hi}");
        // Each instance's share of the clients follows its share of the buckets.
        for i in 0..3 {
            let expected = f64::from(buckets[i]) * 100_000.0 / 256.0;
            let got = f64::from(clients[i]);
            assert!(
                (got - expected).abs() < 0.03 * expected,
                "{i}: {got} vs {expected}"
            );
            assert!((22_000..=45_000).contains(&clients[i]), "{clients:?}");
        }
    }

    #[test]
    fn a_dead_instance_loses_only_its_buckets_and_takes_them_back() {
        let three = names(&["pxe1", "pxe2", "pxe3"]);
        let before = owners(&three);
        let two = names(&["pxe1", "pxe3"]);
        let after = owners(&two);
        for b in 0..BUCKETS {
            match three[before[b]].as_str() {
                "pxe2" => {} // moves to either survivor
                name => assert_eq!(two[after[b]], name, "bucket {b} moved"),
            }
        }
        assert!(before.contains(&1), "pxe2 owned something");
        assert_eq!(owners(&three), before);
    }

    #[test]
    fn an_instance_not_live_owns_nothing_and_all_owns_everything() {
        let b = Balance::new("pxe9");
        assert_eq!(b.owned(), 0);
        b.update(&names(&["pxe1", "pxe2"]));
        assert_eq!(b.owned(), 0);
        assert!((0..=u8::MAX).all(|k| !b.owns(k)));
        b.update(&names(&["pxe9", "pxe1", "pxe9"]));
        assert!(b.is_live("pxe1") && b.is_live("pxe9") && !b.is_live("pxe2"));
        let v = b.view();
        assert_eq!(v.me, "pxe9");
        assert_eq!(v.peers.iter().map(|p| p.1).sum::<u16>(), 256);
        assert_eq!(v.peers.len(), 2);
        assert_eq!(v.peers.iter().find(|p| p.0 == "pxe9").unwrap().1, v.owned);
        b.update(&[]);
        assert!(!b.is_live("pxe1") && !b.is_live("pxe9"));
        assert_eq!(b.owned(), 0);
        assert!(!b.serves(&[1, 2, 3, 4, 5, 6]));
        let all = Balance::all();
        assert_eq!(all.owned(), 256);
        assert!((0..=u8::MAX).all(|k| all.owns(k)));
        b.update(&names(&["pxe9"]));
        assert_eq!(b.owned(), 256);
    }
}
