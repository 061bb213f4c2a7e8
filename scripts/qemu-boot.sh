#!/usr/bin/env bash
# Watch a virtual machine boot from pxe-server: real PXE firmware in QEMU, on a tap device in a
# client network namespace, pxe-server (TFTP, and DHCP with --dhcp pxe-server) in a server
# namespace. The guest runs Debian's kernel and a tiny initrd that prints
# "PXE-BOOT-OK bios|uefi" on its serial console and powers off. Run as root (no sudo needed):
#
#   scripts/qemu-boot.sh                        # SeaBIOS + iPXE ROM, dnsmasq DHCP
#   scripts/qemu-boot.sh --firmware uefi        # OVMF native PXE -> snponly.efi -> kernel
#   scripts/qemu-boot.sh --dhcp pxe-server --mode proxy
#   scripts/qemu-boot.sh --uefi-http            # OVMF UEFI HTTP boot -> snponly.efi
#
# Options:
#   --firmware bios|uefi    bios: SeaBIOS with QEMU's iPXE option ROM (it asks DHCP, gets the
#                           iPXE script directly); uefi: OVMF and its own PXE stack (no option
#                           ROM), which fetches snponly.efi, which fetches the script. [bios]
#   --mode full|proxy       full: one DHCP server gives address and boot file; proxy: dnsmasq
#                           (another namespace on the segment) gives the address, pxe-server
#                           the boot file (ProxyDHCP, needs --dhcp pxe-server). [full]
#   --dhcp dnsmasq|pxe-server   who answers DHCP with the boot file. TFTP is always pxe-server.
#                           [pxe-server]
#   --http                  kernel and initrd over HTTP: pxe-server's [http] service, the VM
#                           as a [[hosts]] entry with next_boot = "install", iPXE sent
#                           http://SERVER/boot.ipxe (which renders the install script); after
#                           the boot, the installer callback is made and the next script
#                           must be the local-disk one (needs --dhcp pxe-server)
#   --uefi-http             UEFI HTTP boot instead of PXE (implies --firmware uefi, needs
#                           --dhcp pxe-server): OVMF's PXE client is switched off (fw_cfg
#                           opt/org.tianocore/IPv4PXESupport and IPv6PXESupport = no), so its
#                           HTTP boot client asks DHCP with option 60 HTTPClient, gets the URL
#                           http://SERVER/snponly.efi ([boot] uefi_http) and loads it from
#                           pxe-server's [http] service; snponly.efi (iPXE) goes on as usual.
#                           Checked: the firmware's GET in the capture, HTTP bytes in
#                           `pxe-server status`, no TFTP transfer of snponly.efi
#   --kvm                   -accel kvm (default TCG: a KVM guest stalled inside iPXE here)
#   --nic virtio|e1000      the guest NIC [virtio]; e1000 with bios only
#   --timeout SECS          how long to wait for the marker [180]
#   --bin PATH              the pxe-server binary [$PXE_SERVER_BIN, else target/release or
#                           target/debug, else built with cargo]
#   --assets DIR            boot assets (scripts/qemu-assets.sh builds them) [target/qemu-assets]
#   --logdir DIR            logs, configs and the capture [target/qemu-boot/FIRMWARE-MODE-DHCP]
#   --quiet                 do not echo the serial console
#   --no-capture            no tshark capture (and no DHCP/TFTP summary)
#
# Prints "PASS ..." (exit 0) or "FAIL ..." (exit 1) and where the logs are; exit 2 for a usage
# or setup error. Everything it creates (namespaces, processes) is removed on exit; the logs stay.
# Runs are serialised with a lock (two TCG guests on a 2-core machine help nobody).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
# shellcheck source=scripts/lib/netns.sh
source scripts/lib/netns.sh

FIRMWARE=bios MODE=full DHCP=pxe-server ACCEL=tcg NIC=virtio TIMEOUT=180 HTTP=0 UEFI_HTTP=0
FIRMWARE_SET=0
BIN="${PXE_SERVER_BIN:-}" ASSETS=target/qemu-assets LOGDIR="" QUIET=0 CAPTURE=1
LOCK_WAIT="${QEMU_BOOT_LOCK_WAIT:-1200}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "qemu-boot: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --firmware) FIRMWARE="${2:-}"; FIRMWARE_SET=1; shift 2 ;;
        --mode) MODE="${2:-}"; shift 2 ;;
        --dhcp) DHCP="${2:-}"; shift 2 ;;
        --kvm) ACCEL=kvm; shift ;;
        --http) HTTP=1; shift ;;
        --uefi-http) UEFI_HTTP=1; shift ;;
        --nic) NIC="${2:-}"; shift 2 ;;
        --timeout) TIMEOUT="${2:-}"; shift 2 ;;
        --bin) BIN="${2:-}"; shift 2 ;;
        --assets) ASSETS="${2:-}"; shift 2 ;;
        --logdir) LOGDIR="${2:-}"; shift 2 ;;
        --quiet) QUIET=1; shift ;;
        --no-capture) CAPTURE=0; shift ;;
        -h | --help) usage ;;
        *) echo "qemu-boot: unknown option $1" >&2; usage ;;
    esac
done
case "$FIRMWARE" in bios | uefi) ;; *) die "--firmware must be bios or uefi" ;; esac
if [ "$UEFI_HTTP" -eq 1 ]; then
    [ "$FIRMWARE" = uefi ] || [ "$FIRMWARE_SET" -eq 0 ] || die "--uefi-http is a UEFI boot: --firmware uefi"
    FIRMWARE=uefi
    [ "$DHCP" = pxe-server ] || die "--uefi-http needs --dhcp pxe-server (it answers HTTPClient with the URL)"
fi
case "$MODE" in full | proxy) ;; *) die "--mode must be full or proxy" ;; esac
case "$DHCP" in dnsmasq | pxe-server) ;; *) die "--dhcp must be dnsmasq or pxe-server" ;; esac
case "$NIC" in virtio) NICDEV=virtio-net-pci ;; e1000) NICDEV=e1000 ;; *) die "--nic: virtio or e1000" ;; esac
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -gt 0 ] || die "--timeout must be a number of seconds"
if [ "$FIRMWARE" = uefi ] && [ "$NIC" = e1000 ]; then
    # OVMF has a virtio-net driver but no e1000 driver; without an option ROM (which would put
    # iPXE, not the firmware's own PXE client, on the wire) it never sees the NIC.
    die "--firmware uefi needs --nic virtio (OVMF has no e1000 driver of its own)"
fi
if [ "$HTTP" -eq 1 ] && [ "$DHCP" = dnsmasq ]; then
    die "--http needs --dhcp pxe-server (its DHCP hands iPXE the HTTP script URL)"
fi
if [ "$MODE" = proxy ] && [ "$DHCP" = dnsmasq ]; then
    die "--mode proxy means pxe-server answers as ProxyDHCP next to dnsmasq: use --dhcp pxe-server"
fi
[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, tap devices)"
for tool in qemu-system-x86_64 ip dnsmasq flock; do
    command -v "$tool" >/dev/null || die "$tool missing: run scripts/install-deps.sh"
done
[ "$ACCEL" = kvm ] && [ ! -e /dev/kvm ] && die "--kvm: /dev/kvm does not exist"
if [ "$CAPTURE" -eq 1 ] && ! command -v tshark >/dev/null; then
    echo "qemu-boot: tshark missing: no capture" >&2
    CAPTURE=0
fi
OVMF_CODE=/usr/share/OVMF/OVMF_CODE.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS.fd
if [ "$FIRMWARE" = uefi ]; then
    [ -s "$OVMF_CODE" ] && [ -s "$OVMF_VARS" ] || die "OVMF missing: run scripts/install-deps.sh"
fi

TAG="$FIRMWARE-$MODE-$DHCP"
if [ "$UEFI_HTTP" -eq 1 ]; then TAG="$TAG-uefihttp"; fi
[ "$HTTP" -eq 1 ] && TAG="$TAG-http"
LOGDIR="${LOGDIR:-target/qemu-boot/$TAG}"

# One run at a time (the lock is released when the script exits).
exec 9>/run/pxe-server-qemu-boot.lock
if ! flock -n 9; then
    echo "qemu-boot: another run holds the lock; waiting up to ${LOCK_WAIT}s" >&2
    flock -w "$LOCK_WAIT" 9 || die "lock not acquired in ${LOCK_WAIT}s"
fi

# --- inputs ---------------------------------------------------------------------------------
ASSETS="$(bash scripts/qemu-assets.sh "$ASSETS")"
if [ -z "$BIN" ]; then
    for b in target/release/pxe-server target/debug/pxe-server; do
        if [ -x "$b" ]; then BIN="$b"; break; fi
    done
fi
if [ -z "$BIN" ]; then
    echo "qemu-boot: building pxe-server (cargo build --release)" >&2
    export PATH="$HOME/.cargo/bin:$PATH"
    cargo build --release -q -p pxe-server
    BIN=target/release/pxe-server
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"
LOGDIR="$(cd "$LOGDIR" && pwd)"
SERIAL="$LOGDIR/serial.log"
: > "$SERIAL"

# --- the network ----------------------------------------------------------------------------
# client ns: bridge br0 = tap0 (QEMU's NIC) + the veth to the server (+ the veth to the
# address server in proxy mode). server ns: 10.77.0.1 = pxe-server (+ the DHCP server in full
# mode). dhcp ns (proxy mode): 10.77.0.2 = dnsmasq giving addresses only.
NET=10.77.0
SRV_IP="$NET.1" DHC_IP="$NET.2"
if [ "$FIRMWARE" = bios ]; then VM_MAC=52:54:00:77:00:10; else VM_MAC=52:54:00:77:00:20; fi
P="pq$$"
NS_SRV="$P-srv" NS_CLI="$P-cli" NS_DHC="$P-dhc"
PIDS=()
TAIL_PID=""

cleanup() {
    local pid ns
    [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    netns_delete "$NS_CLI" "$NS_SRV" "$NS_DHC"
}
on_exit cleanup

ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do ip -n "$ns" link set lo up; done
ip -n "$NS_CLI" link add br0 type bridge
ip -n "$NS_CLI" link set br0 type bridge stp_state 0 forward_delay 0
ip -n "$NS_CLI" tuntap add tap0 mode tap
ip link add s0 netns "$NS_SRV" type veth peer name s0p netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev s0
ip -n "$NS_SRV" link set s0 up
for dev in tap0 s0p; do
    ip -n "$NS_CLI" link set "$dev" master br0
    ip -n "$NS_CLI" link set "$dev" up
done
if [ "$MODE" = proxy ]; then
    ip netns add "$NS_DHC"
    ip -n "$NS_DHC" link set lo up
    ip link add d0 netns "$NS_DHC" type veth peer name d0p netns "$NS_CLI"
    ip -n "$NS_DHC" addr add "$DHC_IP/24" dev d0
    ip -n "$NS_DHC" link set d0 up
    ip -n "$NS_CLI" link set d0p master br0
    ip -n "$NS_CLI" link set d0p up
fi
ip -n "$NS_CLI" link set br0 up

# --- capture --------------------------------------------------------------------------------
PCAP="$LOGDIR/capture.pcapng"
if [ "$CAPTURE" -eq 1 ]; then
    # Every UDP datagram except TFTP DATA (opcode 3 in the first two payload bytes; DHCP
    # starts with op 1 or 2): requests, option acknowledgements, ACKs and errors are kept.
    # With --uefi-http also what clients send to TCP port 80 (requests and ACKs, no file data).
    FILTER='udp and not udp[8:2] = 3'
    [ "$UEFI_HTTP" -eq 0 ] || FILTER="($FILTER) or (tcp dst port 80)"
    ip netns exec "$NS_SRV" tshark -q -n -i s0 -f "$FILTER" -w "$PCAP" \
        > "$LOGDIR/tshark.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        grep -q "Capturing on" "$LOGDIR/tshark.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "Capturing on" "$LOGDIR/tshark.log" || {
        echo "qemu-boot: tshark did not start (see $LOGDIR/tshark.log); no capture" >&2
        CAPTURE=0
    }
fi

# --- pxe-server -----------------------------------------------------------------------------
CONF="$LOGDIR/pxe-server.toml"
{
    cat <<TOML
# Written by scripts/qemu-boot.sh ($TAG)
[tftp]
root = "$ASSETS"
listen = ["0.0.0.0:69"]
threads = 1
[control]
socket = "$LOGDIR/control.sock"
TOML
    if [ "$DHCP" = pxe-server ]; then
        cat <<TOML

[dhcp]
enabled = true
mode = "$MODE"
interfaces = ["s0"]
server_ip = "$SRV_IP"
next_server = "$SRV_IP"
pxe_port_4011 = true
lease_db = "$LOGDIR/leases.redb"
TOML
        if [ "$MODE" = full ]; then
            cat <<TOML

[[dhcp.subnets]]
subnet = "$NET.0/24"
range_start = "$NET.100"
range_end = "$NET.199"
lease_time_secs = 600
TOML
        fi
        cat <<TOML

[boot]
bios = "undionly.kpxe"
uefi_x64 = "snponly.efi"
TOML
        # UEFI HTTP boot (option 93 arch 16): the firmware gets a URL, not a TFTP file name.
        if [ "$UEFI_HTTP" -eq 1 ]; then
            echo "uefi_http = \"http://$SRV_IP/snponly.efi\""
        fi
        if [ "$HTTP" -eq 1 ]; then
            # iPXE gets the HTTP script; the install script it renders loads the kernel and
            # initrd over HTTP (built-in ipxe/install.ipxe), with this command line.
            cat <<TOML
ipxe_script = "http://$SRV_IP/boot.ipxe"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0,115200 panic=-1 pxetest.platform=\${platform} pxetest.via=http"

[http]
enabled = true
listen = ["$SRV_IP:80"]

[[hosts]]
mac = "$VM_MAC"
hostname = "vm-$FIRMWARE"
next_boot = "install"
TOML
        else
            echo 'ipxe_script = "boot.ipxe"'
            if [ "$UEFI_HTTP" -eq 1 ]; then
                cat <<TOML

[http]
enabled = true
listen = ["$SRV_IP:80"]
TOML
            fi
        fi
    fi
} > "$CONF"
"$BIN" check --config "$CONF" > /dev/null 2> "$LOGDIR/pxe-server-check.log" ||
    die "pxe-server refuses $CONF: $(cat "$LOGDIR/pxe-server-check.log")"
ip netns exec "$NS_SRV" env RUST_LOG="${RUST_LOG:-info}" "$BIN" serve --config "$CONF" \
    > "$LOGDIR/pxe-server.log" 2>&1 &
PIDS+=($!)
SERVER_PID=$!
wait_udp_port "$NS_SRV" 0.0.0.0 69 10 || die "pxe-server TFTP did not start: $LOGDIR/pxe-server.log"

fail() {
    echo "FAIL $TAG: $*"
    echo "logs: $LOGDIR (serial.log, pxe-server.log, dnsmasq.log, capture.pcapng)"
    exit 1
}

# --- DHCP -----------------------------------------------------------------------------------
DNSMASQ_COMMON=(--keep-in-foreground --conf-file=/dev/null --port=0 --user=root --pid-file=
    --bind-interfaces --log-dhcp "--log-facility=$LOGDIR/dnsmasq.log"
    "--dhcp-leasefile=$LOGDIR/dnsmasq.leases" --dhcp-authoritative)
if [ "$DHCP" = dnsmasq ]; then
    # Full mode: addresses and boot files. iPXE (user class "iPXE" or option 175) gets the
    # script; UEFI x64 PXE (arch 7 or 9) snponly.efi; BIOS PXE undionly.kpxe. No TFTP here.
    ip netns exec "$NS_SRV" dnsmasq "${DNSMASQ_COMMON[@]}" --interface=s0 \
        "--dhcp-range=$NET.100,$NET.199,255.255.255.0,10m" \
        --dhcp-userclass=set:ipxe,iPXE --dhcp-match=set:ipxe,175 \
        --dhcp-match=set:efi64,option:client-arch,7 --dhcp-match=set:efi64,option:client-arch,9 \
        "--dhcp-boot=tag:ipxe,boot.ipxe,,$SRV_IP" \
        "--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi,,$SRV_IP" \
        "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,$SRV_IP" \
        > "$LOGDIR/dnsmasq.out" 2>&1 &
    PIDS+=($!)
    wait_udp_port "$NS_SRV" 0.0.0.0 67 10 || die "dnsmasq did not start: $LOGDIR/dnsmasq.out"
else
    if [ "$MODE" = proxy ]; then
        # The address server next to us: addresses only, no boot information.
        ip netns exec "$NS_DHC" dnsmasq "${DNSMASQ_COMMON[@]}" --interface=d0 \
            "--dhcp-range=$NET.100,$NET.199,255.255.255.0,10m" \
            > "$LOGDIR/dnsmasq.out" 2>&1 &
        PIDS+=($!)
        wait_udp_port "$NS_DHC" 0.0.0.0 67 10 || die "dnsmasq did not start: $LOGDIR/dnsmasq.out"
    fi
    # pxe-server's own DHCP service ([dhcp] in the config) must be listening on port 67.
    wait_udp_port "$NS_SRV" 0.0.0.0 67 10 ||
        fail "pxe-server does not listen on UDP 67 (is DHCP wired into 'serve'?)"
fi

# --- the guest ------------------------------------------------------------------------------
QEMU=(qemu-system-x86_64 -name "pxe-$TAG" -accel "$ACCEL" -m 512 -smp 1
    -display none -monitor none -serial "file:$SERIAL" -no-reboot
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no)
if [ "$FIRMWARE" = bios ]; then
    # SeaBIOS runs the NIC's iPXE option ROM; with no VGA, SeaBIOS's serial console
    # (etc/sercon-port, 0x3f8 as a little-endian integer, makes it print on COM1 too).
    printf '\xf8\x03' > "$LOGDIR/sercon-port"
    QEMU+=(-machine pc -vga none -fw_cfg "name=etc/sercon-port,file=$LOGDIR/sercon-port" -device "$NICDEV,netdev=n0,mac=$VM_MAC,bootindex=0")
else
    # OVMF with its own NIC driver and PXE stack: no option ROM, so the firmware's native PXE
    # client (not iPXE) does the first DHCP and TFTP.
    cp "$OVMF_VARS" "$LOGDIR/OVMF_VARS.fd"
    QEMU+=(-machine q35
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
        -drive "if=pflash,format=raw,unit=1,file=$LOGDIR/OVMF_VARS.fd"
        -device "$NICDEV,netdev=n0,mac=$VM_MAC,romfile=,bootindex=0")
    if [ "$UEFI_HTTP" -eq 1 ]; then
        # OVMF makes PXEv4, PXEv6, HTTPv4 and HTTPv6 boot options for the NIC and tries them in
        # that order. Its PXE driver reads these fw_cfg switches at start (PxeBcPcdProducerLib):
        # with both off there are no PXE options, so the first network option is HTTP boot,
        # without waiting for PXE's DHCP to time out first.
        QEMU+=(-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=no
            -fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=no)
    fi
fi
printf '%q ' "${QEMU[@]}" > "$LOGDIR/qemu.cmd"
echo >> "$LOGDIR/qemu.cmd"
echo "qemu-boot: $TAG: booting (accel $ACCEL, timeout ${TIMEOUT}s); serial console: $SERIAL" >&2
START=$(date +%s.%N)
ip netns exec "$NS_CLI" "${QEMU[@]}" < /dev/null > "$LOGDIR/qemu.log" 2>&1 &
QEMU_PID=$!
PIDS+=("$QEMU_PID")
if [ "$QUIET" -eq 0 ]; then
    tail -n +1 -f "$SERIAL" &
    TAIL_PID=$!
fi

MARKER="PXE-BOOT-OK $FIRMWARE"
result=timeout
deadline=$(($(date +%s) + TIMEOUT))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if grep -aq "$MARKER" "$SERIAL"; then
        result=pass
        break
    fi
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
        grep -aq "$MARKER" "$SERIAL" && result=pass || result=exited
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        result=server-died
        break
    fi
    sleep 0.5
done
ELAPSED=$(awk -v a="$(date +%s.%N)" -v b="$START" 'BEGIN {printf "%.1f", a - b}')
if [ -n "$TAIL_PID" ]; then
    sleep 0.3
    kill "$TAIL_PID" 2>/dev/null || true
    TAIL_PID=""
    echo
fi

# With --http: the kernel and initrd came over HTTP, then the installer's callback switches
# the VM to the local disk (what %post would do), and its next script must say so.
HTTP_NOTE=""
if [ "$result" = pass ] && [ $((HTTP + UEFI_HTTP)) -gt 0 ]; then
    "$BIN" status --json --socket "$LOGDIR/control.sock" > "$LOGDIR/status.json" 2>&1 || true
fi
# With --uefi-http: the firmware's first stage (snponly.efi) came from the HTTP service (the
# capture is checked below: the firmware's own GET, and no TFTP read of the file).
if [ "$result" = pass ] && [ "$UEFI_HTTP" -eq 1 ]; then
    efi_size=$(stat -c %s "$ASSETS/snponly.efi")
    got=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["http"]["metrics"]; print(m["bytes_sent"], m["responses_2xx"])' "$LOGDIR/status.json" 2>/dev/null || echo "0 0")
    read -r uefi_http_bytes uefi_http_2xx <<< "$got"
    if [ "$uefi_http_2xx" -lt 1 ] || [ "$uefi_http_bytes" -lt "$efi_size" ]; then
        result=uefi-http-missing
    else
        HTTP_NOTE=" (UEFI HTTP boot: snponly.efi over HTTP, $uefi_http_bytes HTTP bytes sent)"
    fi
fi
if [ "$result" = pass ] && [ "$HTTP" -eq 1 ]; then
    want=$(( $(stat -c %s "$ASSETS/vmlinuz") + $(stat -c %s "$ASSETS/initrd.img") ))
    got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["http"]["metrics"]["bytes_sent"], s["http"]["install"]["scripts_install"])' "$LOGDIR/status.json" 2>/dev/null || echo "0 0")
    read -r http_bytes scripts <<< "$got"
    if [ "$http_bytes" -lt "$want" ] || [ "$scripts" -lt 1 ]; then
        result=http-missing
    else
        # The callback URL holds the host's install token: the operator's view of it is
        # `pxe-server host ... show` (root, through the control socket).
        key="mac:$VM_MAC"
        show() { "$BIN" host "vm-$FIRMWARE" show --json --config "$CONF" 2>> "$LOGDIR/host.log"; }
        field() { python3 -c 'import json,sys; print(json.load(sys.stdin)["hosts"][0][sys.argv[1]])' "$1"; }
        token=$(show | field token || true)
        ip netns exec "$NS_SRV" curl -sS --fail -X POST "http://$SRV_IP/done/$key/$token" \
            > "$LOGDIR/callback.txt" 2>&1 || result=http-callback
        next_boot=$(show | field next_boot || true)
        if [ "$result" = pass ] && [ "$next_boot" = local ]; then
            HTTP_NOTE="$HTTP_NOTE (kernel+initrd over HTTP: $http_bytes bytes; after the callback the next script boots the local disk)"
        else
            result=http-callback
        fi
    fi
fi

# Stop the guest and the servers (tshark last so it sees everything), then summarise.
kill "$QEMU_PID" 2>/dev/null || true
kill -INT "$SERVER_PID" 2>/dev/null || true
sleep 0.5
if [ "$CAPTURE" -eq 1 ]; then
    kill -INT "${PIDS[0]}" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "${PIDS[0]}" 2>/dev/null || break; sleep 0.1; done
    {
        echo "== DHCP (time, source > destination, message, siaddr, boot file, vendor class)"
        tshark -n -r "$PCAP" -Y dhcp -T fields -E separator='|' -e frame.time_relative \
            -e ip.src -e ip.dst -e udp.dstport -e dhcp.option.dhcp -e dhcp.ip.server \
            -e dhcp.file -e dhcp.option.bootfile_name -e dhcp.option.vendor_class_id \
            2>/dev/null | awk -F'|' '
            BEGIN { split("DISCOVER OFFER REQUEST DECLINE ACK NAK RELEASE INFORM", m, " ") }
            { f = $8 != "" ? $8 : $7
              printf "%8.3f %s > %s:%s %s siaddr=%s file=%s %s\n", $1, $2, $3, $4,
                  ($5 in m ? m[$5] : "type-" $5), $6, (f == "" ? "-" : f), $9 }' |
            head -n 40
        echo "== TFTP transfers (time, client, file, options asked, options granted, ACKs, last block)"
        # One line per read request: what the client asked, what our OACK granted (or the
        # ERROR), how many ACKs the client sent and the last block it acknowledged; with
        # windowsize W the ACKs are about blocks/W.
        tshark -n -r "$PCAP" -Y tftp -T fields -E separator='|' -E aggregator=',' \
            -e frame.time_relative -e ip.src -e udp.srcport -e udp.dstport -e tftp.opcode \
            -e tftp.source_file -e tftp.option.name -e tftp.option.value -e tftp.block \
            -e tftp.error.message 2>/dev/null | awk -F'|' '
            function opts(n, v,   a, b, i, k, out) {
                k = split(n, a, ","); split(v, b, ","); out = ""
                for (i = 1; i <= k; i++) out = out (i > 1 ? "," : "") a[i] "=" b[i]
                return out == "=" ? "-" : out
            }
            $5 == 1 { r++; t[r] = $1; cli[r] = $2; file[r] = $6; asked[r] = opts($7, $8)
                      granted[r] = "-"; byport[$3] = r; next }
            $5 == 6 && ($4 in byport) { i = byport[$4]; granted[i] = opts($7, $8)
                      srv[$3] = i; next }
            $5 == 5 && ($4 in byport) { i = byport[$4]; granted[i] = "ERROR(" $10 ")"; next }
            $5 == 5 && ($3 in byport) { i = byport[$3]; note[i] = "client-error(" $10 ")"; next }
            $5 == 4 && ($4 in srv) { i = srv[$4]; acks[i]++; if ($9 + 0 > last[i]) last[i] = $9 + 0 }
            END { for (i = 1; i <= r; i++)
                    printf "%8.3f %s %s asked:%s granted:%s acks:%d last-block:%d %s\n", t[i],
                        cli[i], file[i], asked[i], granted[i], acks[i], last[i], note[i] }' |
            head -n 60
        if [ "$UEFI_HTTP" -eq 1 ]; then
            echo "== HTTP requests (time, client, method, URI, User-Agent)"
            tshark -n -r "$PCAP" -Y http.request -T fields -E separator='|' \
                -e frame.time_relative -e ip.src -e http.request.method -e http.request.uri \
                -e http.user_agent 2>/dev/null |
                awk -F'|' '{ printf "%8.3f %s %s %s %s\n", $1, $2, $3, $4, ($5 == "" ? "-" : $5) }' |
                head -n 40
        fi
    } > "$LOGDIR/summary.txt" 2>&1 || true
    echo "---- network summary ($LOGDIR/summary.txt)"
    cat "$LOGDIR/summary.txt"
    if [ "$result" = pass ] && [ "$UEFI_HTTP" -eq 1 ]; then
        # The firmware's HTTP boot client (User-Agent UefiHttpBoot/...) fetched the file, and
        # no TFTP read request asked for it.
        if ! awk '$3 == "GET" && $4 == "/snponly.efi" && $5 ~ /^UefiHttpBoot/' \
            "$LOGDIR/summary.txt" | grep -q .; then
            result=uefi-http-capture
        elif awk '$3 == "snponly.efi"' "$LOGDIR/summary.txt" | grep -q .; then
            result=uefi-http-tftp
        fi
    fi
fi

case "$result" in
    pass)
        echo "PASS $TAG: '$MARKER' on the serial console ${ELAPSED}s after QEMU started$HTTP_NOTE"
        echo "logs: $LOGDIR"
        exit 0
        ;;
    timeout) fail "no '$MARKER' within ${TIMEOUT}s" ;;
    exited) fail "QEMU exited after ${ELAPSED}s without '$MARKER' (see qemu.log)" ;;
    server-died) fail "pxe-server exited after ${ELAPSED}s (see pxe-server.log)" ;;
    http-missing) fail "booted, but not over HTTP (status.json: http bytes $http_bytes < $want or no install script)" ;;
    uefi-http-missing) fail "booted, but pxe-server's HTTP service did not send snponly.efi (status.json: $uefi_http_bytes bytes, $uefi_http_2xx 2xx)" ;;
    uefi-http-capture) fail "booted, but the capture shows no GET /snponly.efi from the firmware (UefiHttpBoot) (summary.txt)" ;;
    uefi-http-tftp) fail "booted, but snponly.efi was (also) read over TFTP (summary.txt)" ;;
    http-callback) fail "the installer callback did not switch the next boot to local (callback.txt, next-script.ipxe)" ;;
esac
