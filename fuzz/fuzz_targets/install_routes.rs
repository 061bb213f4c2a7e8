//! A sequence of requests through the install routes (`InstallService::handle`, sans-IO), with
//! a fixed configuration of four hosts and two templates of our own, over an in-memory lease
//! database. Every input starts from the configured next boots: they are set again before it
//! (a fresh database per input would cost most of the time, in redb's commits). Each host's
//! install token is made once, at the start.
//!
//! Input: one request per line, `[@PEER ]METHOD TARGET` (a line without a space is a GET of
//! it; PEER an IPv4 address, else the request comes from 10.0.0.99, a stranger), the target
//! split at its first `?` into path and query; at most 16 lines. `{t1}` to `{t4}` in a target
//! stand for the tokens of hosts 1 to 4 (what the host itself and its installer know; the
//! fuzzer cannot guess 128 random bits, so this is how it reaches past the token check).
//!
//! Checks, for every request:
//! - never a 5xx (every input here is a client's);
//! - a host's token is in an answer only for a request that holds it already, or for that
//!   host's iPXE script asked from its own address (n1, 10.0.0.21, is the only host with one);
//! - an install script (the built-in `ipxe/install.ipxe`) only for a configured host that the
//!   request names (its MAC or UUID is in the decoded request), and from `/boot.ipxe` only when
//!   that host's next boot was `install`;
//! - a 200 from `/install/` or `/done/` only for a request that names a host and holds its
//!   token; anything else there is the one 404, byte for byte;
//! - the next-boot state changes only through a 200 from `POST /done/KEY/TOKEN`, for one host
//!   the request names and whose token it holds, and only to `local`.
//!
//! "Names": the request, percent- and form-decoded, lower-cased, without `:` and `-`, holds the
//! host's MAC or UUID in hex. Every byte of the configured MACs and UUIDs is at least 0x10, so
//! no spelling the parsers accept (two hex digits per byte, a `+` sign only before one digit)
//! can name a host without its hex digits.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pxe_server::config::Config;
use pxe_server::hosts::{HostConfig, HostIndex, NextBoot};
use pxe_server::install::{InstallService, Request};
use pxe_server::nextboot::{NextBootStore, Record};

const URL: &str = "http://10.0.0.1:8080";
/// Where a request without `@PEER` comes from: no host's address.
const STRANGER: &str = "10.0.0.99";
/// n1's reserved address, the only host address known here.
const N1_ADDRESS: &str = "10.0.0.21";
const MAX_REQUESTS: usize = 16;

const CONFIG: &str = "[tftp]\nroot = \"/\"\n\
    [boot]\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
    cmdline = \"inst.ks={{ host.install_url }}/ks.cfg\"\n\
    [[hosts]]\nmac = \"52:54:a1:b2:c3:d4\"\nhostname = \"n1\"\nnext_boot = \"install\"\naddress = \"10.0.0.21\"\n\
    [[hosts]]\nmac = \"52:54:a1:b2:c3:e5\"\nhostname = \"n2\"\n\
    [[hosts]]\nuuid = \"4c4c4544-3135-3510-8047-b4c04f4d3232\"\nhostname = \"n3\"\nnext_boot = \"install\"\n\
    [[hosts]]\nmac = \"52:54:a1:b2:c3:f6\"\nuuid = \"5a5b5c5d-6e6f-7071-8283-a4a5b6b7c8c9\"\nnext_boot = \"install\"\n";

struct Fixture {
    hosts: Arc<HostIndex>,
    /// Each host's MAC and UUID in hex ([`ids`]).
    ids: Vec<Vec<String>>,
    /// Each host's install token (hex).
    tokens: Vec<String>,
    store: Arc<NextBootStore>,
    service: InstallService,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = pxe_server_fuzz::scratch_dir("install");
        std::fs::create_dir_all(dir.join("cloud")).unwrap();
        std::fs::write(
            dir.join("ks.cfg"),
            "# {{ host.key }}\nnetwork --hostname={{ host.hostname or host.name }} \
             --ip={{ host.address or 'dhcp' }}\n# next boot {{ host.next_boot }}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("cloud/user-data"),
            "#cloud-config\nhostname: {{ host.name }}\nphone_home:\n  url: \
             {{ host.done_url }}\n",
        )
        .unwrap();
        let text = format!("{CONFIG}[install]\ntemplates = \"{}\"\n", dir.display());
        let config = Config::parse(&text, Path::new("fuzz.toml")).unwrap();
        let hosts = config.host_index();
        let db = Arc::new(
            redb::Builder::new()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .unwrap(),
        );
        let store = Arc::new(NextBootStore::open(Arc::clone(&db)).unwrap());
        let service = InstallService::new(
            Arc::new(config.install_settings(&hosts)),
            Arc::new(config.load_templates().unwrap()),
            Some(Arc::clone(&store)),
            // In memory: the path only names the store in messages.
            Some(pxe_server::store::Store::Redb {
                db,
                path: "fuzz.redb".into(),
            }),
            Arc::default(),
        );
        let tokens = hosts
            .hosts()
            .iter()
            .map(|h| store.token(h).unwrap().unwrap().hex())
            .collect();
        Fixture {
            ids: hosts.hosts().iter().map(ids).collect(),
            tokens,
            hosts,
            store,
            service,
        }
    })
}

/// The host's MAC and UUID as lower-case hex digits.
fn ids(h: &HostConfig) -> Vec<String> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut v = Vec::new();
    if let Some(m) = h.mac {
        v.push(hex(&m.0));
    }
    if let Some(u) = h.uuid {
        v.push(u.to_string().replace('-', ""));
    }
    v
}

/// The hosts (indices) the request text (path and query) names (see the module documentation).
fn named(f: &Fixture, request: &str) -> Vec<usize> {
    let decoded = pxe_proto::uri::percent_decode(request.as_bytes(), true)
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_else(|| request.to_owned());
    let flat: String = decoded
        .to_ascii_lowercase()
        .chars()
        .filter(|&c| c != ':' && c != '-')
        .collect();
    (0..f.ids.len())
        .filter(|&j| f.ids[j].iter().any(|id| flat.contains(id.as_str())))
        .collect()
}

fn state(store: &NextBootStore, hosts: &HostIndex) -> Vec<(NextBoot, Option<Record>)> {
    hosts
        .hosts()
        .iter()
        .map(|h| (store.action(h), store.record(h)))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (store, service) = (&f.store, &f.service);
    // Back to the configured next boots (a commit only when the last input changed one).
    for action in [NextBoot::Install, NextBoot::Local] {
        let hosts: Vec<&HostConfig> = f
            .hosts
            .hosts()
            .iter()
            .filter(|h| h.next_boot == action)
            .collect();
        store.set(&hosts, action, 1_600_000_000).unwrap();
    }
    let text = String::from_utf8_lossy(data);
    let not_found = service
        .handle(&Request {
            method: "GET",
            path: "/install/x/y/z",
            query: None,
            server_url: URL,
            peer: None,
            now_unix: 1_700_000_000,
        })
        .unwrap();
    for (i, line) in text.split('\n').take(MAX_REQUESTS).enumerate() {
        let (peer, line) = match line.strip_prefix('@').and_then(|l| l.split_once(' ')) {
            Some((p, rest)) => match p.parse::<std::net::Ipv4Addr>() {
                Ok(p) => (p, rest),
                Err(_) => (STRANGER.parse().unwrap(), line),
            },
            None => (STRANGER.parse().unwrap(), line),
        };
        let mut line = line.to_owned();
        for (j, t) in f.tokens.iter().enumerate() {
            line = line.replace(&format!("{{t{}}}", j + 1), t);
        }
        let line = line.as_str();
        let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let hosts = f.hosts.hosts();
        let named = named(f, target);
        let before = state(store, &f.hosts);
        let holds = |j: usize| target.contains(f.tokens[j].as_str());
        let reply = service.handle(&Request {
            method,
            path,
            query,
            server_url: URL,
            peer: Some(peer.into()),
            now_unix: 1_700_000_000 + i as u64,
        });
        let after = state(store, &f.hosts);
        let route = path.trim_start_matches('/');

        // The next-boot state: only a recorded callback for a named host, only to local.
        let changed: Vec<usize> = (0..hosts.len())
            .filter(|&j| before[j] != after[j])
            .collect();
        if !changed.is_empty() {
            assert!(
                route.starts_with("done/") && method == "POST",
                "{line:?} changed the next boot of {changed:?}"
            );
            assert_eq!(reply.as_ref().map(|r| r.status), Some(200), "{line:?}");
            assert_eq!(changed.len(), 1, "{line:?} changed {changed:?}");
            let j = changed[0];
            assert_eq!(after[j].0, NextBoot::Local, "{line:?}: not to local");
            assert!(
                named.contains(&j) && holds(j),
                "{line:?} changed {}, which it does not name with its token",
                hosts[j].label()
            );
        }

        let Some(reply) = reply else {
            continue;
        };
        assert!(reply.status < 500, "{line:?}: {reply:?}");
        if route.starts_with("done/") || route.starts_with("install/") {
            if reply.status == 200 {
                assert!(
                    named.iter().any(|&j| holds(j)),
                    "{line:?} names no host with its token: {reply:?}"
                );
            } else if reply.status == 404 {
                assert_eq!(reply, not_found, "{line:?}");
            }
        }
        // No token leaves but to whoever holds it, or in the host's script to its address.
        for (j, t) in f.tokens.iter().enumerate() {
            if reply.body.contains(t.as_str()) && !holds(j) {
                assert!(
                    route == "boot.ipxe" && j == 0 && peer.to_string() == N1_ADDRESS,
                    "{line:?} from {peer}: the token of {} in {reply:?}",
                    hosts[j].label()
                );
            }
        }
        if route.starts_with("done/") && reply.status == 200 {
            assert!(
                named.iter().any(|&j| after[j].0 == NextBoot::Local),
                "{line:?}: ok, but no named host boots locally"
            );
        }
        if reply.status == 200 && reply.body.contains("\nkernel ") {
            // An install script: for whom?
            let j = (0..hosts.len())
                .find(|&j| {
                    reply
                        .body
                        .contains(&format!("# {}: install (", hosts[j].label()))
                })
                .unwrap_or_else(|| panic!("{line:?}: install script for no host: {}", reply.body));
            assert!(
                named.contains(&j),
                "{line:?}: install script for {}, which the request does not name",
                hosts[j].label()
            );
            if route == "boot.ipxe" {
                assert_eq!(
                    before[j].0,
                    NextBoot::Install,
                    "{line:?}: {}",
                    hosts[j].label()
                );
            }
        }
    }
});
