//! A client machine UUID (DHCP option 97).

use std::fmt;
use std::str::FromStr;

/// A client machine UUID (option 97), held in the canonical RFC 4122 byte order, the order in
/// which `dmidecode`, the firmware setup screens and config files write it.
///
/// Byte order rule: on the wire (option 97, after its type byte 0) PXE and UEFI firmware, and
/// iPXE, send the UUID in the EFI GUID layout (RFC 4578 refers to it): the first three fields
/// (`time_low` u32, `time_mid` u16, `time_hi_and_version` u16) are little-endian, the last
/// 8 bytes are in order. [`ClientUuid::from_wire`] swaps those three fields, so that
/// `wire 33 22 11 00 55 44 77 66 88 99 aa bb cc dd ee ff` reads as
/// `00112233-4455-6677-8899-aabbccddeeff`; [`ClientUuid::to_wire`] is the inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct ClientUuid(pub [u8; 16]);

impl ClientUuid {
    fn swap(b: &[u8; 16]) -> [u8; 16] {
        let mut o = *b;
        o[0..4].reverse();
        o[4..6].reverse();
        o[6..8].reverse();
        o
    }

    /// From the 16 bytes that follow the type byte of option 97.
    pub fn from_wire(bytes: &[u8; 16]) -> Self {
        ClientUuid(Self::swap(bytes))
    }

    /// The 16 bytes as firmware sends them in option 97.
    pub fn to_wire(&self) -> [u8; 16] {
        Self::swap(&self.0)
    }
}

impl fmt::Display for ClientUuid {
    /// Lower-case canonical form, `00112233-4455-6677-8899-aabbccddeeff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for ClientUuid {
    type Err = String;
    /// The canonical form, any case; the hyphens are optional (32 hex digits).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a UUID (like 00112233-4455-6677-8899-aabbccddeeff)");
        let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        let hyphens: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
        if hex.len() != 32 || !(hyphens.is_empty() || hyphens == [8, 13, 18, 23]) {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).map_err(|_| bad())?;
            *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(ClientUuid(out))
    }
}

impl TryFrom<String> for ClientUuid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ClientUuid> for String {
    fn from(u: ClientUuid) -> String {
        u.to_string()
    }
}
