//! A sequence of requests through the install routes (`InstallService::handle`, sans-IO), with
//! a fixed configuration of four hosts and two templates of our own, over an in-memory lease
//! database. Every input starts from the configured next boots: they are set again before it
//! (a fresh database per input would cost most of the time, in redb's commits).
//!
//! Input: one request per line, `METHOD TARGET` (a line without a space is a GET of it), the
//! target split at its first `?` into path and query; at most 16 lines.
//!
//! Checks, for every request:
//! - never a 5xx (every input here is a client's);
//! - an install script (the built-in `ipxe/install.ipxe`) only for a configured host that the
//!   request names (its MAC or UUID is in the decoded request), and from `/boot.ipxe` only when
//!   that host's next boot was `install`; a request that names no configured host never gets
//!   an install script, a template or a recorded callback;
//! - the next-boot state changes only through a 200 from `GET`/`POST /done/KEY`, for one host
//!   the request names, and only to `local`.
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
use pxe_server::install::InstallService;
use pxe_server::nextboot::{NextBootStore, Record};

const URL: &str = "http://10.0.0.1:8080";
const MAX_REQUESTS: usize = 16;

const CONFIG: &str = "[tftp]\nroot = \"/\"\n\
    [boot]\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
    cmdline = \"inst.ks={{ server_url }}/install/{{ host.key }}/ks.cfg\"\n\
    [[hosts]]\nmac = \"52:54:a1:b2:c3:d4\"\nhostname = \"n1\"\nnext_boot = \"install\"\naddress = \"10.0.0.21\"\n\
    [[hosts]]\nmac = \"52:54:a1:b2:c3:e5\"\nhostname = \"n2\"\n\
    [[hosts]]\nuuid = \"4c4c4544-3135-3510-8047-b4c04f4d3232\"\nhostname = \"n3\"\nnext_boot = \"install\"\n\
    [[hosts]]\nmac = \"52:54:a1:b2:c3:f6\"\nuuid = \"5a5b5c5d-6e6f-7071-8283-a4a5b6b7c8c9\"\nnext_boot = \"install\"\n";

struct Fixture {
    hosts: Arc<HostIndex>,
    /// Each host's MAC and UUID in hex ([`ids`]).
    ids: Vec<Vec<String>>,
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
             {{ server_url }}/done/{{ host.key }}\n",
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
            Some(db),
            Arc::default(),
        );
        Fixture {
            ids: hosts.hosts().iter().map(ids).collect(),
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
    for (i, line) in text.split('\n').take(MAX_REQUESTS).enumerate() {
        let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let hosts = f.hosts.hosts();
        let named = named(f, target);
        let before = state(store, &f.hosts);
        let reply = service.handle(method, path, query, URL, 1_700_000_000 + i as u64);
        let after = state(store, &f.hosts);
        let route = path.trim_start_matches('/');

        // The next-boot state: only a recorded callback for a named host, only to local.
        let changed: Vec<usize> = (0..hosts.len())
            .filter(|&j| before[j] != after[j])
            .collect();
        if !changed.is_empty() {
            assert!(
                route.starts_with("done/") && (method == "GET" || method == "POST"),
                "{line:?} changed the next boot of {changed:?}"
            );
            assert_eq!(reply.as_ref().map(|r| r.status), Some(200), "{line:?}");
            assert_eq!(changed.len(), 1, "{line:?} changed {changed:?}");
            let j = changed[0];
            assert_eq!(after[j].0, NextBoot::Local, "{line:?}: not to local");
            assert!(
                named.contains(&j),
                "{line:?} changed {}, which it does not name",
                hosts[j].label()
            );
        }

        let Some(reply) = reply else {
            continue;
        };
        assert!(reply.status < 500, "{line:?}: {reply:?}");
        if reply.status == 200 && (route.starts_with("done/") || route.starts_with("install/")) {
            assert!(!named.is_empty(), "{line:?} names no host: {reply:?}");
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
