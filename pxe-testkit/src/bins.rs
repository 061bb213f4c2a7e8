//! The binaries under test.
//!
//! `CARGO_BIN_EXE_<name>` is only set for a package's own binaries, so pxe-bench's tests could
//! not name pxe-server that way; every test finds both binaries the same way instead: the
//! environment's override, else next to the running test binary (cargo puts a package's
//! binaries in the profile directory, the test binaries in its `deps/`), else the target
//! directory's debug build. `cargo nextest run --workspace` builds them all.

use std::path::{Path, PathBuf};

use crate::caps::cannot_run;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("pxe-testkit lives in the workspace")
        .to_path_buf()
}

/// The pxe-server binary (`$PXE_SERVER_BIN` overrides).
pub fn server_bin() -> PathBuf {
    find_bin("pxe-server", "PXE_SERVER_BIN", "cargo build -p pxe-server")
}

/// The pxe-bench binary (`$PXE_BENCH_BIN` overrides).
pub fn bench_bin() -> PathBuf {
    find_bin("pxe-bench", "PXE_BENCH_BIN", "cargo build -p pxe-bench")
}

fn find_bin(name: &str, env: &str, build: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            cannot_run(&format!("${env} names {}, which is no file", p.display()));
        }
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    // <target>/<profile>/deps/<test binary>: the profile directory holds the package binaries.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(name)));
    for p in beside.into_iter().chain([target.join("debug").join(name)]) {
        if p.is_file() {
            return p;
        }
    }
    cannot_run(&format!("no {name} binary ({build}, or set ${env})"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_must_name_a_file() {
        let err = std::panic::catch_unwind(|| {
            find_bin("pxe-none", "PXE_TESTKIT_UNSET_FOR_TEST", "nothing to build")
        })
        .expect_err("no such binary");
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("no pxe-none binary"), "{msg}");
        assert!(msg.contains("$PXE_TESTKIT_UNSET_FOR_TEST"), "{msg}");
    }
}
