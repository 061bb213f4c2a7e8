use super::*;
use crate::journey::FileClass;

#[test]
fn journeys_section_parses_validates_and_classes_files() {
    let f = fixture();
    let head = format!("[tftp]\nroot = \"{}\"\n", f.root);
    let c = Config::parse(
        &format!(
            "{head}[boot]\nkernel = \"os/k\"\n[journeys]\nmax_hosts = 100\n\
             stuck_after_secs = 60\nkernel = [\"linux*.efi\"]\ninitrd = [\"*.squashfs\"]\n"
        ),
        Path::new("p.toml"),
    )
    .unwrap();
    let hosts = c.host_index();
    let (s, classes) = c.journey_settings(&hosts);
    assert_eq!((s.max_hosts, s.stuck_after.as_secs()), (100, 60));
    assert!(s.enabled);
    assert_eq!(classes.classify("os/k"), FileClass::Kernel);
    assert_eq!(classes.classify("linux-6.efi"), FileClass::Kernel);
    assert_eq!(classes.classify("root.squashfs"), FileClass::Initrd);
    assert_eq!(classes.classify("snponly.efi"), FileClass::BootFile);
    let d = JourneysConfig::default();
    assert!(d.enabled && d.max_hosts == 16384 && d.stuck_after_secs == 300);
    for (body, line, key, why) in [
        ("max_hosts = 0", 5, "journeys.max_hosts", "not in 1..="),
        (
            "max_hosts = 2000000",
            5,
            "journeys.max_hosts",
            "not in 1..=",
        ),
        (
            "stuck_after_secs = 0",
            5,
            "journeys.stuck_after_secs",
            "not in 1..=",
        ),
        ("kernel = [\"*\"]", 5, "journeys.kernel", "every file"),
        ("initrd = [\"/\"]", 5, "journeys.initrd", "every file"),
        (
            "boot_file = [\"a\\tb\"]",
            5,
            "journeys.boot_file",
            "not a usable glob",
        ),
        ("colour = 1", 5, "journeys.colour", "unknown field"),
        ("max_hosts = -1", 5, "journeys.max_hosts", ""),
    ] {
        assert_err(&format!("{head}\n[journeys]\n{body}\n"), line, key, why);
    }
}

#[test]
fn journeys_bound_and_existence_need_a_restart() {
    let f = fixture();
    let head = format!("[tftp]\nroot = \"{}\"\n", f.root);
    let old = Config::parse(&head, Path::new("p.toml")).unwrap();
    let new = Config::parse(
        &format!("{head}[journeys]\nmax_hosts = 5\nstuck_after_secs = 9\n"),
        Path::new("p.toml"),
    )
    .unwrap();
    let plan = old.reload_plan(&new);
    assert_eq!(plan.needs_restart, ["journeys.enabled/journeys.max_hosts"]);
    assert_eq!(plan.effective.journeys.max_hosts, 16384);
    assert_eq!(plan.effective.journeys.stuck_after_secs, 9);
}
