//! The wire side of network boot, with no I/O: the TFTP packet codec ([`tftp`]), the checked
//! decoder of DHCP requests ([`dhcp`]), the address types the configuration and the protocols
//! share ([`MacAddr`], [`ClientUuid`], [`Ipv4Cidr`]), URI percent-decoding ([`uri`]), and one
//! table of constants ([`consts`]):
//! ports, option codes, message types and client architecture codes.
//!
//! `consts` is `core`-only: with `default-features = false` the crate is `no_std` and holds only
//! that table, so the XDP program (`pxe-ebpf`) reads the same constants as the daemon.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod consts;

#[cfg(feature = "std")]
mod cidr;
#[cfg(feature = "std")]
pub mod dhcp;
#[cfg(feature = "std")]
mod mac;
#[cfg(feature = "std")]
pub mod tftp;
#[cfg(feature = "std")]
pub mod uri;
#[cfg(feature = "std")]
mod uuid;
#[cfg(feature = "vectors")]
pub mod vectors;

#[cfg(feature = "std")]
pub use cidr::Ipv4Cidr;
#[cfg(feature = "std")]
pub use mac::MacAddr;
#[cfg(feature = "std")]
pub use uuid::ClientUuid;
