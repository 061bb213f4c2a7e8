//! Parses arbitrary bytes as a TFTP datagram; whatever parses must re-emit to an equivalent
//! packet (a fixed point of parse . emit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_proto::tftp::{
    self as packet, MAX_BLKSIZE, MAX_FILENAME_LEN, MAX_OACK_LEN, MIN_BLKSIZE, Packet,
};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = packet::parse(data) else {
        return;
    };
    let mut buf = vec![0u8; data.len().max(MAX_OACK_LEN) + 8];
    match p {
        Packet::Request(r) => {
            assert!(!r.filename.is_empty() && r.filename.len() <= MAX_FILENAME_LEN);
            assert!(!r.filename.contains(&0));
            if let Some(b) = r.options.blksize {
                assert!((MIN_BLKSIZE..=MAX_BLKSIZE).contains(&b));
            }
            if let Some(t) = r.options.timeout {
                assert!(t >= 1);
            }
            if let Some(w) = r.options.windowsize {
                assert!(w >= 1);
            }
            let n = packet::emit_request(r.kind, r.filename, r.mode, &r.options, &mut buf)
                .expect("a parsed request fits a buffer of its own size");
            assert_eq!(packet::parse(&buf[..n]), Ok(Packet::Request(r)));
        }
        Packet::Data { block, payload } => {
            assert_eq!(&data[..4], &packet::data_header(block));
            let n = packet::emit_data(block, payload, &mut buf).expect("fits");
            assert_eq!(&buf[..n], data);
        }
        Packet::Ack { block } => {
            let n = packet::emit_ack(block, &mut buf);
            assert_eq!(&buf[..n], &data[..4]);
        }
        Packet::Error { code, message } => {
            assert!(!message.contains(&0));
            let n = packet::emit_error_bytes(code, message, &mut buf);
            assert_eq!(buf[n - 1], 0);
            assert_eq!(
                packet::parse(&buf[..n]),
                Ok(Packet::Error { code, message })
            );
            if let (Some(c), Ok(m)) = (
                packet::ErrorCode::from_u16(code),
                std::str::from_utf8(message),
            ) {
                // Truncating into a small buffer still yields a well-formed ERROR.
                let mut small = [0u8; 16];
                let n = packet::emit_error(c, m, &mut small);
                assert_eq!(small[n - 1], 0);
                match packet::parse(&small[..n]) {
                    Ok(Packet::Error {
                        code: c2,
                        message: m2,
                    }) => {
                        assert_eq!(c2, code);
                        assert!(message.starts_with(m2));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        Packet::Oack(o) => {
            let n = packet::emit_oack(&o, &mut buf);
            assert!(n <= MAX_OACK_LEN);
            assert_eq!(packet::parse(&buf[..n]), Ok(Packet::Oack(o)));
        }
    }
});
