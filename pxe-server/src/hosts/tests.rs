use super::testing::{UUID, host, hosts};
use super::*;

#[test]
fn selectors() {
    let h = hosts();
    assert_eq!(select::select(&h, "all").unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(select::select(&h, "rack1-*").unwrap(), vec![0, 1]);
    assert_eq!(select::select(&h, "*-n01").unwrap(), vec![0, 2]);
    assert_eq!(select::select(&h, "rack?-n0?").unwrap(), vec![0, 1, 2]);
    assert_eq!(select::select(&h, "52-54-00-00-00-04").unwrap(), vec![3]);
    assert_eq!(
        select::select(&h, "52:54:00:00:00:02, rack1-n02").unwrap(),
        vec![1]
    );
    assert_eq!(select::select(&h, &UUID.to_uppercase()).unwrap(), vec![2]);
    assert_eq!(
        select::select(&h, "rack1-n01,rack9-*"),
        Err(SelectError::NoMatch("rack9-*".into()))
    );
    assert_eq!(select::select(&h, " "), Err(SelectError::Empty));
    assert_eq!(select::select(&h, "a,,b"), Err(SelectError::Empty));
    assert!(select::glob("*", ""));
    assert!(select::glob("a*b*c", "aXXbYYc"));
    assert!(!select::glob("a*b*c", "aXXbYY"));
    assert!(!select::glob("n?", "n"));
}

#[test]
fn index_finds_by_mac_then_uuid_address_and_key() {
    let mut h = hosts();
    h[1].address = Some(Ipv4Addr::new(10, 0, 0, 7));
    // A later entry with the same MAC (the config refuses it) never shadows the first.
    h.push(host(Some("52:54:00:00:00:01"), None, Some("dup")));
    let index = HostIndex::new(h);
    let mac = |s: &str| s.parse::<MacAddr>().unwrap();
    let uuid: ClientUuid = UUID.parse().unwrap();
    assert_eq!(index.find(Some(&mac("52:54:00:00:00:01")), None), Some(0));
    assert_eq!(
        index.find(Some(&mac("52:54:00:00:00:04")), Some(&uuid)),
        Some(3)
    );
    // An unknown MAC falls back to the UUID.
    assert_eq!(
        index.find(Some(&mac("52:54:00:00:00:99")), Some(&uuid)),
        Some(2)
    );
    assert_eq!(index.find(Some(&mac("52:54:00:00:00:99")), None), None);
    assert_eq!(index.find(None, None), None);
    assert_eq!(index.reserved(Ipv4Addr::new(10, 0, 0, 7)), Some(1));
    assert_eq!(index.reserved(Ipv4Addr::new(10, 0, 0, 8)), None);
    assert_eq!(index.by_key("mac:52:54:00:00:00:02"), Some(1));
    assert_eq!(index.by_key("52-54-00-00-00-02"), Some(1));
    assert_eq!(index.by_key(&format!("uuid:{UUID}")), Some(2));
    assert_eq!(index.by_key(&UUID.to_uppercase()), Some(2));
    assert_eq!(index.by_key("mac:52:54:00:00:00:99"), None);
    assert_eq!(index.by_key("node01"), None);
    assert_eq!(
        index.get(2).key().as_deref(),
        Some(&*format!("uuid:{UUID}"))
    );
    assert_eq!(index.get(3).label(), "mac:52:54:00:00:00:04");
    assert_eq!(index.get(0).label(), "rack1-n01");
    assert_eq!(index.select("rack2-*").unwrap(), vec![2]);
    assert_eq!(index.len(), 5);
}
