//! Socket addresses in the kernel's layouts (`sockaddr_in`, `sockaddr_in6`,
//! `sockaddr_storage`), for the message headers built by hand here and in the io_uring engine.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `addr` as a `sockaddr_in`.
pub fn v4_to_c(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// The IPv4 address the kernel wrote into `sin` (`len`: the `msg_namelen` it reported), if it
/// is one.
pub fn v4_from_c(sin: &libc::sockaddr_in, len: libc::socklen_t) -> Option<SocketAddrV4> {
    if (len as usize) < size_of::<libc::sockaddr_in>()
        || sin.sin_family != libc::AF_INET as libc::sa_family_t
    {
        return None;
    }
    Some(SocketAddrV4::new(
        Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(sin.sin_port),
    ))
}

/// An all-zero `sockaddr_in` (the unspecified address, family 0).
pub fn zeroed_v4() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: 0,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    }
}

/// Writes `addr` into `storage` and returns the length to pass as `msg_namelen`.
pub fn to_storage(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = v4_to_c(a);
            // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for it.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and aligned for it.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads an IPv4 or IPv6 address the kernel wrote into `storage` (`len`: the length it
/// reported).
pub fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            v4_from_c(sin, len as libc::socklen_t).map(SocketAddr::V4)
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An all-zero `sockaddr_storage` (family 0: no address).
pub fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct of integers, valid for all-zero bytes.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (From the io_uring engine.)
    #[test]
    fn sockaddr_round_trip() {
        for addr in [
            "10.1.2.3:69".parse::<SocketAddr>().unwrap(),
            "[fe80::1%3]:4011".parse().unwrap(),
        ] {
            let mut st = zeroed_storage();
            let len = to_storage(addr, &mut st);
            assert_eq!(from_storage(&st, len), Some(addr));
            assert_eq!(from_storage(&st, 2), None);
        }
    }

    /// (From the portable engine, whose receives now come through here.)
    #[test]
    fn socket_addresses_convert_both_families() {
        let v4: SocketAddr = "10.77.1.2:4000".parse().unwrap();
        let v6: SocketAddr = "[fe80::1]:69".parse().unwrap();
        for a in [v4, v6] {
            let mut st = zeroed_storage();
            let len = to_storage(a, &mut st);
            assert_eq!(from_storage(&st, len), Some(a));
        }
    }

    #[test]
    fn v4_layout_is_network_order() {
        let a: SocketAddrV4 = "192.0.2.7:68".parse().unwrap();
        let sin = v4_to_c(a);
        assert_eq!(sin.sin_port, 68u16.to_be());
        assert_eq!(sin.sin_addr.s_addr, u32::from(*a.ip()).to_be());
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(v4_from_c(&sin, len), Some(a));
        assert_eq!(v4_from_c(&sin, len - 1), None, "short name");
        assert_eq!(v4_from_c(&zeroed_v4(), len), None, "family 0");
    }
}
