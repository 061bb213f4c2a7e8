//! Test vectors written byte by byte, independent of the codecs they test (feature `vectors`,
//! for the tests of the crates that use this one).

/// A hand-written BIOS PXE DISCOVER, byte by byte (no encoder involved).
pub fn raw_bios_discover() -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // op BOOTREQUEST
    p[1] = 1; // htype Ethernet
    p[2] = 6; // hlen
    p[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
    p[10] = 0x80; // broadcast flag
    p[28..34].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 1]); // DISCOVER
    p.extend_from_slice(&[57, 2, 0x04, 0xec]); // max size 1260
    p.extend_from_slice(&[93, 2, 0, 0]); // arch 0 BIOS
    p.extend_from_slice(&[94, 3, 1, 2, 1]); // UNDI 2.1
    p.extend_from_slice(&[97, 17, 0]);
    p.extend_from_slice(&[
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ]);
    p.extend_from_slice(&[60, 32]);
    p.extend_from_slice(b"PXEClient:Arch:00000:UNDI:002001");
    p.extend_from_slice(&[55, 4, 1, 3, 43, 60]);
    p.push(255);
    p
}
