//! `pxe-server check` / `serve` configuration handling, through the real binary.

use std::path::Path;
use std::process::Command;

use pxe_server::config::Config;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pxe-server"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pxe.toml");
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = \"{}\"\nmax_windowsize = 4\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, stdout, _) = run(&["check", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    let printed = Config::parse(&stdout, Path::new("stdout")).unwrap();
    assert_eq!(printed, Config::load(&file).unwrap());
    assert_eq!(printed.tftp.max_windowsize, 4);
    assert!(stdout.contains("max_sessions = 10000"), "{stdout}");
}

#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pxe.toml");
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = \"{}\"\n\ntimeout_ms = 0\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let want = format!("{}:4: tftp.timeout_ms: ", file.display());
    for cmd in ["check", "serve"] {
        let (code, stdout, stderr) = run(&[cmd, "--config", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {stderr}");
        assert!(stdout.is_empty(), "{cmd}: {stdout}");
        assert!(stderr.starts_with(&want), "{cmd}: {stderr}");
    }
    let (code, _, stderr) = run(&["check", "--config", "/nonexistent/pxe.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("/nonexistent/pxe.toml:0: (file): cannot read"),
        "{stderr}"
    );
}
