use super::*;
use crate::config::Config;
use crate::dhcp::leases::{Lease, LeaseState, LeaseStore, RedbLeaseStore};
use std::path::Path;

/// n1: reserved 10.0.0.21, to install; n2: no reservation (a lease, below), local; n3: only a
/// UUID, to install, no address anywhere.
const CONFIG: &str = "[tftp]\nroot = \"/\"\n\
    [boot]\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
    cmdline = \"inst.ks={{ host.install_url }}/ks.cfg\"\n\
    [[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"n1\"\nnext_boot = \"install\"\naddress = \"10.0.0.21\"\n\
    [[hosts]]\nmac = \"52:54:00:00:00:02\"\nhostname = \"n2\"\n\
    [[hosts]]\nuuid = \"4c4c4544-0031-3510-8047-b4c04f4d3232\"\nhostname = \"n3\"\nnext_boot = \"install\"\n";

const N1: &str = "mac:52:54:00:00:00:01";
const N1_IP: &str = "10.0.0.21";
const N2: &str = "mac:52:54:00:00:00:02";
/// n2's lease.
const N2_IP: &str = "10.0.0.150";
/// Another machine on the segment.
const STRANGER: &str = "10.0.0.99";
const URL: &str = "http://10.0.0.1:8080";
const NOW: u64 = 1000;

struct Fixture {
    _dir: tempfile::TempDir,
    s: InstallService,
    store: Arc<NextBootStore>,
}

fn fixture(extra: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), extra);
    let store = Arc::clone(s.next_boot.as_ref().unwrap());
    Fixture {
        _dir: dir,
        s,
        store,
    }
}

fn service(dir: &Path, extra: &str) -> InstallService {
    let tpl = dir.join("templates");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(
        tpl.join("ks.cfg"),
        "network --hostname={{ host.hostname }} --ip={{ host.address or 'dhcp' }}\n\
         %post\ncurl -X POST {{ host.done_url }}\n%end\n",
    )
    .unwrap();
    let text = format!(
        "{CONFIG}[install]\ntemplates = \"{}\"\n{extra}",
        tpl.display()
    );
    let config = Config::parse(&text, Path::new("t.toml")).unwrap();
    let templates = Arc::new(config.load_templates().unwrap());
    let db = Arc::new(redb::Database::create(dir.join("l.redb")).unwrap());
    let mut leases = RedbLeaseStore::open_shared(Arc::clone(&db)).unwrap();
    leases
        .put(&Lease {
            ip: N2_IP.parse().unwrap(),
            mac: "52:54:00:00:00:02".parse().unwrap(),
            uuid: None,
            expires: NOW + 3600,
            state: LeaseState::Bound,
            link: None,
        })
        .unwrap();
    let store = Arc::new(NextBootStore::open(Arc::clone(&db)).unwrap());
    InstallService::new(
        Arc::new(config.install_settings(&config.host_index())),
        templates,
        Some(store),
        Some(crate::store::Store::Redb {
            db,
            path: dir.join("l.redb"),
        }),
        Arc::default(),
    )
}

fn call(s: &InstallService, method: &str, path: &str, query: Option<&str>, peer: &str) -> Reply {
    s.handle(&Request {
        method,
        path,
        query,
        server_url: URL,
        peer: Some(peer.parse().unwrap()),
        now_unix: NOW,
    })
    .unwrap()
}

fn get(s: &InstallService, path: &str, peer: &str) -> Reply {
    call(s, "GET", path, None, peer)
}

fn script(s: &InstallService, query: &str, peer: &str) -> Reply {
    call(s, "GET", "/boot.ipxe", Some(query), peer)
}

/// The token in a script's `inst.ks=.../install/KEY/TOKEN/ks.cfg`.
fn token_in(script: &str, key: &str) -> String {
    let at = format!("/install/{key}/");
    let start = script
        .find(&at)
        .unwrap_or_else(|| panic!("no {at} in {script}"))
        + at.len();
    script[start..start + 32].to_owned()
}

fn metric(s: &InstallService, name: &str) -> u64 {
    serde_json::to_value(s.metrics().snapshot()).unwrap()[name]
        .as_u64()
        .unwrap()
}

#[test]
fn scripts_follow_the_next_boot_and_the_callback_flips_it() {
    let Fixture { s, store, _dir } = fixture("");
    let r = script(&s, "mac=52%3A54%3A00%3A00%3A00%3A01&uuid=", N1_IP);
    assert_eq!(r.status, 200);
    let token = token_in(&r.body, N1);
    assert!(
        r.body.contains(&format!(
            "kernel http://10.0.0.1:8080/vmlinuz initrd=initrd \
             inst.ks=http://10.0.0.1:8080/install/{N1}/{token}/ks.cfg"
        )),
        "{}",
        r.body
    );
    assert_eq!(
        Some(token.clone()),
        store.current_token(host(&s, N1)).map(|t| t.hex())
    );
    // n2 boots locally (asked from its lease); an unknown machine too.
    assert!(
        script(&s, "mac=52:54:00:00:00:02", N2_IP)
            .body
            .contains("sanboot")
    );
    assert!(
        script(&s, "mac=02:00:00:00:00:99", STRANGER)
            .body
            .contains("sanboot")
    );
    // No identity: a script that asks again with it.
    assert_eq!(
        get(&s, "/boot.ipxe", STRANGER).body,
        "#!ipxe\nchain http://10.0.0.1:8080/boot.ipxe?mac=${net0/mac:hexhyp}&uuid=${uuid}\n"
    );
    // The kickstart, by the token, with the callback URL in it.
    let r = get(&s, &format!("/install/{N1}/{token}/ks.cfg"), STRANGER);
    assert_eq!(
        r.body,
        format!(
            "network --hostname=n1 --ip=10.0.0.21\n\
             %post\ncurl -X POST http://10.0.0.1:8080/done/{N1}/{token}\n%end\n"
        )
    );
    // The callback: POST only, idempotent, recorded; n1 now boots locally.
    let done = format!("/done/{N1}/{token}");
    let r = get(&s, &done, N1_IP);
    assert_eq!((r.status, r.allow), (405, Some("POST")));
    assert!(
        script(&s, "mac=52-54-00-00-00-01", N1_IP)
            .body
            .contains("kernel ")
    );
    for _ in 0..2 {
        let r = call(&s, "POST", &done, None, N1_IP);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        script(&s, "mac=52-54-00-00-00-01", N1_IP)
            .body
            .contains("sanboot")
    );
    assert_eq!(call(&s, "DELETE", "/done/x/y", None, N1_IP).status, 405);
    let r = call(&s, "POST", "/boot.ipxe", None, N1_IP);
    assert_eq!((r.status, r.allow), (405, Some("GET, HEAD")));
    // Not ours: files.
    assert_eq!(
        s.handle(&Request {
            method: "GET",
            path: "/vmlinuz",
            query: None,
            server_url: URL,
            peer: None,
            now_unix: NOW
        }),
        None
    );
    assert_eq!(metric(&s, "callbacks"), 2);
    assert_eq!(metric(&s, "scripts_install"), 2);
    // The flip and the token survive a new service over the same database (a restart).
    let dir = _dir.path().to_owned();
    drop((s, store));
    let s = service(&dir, "");
    let r = script(&s, "mac=52:54:00:00:00:01", N1_IP);
    assert!(r.body.contains("sanboot"), "{}", r.body);
    assert_eq!(call(&s, "POST", &done, None, N1_IP).status, 200);
}

fn host<'a>(s: &'a InstallService, key: &str) -> &'a HostConfig {
    s.by_key(key).unwrap()
}

/// A wrong token, no token, another host's token, an unknown host, a malformed key: one 404,
/// byte for byte, and nothing changes.
#[test]
fn a_bad_token_is_an_unknown_host() {
    let Fixture { s, store, _dir } = fixture("");
    let t1 = token_in(&script(&s, "mac=52-54-00-00-00-01", N1_IP).body, N1);
    let t2 = store.token(host(&s, N2)).unwrap().unwrap().hex();
    let mut wrong = t1.clone().into_bytes();
    wrong[31] = if wrong[31] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let unknown = get(
        &s,
        &format!("/install/mac:52:54:00:00:00:09/{t1}/ks.cfg"),
        STRANGER,
    );
    assert_eq!(unknown, Reply::text(404, "Not Found\n"));
    let refused_before = metric(&s, "refused_token");
    let paths = [
        format!("/install/{N1}/{wrong}/ks.cfg"),
        format!("/install/{N1}/{t2}/ks.cfg"),
        format!("/install/{N1}/ks.cfg"),
        format!("/install/{N1}//ks.cfg"),
        format!("/install/{N1}/{}/ks.cfg", &t1[..31]),
        format!("/install/%ff/{t1}/ks.cfg"),
        format!("/install/uuid:4c4c4544-0031-3510-8047-b4c04f4d3232/{t1}/ks.cfg"),
        // The right token and no such template: the same answer.
        format!("/install/{N1}/{t1}/nope.cfg"),
        format!("/install/{N1}/{t1}/%2e%2e%2fetc%2fpasswd"),
    ];
    for p in &paths {
        assert_eq!(get(&s, p, N1_IP), unknown, "{p}");
    }
    for p in [
        format!("/done/{N1}/{wrong}"),
        format!("/done/{N1}/{t2}"),
        format!("/done/{N1}"),
        format!("/done/{N1}/{t1}/x"),
        "/done/mac:02:00:00:00:00:99/0".to_owned(),
    ] {
        assert_eq!(call(&s, "POST", &p, None, N1_IP), unknown, "{p}");
    }
    // n1 is still to install; its own token still works.
    assert_eq!(store.action(host(&s, N1)), NextBoot::Install);
    assert_eq!(
        get(&s, &format!("/install/{N1}/{t1}/ks.cfg"), STRANGER).status,
        200
    );
    assert_eq!(metric(&s, "refused_token"), refused_before + 12);
}

/// `host ... reinstall` gives a new token: the old URLs stop working at once.
#[test]
fn reinstall_rotates_the_token() {
    let Fixture { s, store, _dir } = fixture("");
    let old = token_in(&script(&s, "mac=52-54-00-00-00-01", N1_IP).body, N1);
    assert_eq!(
        call(&s, "POST", &format!("/done/{N1}/{old}"), None, N1_IP).status,
        200
    );
    store.reinstall(&[host(&s, N1)], NOW).unwrap();
    let new = token_in(&script(&s, "mac=52-54-00-00-00-01", N1_IP).body, N1);
    assert_ne!(old, new);
    for t in [&old, &new] {
        let want = if t == &new { 200 } else { 404 };
        assert_eq!(
            get(&s, &format!("/install/{N1}/{t}/ks.cfg"), N1_IP).status,
            want
        );
        assert_eq!(
            call(&s, "POST", &format!("/done/{N1}/{t}"), None, N1_IP).status,
            want
        );
    }
}

/// The script with the token goes only to the host's own address: its reservation (n1), its
/// lease (n2), the address its own DHCP requests named (proxy mode); a stranger, and
/// anyone asking for a host with no known address (n3), gets an unknown machine's script.
#[test]
fn scripts_go_only_to_the_hosts_address() {
    let Fixture { s, store, _dir } = fixture("");
    let anonymous = script(&s, "mac=02-00-00-00-00-99", STRANGER);
    assert!(anonymous.body.contains("sanboot"), "{}", anonymous.body);
    for (query, at) in [
        ("mac=52-54-00-00-00-01", N1_IP),
        ("mac=52-54-00-00-00-01", "::ffff:10.0.0.21"),
        ("mac=52-54-00-00-00-02", N2_IP),
    ] {
        let r = script(&s, query, at);
        assert_ne!(r.body, anonymous.body, "{query} from {at}");
        assert!(r.body.contains("# n"), "{}", r.body);
    }
    let withheld = metric(&s, "scripts_withheld");
    for (query, at) in [
        ("mac=52-54-00-00-00-01", STRANGER),
        ("mac=52-54-00-00-00-01", N2_IP),
        (
            "mac=52-54-00-00-00-01&uuid=4c4c4544-0031-3510-8047-b4c04f4d3232",
            STRANGER,
        ),
        ("uuid=4c4c4544-0031-3510-8047-b4c04f4d3232", STRANGER),
        (
            "mac=02-00-00-00-00-99&uuid=4c4c4544-0031-3510-8047-b4c04f4d3232",
            STRANGER,
        ),
        ("mac=52-54-00-00-00-01", "fe80::1"),
    ] {
        let r = script(&s, query, at);
        assert_eq!(r, anonymous, "{query} from {at}");
    }
    assert_eq!(metric(&s, "scripts_withheld"), withheld + 6);
    let n1 = store.current_token(host(&s, N1)).unwrap().hex();
    assert!(!anonymous.body.contains(&n1));

    // Proxy mode: n3 took 10.0.0.77; then its script goes there only.
    let learned = Arc::new(LearnedAddresses::default());
    let s = s.with_learned(Some(Arc::clone(&learned)));
    learned.learn(
        "uuid:4c4c4544-0031-3510-8047-b4c04f4d3232",
        "n3",
        "10.0.0.77".parse().unwrap(),
        NOW - 5,
    );
    let q = "uuid=4c4c4544-0031-3510-8047-b4c04f4d3232";
    assert!(script(&s, q, "10.0.0.77").body.contains("/install/uuid:"));
    assert_eq!(script(&s, q, STRANGER), anonymous);
    // Someone else claims n3: nobody gets its script for a while.
    learned.learn(
        "uuid:4c4c4544-0031-3510-8047-b4c04f4d3232",
        "n3",
        STRANGER.parse().unwrap(),
        NOW - 1,
    );
    assert_eq!(script(&s, q, STRANGER), anonymous);
    assert_eq!(script(&s, q, "10.0.0.77"), anonymous);
}

/// `[install] bind_to_lease`: the right token from another address is refused like a bad one.
#[test]
fn bind_to_lease_wants_the_hosts_address() {
    let Fixture { s, store, _dir } = fixture("bind_to_lease = true\n");
    let t1 = token_in(&script(&s, "mac=52-54-00-00-00-01", N1_IP).body, N1);
    let t2 = store.token(host(&s, N2)).unwrap().unwrap().hex();
    let ks = format!("/install/{N1}/{t1}/ks.cfg");
    let not_found = Reply::text(404, "Not Found\n");
    assert_eq!(get(&s, &ks, STRANGER), not_found);
    assert_eq!(get(&s, &ks, N2_IP), not_found);
    assert_eq!(
        call(&s, "POST", &format!("/done/{N1}/{t1}"), None, STRANGER),
        not_found
    );
    assert_eq!(store.action(host(&s, N1)), NextBoot::Install);
    assert_eq!(metric(&s, "refused_address"), 3);
    assert_eq!(get(&s, &ks, N1_IP).status, 200);
    assert_eq!(
        get(&s, &format!("/install/{N2}/{t2}/ks.cfg"), N2_IP).status,
        200
    );
    assert_eq!(
        call(&s, "POST", &format!("/done/{N1}/{t1}"), None, N1_IP).status,
        200
    );
    assert_eq!(store.action(host(&s, N1)), NextBoot::Local);
}

#[test]
fn hostile_input_is_refused() {
    let Fixture { s, _dir, .. } = fixture("");
    for (path, q) in [
        ("/boot.ipxe", Some("mac=%zz")),
        ("/install/mac:52:54:00:00:00:01/%2e%2e%2fetc%2fpasswd", None),
        ("/install/mac:52:54:00:00:00:01/0/ks.cfg%00", None),
        ("/install/%ff/ks.cfg", None),
        ("/install/", None),
    ] {
        let r = call(&s, "GET", path, q, STRANGER);
        assert!((400..500).contains(&r.status), "{path}: {r:?}");
    }
    assert_eq!(percent_decode("a%41+b"), Some("aA b".into()));
    assert_eq!(percent_decode("%4"), None);
}
