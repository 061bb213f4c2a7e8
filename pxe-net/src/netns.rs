//! Network namespaces.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Moves the calling thread into network namespace `name`: a name made by `ip netns add`
/// (`/var/run/netns/NAME`) or a path to a namespace file. Only this thread changes namespace;
/// sockets it creates afterwards live there, whichever thread uses them later.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let path = if name.contains('/') {
        name.to_string()
    } else {
        format!("/var/run/netns/{name}")
    };
    let ns =
        File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("setns {path}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_our_own_namespace_or_a_missing_one() {
        let e = enter_netns("pxe-net-no-such-namespace").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("open /var/run/netns/pxe-net-no-such-namespace: "),
            "{e}"
        );
        // Our own namespace, on a thread of its own: allowed for root, EPERM otherwise.
        let r = std::thread::spawn(|| enter_netns("/proc/self/ns/net"))
            .join()
            .unwrap();
        if rustix::process::geteuid().is_root() {
            r.unwrap();
        } else {
            assert!(
                r.unwrap_err()
                    .to_string()
                    .starts_with("setns /proc/self/ns/net: ")
            );
        }
    }
}
