#!/usr/bin/env bash
# Builds and collects what a QEMU guest needs to boot from pxe-server, into one TFTP root:
#   vmlinuz        Debian's kernel (linux-image-amd64's 6.1 image, `apt-get download` + `dpkg -x`)
#   initrd.img     a tiny initramfs (cpio newc, gzip) whose /init, a static C program, prints
#                  "PXE-BOOT-OK bios|uefi" on the serial console and powers the machine off
#   undionly.kpxe  iPXE for BIOS PXE (Debian's `ipxe` package)
#   ipxe.efi, snponly.efi   iPXE for UEFI x64 PXE
#   boot.ipxe      the iPXE script: kernel + initrd by names relative to the script's own URL
#                  (so they come from the server that served the script, also in proxy mode,
#                  where ${next-server} is the address server's siaddr), then boot
#
# Usage: scripts/qemu-assets.sh [DIR]     (default: target/qemu-assets; prints DIR when done)
# Idempotent: what is already there and current is kept. Needs the packages that
# scripts/install-deps.sh installs (ipxe, cpio, gcc, libc6-dev, dpkg, apt).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${1:-target/qemu-assets}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BUILD="$DIR/.build"
mkdir -p "$BUILD"

log() { printf 'qemu-assets: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- kernel -------------------------------------------------------------------------------
if [ ! -s "$DIR/vmlinuz" ]; then
    command -v apt-get >/dev/null || die "apt-get is needed to download the Debian kernel"
    # linux-image-amd64 is a metapackage; its dependency is the real image package.
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9].*-amd64$/ {print $2; exit}')"
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64's image package (apt-get update?)"
    log "downloading $pkg"
    rm -rf "$BUILD/kernel"
    mkdir -p "$BUILD/kernel"
    chmod 0777 "$BUILD/kernel" # apt's download user (_apt) writes here when run as root
    (cd "$BUILD/kernel" && apt-get download -q "$pkg" >/dev/null)
    deb="$(ls "$BUILD/kernel"/*.deb | head -n1)"
    dpkg -x "$deb" "$BUILD/kernel/root"
    vml="$(ls "$BUILD/kernel/root/boot"/vmlinuz-* | head -n1)"
    [ -s "$vml" ] || die "no vmlinuz in $deb"
    cp "$vml" "$DIR/vmlinuz.tmp"
    mv "$DIR/vmlinuz.tmp" "$DIR/vmlinuz"
    basename "$vml" > "$DIR/vmlinuz.version"
    rm -rf "$BUILD/kernel"
fi

# --- initrd -------------------------------------------------------------------------------
# The source lives here so the script is the single place to read; the initrd is rebuilt
# when it changes.
INIT_C="$(cat <<'C'
/* /init of the pxe-server QEMU test initrd: prove the boot reached user space, then power off. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

static void say(const char *msg) {
    const char *ttys[] = {"/dev/ttyS0", "/dev/console"};
    for (unsigned i = 0; i < sizeof ttys / sizeof ttys[0]; i++) {
        int fd = open(ttys[i], O_WRONLY | O_NOCTTY);
        if (fd >= 0) {
            ssize_t n = write(fd, msg, strlen(msg));
            (void)n;
            close(fd);
        }
    }
}

int main(void) {
    mkdir("/dev", 0755);
    mkdir("/proc", 0555);
    mkdir("/sys", 0555);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);

    const char *fw = access("/sys/firmware/efi", F_OK) == 0 ? "uefi" : "bios";
    char cmdline[512] = "";
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
        cmdline[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    char *nl = strchr(cmdline, '\n');
    if (nl) *nl = '\0';

    char msg[768];
    snprintf(msg, sizeof msg, "\r\ncmdline: %s\r\nPXE-BOOT-OK %s\r\n", cmdline, fw);
    say(msg);
    sync();
    reboot(RB_POWER_OFF);
    for (;;) pause();
}
C
)"
init_sum="$(printf '%s' "$INIT_C" | sha256sum | cut -c1-16)"
if [ ! -s "$DIR/initrd.img" ] || [ "$(cat "$DIR/initrd.sum" 2>/dev/null)" != "$init_sum" ]; then
    command -v gcc >/dev/null || die "gcc is needed to build the initrd's /init"
    command -v cpio >/dev/null || die "cpio is needed to pack the initrd"
    log "building initrd.img"
    rm -rf "$BUILD/initrd"
    mkdir -p "$BUILD/initrd/root/dev" "$BUILD/initrd/root/proc" "$BUILD/initrd/root/sys"
    printf '%s\n' "$INIT_C" > "$BUILD/initrd/init.c"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$BUILD/initrd/root/init" "$BUILD/initrd/init.c"
    (cd "$BUILD/initrd/root" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9 > "$DIR/initrd.img.tmp"
    mv "$DIR/initrd.img.tmp" "$DIR/initrd.img"
    echo "$init_sum" > "$DIR/initrd.sum"
    rm -rf "$BUILD/initrd"
fi

# --- iPXE ---------------------------------------------------------------------------------
for f in undionly.kpxe ipxe.efi snponly.efi; do
    src="/usr/lib/ipxe/$f"
    [ -s "$src" ] || die "$src missing: install Debian's ipxe package (scripts/install-deps.sh)"
    cmp -s "$src" "$DIR/$f" 2>/dev/null || cp "$src" "$DIR/$f"
done

# The script iPXE runs (BIOS: the NIC's iPXE ROM gets it straight from DHCP; UEFI: snponly.efi
# gets it after the firmware's own PXE loaded snponly.efi). `initrd=initrd.img` lets the
# kernel's EFI stub find the initrd iPXE registered; BIOS boots ignore it.
cat > "$DIR/boot.ipxe.tmp" <<'IPXE'
#!ipxe
echo pxe-server test: ${platform} client ${ip} (${mac})
kernel vmlinuz initrd=initrd.img console=ttyS0,115200 panic=-1 pxetest.platform=${platform}
initrd initrd.img
boot
IPXE
mv "$DIR/boot.ipxe.tmp" "$DIR/boot.ipxe"

rm -rf "$BUILD"
log "ready in $DIR: $(cd "$DIR" && ls | tr '\n' ' ')"
echo "$DIR"
