#!/usr/bin/env bash
# The demo: installs what is needed, builds, makes a virtual network (two namespaces and a
# veth pair), starts pxe-server with its default configuration (only the root and the address
# set), and lets simulated PXE clients fetch their boot files from it at once. Prints a short
# report, then boots a real (QEMU) machine from pxe-server's DHCP and TFTP.
# Run as root on Debian 12 (no sudo needed):   scripts/demo.sh [--clients N]
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=200
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it installs packages and builds namespaces)" >&2; exit 1; }

bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
. scripts/lib/netns.sh

P=pxedemo
NET=10.66.0
WORK=$(mktemp -d /tmp/pxe-demo.XXXXXX)
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    netns_destroy "$P"
    rm -rf "$WORK"
}
on_exit cleanup

echo "== building (release)"
cargo build --release -q -p pxe-server -p pxe-bench

echo "== boot files: an 8 MiB kernel and a 32 MiB initrd (random bytes, verified by every client)"
mkdir -p "$WORK/root/boot"
head -c $((8 << 20)) /dev/urandom > "$WORK/root/boot/vmlinuz"
head -c $((32 << 20)) /dev/urandom > "$WORK/root/boot/initrd.img"

echo "== virtual network: $P-srv ($NET.1) <-veth-> $P-cli ($NET.2), $CLIENTS client addresses"
netns_create "$P" "$NET"
SOURCE_BASE=$(netns_client_addrs "$P" "$NET" "$CLIENTS")

cat > "$WORK/pxe-server.toml" <<TOML
# Everything else is the default (see pxe-server check --config ...).
[tftp]
root = "$WORK/root"
listen = ["$NET.1:69"]
[control]
socket = "$WORK/control.sock"
TOML
target/release/pxe-server check --config "$WORK/pxe-server.toml" > /dev/null
ip netns exec "$P-srv" target/release/pxe-server serve --config "$WORK/pxe-server.toml" \
    > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_udp_port "$P-srv" "$NET.1" 69 10
grep -m1 "TFTP engine" "$WORK/server.log" || true

FAILED=0
for f in boot/vmlinuz boot/initrd.img; do
    echo
    echo "== $CLIENTS simulated clients, each from its own address, fetch $f at the same moment"
    echo "   (blksize 1468, windowsize 4, as OVMF asks; every block compared with the file)"
    ip netns exec "$P-cli" target/release/pxe-bench tftp-storm --server "$NET.1" --file "$f" \
        --verify "$WORK/root/$f" --clients "$CLIENTS" --blksize 1468 --windowsize 4 \
        --source-base "$SOURCE_BASE" --source-count "$CLIENTS" || FAILED=1
done

kill -INT "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
echo
echo "== server counters at exit"
grep -E "metrics|counters" "$WORK/server.log" | tail -n 1

echo
echo "== a real machine: QEMU (SeaBIOS + iPXE, software emulation) gets its address and boot"
echo "   file from pxe-server's DHCP, then kernel and initrd over TFTP, and boots Linux"
bash scripts/qemu-assets.sh > /dev/null
bash scripts/qemu-boot.sh --firmware bios --mode full --dhcp pxe-server --bin target/release/pxe-server --quiet
[ "$FAILED" -eq 0 ] || { echo "demo: some simulated clients failed (see above)" >&2; exit 1; }
