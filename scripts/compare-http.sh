#!/usr/bin/env bash
# Kernel + initrd to N concurrent clients over HTTP vs over TFTP (windowsize 64) vs dnsmasq's
# TFTP, one after another in one run, on the same virtual network (`pxe-bench boot`, issue #6's
# benchmark). Run as root (it builds network namespaces).
#
#   scripts/compare-http.sh [--clients 1000] [--kernel-mib 8] [--initrd-mib 32] [--windowsize 64]
#                           [--runs "pxe-http pxe-tftp dnsmasq-tftp"] [--with-dhcp]
#                           [--deadline-s 900] [--http-timeout-ms 30000] [--tcp-cc cubic]
#                           [--no-verify]
#
# --tcp-cc: TCP congestion control inside both namespaces (per-namespace sysctl), cubic by
# default as on a stock Debian; the host's own default may differ (this machine's is bbr).
#
# The same settings from the environment: CLIENTS, KERNEL_MIB, INITRD_MIB, WINDOWSIZE, RUNS,
# DEADLINE_S (flags win). KEEP_LOGS=DIR keeps every run's config, logs and JSON reports.
#
# Runs (rows):
#   pxe-http       pxe-server's [http] service: each client GETs /vmlinuz then /initrd.img on one
#                  keep-alive connection (`--http-base http://SERVER/`).
#   pxe-tftp       pxe-server's TFTP, the clients asking blksize 1432, tsize and windowsize W.
#   dnsmasq-tftp   dnsmasq's TFTP, asked the same; whether it honours the windowsize is probed
#                  (its OACK) and printed under the table.
# By default the DHCP phase is skipped (`--skip-dhcp`, no boot file): the comparison is about the
# transfer. --with-dhcp adds DHCP (full mode) and the boot file over TFTP from the same server
# to every row (dnsmasq then serves DHCP too).
#
# Each client has its own source address (TFTP sockets and HTTP connections alike); every
# file is compared byte-exact as it arrives (unless --no-verify).
#
# Prints a markdown table per run: ok/failed, time until the last client finished, p50/p99 of
# the kernel and initrd phases, goodput, server CPU seconds (cpuacct cgroup: the server and its
# children), server peak RSS, the simulator's own CPU; then the ratio table. A server that did
# not start, or a run where clients failed, is a row of the table, never left out.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/netns.sh

CLIENTS="${CLIENTS:-1000}"
KERNEL_MIB="${KERNEL_MIB:-8}"
INITRD_MIB="${INITRD_MIB:-32}"
WINDOWSIZE="${WINDOWSIZE:-64}"
RUNS="${RUNS:-pxe-http pxe-tftp dnsmasq-tftp}"
DEADLINE="${DEADLINE_S:-900}"
HTTP_TIMEOUT_MS=30000
TCP_CC=cubic
WITH_DHCP=0
VERIFY=1
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        --kernel-mib) KERNEL_MIB="$2"; shift 2 ;;
        --initrd-mib) INITRD_MIB="$2"; shift 2 ;;
        --windowsize) WINDOWSIZE="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --with-dhcp) WITH_DHCP=1; shift ;;
        --deadline-s) DEADLINE="$2"; shift 2 ;;
        --http-timeout-ms) HTTP_TIMEOUT_MS="$2"; shift 2 ;;
        --tcp-cc) TCP_CC="$2"; shift 2 ;;
        --no-verify) VERIFY=0; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "compare-http.sh: run as root (it builds network namespaces)" >&2; exit 1; }
for r in $RUNS; do
    case "$r" in
        pxe-http|pxe-tftp|dnsmasq-tftp) ;;
        *) echo "compare-http.sh: unknown run $r (pxe-http, pxe-tftp, dnsmasq-tftp)" >&2; exit 2 ;;
    esac
done
[ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 30000 ] ||
    { echo "compare-http.sh: --clients must be 1..30000" >&2; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
case " $RUNS " in
    *" dnsmasq-tftp "*) command -v dnsmasq > /dev/null ||
        { echo "compare-http.sh: dnsmasq is not installed (run scripts/install-deps.sh)" >&2; exit 1; } ;;
esac

P=cmphttp
NET=10.91.0
SRV="$NET.1"
CLI_IF="$P-c"
SRV_IF="$P-s"
POOL_FIRST=10.91.128.1
POOL_LAST=10.91.255.254
WORK=$(mktemp -d /tmp/compare-http.XXXXXX)
SERVER_PID=
SAMPLER=
SAVED_SYSCTLS=()
on_exit storm_cleanup

cargo build --release -q -p pxe-server -p pxe-bench
BIN=target/release
"$BIN/pxe-bench" boot --help | grep -q -- --http-base ||
    { echo "compare-http.sh: this pxe-bench has no 'boot --http-base'" >&2; exit 1; }

# The files (random bytes: every fetched file is compared byte-exact with them).
ROOT="$WORK/root"
mkdir -p "$ROOT"
head -c $((64 * 1024)) /dev/urandom > "$ROOT/undionly.kpxe"
head -c $((64 * 1024)) /dev/urandom > "$ROOT/snponly.efi"
printf '#!ipxe\nkernel http://%s/vmlinuz\ninitrd http://%s/initrd.img\nboot\n' "$SRV" "$SRV" \
    > "$ROOT/boot.ipxe"
head -c "$((KERNEL_MIB * 1024 * 1024))" /dev/urandom > "$ROOT/vmlinuz"
head -c "$((INITRD_MIB * 1024 * 1024))" /dev/urandom > "$ROOT/initrd.img"

netns_create "$P" "$NET"
# One address per simulated machine, as in a cluster (per-client limits see real clients).
SOURCE_BASE=$(netns_client_addrs "$P" "$NET" "$CLIENTS")
# Global sysctls for the storm (see lib/netns.sh), restored on exit.
storm_sysctls
# A namespace may only pick an algorithm the host allows (tcp_allowed_congestion_control).
allowed=$(sysctl -n net.ipv4.tcp_allowed_congestion_control)
case " $allowed " in
    *" $TCP_CC "*) ;;
    *) sysctl_set_saved net.ipv4.tcp_allowed_congestion_control="$allowed $TCP_CC" ;;
esac
for ns in "$P-srv" "$P-cli"; do
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$TCP_CC" ||
        { echo "compare-http.sh: TCP congestion control $TCP_CC unavailable" >&2; exit 1; }
done

# Server CPU: its cpuacct cgroup (clients run outside it).
server_cpu_accounting

start_server() { # RUN RUNDIR
    local r="$1" d="$2"
    case "$r" in
        pxe-http|pxe-tftp)
            {
                printf '[tftp]\nroot = "%s"\nlisten = ["%s:69"]\n' "$ROOT" "$SRV"
                printf '[http]\nenabled = true\nlisten = ["%s:80"]\nmax_connections = %d\n' \
                    "$SRV" $((CLIENTS + 100))
                printf '[control]\nsocket = "%s/control.sock"\n' "$d"
                if [ "$WITH_DHCP" = 1 ]; then
                    printf '[dhcp]\nenabled = true\nmode = "full"\ninterfaces = ["%s"]\n' "$SRV_IF"
                    printf 'lease_db = "%s/leases.redb"\n' "$d"
                    printf '[[dhcp.subnets]]\nsubnet = "%s.0/16"\nrange_start = "%s"\n' "$NET" "$POOL_FIRST"
                    printf 'range_end = "%s"\nrouter = "%s"\n' "$POOL_LAST" "$SRV"
                    printf '[boot]\nbios = "undionly.kpxe"\nuefi_x64 = "snponly.efi"\nipxe_script = "boot.ipxe"\n'
                fi
            } > "$d/pxe.toml"
            RUST_LOG=info ip netns exec "$P-srv" "$BIN/pxe-server" serve --config "$d/pxe.toml" \
                > "$d/server.log" 2>&1 &
            ;;
        dnsmasq-tftp)
            local dhcp=()
            if [ "$WITH_DHCP" = 1 ]; then
                dhcp=(--dhcp-range="$POOL_FIRST,$POOL_LAST,255.255.0.0,1h"
                    --dhcp-lease-max=40000 --dhcp-leasefile="$d/dnsmasq.leases"
                    --dhcp-authoritative --no-ping --dhcp-option=3,"$SRV"
                    --dhcp-match=set:efi64,option:client-arch,7 --dhcp-userclass=set:ipxe,iPXE
                    --dhcp-boot=tag:!efi64,tag:!ipxe,undionly.kpxe,,"$SRV"
                    --dhcp-boot=tag:efi64,tag:!ipxe,snponly.efi,,"$SRV"
                    --dhcp-boot=tag:ipxe,boot.ipxe,,"$SRV" --quiet-dhcp)
            fi
            # --tftp-max: dnsmasq's limit of simultaneous transfers (default 50); requests over
            # it get no answer. A client's next request can arrive while dnsmasq still holds its
            # previous transfer, so room for two per client, within this machine's open files
            # (a socket and a file per transfer): at most 9000, as compare.sh.
            tftp_max=$((2 * CLIENTS + 100))
            [ "$tftp_max" -le 9000 ] || tftp_max=9000
            ip netns exec "$P-srv" dnsmasq --no-daemon --port=0 --conf-file=/dev/null \
                --interface="$SRV_IF" --bind-interfaces --user=root --group=root --pid-file= \
                --enable-tftp --tftp-root="$ROOT" --tftp-max="$tftp_max" \
                "${dhcp[@]}" --quiet-tftp --log-facility="$d/dnsmasq.log" \
                > "$d/server.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    [ "$WITH_DHCP" = 0 ] || wait_udp_port "$P-srv" "$SRV" 67 15 || return 1
    wait_udp_port "$P-srv" "$SRV" 69 15 || return 1
    if [ "$r" = pxe-http ]; then wait_tcp_port "$P-srv" "$SRV" 80 15 || return 1; fi
}



# What a TFTP server answers to the options the simulated clients ask (one RRQ from the
# client namespace, then an ERROR to end it): does it honour the windowsize?
probe_oack() { # RUNDIR
    ip netns exec "$P-cli" python3 - "$SRV" "$WINDOWSIZE" > "$1/oack" 2>&1 <<'PY' || true
import socket, struct, sys
srv, win = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
opts = b"blksize\x001432\x00tsize\x000\x00windowsize\x00" + win.encode() + b"\x00"
s.sendto(b"\x00\x01vmlinuz\x00octet\x00" + opts, (srv, 69))
try:
    pkt, peer = s.recvfrom(65536)
except socket.timeout:
    print("no answer to the probe RRQ")
    sys.exit(0)
op = struct.unpack("!H", pkt[:2])[0]
s.sendto(struct.pack("!HH", 5, 0) + b"probe done\x00", peer)
if op == 6:
    parts = pkt[2:].split(b"\x00")
    o = {parts[i].decode().lower(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)}
    got = ", ".join(f"{k} {v}" for k, v in o.items())
    if o.get("windowsize") == win:
        print(f"honours windowsize {win} (OACK: {got})")
    elif "windowsize" in o:
        print(f"answers windowsize {o['windowsize']} to {win} (OACK: {got})")
    else:
        print(f"ignores windowsize (OACK: {got}): one block per ACK")
elif op == 3:
    print("ignores every option (DATA instead of OACK): 512-byte blocks, one per ACK")
else:
    print(f"answered opcode {op}")
PY
}

ROWS=()
NOTES=()
for r in $RUNS; do
    d="$WORK/$r"
    mkdir -p "$d"
    case "$r" in
        pxe-http) what="kernel + initrd over HTTP (keep-alive)" ;;
        *) what="kernel + initrd over TFTP, windowsize $WINDOWSIZE" ;;
    esac
    echo "== $r, $CLIENTS clients: $what, ${KERNEL_MIB} MiB + ${INITRD_MIB} MiB" >&2
    if ! start_server "$r" "$d"; then
        cat "$d/server.log" >&2 || true
        ROWS+=("| $r | $CLIENTS | did not start | | | | | | | | |")
        NOTES+=("$r did not start: $(tail -c 300 "$d/server.log" | tr '\n' ' ')")
        stop_server
        continue
    fi
    if [ "$r" != pxe-http ]; then
        probe_oack "$d"
        NOTES+=("${r%-tftp} TFTP asked blksize 1432, tsize, windowsize $WINDOWSIZE: $(cat "$d/oack")")
    fi
    echo 0 > "$d/rss"
    (
        [ -n "$CG" ] && echo "$BASHPID" > /sys/fs/cgroup/cpuacct/cgroup.procs
        sample_rss "$SERVER_PID" "$d/rss"
    ) &
    SAMPLER=$!
    args=(boot --clients "$CLIENTS" --interface "$CLI_IF"
          --kernel vmlinuz --initrd initrd.img
          --source-base "$SOURCE_BASE" --source-count "$CLIENTS"
          --windowsize "$WINDOWSIZE" --http-timeout-ms "$HTTP_TIMEOUT_MS"
          --deadline-s "$DEADLINE" --json --no-progress)
    if [ "$WITH_DHCP" = 1 ]; then
        args+=(--mode full --tftp-server "$SRV")
    else
        args+=(--skip-dhcp)
        [ "$r" = pxe-http ] || args+=(--tftp-server "$SRV")
    fi
    [ "$r" = pxe-http ] && args+=(--http-base "http://$SRV/")
    [ "$VERIFY" = 1 ] && args+=(--verify-dir "$ROOT")
    echo "pxe-bench ${args[*]}" > "$d/command"
    c0=$(cpu_ns)
    set +e
    client_exec ip netns exec "$P-cli" timeout $((DEADLINE + 60)) "$BIN/pxe-bench" "${args[@]}" \
        > "$d/report.json" 2> "$d/bench.err"
    rc=$?
    set -e
    c1=$(cpu_ns)
    stop_server
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
    row=$(python3 - "$d/report.json" "$r" "$CLIENTS" "$(( c1 - c0 ))" "$(cat "$d/rss")" "$rc" <<'PY'
import json, sys
path, name, n, cpu_ns, rss, rc = sys.argv[1:]
cpu = int(cpu_ns) / 1e9
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {name} | {n} | no report (pxe-bench exit {rc}, {type(e).__name__}) | | | | | | "
          f"{cpu:.2f} | {int(rss)/1024:.0f} | |\tnan\tnan\tnan\t")
    sys.exit(0)
ph = r["phases"]
s = lambda l, q: "-" if not l.get("count") else f"{l[q]/1e6:.2f}"
pq = lambda l: f"{s(l, 'p50_us')} / {s(l, 'p99_us')}"
via = ", ".join(f"{k} {v}" for k, v in sorted(r.get("transports", {}).items()))
fails = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("failures", {}).items()))
rt = r.get("retransmits", {})
h = r.get("http", {})
note = f"{name}: phases {via}; retransmits tftp {rt.get('tftp', 0)} dhcp {rt.get('dhcp', 0)}"
if h.get("connections"):
    note += f"; HTTP connections {h['connections']}, requests {h['requests']}"
if fails:
    note += f"; failures {{{fails}}}"
last = r["last_finished_s"] if r["failed"] == 0 else float("nan")
print(f"| {name} | {n} | {r['ok']} / {r['failed']} | {r['last_finished_s']:.2f} | "
      f"{pq(ph['kernel'])} | {pq(ph['initrd'])} | {pq(ph['total'])} | {r['goodput_mbit_s']:.0f} | "
      f"{cpu:.2f} | {int(rss)/1024:.0f} | {r['cpu_percent']:.0f}% ({r['cpu_user_s'] + r['cpu_system_s']:.2f} s) |"
      f"\t{r['goodput_mbit_s']}\t{last}\t{cpu}\t{note}")
PY
)
    IFS=$'\t' read -r cells goodput last cpu note <<< "$row"
    echo "$cells" >&2
    ROWS+=("$cells")
    echo "$goodput $last $cpu" > "$WORK/result-$r"
    [ -n "$note" ] && NOTES+=("$note")
    [ "$rc" -ne 0 ] && [ -s "$d/bench.err" ] &&
        NOTES+=("$r: pxe-bench exit $rc: $(tail -c 300 "$d/bench.err" | tr '\n' ' ')")
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS"; cp -r "$d" "$KEEP_LOGS/"
    fi
    sleep 1
done

# Ratios: goodput A/B (above 1: A delivered more), time until the last client B/A (above 1: A
# finished sooner), server CPU B/A (above 1: A needed less).
RATIOS=()
ratio() { # A B
    local a="$WORK/result-$1" b="$WORK/result-$2"
    [ -f "$a" ] && [ -f "$b" ] || return 0
    python3 - "$1" "$2" "$(cat "$a")" "$(cat "$b")" <<'PY'
import math, sys
an, bn, a, b = sys.argv[1:]
ga, la, ca = (float(x) for x in a.split())
gb, lb, cb = (float(x) for x in b.split())
ok = lambda *v: not any(math.isnan(x) for x in v)
g = f"{ga/gb:.2f}x" if ok(ga, gb) and gb > 0 else "n/a (no report)"
l = f"{lb/la:.2f}x" if ok(la, lb) and la > 0 else "n/a (clients failed)"
c = f"{cb/ca:.2f}x" if ok(ca, cb) and ca > 0 else "n/a"
print(f"| {an} vs {bn} | {g} | {l} | {c} |")
PY
}
for pair in "pxe-http pxe-tftp" "pxe-http dnsmasq-tftp" "pxe-tftp dnsmasq-tftp"; do
    # shellcheck disable=SC2086
    r=$(ratio $pair); [ -n "$r" ] && RATIOS+=("$r")
done

echo
echo "Machine: $(hostname), $(nproc) cores, Linux $(uname -r); pxe-server $(git describe --always --dirty 2>/dev/null || echo '?')," \
     "dnsmasq $(dnsmasq --version 2>/dev/null | awk 'NR==1{print $3}')."
echo "Path: veth between two network namespaces (TCP congestion control $TCP_CC); one source address per simulated machine; $CLIENTS clients at once (storm);" \
     "${KERNEL_MIB} MiB kernel + ${INITRD_MIB} MiB initrd$([ "$VERIFY" = 1 ] && echo ', every file verified byte-exact')$([ "$WITH_DHCP" = 1 ] && echo '; DHCP (full) and a 64 KiB boot file over TFTP first' || echo '; no DHCP (--skip-dhcp), no boot file')."
echo "Phase times p50 / p99 in seconds (kernel: from the connect or RRQ to its last byte; initrd: from its request)."
echo "Goodput: file bytes received per second over the run. Server CPU: $([ -n "$CG" ] && echo 'cpuacct cgroup (server and its children)' || echo '/proc of the server process')." \
     "Simulator CPU: pxe-bench's own, % of one core (seconds)."
echo
echo "| run | clients | ok / failed | last client s | kernel p50 / p99 s | initrd p50 / p99 s | total p50 / p99 s | goodput Mbit/s | server CPU s | server peak RSS MiB | simulator CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
if [ "${#RATIOS[@]}" -gt 0 ]; then
    echo
    echo "| A vs B | goodput A/B (>1: A more) | last client time B/A (>1: A sooner) | server CPU B/A (>1: A less) |"
    echo "|---|---|---|---|"
    printf '%s\n' "${RATIOS[@]}"
fi
if [ "${#NOTES[@]}" -gt 0 ]; then
    echo
    printf -- '- %s\n' "${NOTES[@]}"
fi
