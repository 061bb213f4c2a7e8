//! Least privilege: once the daemon has bound its ports, attached XDP and opened the database,
//! it gives up what it no longer needs, before any service thread starts:
//!
//! - started as root, it switches to `[server] user` (its primary group, no supplementary
//!   groups);
//! - it keeps no capability: every set (effective, permitted, inheritable, ambient, and the
//!   bounding set where it may) is emptied, so a compromised service cannot bind another port,
//!   reattach XDP or read a root-only file. What a running server still does (TFTP transfer
//!   sockets on ephemeral ports, accepting HTTP connections, updating the XDP maps through
//!   the descriptors it holds, writing the lease database it opened, detaching its XDP links
//!   by closing them) needs none;
//! - no-new-privileges: no exec can regain a privilege;
//! - a seccomp allow-list of the system calls the daemon makes ([`ALLOWED`]); in `enforce`
//!   mode any other call kills the process and the kernel logs the call's number (`journalctl
//!   -k`, `type=1326 ... syscall=N`); `log` allows it and logs it, to find a missing entry.
//!
//! The crates: `nix` for the account look-up and the uid/gid switch (glibc's calls, which
//! apply to every thread), `caps` for the capability sets, `seccompiler` (Firecracker's) to
//! build and install the filter. None needs unsafe code here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `[server] seccomp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// A call outside the allow-list kills the process.
    Enforce,
    /// A call outside the allow-list is allowed and logged by the kernel.
    Log,
    /// No filter (no-new-privileges is still set).
    Off,
}

impl fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeccompMode::Enforce => "enforce",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        })
    }
}

/// What [`drop_privileges`] applies (from `[server]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegeSettings {
    pub user: String,
    pub seccomp: SeccompMode,
    /// Directories the daemon created at start that the service account must own (the
    /// control socket's, so that it removes the socket at exit).
    pub hand_over: Vec<std::path::PathBuf>,
}

/// Why the daemon could not give up its privileges; it does not serve then.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "no account {user:?} on this machine: create it (useradd --system --no-create-home \
         --shell /usr/sbin/nologin {user}; scripts/install-deps.sh creates the default \
         pxe-server), or name another one"
    )]
    NoSuchUser { user: String },
    #[error("looking up account {user:?}: {source}")]
    Lookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("{threads} threads run already: privileges are dropped before any thread starts")]
    Threads { threads: usize },
    #[error("switching to {user} (uid {uid}, gid {gid}): {what}: {source}")]
    Switch {
        user: String,
        uid: u32,
        gid: u32,
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("handing {} over to {user}: {source}", path.display())]
    HandOver {
        path: std::path::PathBuf,
        user: String,
        #[source]
        source: std::io::Error,
    },
    #[error("clearing the {set} capability set: {source}")]
    Caps {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("capabilities remain after the drop: {0}")]
    CapsRemain(String),
    #[error("setting no-new-privileges: {0}")]
    NoNewPrivs(#[source] nix::Error),
    #[error("building the seccomp filter: {0}")]
    SeccompBuild(String),
    #[error("installing the seccomp filter: {0}")]
    SeccompApply(#[source] seccompiler::Error),
}

/// What the process runs as after [`drop_privileges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The account switched to; `None` when the daemon was not started as root (it keeps its
    /// own uid) or runs as root by `user = "root"`.
    pub switched_to: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub seccomp: SeccompMode,
}

impl Dropped {
    /// Whether a file the daemon must read again (the config file on reload, templates) is
    /// checked against an account other than root.
    pub fn is_unprivileged(&self) -> bool {
        self.uid != 0
    }
}

/// Gives up the account, the capabilities and the system calls the daemon no longer needs
/// (see the module documentation). Must run while the process has one thread.
pub fn drop_privileges(settings: &PrivilegeSettings) -> Result<Dropped, PrivilegeError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(PrivilegeError::Threads { threads });
    }
    let switched_to = if nix::unistd::geteuid().is_root() {
        switch_user(&settings.user, &settings.hand_over)?
    } else {
        None
    };
    clear_capabilities()?;
    match settings.seccomp {
        SeccompMode::Off => {
            nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?
        }
        mode => {
            let filter = filter(mode)?;
            // Sets no-new-privileges first (which a filter needs without CAP_SYS_ADMIN).
            seccompiler::apply_filter_all_threads(&filter).map_err(PrivilegeError::SeccompApply)?;
        }
    }
    Ok(Dropped {
        switched_to,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        seccomp: settings.seccomp,
    })
}

/// Switches to `user`; `None` when `user` is root (nothing to switch to).
fn switch_user(
    user: &str,
    hand_over: &[std::path::PathBuf],
) -> Result<Option<String>, PrivilegeError> {
    use nix::unistd::{Gid, Uid, User, setgroups, setresgid, setresuid};
    let account = User::from_name(user)
        .map_err(|source| PrivilegeError::Lookup {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser {
            user: user.to_owned(),
        })?;
    if account.uid.is_root() {
        tracing::warn!(
            "[server] user = {user:?}: the daemon keeps running as root (set an unprivileged \
             account to drop root's privileges after start)"
        );
        return Ok(None);
    }
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    let fail = |what, source| PrivilegeError::Switch {
        user: user.to_owned(),
        uid,
        gid,
        what,
        source,
    };
    for dir in hand_over {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|source| {
            PrivilegeError::HandOver {
                path: dir.clone(),
                user: user.to_owned(),
                source,
            }
        })?;
    }
    // The bounding set first: emptying it needs CAP_SETPCAP, which the uid switch removes.
    drop_bounding_set()?;
    setgroups(&[Gid::from_raw(gid)]).map_err(|e| fail("setgroups", e))?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| fail("setresgid", e))?;
    let u = Uid::from_raw(uid);
    // From uid 0 to another with every uid changed, the kernel clears the permitted,
    // effective and ambient sets (no PR_SET_KEEPCAPS).
    setresuid(u, u, u).map_err(|e| fail("setresuid", e))?;
    Ok(Some(user.to_owned()))
}

/// Empties every capability set this process may change; fails if any capability is left in
/// the effective or permitted set (a daemon started with ambient capabilities by systemd loses
/// them here too).
fn clear_capabilities() -> Result<(), PrivilegeError> {
    use caps::CapSet;
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        drop_bounding_set()?;
    }
    for (set, name) in [
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
    ] {
        caps::clear(None, set).map_err(|source| PrivilegeError::Caps { set: name, source })?;
    }
    let left: Vec<String> = [CapSet::Effective, CapSet::Permitted]
        .into_iter()
        .flat_map(|s| caps::read(None, s).unwrap_or_default())
        .map(|c| c.to_string())
        .collect();
    if !left.is_empty() {
        return Err(PrivilegeError::CapsRemain(left.join(", ")));
    }
    Ok(())
}

/// Empties the capability bounding set (needs CAP_SETPCAP).
fn drop_bounding_set() -> Result<(), PrivilegeError> {
    for cap in caps::read(None, caps::CapSet::Bounding).unwrap_or_default() {
        caps::drop(None, caps::CapSet::Bounding, cap).map_err(|source| PrivilegeError::Caps {
            set: "bounding",
            source,
        })?;
    }
    Ok(())
}

/// The threads of this process (`/proc/self/task`); 1 when it cannot be read.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// The compiled seccomp program for `mode` on this architecture.
pub fn filter(mode: SeccompMode) -> Result<seccompiler::BpfProgram, PrivilegeError> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| PrivilegeError::SeccompBuild(e.to_string()))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .and_then(TryInto::try_into)
        .map_err(|e| PrivilegeError::SeccompBuild(e.to_string()))
}

/// The system calls a running daemon makes, after start: found by running the whole test
/// suite (every engine, DHCP, HTTP, XDP maps, reloads, status, the install routes) under
/// `[server] seccomp = "log"` and reading the kernel's log. Neither exec nor ptrace, mount,
/// module loading, a uid change or a new capability is here.
pub const ALLOWED: &[i64] = &[
    // Memory, threads, time, signals, the process.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_prctl,
    libc::SYS_capget,
    libc::SYS_getrandom,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    // Files: images, templates, the config file, the lease database, /proc for status.
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_pwrite64,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_flock,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_unlinkat,
    libc::SYS_memfd_create,
    libc::SYS_copy_file_range,
    libc::SYS_getcwd,
    // Sockets: TFTP transfer sockets, HTTP connections, the control socket.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_listen,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendfile,
    libc::SYS_splice,
    // Waiting: tokio (HTTP), poll (DHCP, control, portable engine), io_uring (TFTP).
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_pipe2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // The XDP maps (policy on reload, counters) through the descriptors opened at start.
    libc::SYS_bpf,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
];

/// The process's identity and capabilities as the kernel reports them (`/proc/self/status`):
/// what `pxe-server status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Real, effective, saved and filesystem uid.
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    /// Effective and permitted capabilities (hexadecimal masks as the kernel prints them).
    pub cap_eff: String,
    pub cap_prm: String,
    pub no_new_privs: bool,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
}

impl ProcessIdentity {
    /// Reads `/proc/self/status`; fields it lacks stay empty.
    pub fn current() -> ProcessIdentity {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    /// Parses the text of a `/proc/PID/status` file.
    pub fn parse(status: &str) -> ProcessIdentity {
        let mut id = ProcessIdentity::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let ids = || {
                value
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            };
            match key {
                "Uid" => id.uid = ids(),
                "Gid" => id.gid = ids(),
                "CapEff" => id.cap_eff = value.to_owned(),
                "CapPrm" => id.cap_prm = value.to_owned(),
                "NoNewPrivs" => id.no_new_privs = value == "1",
                "Seccomp" => id.seccomp = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read() {
        let text = "Name:\tpxe-server\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t997\n\
                    CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
                    CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        let id = ProcessIdentity::parse(text);
        assert_eq!(id.uid, vec![998; 4]);
        assert_eq!(id.gid, vec![997; 4]);
        assert_eq!(id.cap_eff, "0000000000000000");
        assert_eq!(id.cap_prm, "0000000000000000");
        assert!(id.no_new_privs);
        assert_eq!(id.seccomp, 2);
    }

    /// The child of [`a_call_outside_the_list_kills_the_process`]: installs the filter, then
    /// execs (not on the list).
    #[test]
    #[ignore = "child process of a_call_outside_the_list_kills_the_process"]
    fn child_execs_under_the_filter() {
        if std::env::var_os("PXE_SECCOMP_CHILD").is_none() {
            return;
        }
        seccompiler::apply_filter_all_threads(&filter(SeccompMode::Enforce).unwrap()).unwrap();
        // Allowed calls still work.
        assert!(std::fs::read_to_string("/proc/self/status").is_ok());
        let e = nix::unistd::execv(c"/bin/true", &[c"/bin/true"]);
        // Not reached: the exec killed the process.
        panic!("the filter let the process exec: {e:?}");
    }

    /// The filter is the allow-list it claims: a call outside it (exec) kills the process with
    /// SIGSYS, in a child, so that this test process lives on.
    #[test]
    fn a_call_outside_the_list_kills_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "privilege::tests::child_execs_under_the_filter",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("PXE_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The filter compiles for this architecture in both modes, allows what is listed and
    /// nothing that would regain a privilege.
    #[test]
    fn the_allow_list_compiles_and_holds_no_escalation() {
        assert!(!filter(SeccompMode::Enforce).unwrap().is_empty());
        assert!(!filter(SeccompMode::Log).unwrap().is_empty());
        for forbidden in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_setresuid,
            libc::SYS_capset,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_process_vm_writev,
        ] {
            assert!(!ALLOWED.contains(&forbidden), "{forbidden}");
        }
        let mut sorted = ALLOWED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALLOWED.len(), "an entry is listed twice");
    }
}
