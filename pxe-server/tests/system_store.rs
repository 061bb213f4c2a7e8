//! The PostgreSQL store against a real PostgreSQL (Debian's, started by each test in its own
//! directory as `nobody`, see `pxe_testkit::Postgres`): two lease stores on one database and
//! the address guard between them, durability, the database stopped and started again under a
//! store, migrations, next-boot switches seen by every instance, `store migrate` and the
//! start-up errors of the real binary, and a daemon that drops its privileges and serves a
//! real DHCP client through PostgreSQL, also after PostgreSQL restarted.
//!
//! PostgreSQL refuses to run as root and the tests switch to `nobody` to run it: they need
//! root, hence ignored by default and run by scripts/test.sh (`system_*`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_proto::MacAddr;
use pxe_server::config::PgSettings;
use pxe_server::dhcp::leases::{Lease, LeaseError, LeaseState, LeaseStore, RedbLeaseStore};
use pxe_server::hosts::{HostConfig, NextBoot};
use pxe_server::store::postgres::schema;
use pxe_server::store::{PgLeaseStore, PgStore, StoreError};
use pxe_testkit::{PxeServer, ServeOptions, pair, require_root, run, server_bin};

fn settings(pg: &pxe_testkit::Postgres, instance: &str) -> PgSettings {
    PgSettings {
        url: pg.socket_url(),
        password_file: Some(pg.password_file().to_path_buf()),
        ca_file: None,
        pool_size: 4,
        instance: instance.into(),
        heartbeat: Duration::from_millis(200),
        failover: Duration::from_millis(1000),
        connect_timeout: Duration::from_millis(2000),
    }
}

fn open(pg: &pxe_testkit::Postgres, instance: &str) -> Arc<PgStore> {
    PgStore::open(&settings(pg, instance)).unwrap_or_else(|e| panic!("opening the store: {e}"))
}

/// Opened and started (its thread, heartbeat and follower run).
fn started(pg: &pxe_testkit::Postgres, instance: &str) -> Arc<PgStore> {
    let s = open(pg, instance);
    s.start(Arc::new(|_: &[String]| {})).unwrap();
    s
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn lease(ip: u8, mac: u8, state: LeaseState) -> Lease {
    Lease {
        ip: Ipv4Addr::new(10, 9, 0, ip),
        mac: MacAddr([2, 0, 0, 0, 0, mac]),
        uuid: None,
        expires: now() + 600,
        state,
        link: None,
    }
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within 20 s: {what}");
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn two_instances_never_hold_one_address_and_commits_are_durable() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pg = pxe_testkit::Postgres::start(dir.path());
    let (a, b) = (started(&pg, "a"), started(&pg, "b"));
    let mut la = PgLeaseStore::open(Arc::clone(&a)).unwrap();
    let mut lb = PgLeaseStore::open(Arc::clone(&b)).unwrap();

    // A binds .10 to client 1 in a batch with an offer.
    la.begin_batch();
    la.put(&lease(10, 1, LeaseState::Bound)).unwrap();
    la.put(&lease(11, 3, LeaseState::Offered)).unwrap();
    la.commit_batch().unwrap();
    let ip = |i: u8| Ipv4Addr::new(10, 9, 0, i);
    // Each mirror knows which instance wrote a row (the responder's takeover asks).
    assert_eq!(la.written_by(ip(11)), Some("a"));
    // B, whose mirror has not caught up yet or has, asks for .10 for client 2: refused.
    lb.begin_batch();
    match lb.put(&lease(10, 2, LeaseState::Offered)) {
        Err(LeaseError::Conflict { ip }) => assert_eq!(ip, Ipv4Addr::new(10, 9, 0, 10)),
        r => panic!("expected a conflict, got {r:?}"),
    }
    // The transaction goes on: another address in the same batch is written.
    lb.put(&lease(12, 2, LeaseState::Bound)).unwrap();
    lb.commit_batch().unwrap();
    // After the conflict B's mirror shows the holder.
    assert_eq!(
        lb.get(Ipv4Addr::new(10, 9, 0, 10)).map(|l| l.mac.0[5]),
        Some(1)
    );
    assert_eq!(lb.written_by(ip(10)), Some("a"));
    // One holder per address in the database.
    assert_eq!(
        pg.sql("SELECT encode(mac, 'hex') FROM leases WHERE ip = '10.9.0.10'"),
        "020000000001"
    );
    // A's mirror follows B's write by itself.
    eventually("A's mirror shows B's lease", || {
        la.begin_batch();
        let seen = la.get(Ipv4Addr::new(10, 9, 0, 12)).is_some();
        la.commit_batch().unwrap();
        seen
    });
    assert_eq!(la.written_by(ip(12)), Some("b"));
    // Client 1 renews its own address through B: its own, so allowed.
    lb.put(&lease(10, 1, LeaseState::Bound)).unwrap();
    assert_eq!(lb.written_by(ip(10)), Some("b"));
    // An expired lease of another client is free.
    let mut old = lease(13, 4, LeaseState::Bound);
    old.expires = now() - 1;
    la.put(&old).unwrap();
    lb.put(&lease(13, 5, LeaseState::Offered)).unwrap();
    let counts = pxe_server::store::Store::Postgres(Arc::clone(&a))
        .lease_counts(now())
        .unwrap();
    assert_eq!((counts.bound, counts.offered), (2, 2), "{counts:?}");
    // Durable: a fresh store on the same database reads every lease back.
    drop((la, lb));
    a.stop();
    b.stop();
    let fresh = PgLeaseStore::open(open(&pg, "c")).unwrap();
    assert_eq!(fresh.len(), 4);
    assert_eq!(
        fresh
            .get(Ipv4Addr::new(10, 9, 0, 13))
            .map(|l| (l.mac.0[5], l.state)),
        Some((5, LeaseState::Offered))
    );
    assert_eq!(fresh.written_by(ip(13)), Some("b"));
    assert_eq!(fresh.written_by(ip(11)), Some("a"));
    assert!(a.metrics.commits.get() >= 2);
    assert_eq!(b.metrics.lease_conflicts.get(), 1);
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn database_down_fails_fast_and_service_resumes_by_itself() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = pxe_testkit::Postgres::start(dir.path());
    let live = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let store = open(&pg, "a");
    let seen = Arc::clone(&live);
    store
        .start(Arc::new(move |names: &[String]| {
            seen.lock().unwrap().push(names.to_vec())
        }))
        .unwrap();
    let mut leases = PgLeaseStore::open(Arc::clone(&store)).unwrap();
    leases.put(&lease(10, 1, LeaseState::Bound)).unwrap();
    eventually("the heartbeat names this instance", || {
        live.lock().unwrap().last() == Some(&vec!["a".to_owned()])
    });

    // A batch has one change in its transaction when the database stops: the next write
    // finds the connection gone, the batch fails, and the mirror forgets its changes.
    leases.begin_batch();
    leases.put(&lease(11, 2, LeaseState::Bound)).unwrap();
    assert!(leases.get(Ipv4Addr::new(10, 9, 0, 11)).is_some());
    pg.stop();
    let r = leases.put(&lease(14, 6, LeaseState::Bound));
    assert!(matches!(r, Err(LeaseError::Unavailable { .. })), "{r:?}");
    assert!(leases.commit_batch().is_err());
    assert_eq!(leases.get(Ipv4Addr::new(10, 9, 0, 11)), None, "undone");
    assert_eq!(leases.get(Ipv4Addr::new(10, 9, 0, 14)), None);
    assert!(!store.is_up());
    // While down, writes are refused at once (no connection attempt).
    let before = store.metrics.errors_down.get();
    for _ in 0..3 {
        let r = leases.put(&lease(12, 3, LeaseState::Offered));
        assert!(matches!(r, Err(LeaseError::Unavailable { .. })), "{r:?}");
    }
    assert_eq!(store.metrics.errors_down.get(), before + 3);
    eventually("the heartbeat reports no live instance", || {
        live.lock().unwrap().last().is_some_and(Vec::is_empty)
    });
    let view = store.view();
    assert!(!view.up && view.reason.is_some(), "{view:?}");

    pg.start_again();
    eventually("the store is back", || store.is_up());
    leases.put(&lease(11, 2, LeaseState::Bound)).unwrap();
    assert_eq!(pg.sql("SELECT count(*) FROM leases WHERE state = 2"), "2");
    eventually("the heartbeat names this instance again", || {
        live.lock().unwrap().last() == Some(&vec!["a".to_owned()])
    });
    store.stop();
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn migrations_apply_once_and_a_newer_database_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pg = pxe_testkit::Postgres::start(dir.path());
    // Several instances starting at once: one migrates, the others find it done.
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let s = settings(&pg, &format!("i{i}"));
            std::thread::spawn(move || PgStore::open(&s).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(
        pg.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM pxe_schema_version"),
        (1..=schema::VERSION)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // Again: nothing to do.
    drop(open(&pg, "again"));
    assert_eq!(
        pg.sql("SELECT count(*) FROM pxe_schema_version"),
        schema::VERSION.to_string()
    );
    pg.sql(&format!(
        "INSERT INTO pxe_schema_version (version) VALUES ({})",
        schema::VERSION + 1
    ));
    match PgStore::open(&settings(&pg, "old")) {
        Err(e @ StoreError::Newer { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "database schema version {} is newer than this binary's {}: upgrade pxe-server",
                schema::VERSION + 1,
                schema::VERSION
            )
        ),
        r => panic!("expected a refusal, got {:?}", r.map(|_| ())),
    }
}

fn host() -> HostConfig {
    toml::from_str("mac = \"52:54:00:00:00:07\"\nhostname = \"n7\"\nnext_boot = \"install\"")
        .unwrap()
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn a_next_boot_switch_on_one_instance_is_seen_by_another_at_once() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pg = pxe_testkit::Postgres::start(dir.path());
    let (a, b) = (started(&pg, "a"), started(&pg, "b"));
    let na = pxe_server::nextboot::NextBootStore::open_postgres(Arc::clone(&a)).unwrap();
    let nb = pxe_server::nextboot::NextBootStore::open_postgres(Arc::clone(&b)).unwrap();
    let h = host();
    assert_eq!(nb.action(&h), NextBoot::Install);
    let t = nb.token(&h).unwrap().unwrap();
    // A's first token request finds B's.
    assert_eq!(na.token(&h).unwrap(), Some(t));
    assert_eq!(na.set(&[&h], NextBoot::Local, 100).unwrap(), 1);
    assert_eq!(nb.action(&h), NextBoot::Local);
    // A reinstall on B rotates the token: A refuses the old one at once.
    nb.reinstall(&[&h], 200).unwrap();
    assert_eq!(na.action(&h), NextBoot::Install);
    let new = na.current_token(&h).unwrap();
    assert_ne!(new, t);
    assert_eq!(nb.current_token(&h), Some(new));
    a.stop();
    b.stop();
}

fn migrate(args: &[&str]) -> std::process::Output {
    Command::new(server_bin())
        .args(["store", "migrate"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn store_migrate_round_trip_keeps_leases_next_boot_and_tokens() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pg = pxe_testkit::Postgres::start(dir.path());
    let first = dir.path().join("first.redb");
    let h = host();
    let (leases_before, hosts_before) = {
        let db = pxe_server::dhcp::leases::open_database(&first).unwrap();
        let mut l = RedbLeaseStore::open_shared(Arc::clone(&db)).unwrap();
        l.put(&lease(10, 1, LeaseState::Bound)).unwrap();
        l.put(&lease(11, 2, LeaseState::Declined)).unwrap();
        // Client 3 moved from .12 to .13: .12 is released.
        l.put(&lease(12, 3, LeaseState::Bound)).unwrap();
        l.put(&lease(13, 3, LeaseState::Bound)).unwrap();
        let nb = pxe_server::nextboot::NextBootStore::open(db).unwrap();
        nb.token(&h).unwrap();
        nb.set(&[&h], NextBoot::Local, 77).unwrap();
        let mut all: Vec<Lease> = l.memory().iter().copied().collect();
        all.sort_by_key(|l| l.ip);
        (all, nb.export())
    };
    let url = pg.socket_url();
    let pw = pg.password_file().to_str().unwrap().to_owned();
    let f = first.to_str().unwrap();
    let out = migrate(&[
        "--from",
        "redb",
        f,
        "--to",
        "postgres",
        &url,
        "--password-file",
        &pw,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "copied 4 leases, 1 next-boot records, 1 install tokens from redb {f} to postgres {url}"
        )
    );
    // A second run into the now non-empty database is refused, --force replaces.
    let out = migrate(&[
        "--from",
        "redb",
        f,
        "--to",
        "postgres",
        &url,
        "--password-file",
        &pw,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty (4 leases"),
        "{out:?}"
    );
    let out = migrate(&[
        "--from",
        "redb",
        f,
        "--to",
        "postgres",
        &url,
        "--password-file",
        &pw,
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(pg.sql("SELECT count(*) FROM leases"), "4");

    let back = dir.path().join("back.redb");
    let b = back.to_str().unwrap();
    let out = migrate(&[
        "--from",
        "postgres",
        &url,
        "--password-file",
        &pw,
        "--to",
        "redb",
        b,
    ]);
    assert!(out.status.success(), "{out:?}");
    let db = pxe_server::dhcp::leases::open_database(&back).unwrap();
    let l = RedbLeaseStore::open_shared(Arc::clone(&db)).unwrap();
    let mut after: Vec<Lease> = l.memory().iter().copied().collect();
    after.sort_by_key(|l| l.ip);
    assert_eq!(after, leases_before);
    // The index is as it was: client 3 at .13, the decliner at none.
    assert_eq!(
        l.ip_of(&MacAddr([2, 0, 0, 0, 0, 3])),
        Some(Ipv4Addr::new(10, 9, 0, 13))
    );
    assert_eq!(l.ip_of(&MacAddr([2, 0, 0, 0, 0, 2])), None);
    let nb = pxe_server::nextboot::NextBootStore::open(db).unwrap();
    assert_eq!(nb.export(), hosts_before);
    assert_eq!(nb.action(&h), NextBoot::Local);
}

/// `serve` with `[store]` keys `store`: its exit status and stderr.
fn serve_with_store(dir: &Path, store: &str) -> (bool, String) {
    let config = write_store_config(dir, store);
    let mut cmd = Command::new(server_bin());
    cmd.arg("serve").arg("--config").arg(&config);
    let r = run(cmd, dir, "serve", Duration::from_secs(30));
    (r.success(), r.all())
}

/// Writes `<dir>/pxe.toml`: HTTP with one host (so that a store is needed), `[store]` with
/// `store` added.
fn write_store_config(dir: &Path, store: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("tftp")).unwrap();
    let config = dir.join("pxe.toml");
    std::fs::write(
        &config,
        format!(
            "[tftp]\nroot = \"{d}/tftp\"\nlisten = [\"127.0.0.1:0\"]\n\
             [http]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\n\
             [control]\nsocket = \"{d}/control.sock\"\n[metrics]\nenabled = false\n\
             [server]\nuser = \"root\"\n\
             [[hosts]]\nmac = \"52:54:00:00:00:07\"\n\
             [store]\nbackend = \"postgres\"\ninstance = \"t\"\nconnect_timeout_ms = 1000\n{store}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    config
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn bad_store_settings_stop_the_start_with_a_clear_error() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pg = pxe_testkit::Postgres::start(dir.path());
    let d = dir.path();
    let conf = d.join("pxe.toml");
    let cases = [
        (
            "url = \"http://x/y\"".to_owned(),
            format!(
                "{}:19: store.url: must be a postgres:// URL",
                conf.display()
            ),
        ),
        (
            "url = \"postgres://pxe:secret@10.0.0.5/pxe\"".to_owned(),
            format!("{}:19: store.url: carries a password", conf.display()),
        ),
        (
            format!(
                "url = \"{}\"\npassword_file = \"{}/nothing-here\"",
                pg.socket_url(),
                d.display()
            ),
            format!(
                "store.password_file {}/nothing-here: cannot read",
                d.display()
            ),
        ),
        (
            format!(
                "url = \"postgres://pxe@%2Fnonexistent-dir/pxe\"\npassword_file = \"{}\"",
                pg.password_file().display()
            ),
            "PostgreSQL at postgres://pxe@%2Fnonexistent-dir/pxe unreachable: ".to_owned(),
        ),
        // TLS that nothing verifies is refused; so is TLS switched off beside a CA.
        (
            "url = \"postgres://pxe@10.0.0.5/pxe?sslmode=require\"".to_owned(),
            format!(
                "{}:19: store.url: sslmode=require needs store.ca_file (the server's \
                 certificate must be verified)",
                conf.display()
            ),
        ),
        (
            format!(
                "url = \"postgres://pxe@10.0.0.5/pxe?sslmode=disable\"\nca_file = \"{}/ca.pem\"",
                d.display()
            ),
            format!(
                "{}:19: store.url: sslmode=disable contradicts store.ca_file",
                conf.display()
            ),
        ),
        (
            format!(
                "url = \"{}\"\nca_file = \"{}/ca.pem\"",
                pg.socket_url(),
                d.display()
            ),
            format!(
                "{}:20: store.ca_file: the URL names a Unix socket, which never uses TLS",
                conf.display()
            ),
        ),
        (
            format!(
                "url = \"postgres://pxe@127.0.0.1:1/pxe\"\npassword_file = \"{}\"\n\
                 ca_file = \"{}/no-ca.pem\"",
                pg.password_file().display(),
                d.display()
            ),
            format!("store.ca_file {}/no-ca.pem: cannot read", d.display()),
        ),
        (
            format!(
                "url = \"postgres://pxe@127.0.0.1:1/pxe\"\npassword_file = \"{}\"\n\
                 ca_file = \"{}\"",
                pg.password_file().display(),
                pg.password_file().display()
            ),
            format!(
                "store.ca_file {}: no PEM certificate",
                pg.password_file().display()
            ),
        ),
    ];
    for (keys, message) in cases {
        let (ok, out) = serve_with_store(d, &keys);
        assert!(!ok, "started with {keys}:\n{out}");
        assert!(
            out.contains(&message),
            "{keys}: wanted {message:?} in:\n{out}"
        );
    }
    // The right settings start (the same config with a reachable database and its password).
    write_store_config(
        d,
        &format!(
            "url = \"{}\"\npassword_file = \"{}\"",
            pg.socket_url(),
            pg.password_file().display()
        ),
    );
    let mut cmd = Command::new(server_bin());
    cmd.arg("serve").arg("--config").arg(d.join("pxe.toml"));
    let mut p = pxe_testkit::Proc::spawn(cmd, d, "serve-good");
    p.wait_for("PostgreSQL store ready");
    p.wait_for("control socket ready");
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn a_daemon_without_privileges_serves_dhcp_through_postgres_across_a_restart() {
    require_root();
    let (srv, cli) = pair(("pgsrv", "ps", Some("10.79.0.1/24")), ("pgcli", "pc", None));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut pg = pxe_testkit::Postgres::start(d);
    std::fs::create_dir_all(d.join("tftp")).unwrap();
    let config = format!(
        "[tftp]\nroot = \"{d}/tftp\"\nlisten = [\"10.79.0.1:69\"]\nthreads = 1\n\
         [dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"ps\"]\n\
         [[dhcp.subnets]]\nsubnet = \"10.79.0.0/24\"\nrange_start = \"10.79.0.100\"\n\
         range_end = \"10.79.0.149\"\nrouter = \"10.79.0.1\"\n\
         [boot]\nbios = \"undionly.kpxe\"\n\
         [store]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_file = \"{pw}\"\n\
         instance = \"dhcp1\"\nheartbeat_ms = 200\nfailover_ms = 1000\n",
        d = d.display(),
        url = pg.socket_url(),
        pw = pg.password_file().display(),
    );
    let mut server = PxeServer::start_with(&srv, d, &config, ServeOptions::debug());
    server.wait_for("privileges dropped");
    let client = |tag: &str| {
        let mut cmd = cli.command("busybox");
        cmd.args(["udhcpc", "-i", "pc", "-n", "-q", "-f", "-t", "8", "-T", "1"]);
        let r = run(cmd, d, tag, Duration::from_secs(60));
        assert!(r.success(), "udhcpc {tag}:\n{}\n{}", r.all(), server.log());
        r.all()
    };
    let out = client("udhcpc-1");
    assert!(out.contains("10.79.0.1"), "{out}");
    assert_eq!(pg.sql("SELECT count(*) FROM leases WHERE state = 2"), "1");
    let status = server.status();
    assert_eq!(status["store"]["backend"], "postgres", "{status}");
    assert_eq!(status["store"]["instance"], "dhcp1", "{status}");
    assert_eq!(status["store"]["peers"][0]["name"], "dhcp1", "{status}");
    assert_eq!(
        status["server"]["process"]["user"], "pxe-server",
        "{status}"
    );

    // PostgreSQL restarts: the daemon (unprivileged, under seccomp) reconnects by itself.
    pg.stop();
    eventually("the daemon sees the store down", || {
        server.status()["store"]["up"] == false
    });
    pg.start_again();
    eventually("the daemon sees the store back", || {
        server.status()["store"]["up"] == true
    });
    // A new client (another MAC) gets a lease committed through the new connection.
    let out = client_with_mac(&cli, d, "02:00:00:00:79:02");
    assert!(out.contains("10.79.0.1"), "{out}");
    assert_eq!(pg.sql("SELECT count(*) FROM leases WHERE state = 2"), "2");
    assert!(server.is_running(), "{}", server.log());
}

/// udhcpc with client MAC `mac` (a new client, `-H`-less: the interface's MAC is changed).
fn client_with_mac(cli: &pxe_testkit::Netns, dir: &Path, mac: &str) -> String {
    let mut ip = cli.command("ip");
    ip.args(["link", "set", "pc", "address", mac]);
    assert!(run(ip, dir, "ip-mac", Duration::from_secs(10)).success());
    let mut cmd = cli.command("busybox");
    cmd.args(["udhcpc", "-i", "pc", "-n", "-q", "-f", "-t", "8", "-T", "1"]);
    let r = run(cmd, dir, "udhcpc-2", Duration::from_secs(60));
    assert!(r.success(), "udhcpc:\n{}", r.all());
    r.all()
}

#[test]
#[ignore = "needs root: PostgreSQL runs as nobody (scripts/test.sh runs it)"]
fn a_store_over_tcp_uses_tls_verified_against_its_ca() {
    require_root();
    let (db, cli) = pair(
        ("pgtls", "pt", Some("10.78.0.1/24")),
        ("pgtlsc", "pu", Some("10.78.0.2/24")),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = pxe_testkit::Postgres::start_tls_in(Some(&db), d, Ipv4Addr::new(10, 78, 0, 1));
    let mut good = settings(&pg, "tls1");
    good.url = format!("{}?sslmode=require", pg.tcp_url());
    good.ca_file = Some(pg.ca_file().expect("a TLS cluster has a CA").to_path_buf());

    // Verified against the cluster's CA: the store opens and a lease goes in and comes back.
    let s = good.clone();
    let store = cli.enter(move || {
        let store = PgStore::open(&s).unwrap_or_else(|e| panic!("opening over TLS: {e}"));
        let mut l = PgLeaseStore::open(Arc::clone(&store)).unwrap();
        l.begin_batch();
        l.put(&lease(10, 1, LeaseState::Bound)).unwrap();
        l.commit_batch().unwrap();
        assert_eq!(
            l.get(Ipv4Addr::new(10, 9, 0, 10)).map(|l| l.mac.0[5]),
            Some(1)
        );
        store
    });
    assert_eq!(
        pg.sql("SELECT encode(mac, 'hex') FROM leases WHERE ip = '10.9.0.10'"),
        "020000000001"
    );
    // PostgreSQL's own view of the store's open connections: all encrypted.
    let by_ssl = |ssl: bool| {
        pg.sql(&format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'pxe-server tls1' AND ssl = {ssl}"
        ))
    };
    assert_ne!(by_ssl(true), "0", "no encrypted connection of the store");
    assert_eq!(by_ssl(false), "0", "a plaintext connection of the store");
    drop(store);

    // `store migrate` verifies the same way (--ca-file): the lease comes out into redb.
    let redb = d.join("from-tls.redb");
    let mut cmd = cli.command(&server_bin().display().to_string());
    cmd.args([
        "store", "migrate", "--from", "postgres", &good.url, "--to", "redb",
    ])
    .arg(&redb)
    .arg("--password-file")
    .arg(pg.password_file())
    .arg("--ca-file")
    .arg(pg.ca_file().unwrap());
    let r = run(cmd, d, "migrate-tls", Duration::from_secs(60));
    assert!(r.success(), "store migrate over TLS:\n{}", r.all());
    assert_eq!(
        RedbLeaseStore::open(&redb)
            .unwrap()
            .get(Ipv4Addr::new(10, 9, 0, 10))
            .map(|l| l.mac.0[5]),
        Some(1)
    );

    // Another CA (a forged server's, as far as the store knows): the start stops.
    let mut wrong = good.clone();
    wrong.instance = "tls2".into();
    wrong.ca_file = Some(pxe_testkit::make_ca(d, "other-ca"));
    let url = wrong.url.clone();
    let err = cli.enter(move || PgStore::open(&wrong).map(|_| ()));
    match err {
        Err(e @ StoreError::Tls { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("PostgreSQL at {url}: TLS: ")),
                "{text}"
            );
            assert!(text.contains("certificate"), "{text}");
        }
        r => panic!("expected the TLS error, got {r:?}"),
    }
}
