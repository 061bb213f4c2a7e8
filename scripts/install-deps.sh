#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmarks need on a fresh Debian 12 machine.
# Run as root. Idempotent: a second run only checks.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Packages such as tftpd-hpa would start their daemon on install; the peers are started by hand,
# inside namespaces, by the scripts that use them.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
need_update=1
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$need_update" -eq 1 ]; then
        apt-get update -qq
        need_update=0
    fi
    echo "installing: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build tools and network plumbing.
apt_install build-essential pkg-config curl ca-certificates iproute2 procps psmisc python3
# TFTP clients used by the integration tests (installed in groups: some of these conflict).
apt_install atftp
apt_install tftp-hpa
# Packet loss in the tests: this kernel has no netem, nftables drops at random instead.
apt_install nftables
# Engine fallback test: seccomp filter refusing io_uring_setup.
apt_install python3-seccomp
# DHCP clients and tools used by the DHCP integration tests (netns_dhcp): dhclient, busybox
# udhcpc, nmap's broadcast-dhcp-discover, perfdhcp and kea-admin's db-init (in kea-admin),
# tcpdump for captures.
apt_install isc-dhcp-client
apt_install busybox
apt_install nmap
apt_install kea-admin
apt_install tcpdump
# XDP integration test (netns_xdp): scapy crafts the DHCP frames; bpftool to inspect programs.
apt_install python3-scapy
apt_install bpftool || true
# Peers for the side-by-side benchmarks (compare-tftp.sh, compare-dhcp.sh); they must not start
# as services here (policy-rc.d above): the scripts start them by hand inside namespaces.
apt_install dnsmasq-base
apt_install kea-dhcp4-server
apt_install tftpd-hpa || true
# Real firmware boots in QEMU (scripts/qemu-assets.sh, scripts/qemu-boot.sh, tests/netns_qemu.rs):
# QEMU, its iPXE option ROMs, OVMF (UEFI), iPXE's network boot programs, cpio for the test
# initrd (its /init is built with gcc -static from build-essential), tshark to check what the
# firmware negotiated.
apt_install qemu-system-x86 ipxe-qemu ovmf
apt_install ipxe cpio
apt_install tshark
# The live view's browser test (tests/netns_liveview.rs): headless Chromium, driven over the
# DevTools pipe by the system python3.
apt_install chromium
# The /metrics test (tests/netns_metrics.rs) runs a real Prometheus and promtool. It must not
# run as a service (policy-rc.d above stops the start; disabled so no boot starts it either).
apt_install prometheus
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable prometheus >/dev/null 2>&1 || true
fi
# PostgreSQL for the shared store's tests (tests/netns_store.rs, pxe-testkit's Postgres) and for
# Kea's PostgreSQL lease backend in compare-dhcp.sh (kea-admin db-init pgsql). Both run their own
# cluster (initdb in a temporary directory, as an unprivileged user); nothing uses Debian's, so
# the cluster the package makes (15/main) is stopped if it runs and kept from starting at boot.
apt_install postgresql
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
        if [ "$status" = online ]; then
            pg_ctlcluster "$ver" "$name" stop || true
        fi
        if command -v systemctl >/dev/null 2>&1; then
            systemctl disable "postgresql@$ver-$name" >/dev/null 2>&1 || true
        fi
    done
fi
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable postgresql >/dev/null 2>&1 || true
fi
# Profilers for BENCHMARKS.md.
apt_install linux-perf valgrind iperf3 || true

# The account pxe-server runs as after start ([server] user): a system user with no login shell
# and no home, in a group of its own.
bash "$(dirname "$0")/lib/account.sh"

# Rust: stable is the project toolchain; nightly builds the fuzz targets.
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        curl -sSf https://sh.rustup.rs | sh -s -- -y --default-toolchain 1.95.0 --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# "nightly" itself (a dated nightly-YYYY-MM-DD does not answer to +nightly).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
rustup toolchain list | grep -q "^nightly-$HOST" || rustup toolchain install nightly --profile minimal
# eBPF (pxe-ebpf, built by pxe-server's build.rs through aya-build): nightly's rust-src and a
# bpf-linker linked against nightly's own libLLVM, built with the llvm-NN feature matching that
# LLVM's major version (its default feature wants LLVM 23 and fails with "unable to find library
# -lLLVM" against nightly's 22). See ENVIRONMENT.md.
rustup component add rust-src --toolchain nightly >/dev/null
BPF_LINKER_VERSION=0.13.0
# The llvm-NN features bpf-linker 0.13.0 offers, from the [features] table of its Cargo.toml
# (~/.cargo/registry/src/*/bpf-linker-0.13.0/Cargo.toml: llvm-21, llvm-22, llvm-23).
BPF_LINKER_LLVM_MAJORS="21 22 23"

# nightly_llvm_major -> the LLVM major version of the nightly toolchain (`rustc +nightly -vV`).
# PXE_FAKE_NIGHTLY_LLVM_MAJOR replaces it, only to test the mismatch message.
nightly_llvm_major() {
    if [ -n "${PXE_FAKE_NIGHTLY_LLVM_MAJOR:-}" ]; then
        echo "$PXE_FAKE_NIGHTLY_LLVM_MAJOR"
        return
    fi
    { rustc +nightly -vV 2>/dev/null || true; } | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p'
}

# check_llvm_major MAJOR -> stops with what to do when bpf-linker has no llvm-MAJOR feature.
check_llvm_major() {
    local major="$1" m
    for m in $BPF_LINKER_LLVM_MAJORS; do
        [ "$m" = "$major" ] && return 0
    done
    cat >&2 <<MSG
install-deps.sh: STOP: the eBPF build (pxe-ebpf) cannot be set up with this nightly toolchain.
  nightly:     $(rustc +nightly -V 2>/dev/null || echo "rustc +nightly does not run"), LLVM major ${major:-unknown}
  bpf-linker:  $BPF_LINKER_VERSION can be built for LLVM $BPF_LINKER_LLVM_MAJORS only (its llvm-NN
               features), and it must link against the nightly's own libLLVM.
What to do, either:
  1. make "nightly" a dated nightly whose LLVM major is one of $BPF_LINKER_LLVM_MAJORS (this project
     was tested with rustc 1.97.0-nightly (e50aa6fba 2026-05-19), LLVM 22.1.4). Check a date with
     "rustc +nightly-YYYY-MM-DD -vV | grep LLVM" once it is installed; rustup cannot link a toolchain
     under the name "nightly", so replace that one by a link to the dated one:
        rustup toolchain install nightly-YYYY-MM-DD --profile minimal --component rust-src
        rustup toolchain uninstall nightly
        ln -s nightly-YYYY-MM-DD-$HOST \\
            "\${RUSTUP_HOME:-\$HOME/.rustup}/toolchains/nightly-$HOST"
     then run scripts/install-deps.sh again (it rebuilds bpf-linker for that LLVM); or
  2. use a bpf-linker release with an llvm-${major:-NN} feature: set BPF_LINKER_VERSION and
     BPF_LINKER_LLVM_MAJORS in scripts/install-deps.sh (the [features] of its Cargo.toml).
MSG
    exit 1
}

LLVM_MAJOR="$(nightly_llvm_major)"
check_llvm_major "$LLVM_MAJOR"
BPF_LLVM_PREFIX="$HOME/.local/share/bpf-linker-llvm"
NIGHTLY_LIB="$(rustc +nightly --print sysroot)/lib"
NIGHTLY_LLVM_SO="$(cd "$NIGHTLY_LIB" && ls libLLVM.so.*-rust-* 2>/dev/null | head -n 1 || true)"
[ -n "$NIGHTLY_LLVM_SO" ] || {
    echo "install-deps.sh: no libLLVM.so.*-rust-* in $NIGHTLY_LIB (the nightly's own LLVM)" >&2
    exit 1
}

# bpf_linker_current -> true when the installed bpf-linker is $BPF_LINKER_VERSION and linked
# against the nightly's libLLVM as it is now: after a nightly update its library (named after
# the LLVM and rustc versions) has another name, and the old one is gone.
bpf_linker_current() {
    local bin needed
    bin="$(command -v bpf-linker 2>/dev/null)" || { echo "bpf-linker: not installed"; return 1; }
    needed="$(readelf -d "$bin" 2>/dev/null | sed -n 's/.*NEEDED.*\[\(libLLVM[^]]*\)\].*/\1/p')"
    if [ "$needed" != "$NIGHTLY_LLVM_SO" ]; then
        echo "bpf-linker: linked against ${needed:-no libLLVM}, the nightly has $NIGHTLY_LLVM_SO: rebuilding"
        return 1
    fi
    [ "$(readlink -f "$BPF_LLVM_PREFIX/lib/$needed")" = "$(readlink -f "$NIGHTLY_LIB/$needed")" ] ||
        { echo "bpf-linker: $BPF_LLVM_PREFIX/lib/$needed is not the nightly's: rebuilding"; return 1; }
    bpf-linker --version 2>/dev/null | grep -qx "bpf-linker $BPF_LINKER_VERSION" ||
        { echo "bpf-linker: not version $BPF_LINKER_VERSION or it does not start: rebuilding"; return 1; }
}

if ! bpf_linker_current; then
    mkdir -p "$BPF_LLVM_PREFIX/lib"
    rm -f "$BPF_LLVM_PREFIX"/lib/libLLVM.so*
    ln -s "$NIGHTLY_LIB/$NIGHTLY_LLVM_SO" "$BPF_LLVM_PREFIX/lib/libLLVM.so"
    ln -s "$NIGHTLY_LIB/$NIGHTLY_LLVM_SO" "$BPF_LLVM_PREFIX/lib/$NIGHTLY_LLVM_SO"
    LLVM_PREFIX="$BPF_LLVM_PREFIX" cargo install bpf-linker --version "$BPF_LINKER_VERSION" \
        --locked --force --no-default-features --features "llvm-$LLVM_MAJOR"
    bpf_linker_current || { echo "install-deps.sh: bpf-linker still does not match the nightly" >&2; exit 1; }
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
echo "install-deps.sh: done"
