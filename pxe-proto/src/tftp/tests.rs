use super::*;

fn rrq(rest: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(rest);
    v
}

#[test]
fn rfc1350_rrq_octet() {
    let p = parse(b"\x00\x01foo\x00octet\x00").unwrap();
    assert_eq!(
        p,
        Packet::Request(Request {
            kind: RequestKind::Read,
            filename: b"foo",
            mode: Mode::Octet,
            options: RequestOptions::default(),
        })
    );
}

#[test]
fn wrq_parses_as_write() {
    match parse(b"\x00\x02up.bin\x00octet\x00").unwrap() {
        Packet::Request(r) => {
            assert_eq!(r.kind, RequestKind::Write);
            assert_eq!(r.filename, b"up.bin");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mode_is_case_insensitive_and_mail_is_refused() {
    for m in [&b"NetASCII"[..], b"netascii", b"NETASCII"] {
        let mut v = rrq(b"f\0");
        v.extend_from_slice(m);
        v.push(0);
        match parse(&v).unwrap() {
            Packet::Request(r) => assert_eq!(r.mode, Mode::Netascii),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        parse(b"\x00\x01f\x00OcTeT\x00"),
        Ok(Packet::Request(Request {
            mode: Mode::Octet,
            ..
        }))
    ));
    assert_eq!(parse(b"\x00\x01f\x00mail\x00"), Err(ParseError::BadMode));
    assert_eq!(parse(b"\x00\x01f\x00\x00"), Err(ParseError::BadMode));
    assert_eq!(parse(b"\x00\x01f\x00octets\x00"), Err(ParseError::BadMode));
}

#[test]
fn rfc2347_options_example() {
    // RRQ "foobar" octet blksize 1428 tsize 0 (RFC 2347/2348/2349 layout).
    let p = parse(b"\x00\x01foobar\x00octet\x00blksize\x001428\x00tsize\x000\x00").unwrap();
    let Packet::Request(r) = p else {
        panic!("{p:?}")
    };
    assert_eq!(
        r.options,
        RequestOptions {
            blksize: Some(1428),
            tsize: Some(0),
            timeout: None,
            windowsize: None
        }
    );
    // OACK "blksize 1428 tsize 3200"
    let o = parse(b"\x00\x06blksize\x001428\x00tsize\x003200\x00").unwrap();
    assert_eq!(
        o,
        Packet::Oack(AcceptedOptions {
            blksize: Some(1428),
            tsize: Some(3200),
            ..Default::default()
        })
    );
}

#[test]
fn all_options_case_insensitive_unknown_ignored() {
    let p = parse(
        b"\x00\x01pxelinux.0\x00octet\x00BLKSIZE\x001468\x00Foo\x00bar\x00TSize\x000\x00\
          timeout\x005\x00WindowSize\x0064\x00multicast\x00\x00",
    )
    .unwrap();
    let Packet::Request(r) = p else {
        panic!("{p:?}")
    };
    assert_eq!(r.filename, b"pxelinux.0");
    assert_eq!(
        r.options,
        RequestOptions {
            blksize: Some(1468),
            tsize: Some(0),
            timeout: Some(5),
            windowsize: Some(64)
        }
    );
}

#[test]
fn option_ranges() {
    let opt = |name: &str, value: &[u8]| {
        let mut v = rrq(b"f\0octet\0");
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        v.extend_from_slice(value);
        v.push(0);
        parse(&v).map(|p| match p {
            Packet::Request(r) => r.options,
            other => panic!("{other:?}"),
        })
    };
    assert_eq!(opt("blksize", b"8").unwrap().blksize, Some(8));
    assert_eq!(opt("blksize", b"7"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("blksize", b"0"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("blksize", b"65464").unwrap().blksize, Some(65464));
    assert_eq!(opt("blksize", b"65465").unwrap().blksize, Some(65464));
    assert_eq!(
        opt("blksize", b"99999999999999999999999").unwrap().blksize,
        Some(65464)
    );
    assert_eq!(opt("blksize", b""), Err(ParseError::BadOptionValue));
    assert_eq!(opt("blksize", b"12a"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("blksize", b"-512"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("blksize", b" 512"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("timeout", b"1").unwrap().timeout, Some(1));
    assert_eq!(opt("timeout", b"255").unwrap().timeout, Some(255));
    assert_eq!(opt("timeout", b"0"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("timeout", b"256"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("tsize", b"0").unwrap().tsize, Some(0));
    assert_eq!(
        opt("tsize", b"18446744073709551615").unwrap().tsize,
        Some(u64::MAX)
    );
    assert_eq!(
        opt("tsize", b"18446744073709551616"),
        Err(ParseError::BadOptionValue)
    );
    assert_eq!(opt("windowsize", b"1").unwrap().windowsize, Some(1));
    assert_eq!(opt("windowsize", b"65535").unwrap().windowsize, Some(65535));
    assert_eq!(opt("windowsize", b"0"), Err(ParseError::BadOptionValue));
    assert_eq!(opt("windowsize", b"65536"), Err(ParseError::BadOptionValue));
    // Leading zeros are just digits.
    assert_eq!(opt("blksize", b"0001468").unwrap().blksize, Some(1468));
    // Unknown options: any value, even empty.
    assert_eq!(opt("x-foo", b"").unwrap(), RequestOptions::default());
}

#[test]
fn huge_numbers_are_fast_and_safe() {
    let digits = vec![b'9'; 10_000];
    let mut v = rrq(b"f\0octet\0tsize\0");
    v.extend_from_slice(&digits);
    v.push(0);
    assert_eq!(parse(&v), Err(ParseError::BadOptionValue));
    let mut v = rrq(b"f\0octet\0blksize\0");
    v.extend_from_slice(&digits);
    v.push(0);
    assert!(matches!(
        parse(&v),
        Ok(Packet::Request(Request {
            options: RequestOptions {
                blksize: Some(MAX_BLKSIZE),
                ..
            },
            ..
        }))
    ));
}

#[test]
fn duplicate_options() {
    assert_eq!(
        parse(b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x001024\x00"),
        Err(ParseError::DuplicateOption)
    );
    assert_eq!(
        parse(b"\x00\x06tsize\x001\x00tsize\x001\x00"),
        Err(ParseError::DuplicateOption)
    );
    // Unknown options may repeat.
    assert!(parse(b"\x00\x01f\x00octet\x00foo\x001\x00foo\x002\x00").is_ok());
}

#[test]
fn malformed_requests() {
    assert_eq!(parse(b""), Err(ParseError::Truncated));
    assert_eq!(parse(b"\x00"), Err(ParseError::Truncated));
    assert_eq!(parse(b"\x00\x01"), Err(ParseError::Truncated));
    assert_eq!(parse(b"\x00\x01foo"), Err(ParseError::MissingNul));
    assert_eq!(parse(b"\x00\x01foo\x00octet"), Err(ParseError::MissingNul));
    assert_eq!(parse(b"\x00\x01foo\x00"), Err(ParseError::MissingNul));
    assert_eq!(
        parse(b"\x00\x01\x00octet\x00"),
        Err(ParseError::EmptyFilename)
    );
    // Option name without value.
    assert_eq!(
        parse(b"\x00\x01f\x00octet\x00blksize\x00"),
        Err(ParseError::MissingNul)
    );
    assert_eq!(
        parse(b"\x00\x01f\x00octet\x00blksize"),
        Err(ParseError::MissingNul)
    );
    assert_eq!(
        parse(b"\x00\x01f\x00octet\x00blksize\x00512"),
        Err(ParseError::MissingNul)
    );
    // NUL padding after the options is tolerated; other data after an empty name is not.
    assert!(parse(b"\x00\x01f\x00octet\x00blksize\x00512\x00\x00\x00\x00").is_ok());
    assert_eq!(
        parse(b"\x00\x01f\x00octet\x00\x00junk\x00"),
        Err(ParseError::BadOptionValue)
    );
}

#[test]
fn filename_length_limit() {
    let mut v = rrq(&[b'a'; MAX_FILENAME_LEN]);
    v.extend_from_slice(b"\0octet\0");
    assert!(parse(&v).is_ok());
    let mut v = rrq(&[b'a'; MAX_FILENAME_LEN + 1]);
    v.extend_from_slice(b"\0octet\0");
    assert_eq!(parse(&v), Err(ParseError::FilenameTooLong));
}

#[test]
fn data_ack_error_vectors() {
    assert_eq!(
        parse(b"\x00\x03\x00\x01hello").unwrap(),
        Packet::Data {
            block: 1,
            payload: b"hello"
        }
    );
    assert_eq!(
        parse(b"\x00\x03\xff\xff").unwrap(),
        Packet::Data {
            block: 65535,
            payload: b""
        }
    );
    assert_eq!(parse(b"\x00\x03\x00"), Err(ParseError::Truncated));
    assert_eq!(
        parse(b"\x00\x04\x12\x34").unwrap(),
        Packet::Ack { block: 0x1234 }
    );
    assert_eq!(parse(b"\x00\x04\x00"), Err(ParseError::Truncated));
    assert_eq!(
        parse(b"\x00\x05\x00\x01File not found\x00").unwrap(),
        Packet::Error {
            code: 1,
            message: b"File not found"
        }
    );
    // Lenient: ERROR without NUL, or with no message at all.
    assert_eq!(
        parse(b"\x00\x05\x00\x08abc").unwrap(),
        Packet::Error {
            code: 8,
            message: b"abc"
        }
    );
    assert_eq!(
        parse(b"\x00\x05\x00\x00").unwrap(),
        Packet::Error {
            code: 0,
            message: b""
        }
    );
    assert_eq!(parse(b"\x00\x05\x00"), Err(ParseError::Truncated));
    assert_eq!(
        parse(b"\x00\x07\x00\x00"),
        Err(ParseError::UnknownOpcode(7))
    );
    assert_eq!(parse(b"\x00\x00"), Err(ParseError::UnknownOpcode(0)));
    assert_eq!(parse(b"\xff\xff"), Err(ParseError::UnknownOpcode(0xffff)));
}

#[test]
fn emit_vectors() {
    assert_eq!(data_header(1), [0, 3, 0, 1]);
    assert_eq!(data_header(0xabcd), [0, 3, 0xab, 0xcd]);
    let mut buf = [0u8; 512];
    assert_eq!(emit_ack(0x0102, &mut buf), 4);
    assert_eq!(&buf[..4], b"\x00\x04\x01\x02");
    let n = emit_error(ErrorCode::FileNotFound, "File not found", &mut buf);
    assert_eq!(&buf[..n], b"\x00\x05\x00\x01File not found\x00");
    let n = emit_oack(
        &AcceptedOptions {
            blksize: Some(1468),
            tsize: Some(123456),
            timeout: Some(3),
            windowsize: Some(4),
        },
        &mut buf,
    );
    assert_eq!(
        &buf[..n],
        b"\x00\x06blksize\x001468\x00tsize\x00123456\x00timeout\x003\x00windowsize\x004\x00"
    );
    let n = emit_oack(
        &AcceptedOptions {
            tsize: Some(0),
            ..Default::default()
        },
        &mut buf,
    );
    assert_eq!(&buf[..n], b"\x00\x06tsize\x000\x00");
    let n = emit_request(
        RequestKind::Read,
        b"boot/x",
        Mode::Netascii,
        &RequestOptions {
            windowsize: Some(16),
            ..Default::default()
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        &buf[..n],
        b"\x00\x01boot/x\x00netascii\x00windowsize\x0016\x00"
    );
    let n = emit_data(7, b"xyz", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x00\x03\x00\x07xyz");
    assert_eq!(emit_data(7, &[0; 600], &mut buf), None);
}

#[test]
fn oack_max_len_is_exact() {
    let mut buf = [0u8; MAX_OACK_LEN];
    let all = AcceptedOptions {
        blksize: Some(MAX_BLKSIZE),
        tsize: Some(u64::MAX),
        timeout: Some(255),
        windowsize: Some(65535),
    };
    assert_eq!(emit_oack(&all, &mut buf), MAX_OACK_LEN);
    assert_eq!(parse(&buf).unwrap(), Packet::Oack(all));
}

#[test]
fn emit_error_truncates_and_terminates() {
    let mut small = [0xffu8; 10];
    let n = emit_error(ErrorCode::AccessViolation, "Access violation", &mut small);
    assert_eq!(n, 10);
    assert_eq!(&small[..], b"\x00\x05\x00\x02Acces\x00");
    let mut tiny = [0xffu8; 5];
    assert_eq!(emit_error(ErrorCode::NotDefined, "x", &mut tiny), 5);
    assert_eq!(&tiny, b"\x00\x05\x00\x00\x00");
    // Truncation respects UTF-8 boundaries ("é" is 2 bytes).
    let mut buf = [0u8; 7];
    let n = emit_error(ErrorCode::NotDefined, "aéb", &mut buf);
    assert_eq!(&buf[..n], b"\x00\x05\x00\x00a\x00");
    // Embedded NUL ends the message.
    let mut buf = [0u8; 64];
    let n = emit_error_bytes(4, b"ab\0cd", &mut buf);
    assert_eq!(&buf[..n], b"\x00\x05\x00\x04ab\x00");
}

#[test]
fn emit_request_limits() {
    let mut buf = [0u8; 16];
    let o = RequestOptions::default();
    assert_eq!(
        emit_request(RequestKind::Read, b"a\0b", Mode::Octet, &o, &mut buf),
        None
    );
    assert_eq!(
        emit_request(RequestKind::Read, &[b'a'; 20], Mode::Octet, &o, &mut buf),
        None
    );
}

#[test]
fn request_roundtrip() {
    let opts = RequestOptions {
        blksize: Some(8),
        tsize: Some(u64::MAX),
        timeout: Some(255),
        windowsize: Some(1),
    };
    let mut buf = [0u8; 512];
    for kind in [RequestKind::Read, RequestKind::Write] {
        for mode in [Mode::Octet, Mode::Netascii] {
            let n = emit_request(kind, b"a/b\\c", mode, &opts, &mut buf).unwrap();
            assert_eq!(
                parse(&buf[..n]).unwrap(),
                Packet::Request(Request {
                    kind,
                    filename: b"a/b\\c",
                    mode,
                    options: opts
                })
            );
        }
    }
}

#[test]
fn error_codes_roundtrip() {
    for c in 0..=8u16 {
        let code = ErrorCode::from_u16(c).unwrap();
        assert_eq!(code as u16, c);
        assert!(!code.default_message().is_empty());
    }
    assert_eq!(ErrorCode::from_u16(9), None);
}
