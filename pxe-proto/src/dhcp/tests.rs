use super::*;
use crate::vectors::raw_bios_discover;

#[test]
fn decodes_a_hand_written_bios_discover() {
    let p = raw_bios_discover();
    let r = decode(&p).unwrap();
    assert_eq!(r.msg_type, MessageType::Discover);
    assert_eq!(r.xid, 0xdeadbeef);
    assert!(r.broadcast());
    assert_eq!(r.chaddr.to_string(), "52:54:00:12:34:56");
    assert_eq!(r.client_arch, Some(0));
    assert_eq!(r.arch(), 0);
    assert_eq!(r.max_message_size, Some(1260));
    assert!(r.is_pxe() && !r.is_http() && !r.is_ipxe());
    assert_eq!(
        r.client_uuid.unwrap().to_string(),
        "00112233-4455-6677-8899-aabbccddeeff"
    );
    assert_eq!(r.parameter_list, &[1, 3, 43, 60]);
    assert_eq!(
        (r.requested_ip, r.server_id, r.lease_time),
        (None, None, None)
    );
    assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn uuid_byte_order_and_parsing() {
    let u: ClientUuid = "00112233-4455-6677-8899-AABBCCDDEEFF".parse().unwrap();
    assert_eq!(u, "00112233445566778899aabbccddeeff".parse().unwrap());
    assert_eq!(
        u.to_wire(),
        [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff
        ]
    );
    assert_eq!(ClientUuid::from_wire(&u.to_wire()), u);
    for bad in [
        "",
        "0011223344556677",
        "00112233-4455-6677-8899-aabbccddeefg",
        "0011-2233-4455-6677-8899aabbccddeeff",
    ] {
        assert!(bad.parse::<ClientUuid>().is_err(), "{bad}");
    }
    assert_eq!(
        "52-54-00-AB-cd-EF".parse::<MacAddr>().unwrap().to_string(),
        "52:54:00:ab:cd:ef"
    );
    for bad in [
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "5:54:00:ab:cd:ef",
        "zz:54:00:ab:cd:ef",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
}

#[test]
fn truncation_at_every_offset_is_refused_without_panic() {
    let p = raw_bios_discover();
    for n in 0..p.len() {
        let r = decode(&p[..n]);
        if n < BOOTP_OPTIONS_OFF {
            assert_eq!(r, Err(DecodeError::Truncated(n)));
        } else {
            // Cut inside an option: refused; cut at an option boundary before 53: missing.
            assert!(
                matches!(
                    r,
                    Err(DecodeError::OptionOverrun { .. } | DecodeError::MissingMessageType)
                ) || r.is_ok(),
                "{n}: {r:?}"
            );
        }
    }
    // A cut inside the first option is an overrun.
    assert_eq!(
        decode(&p[..242]),
        Err(DecodeError::OptionOverrun {
            code: 53,
            offset: 240
        })
    );
    // Without the End option, ending at a boundary is accepted.
    assert!(decode(&p[..p.len() - 1]).is_ok());
}

#[test]
fn header_checks() {
    let good = raw_bios_discover();
    let with = |i: usize, v: u8| {
        let mut p = good.clone();
        p[i] = v;
        decode(&p).map(|_| ())
    };
    assert_eq!(with(0, 2), Err(DecodeError::NotBootRequest(2)));
    assert_eq!(with(1, 6), Err(DecodeError::UnsupportedHtype(6)));
    assert_eq!(with(2, 17), Err(DecodeError::BadHlen(17)));
    assert_eq!(with(2, 255), Err(DecodeError::BadHlen(255)));
    assert_eq!(with(2, 16), Err(DecodeError::BadHlen(16)));
    assert_eq!(with(236, 0), Err(DecodeError::BadMagic));
    assert_eq!(with(242, 9), Err(DecodeError::UnknownMessageType(9)));
    // 53 -> 56 (message, ignored): no message type left.
    assert_eq!(with(240, 56), Err(DecodeError::MissingMessageType));
}

fn with_options(opts: &[u8]) -> Result<ClientRequest<'static>, DecodeError> {
    let mut p = raw_bios_discover();
    p.truncate(240);
    p.extend_from_slice(opts);
    decode(Box::leak(p.into_boxed_slice()))
}

#[test]
fn option_checks() {
    assert_eq!(
        with_options(&[53, 1, 1, 60, 40, b'P']),
        Err(DecodeError::OptionOverrun {
            code: 60,
            offset: 243
        })
    );
    assert_eq!(
        with_options(&[53, 1, 1, 12]),
        Err(DecodeError::OptionOverrun {
            code: 12,
            offset: 243
        })
    );
    assert_eq!(
        with_options(&[53, 2, 1, 1, 255]),
        Err(DecodeError::BadOptionLength { code: 53, len: 2 })
    );
    assert_eq!(
        with_options(&[53, 1, 3, 50, 3, 1, 2, 3, 255]),
        Err(DecodeError::BadOptionLength { code: 50, len: 3 })
    );
    assert_eq!(
        with_options(&[53, 1, 1, 93, 1, 0, 255]),
        Err(DecodeError::BadOptionLength { code: 93, len: 1 })
    );
    assert_eq!(
        with_options(&[53, 1, 1, 52, 1, 4, 255]),
        Err(DecodeError::BadOverload(4))
    );
    // Absurd lease time: clamped and flagged.
    let r = with_options(&[53, 1, 3, 51, 4, 0xff, 0xff, 0xff, 0xff, 255]).unwrap();
    assert_eq!(r.lease_time, Some(MAX_REQUESTED_LEASE_SECS));
    assert!(r.lease_time_clamped);
    let r = with_options(&[53, 1, 3, 51, 4, 0, 0, 0x0e, 0x10, 255]).unwrap();
    assert_eq!((r.lease_time, r.lease_time_clamped), (Some(3600), false));
    // Pads, duplicates (first wins), options after End are ignored.
    let r = with_options(&[0, 0, 53, 1, 3, 53, 1, 1, 255, 60, 200]).unwrap();
    assert_eq!(r.msg_type, MessageType::Request);
    // Client identifier (61): raw, type octet included; absent → None.
    let r = with_options(&[53, 1, 1, 61, 7, 1, 2, 0, 0, 0, 0, 9, 255]).unwrap();
    assert_eq!(r.client_id, Some(&[1, 2, 0, 0, 0, 0, 9][..]));
    assert_eq!(with_options(&[53, 1, 1, 255]).unwrap().client_id, None);
    // A UUID of another type is ignored.
    let mut o = vec![53, 1, 1, 97, 17, 1];
    o.extend_from_slice(&[7; 16]);
    assert_eq!(with_options(&o).unwrap().client_uuid, None);
    // iPXE detection: raw, RFC 3004, option 175.
    assert!(
        with_options(&[53, 1, 1, 77, 4, b'i', b'P', b'X', b'E'])
            .unwrap()
            .is_ipxe()
    );
    assert!(
        with_options(&[53, 1, 1, 77, 8, 2, b'x', b'y', 4, b'i', b'P', b'X', b'E'])
            .unwrap()
            .is_ipxe()
    );
    assert!(
        !with_options(&[53, 1, 1, 77, 3, 9, b'i', b'P'])
            .unwrap()
            .is_ipxe()
    );
    assert!(
        with_options(&[53, 1, 1, 175, 3, 1, 1, 1])
            .unwrap()
            .is_ipxe()
    );
    // Arch from the vendor class when option 93 is missing.
    let mut o = vec![53, 1, 1, 60, 32];
    o.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003016");
    assert_eq!(with_options(&o).unwrap().arch(), 7);
}

#[test]
fn option_overload_is_followed() {
    let mut p = raw_bios_discover();
    p.truncate(240);
    // Main area: overload = 3 (file and sname), the message type lives in sname,
    // the vendor class in file.
    p.extend_from_slice(&[52, 1, 3, 255]);
    p[108..113].copy_from_slice(&[60, 3, b'P', b'X', b'E']);
    p[113] = 255;
    p[44..47].copy_from_slice(&[53, 1, 1]);
    p[47] = 255;
    let r = decode(&p).unwrap();
    assert_eq!(r.overload, 3);
    assert_eq!(r.msg_type, MessageType::Discover);
    assert_eq!(r.vendor_class, Some(&b"PXE"[..]));
    // An overrun inside the file area is refused with its offset.
    p[109] = 200;
    assert_eq!(
        decode(&p),
        Err(DecodeError::OptionOverrun {
            code: 60,
            offset: 108
        })
    );
}
