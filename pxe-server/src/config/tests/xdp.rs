use super::*;
use crate::xdp::Fallback;
use crate::xdp::tests::discover;
use pxe_ebpf::Verdict;

#[test]
fn xdp_section_parses_and_validates() {
    let f = fixture();
    let r = &f.root;
    let head = format!("[tftp]\nroot = \"{r}\"\n");
    let c = Config::parse(
        &format!(
            "{head}[dhcp]\ninterfaces = [\"eth0\", \"eth1\"]\n[xdp]\nmode = \"auto\"\n\
             interfaces = {{ eth1 = \"skb\", eth2 = \"off\" }}\ndrop_non_pxe = true\n\
             rate_per_sec = 5\nburst = 20\ndeny = [\"52:54:00:aa:bb:cc\"]\n"
        ),
        Path::new("p.toml"),
    )
    .unwrap();
    assert_eq!(
        c.xdp.attach_list(&c.dhcp.interfaces),
        vec![
            ("eth0".to_owned(), XdpChoice::Auto),
            ("eth1".to_owned(), XdpChoice::Skb),
            ("eth2".to_owned(), XdpChoice::Off),
        ]
    );
    assert_eq!((c.xdp.rate_per_sec, c.xdp.burst), (5, 20));
    assert_eq!(c.xdp.deny.len(), 1);
    // The default attaches nothing and filters nothing.
    let d = XdpConfig::default();
    assert_eq!(d.mode, XdpChoice::Off);
    assert!(!d.drop_non_pxe && d.rate_per_sec == 0 && !d.allow_list);
    assert_err(
        &format!("{head}[xdp]\nmode = \"native\"\n"),
        4,
        "xdp.mode",
        "unknown variant",
    );
    assert_err(
        &format!("{head}[xdp]\nrate_per_sec = 5\nburst = 0\n"),
        5,
        "xdp.burst",
        "must be 1..=",
    );
    assert_err(
        &format!("{head}[xdp]\nrate_per_sec = 2000000\n"),
        4,
        "xdp.rate_per_sec",
        "at most",
    );
    assert_err(
        &format!("{head}[xdp]\nallow_list = true\n"),
        4,
        "xdp.allow_list",
        "no [[hosts]] entry has a mac",
    );
}

#[test]
fn policy_from_the_section_and_the_hosts() {
    let mut c = Config::default();
    assert!(c.xdp.policy_set(&c.host_index()).passes_everything());
    c.xdp.drop_non_pxe = true;
    c.xdp.rate_per_sec = 5;
    c.xdp.deny = vec![pxe_proto::MacAddr([3; 6])];
    let s = c.xdp.policy_set(&c.host_index());
    assert_eq!(
        s.policy.flags,
        pxe_ebpf::POLICY_DROP_NON_PXE | pxe_ebpf::POLICY_RATE_LIMIT | pxe_ebpf::POLICY_DENY_LIST
    );
    assert!(s.deny.contains(&[3; 6]));
    let mut f = Fallback::new(s, vec![]);
    assert_eq!(
        f.check_at(&discover([3; 6], Some(b"PXEClient")), 0),
        Verdict::DropDenied
    );
}
