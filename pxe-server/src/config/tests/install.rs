use super::*;

#[test]
fn cmdline_and_template_errors_are_located() {
    let f = fixture();
    assert_err(
        &format!(
            "[tftp]\nroot = \"{}\"\n[[hosts]]\nmac = \"52:54:00:00:00:01\"\n\
             boot = {{ cmdline = \"ks={{{{ vars.nope }}}}\" }}\n",
            f.root
        ),
        5,
        "hosts[0].boot.cmdline",
        "undefined",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ks.cfg"),
        "ok\n{{ host.hostname | upper }}\n{{ vars.disk }}\n",
    )
    .unwrap();
    let text = format!(
        "[tftp]\nroot = \"{}\"\n[install]\ntemplates = \"{}\"\n[[hosts]]\nmac = \"52:54:00:00:00:01\"\n\
         hostname = \"n1\"\nvars = {{ disk = \"sda\" }}\n",
        f.root,
        dir.path().display()
    );
    let c = Config::parse(&text, Path::new("x")).unwrap();
    let t = c.load_templates().unwrap();
    assert!(t.has("ks.cfg"));
    // A second host without the variable: the template fails for it, at its line.
    let c = Config::parse(
        &format!("{text}[[hosts]]\nmac = \"52:54:00:00:00:02\"\nhostname = \"n2\"\n"),
        Path::new("x"),
    )
    .unwrap();
    let e = c.load_templates().unwrap_err();
    assert_eq!(
        (e.file.clone(), e.line),
        (dir.path().join("ks.cfg"), 3),
        "{e}"
    );
    assert!(e.reason.contains("n2"), "{e}");
}
