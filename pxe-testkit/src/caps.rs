//! The capability policy: a test that cannot run fails, loudly, naming what is missing.
//!
//! The privileged tests are `#[ignore]`d (the reason is [`NEEDS_ROOT`] or a variant of it) and
//! `scripts/test.sh` runs them as root with `PXE_REQUIRE_PRIVILEGED=1` and
//! `--run-ignored only`. Whoever runs one without root, network namespaces or a peer program
//! gets a failure that says which, never a skip and never a pass.

use std::path::Path;

/// The `#[ignore]` reason of the tests that need root and network namespaces.
pub const NEEDS_ROOT: &str = "needs root + network namespaces (run by scripts/test.sh)";

/// Fails the test, loudly, because `why` (something it needs is missing).
pub fn cannot_run(why: &str) -> ! {
    let required = std::env::var("PXE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    panic!(
        "\n\n*** THIS TEST CANNOT RUN: {why}. It needs root, network namespaces and the peer \
         programs it starts (scripts/install-deps.sh installs them); run it through \
         scripts/test.sh as root. It must never pass silently (PXE_REQUIRE_PRIVILEGED={}). ***\n\n",
        if required { "1" } else { "unset" }
    );
}

/// Fails the test (see [`cannot_run`]) unless it runs as root.
pub fn require_root() {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        cannot_run(&format!("not root (effective uid {})", euid.as_raw()));
    }
}

/// Fails the test (see [`cannot_run`]) unless `program` (a path, or a name looked up in
/// `PATH`) exists.
pub fn require_program(program: &str) {
    if !program_exists(program) {
        cannot_run(&format!(
            "the program {program:?} is not installed (or not in PATH)"
        ));
    }
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_by_path_and_by_name() {
        assert!(program_exists("/bin/sh"));
        assert!(program_exists("sh"));
        assert!(!program_exists("/nonexistent/sh"));
        assert!(!program_exists("pxe-no-such-program"));
    }

    #[test]
    #[should_panic(expected = "THIS TEST CANNOT RUN: the program \"pxe-no-such-program\"")]
    fn a_missing_program_fails_loudly() {
        require_program("pxe-no-such-program");
    }
}
