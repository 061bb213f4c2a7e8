//! Real firmware network boots in QEMU, through `scripts/qemu-boot.sh`: SeaBIOS with QEMU's
//! iPXE option ROM, and OVMF with its own UEFI PXE client or its UEFI HTTP boot client, on a
//! tap device in a client network namespace; pxe-server (the binary this crate builds) serves
//! TFTP (and HTTP) from a server namespace and, with `--dhcp pxe-server`, DHCP as well. Each boot must reach the guest's initrd, which prints
//! `PXE-BOOT-OK bios|uefi` on the serial console.
//!
//! Root only (namespaces, tap devices); run by `scripts/test.sh`. The script serialises the
//! boots with a lock, so nextest may start two of these at once.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the guest may take to print the marker (TCG boots take about 25 to 35 s here).
const BOOT_TIMEOUT_SECS: u64 = 240;
/// How long a test may wait for another boot to release the script's lock.
const LOCK_WAIT_SECS: u64 = 900;
/// Hard limit on one run of the script (lock wait, asset build, boot, clean-up).
const RUN_LIMIT: Duration = Duration::from_secs(BOOT_TIMEOUT_SECS + LOCK_WAIT_SECS + 180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

fn require_root() {
    if !rustix::process::geteuid().is_root() {
        panic!(
            "netns_qemu: these tests need root (network namespaces, tap devices, QEMU); \
             run them as root with `scripts/test.sh`"
        );
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `scripts/qemu-boot.sh` with `args`, killing it (its clean-up trap still runs) if it
/// outlives [`RUN_LIMIT`].
fn qemu_boot(args: &[&str]) -> Run {
    require_root();
    let mut child = Command::new("bash")
        .arg(repo_root().join("scripts/qemu-boot.sh"))
        .args(args)
        .args(["--quiet", "--timeout", &BOOT_TIMEOUT_SECS.to_string()])
        .args(["--bin", env!("CARGO_BIN_EXE_pxe-server")])
        .env("QEMU_BOOT_LOCK_WAIT", LOCK_WAIT_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run bash scripts/qemu-boot.sh");
    // Drain both pipes on threads so a chatty script never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let prefix = format!("pq{}-", child.id()); // the script names its namespaces pq$$-*
    let start = Instant::now();
    let mut term_sent: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for qemu-boot.sh") {
            break status;
        }
        match term_sent {
            None if start.elapsed() > RUN_LIMIT => {
                // SIGTERM lets the script remove its namespaces and stop QEMU.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                term_sent = Some(Instant::now());
            }
            Some(t) if t.elapsed() > Duration::from_secs(30) => {
                let _ = child.kill();
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    if let Some(t) = term_sent {
        panic!(
            "qemu-boot.sh {args:?} ran longer than {RUN_LIMIT:?} and was stopped \
             ({:?} ago)\nstdout:\n{stdout}\nstderr:\n{stderr}",
            t.elapsed()
        );
    }
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !netns.contains(&prefix),
        "qemu-boot.sh left namespaces {prefix}* behind:\n{netns}"
    );
    Run {
        success: status.success(),
        stdout,
        stderr,
    }
}

/// Boots `firmware` with `mode` and `dhcp`, and asserts the guest reached its initrd.
fn boot(firmware: &str, mode: &str, dhcp: &str) -> Run {
    boot_with(firmware, mode, dhcp, &[])
}

fn boot_with(firmware: &str, mode: &str, dhcp: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--firmware", firmware, "--mode", mode, "--dhcp", dhcp];
    args.extend_from_slice(extra);
    let run = qemu_boot(&args);
    let uefi_http = if extra.contains(&"--uefi-http") {
        "-uefihttp"
    } else {
        ""
    };
    let http = if extra.contains(&"--http") {
        "-http"
    } else {
        ""
    };
    let tag = format!("{firmware}-{mode}-{dhcp}{uefi_http}{http}");
    assert!(
        run.success && run.stdout.contains(&format!("PASS {tag}")),
        "{tag} did not boot\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// The summary line of the script for the read request of `file` that transferred data (the
/// firmware may probe the size first and abort that transfer).
fn tftp_transfer<'a>(stdout: &'a str, file: &str) -> &'a str {
    stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(file))
        .find(|l| !l.contains("acks:0 "))
        .unwrap_or_else(|| panic!("no TFTP transfer of {file} in the capture summary:\n{stdout}"))
}

/// OVMF's own PXE client asks for blksize 1468 and windowsize 4; our server must grant both,
/// and the client must then acknowledge about one window in four blocks.
fn assert_uefi_windowed_transfer(stdout: &str) {
    let line = tftp_transfer(stdout, "snponly.efi");
    let granted = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("granted:"))
        .unwrap_or_else(|| panic!("no granted options in {line:?}"));
    let granted: Vec<&str> = granted.split(',').collect();
    assert!(
        granted.contains(&"blksize=1468") && granted.contains(&"windowsize=4"),
        "OVMF's request was not granted blksize 1468 and windowsize 4: {line}"
    );
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    let (acks, blocks) = (field("acks:"), field("last-block:"));
    let size = std::fs::metadata("/usr/lib/ipxe/snponly.efi")
        .expect("snponly.efi from Debian's ipxe package")
        .len();
    assert_eq!(blocks, size / 1468 + 1, "{line}");
    // One ACK per window of 4 (plus the ACK of the OACK), a few more if windows were cut.
    assert!(
        acks >= blocks / 4 && acks <= blocks / 4 + 6,
        "{acks} ACKs for {blocks} blocks is not a windowsize-4 transfer: {line}"
    );
}

// --- DHCP from dnsmasq, TFTP from pxe-server (full mode) ---------------------------------------

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_bios_boots_with_dnsmasq_dhcp() {
    let run = boot("bios", "full", "dnsmasq");
    // The iPXE ROM got the script straight from DHCP, then the kernel and initrd from us.
    for file in ["boot.ipxe", "vmlinuz", "initrd.img"] {
        tftp_transfer(&run.stdout, file);
    }
}

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_boots_with_dnsmasq_dhcp() {
    let run = boot("uefi", "full", "dnsmasq");
    assert_uefi_windowed_transfer(&run.stdout);
    for file in ["boot.ipxe", "vmlinuz", "initrd.img"] {
        tftp_transfer(&run.stdout, file);
    }
}

// --- DHCP from pxe-server -----------------------------------------------------------------------

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_bios_boots_full_mode() {
    boot("bios", "full", "pxe-server");
}

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_boots_full_mode() {
    let run = boot("uefi", "full", "pxe-server");
    assert_uefi_windowed_transfer(&run.stdout);
}

/// dnsmasq (another namespace on the segment) gives the address, pxe-server the boot file.
#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_bios_boots_proxy_mode() {
    boot("bios", "proxy", "pxe-server");
}

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_boots_proxy_mode() {
    let run = boot("uefi", "proxy", "pxe-server");
    assert_uefi_windowed_transfer(&run.stdout);
}

// --- kernel and initrd over HTTP, install script by next boot ------------------------------------

/// iPXE gets `http://SERVER/boot.ipxe`, which chains with the VM's MAC to the install script
/// of its `[[hosts]]` entry (next_boot = "install"); kernel and initrd come over HTTP (none
/// over TFTP); then the installer callback switches the VM to the local disk, which the next
/// script shows (checked by the script: "after the callback the next script boots the local
/// disk").
fn boot_over_http(firmware: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--http"];
    args.extend_from_slice(extra);
    let run = boot_with(firmware, "full", "pxe-server", &args);
    assert!(
        run.stdout.contains("kernel+initrd over HTTP")
            && run.stdout.contains("next script boots the local disk"),
        "{}",
        run.stdout
    );
    for file in ["vmlinuz", "initrd.img"] {
        assert!(
            !run.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(file)),
            "{file} went over TFTP:\n{}",
            run.stdout
        );
    }
    run
}

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_bios_boots_over_http() {
    boot_over_http("bios", &[]);
}

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_boots_over_http() {
    boot_over_http("uefi", &[]);
}

/// Nothing over TFTP at all: UEFI HTTP boot loads snponly.efi over HTTP, iPXE gets
/// `http://SERVER/boot.ipxe`, the install script, kernel and initrd over HTTP, then the
/// callback switches the VM to its local disk.
#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_http_boot_then_install_all_over_http() {
    let run = boot_over_http("uefi", &["--uefi-http"]);
    let out = &run.stdout;
    assert!(out.contains("snponly.efi over HTTP"), "{out}");
    let tftp: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("== TFTP transfers"))
        .skip(1)
        .take_while(|l| !l.starts_with("=="))
        .collect();
    assert!(
        tftp.is_empty(),
        "TFTP transfers in an all-HTTP boot: {tftp:?}\n{out}"
    );
    for uri in ["/snponly.efi", "/boot.ipxe", "/vmlinuz", "/initrd.img"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("GET")
                    && l.split_whitespace().nth(3) == Some(uri)),
            "no GET {uri}:\n{out}"
        );
    }
}

// --- UEFI HTTP boot: the firmware's first stage over HTTP ----------------------------------------

/// OVMF with its PXE driver switched off (fw_cfg `opt/org.tianocore/IPv4PXESupport` and
/// `IPv6PXESupport` = no) boots its next network option, UEFI HTTP boot: its DHCP asks with
/// option 60 `HTTPClient:Arch:00016` and option 93 = 16, pxe-server answers option 60
/// `HTTPClient` and the URL of `[boot] uefi_http`, and the firmware's HTTP client (User-Agent
/// `UefiHttpBoot`) fetches snponly.efi from pxe-server's HTTP service; iPXE then gets its
/// script, kernel and initrd as in the other UEFI boots.
fn boot_uefi_http(mode: &str) {
    let run = boot_with("uefi", mode, "pxe-server", &["--uefi-http"]);
    let out = &run.stdout;
    // The script checked `pxe-server status` (HTTP bytes >= snponly.efi, a 2xx answer).
    assert!(out.contains("snponly.efi over HTTP"), "{out}");
    // pxe-server's answer to the firmware: option 60 HTTPClient and the URL.
    assert!(
        out.lines().any(|l| l.contains(" OFFER ")
            && l.contains("file=http://10.77.0.1/snponly.efi")
            && l.trim_end().ends_with(" HTTPClient")),
        "no HTTPClient offer with the URL:\n{out}"
    );
    // The firmware's own request, in the capture.
    assert!(
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 5
                && w[2] == "GET"
                && w[3] == "/snponly.efi"
                && w[4].starts_with("UefiHttpBoot/")
        }),
        "no GET /snponly.efi by the firmware's HTTP boot client:\n{out}"
    );
    // Not over TFTP, while iPXE's own files were.
    assert!(
        !out.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("snponly.efi")),
        "snponly.efi went over TFTP:\n{out}"
    );
    for file in ["boot.ipxe", "vmlinuz", "initrd.img"] {
        tftp_transfer(out, file);
    }
}

#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_http_boot_full_mode() {
    boot_uefi_http("full");
}

/// dnsmasq gives the address, pxe-server's ProxyDHCP answer the URL (edk2 pairs a
/// "DHCP only" offer with a proxy offer carrying an IP-address URI).
#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn netns_qemu_uefi_http_boot_proxy_mode() {
    boot_uefi_http("proxy");
}
