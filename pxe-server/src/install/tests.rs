use super::*;
use crate::config::Config;
use std::path::Path;

const CONFIG: &str = "[tftp]\nroot = \"/\"\n\
    [boot]\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
    cmdline = \"inst.ks={{ server_url }}/install/{{ host.key }}/ks.cfg\"\n\
    [[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"n1\"\nnext_boot = \"install\"\naddress = \"10.0.0.21\"\n\
    [[hosts]]\nmac = \"52:54:00:00:00:02\"\nhostname = \"n2\"\n\
    [[hosts]]\nuuid = \"4c4c4544-0031-3510-8047-b4c04f4d3232\"\nhostname = \"n3\"\nnext_boot = \"install\"\n";

fn service(dir: &Path) -> InstallService {
    let tpl = dir.join("templates");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(
        tpl.join("ks.cfg"),
        "network --hostname={{ host.hostname }} --ip={{ host.address or 'dhcp' }}\n",
    )
    .unwrap();
    let text = format!("{CONFIG}[install]\ntemplates = \"{}\"\n", tpl.display());
    let config = Config::parse(&text, Path::new("t.toml")).unwrap();
    let templates = Arc::new(config.load_templates().unwrap());
    let db = Arc::new(redb::Database::create(dir.join("l.redb")).unwrap());
    let store = Arc::new(NextBootStore::open(Arc::clone(&db)).unwrap());
    InstallService::new(
        Arc::new(config.install_settings(&config.host_index())),
        templates,
        Some(store),
        Some(db),
        Arc::default(),
    )
}

const URL: &str = "http://10.0.0.1:8080";

#[test]
fn scripts_follow_the_next_boot_and_the_callback_flips_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    let get = |path: &str, q: Option<&str>| s.handle("GET", path, q, URL, 1000).unwrap();
    let r = get("/boot.ipxe", Some("mac=52%3A54%3A00%3A00%3A00%3A01&uuid="));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("kernel http://10.0.0.1:8080/vmlinuz initrd=initrd inst.ks=http://10.0.0.1:8080/install/mac:52:54:00:00:00:01/ks.cfg"), "{}", r.body);
    // n2 boots locally; an unknown machine too.
    assert!(
        get("/boot.ipxe", Some("mac=52:54:00:00:00:02"))
            .body
            .contains("sanboot")
    );
    assert!(
        get("/boot.ipxe", Some("mac=02:00:00:00:00:99"))
            .body
            .contains("sanboot")
    );
    // No identity: a script that asks again with it.
    assert_eq!(
        get("/boot.ipxe", None).body,
        "#!ipxe\nchain http://10.0.0.1:8080/boot.ipxe?mac=${net0/mac:hexhyp}&uuid=${uuid}\n"
    );
    // n3 by UUID.
    let r = get(
        "/boot.ipxe",
        Some("uuid=4C4C4544-0031-3510-8047-B4C04F4D3232"),
    );
    assert!(r.body.contains("kernel "), "{}", r.body);
    // The kickstart, per host.
    let r = get("/install/mac:52:54:00:00:00:01/ks.cfg", None);
    assert_eq!(r.body, "network --hostname=n1 --ip=10.0.0.21\n");
    let r = get("/install/52-54-00-00-00-02/ks.cfg", None);
    assert_eq!(r.body, "network --hostname=n2 --ip=dhcp\n");
    assert_eq!(
        get("/install/mac:52:54:00:00:00:09/ks.cfg", None).status,
        404
    );
    assert_eq!(
        get("/install/mac:52:54:00:00:00:01/nope.cfg", None).status,
        404
    );
    // The callback: n1 now boots locally, and it is recorded.
    let r = s
        .handle("POST", "/done/mac:52:54:00:00:00:01", None, URL, 1001)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        get("/boot.ipxe", Some("mac=52:54:00:00:00:01"))
            .body
            .contains("sanboot")
    );
    assert_eq!(get("/done/mac:02:00:00:00:00:99", None).status, 404);
    assert_eq!(
        s.handle("DELETE", "/done/x", None, URL, 1).unwrap().status,
        405
    );
    assert_eq!(
        s.handle("POST", "/boot.ipxe", None, URL, 1).unwrap().status,
        405
    );
    // Not ours: files.
    assert_eq!(s.handle("GET", "/vmlinuz", None, URL, 1), None);
    assert_eq!(s.handle("GET", "/install", None, URL, 1), None);
    let m = serde_json::to_value(s.metrics().snapshot()).unwrap();
    assert_eq!(m["callbacks"], 1);
    assert_eq!(m["scripts_install"], 2);
    assert!(m["errors"].as_u64().unwrap() >= 4);
    // The flip survives a new service over the same database (a restart).
    drop(s);
    let s = service(dir.path());
    let r = s
        .handle("GET", "/boot.ipxe", Some("mac=52:54:00:00:00:01"), URL, 2)
        .unwrap();
    assert!(r.body.contains("sanboot"), "{}", r.body);
}

#[test]
fn hostile_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    for (path, q) in [
        ("/boot.ipxe", Some("mac=%zz")),
        ("/install/mac:52:54:00:00:00:01/%2e%2e%2fetc%2fpasswd", None),
        ("/install/mac:52:54:00:00:00:01/ks.cfg%00", None),
        ("/install/%ff/ks.cfg", None),
    ] {
        let r = s.handle("GET", path, q, URL, 1).unwrap();
        assert!((400..500).contains(&r.status), "{path}: {r:?}");
    }
    assert_eq!(percent_decode("a%41+b"), Some("aA b".into()));
    assert_eq!(percent_decode("%4"), None);
}
