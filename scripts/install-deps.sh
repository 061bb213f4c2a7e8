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
# udhcpc, nmap's broadcast-dhcp-discover, perfdhcp (in kea-admin), tcpdump for captures.
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
# Profilers for BENCHMARKS.md.
apt_install linux-perf valgrind iperf3 || true

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
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
# eBPF (pxe-ebpf, built by pxe-server's build.rs through aya-build): nightly's rust-src and a
# bpf-linker linked against nightly's own LLVM (the default feature wants LLVM 23 and fails with
# "unable to find library -lLLVM"). See ENVIRONMENT.md.
rustup component add rust-src --toolchain nightly >/dev/null
if ! bpf-linker --version 2>/dev/null | grep -q "0\.13\.0"; then
    P="$HOME/.local/share/bpf-linker-llvm"
    mkdir -p "$P/lib"
    L="$(rustc +nightly --print sysroot)/lib"
    SO="$(basename "$L"/libLLVM.so.*-rust-*)"
    ln -sf "$L/$SO" "$P/lib/libLLVM.so"
    ln -sf "$L/$SO" "$P/lib/$SO"
    LLVM_PREFIX="$P" cargo install bpf-linker --version 0.13.0 --locked --force \
        --no-default-features --features llvm-22
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
echo "install-deps.sh: done"
