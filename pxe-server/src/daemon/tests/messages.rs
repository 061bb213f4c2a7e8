//! The typed messages against the text and JSON the untyped code put on the wire.

use super::super::messages::*;
use crate::hosts::NextBoot;
use crate::nextboot::HostAction;

#[test]
fn requests_round_trip_as_lines() {
    let cases = [
        (Request::Status, "status"),
        (
            Request::Host {
                action: HostAction::Reinstall,
                selector: "rack1-*,52-54-00-00-09-10".to_owned(),
            },
            "host reinstall rack1-*,52-54-00-00-09-10",
        ),
        (
            Request::Host {
                action: HostAction::Show,
                selector: "all".to_owned(),
            },
            "host show all",
        ),
        (
            Request::Host {
                action: HostAction::Local,
                selector: "n1, n2".to_owned(),
            },
            "host local n1, n2",
        ),
        (
            Request::Hosts {
                query: String::new(),
            },
            "hosts",
        ),
        (
            Request::Hosts {
                query: "phase=kernel&stuck=1".to_owned(),
            },
            "hosts phase=kernel&stuck=1",
        ),
    ];
    for (request, line) in cases {
        assert_eq!(request.to_string(), line);
        assert_eq!(Request::parse(line), Ok(request), "{line}");
    }
}

#[test]
fn unknown_requests_are_refused_with_the_old_reasons() {
    for line in ["", "status now", "host show", "hosts show all", "STATUS"] {
        let e = Request::parse(line).unwrap_err();
        assert_eq!(e, RequestError::Unknown(line.to_owned()));
        assert_eq!(e.to_string(), format!("unknown request {line:?}"));
    }
    assert_eq!(
        Request::parse("host wipe all").unwrap_err().to_string(),
        "unknown host action \"wipe\" (reinstall, local, show)"
    );
}

#[test]
fn host_answers_keep_the_old_json() {
    let done = HostAnswer::done(
        2,
        vec![
            HostRow {
                name: "n1".to_owned(),
                key: Some("mac:52:54:00:00:00:01".to_owned()),
                next_boot: NextBoot::Install,
                changed_unix: Some(7),
                token: None,
            },
            HostRow {
                name: "(unnamed)".to_owned(),
                key: None,
                next_boot: NextBoot::Local,
                changed_unix: None,
                token: None,
            },
        ],
    );
    let text = r#"{"ok":true,"changed":2,"hosts":[{"name":"n1","key":"mac:52:54:00:00:00:01","next_boot":"install","changed_unix":7},{"name":"(unnamed)","key":null,"next_boot":"local","changed_unix":null}]}"#;
    assert_eq!(serde_json::to_string(&done).unwrap(), text);
    assert_eq!(serde_json::from_str::<HostAnswer>(text).unwrap(), done);
    // Nothing selected is still a list.
    assert_eq!(
        serde_json::to_string(&HostAnswer::done(0, Vec::new())).unwrap(),
        r#"{"ok":true,"changed":0,"hosts":[]}"#
    );

    let refused = HostAnswer::refused("no [[hosts]] entry matches \"n9\"");
    let text = r#"{"ok":false,"error":"no [[hosts]] entry matches \"n9\""}"#;
    assert_eq!(serde_json::to_string(&refused).unwrap(), text);
    assert_eq!(serde_json::from_str::<HostAnswer>(text).unwrap(), refused);
}

/// A request refused before it reached the host command reads as a refused host answer.
#[test]
fn error_answers_keep_the_old_json() {
    let e = ErrorAnswer::new("unknown request \"x\"");
    let text = r#"{"ok":false,"error":"unknown request \"x\""}"#;
    assert_eq!(serde_json::to_string(&e).unwrap(), text);
    assert_eq!(
        serde_json::to_string(&Answer::Error(e.clone())).unwrap(),
        text
    );
    assert_eq!(
        serde_json::from_str::<HostAnswer>(text).unwrap(),
        HostAnswer::from(e)
    );
}

#[test]
fn reload_records_keep_the_old_json() {
    let ok = LastReload {
        at_unix: 1_700_000_000,
        ok: true,
        error: None,
        needs_restart: vec!["tftp", "dhcp.interfaces"],
    };
    assert_eq!(
        serde_json::to_string(&ok).unwrap(),
        r#"{"at_unix":1700000000,"ok":true,"error":null,"needs_restart":["tftp","dhcp.interfaces"]}"#
    );
    let refused = ReloadStatus {
        count: 2,
        last: Some(LastReload {
            at_unix: 5,
            ok: false,
            error: Some("pxe.toml:2: xdp.rate_per_sec: invalid type".to_owned()),
            needs_restart: Vec::new(),
        }),
    };
    assert_eq!(
        serde_json::to_string(&refused).unwrap(),
        r#"{"count":2,"last":{"at_unix":5,"ok":false,"error":"pxe.toml:2: xdp.rate_per_sec: invalid type","needs_restart":[]}}"#
    );
    let never = ReloadStatus {
        count: 0,
        last: None,
    };
    assert_eq!(
        serde_json::to_string(&never).unwrap(),
        r#"{"count":0,"last":null}"#
    );
}

#[test]
fn filter_counters_are_an_object_in_counter_order() {
    let c = FilterCounters([6, 5, 4, 3, 2, 1]);
    let want = r#"{"seen":6,"passed":5,"dropped_not_pxe":4,"dropped_rate":3,"dropped_denied":2,"malformed":1}"#;
    assert_eq!(serde_json::to_string(&c).unwrap(), want);
    assert_eq!(serde_json::to_string(&XdpCounters::Read(c)).unwrap(), want);
    assert_eq!(
        serde_json::to_string(&XdpCounters::Unreadable {
            error: "map gone".to_owned()
        })
        .unwrap(),
        r#"{"error":"map gone"}"#
    );
}
