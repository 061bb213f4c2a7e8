//! The open-file limit: the daemon holds one socket per TFTP transfer and the simulator one per
//! simulated transfer, so both raise the soft `RLIMIT_NOFILE` to the hard one at start and size
//! themselves by what they got.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// `RLIMIT_NOFILE`: the soft and hard open-file limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The open-file limits in force.
pub fn fd_limit() -> FdLimit {
    let l = getrlimit(Resource::Nofile);
    FdLimit {
        soft: l.current,
        hard: l.maximum,
    }
}

/// Raises the soft open-file limit to the hard one if it is lower; returns the limits now in
/// force, or why the raise was refused (the limits are then still [`fd_limit`]'s).
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let l = fd_limit();
    if l.soft == l.hard {
        return Ok(l);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.hard,
            maximum: l.hard,
        },
    )?;
    Ok(FdLimit {
        soft: l.hard,
        hard: l.hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let raised = raise_fd_limit().unwrap();
        assert_eq!(raised.soft, raised.hard);
        assert_eq!(fd_limit(), raised);
        assert_eq!(
            raise_fd_limit().unwrap(),
            raised,
            "a second raise changes nothing"
        );
    }
}
