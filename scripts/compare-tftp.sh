#!/usr/bin/env bash
# Side-by-side TFTP boot storm: pxe-server vs dnsmasq vs tftpd-hpa vs the raw UDP limit of the
# same virtual path, in one run. Run as root (it builds network namespaces).
#
#   scripts/compare-tftp.sh [--clients "200 1000"] [--size-mib 16] [--windowsize 4]
#                           [--servers "pxe-server dnsmasq tftpd-hpa"] [--engine auto]
#
# Prints a markdown table: aggregate goodput, per-client completion p50/p99/max, failures,
# server CPU seconds and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/netns.sh

CLIENTS="200 1000"
SIZE_MIB=16
WINDOW=4
BLKSIZE=1468
SERVERS="pxe-server dnsmasq tftpd-hpa"
ENGINE=auto
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        --size-mib) SIZE_MIB="$2"; shift 2 ;;
        --windowsize) WINDOW="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "compare-tftp.sh: run as root (network namespaces)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

P=cmptftp
NET=10.88.0
SRV="$NET.1"
WORK=$(mktemp -d /tmp/compare-tftp.XXXXXX)
SERVER_PID=
SAMPLER=
SAVED_SYSCTLS=()
on_exit storm_cleanup

cargo build --release -q -p pxe-server -p pxe-bench
BIN=target/release
mkdir -p "$WORK/root"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/root/image.bin"
netns_create "$P" "$NET"
# One address per simulated machine, as in a cluster (per-client limits see real clients).
MAX_CLIENTS=0
for n in $CLIENTS; do [ "$n" -gt "$MAX_CLIENTS" ] && MAX_CLIENTS=$n; done
SOURCE_BASE=$(netns_client_addrs "$P" "$NET" "$MAX_CLIENTS")
# Global sysctls for the storm (see lib/netns.sh): a thousand clients' sockets queue a window
# each. Restored on exit, Ctrl-C included.
storm_sysctls

# CPU time of a server and of every process it forks (tftpd-hpa forks one per transfer); the
# clients run outside its cgroup (client_exec).
server_cpu_accounting

start_server() {
    case "$1" in
        pxe-server)
            cat > "$WORK/pxe.toml" <<TOML
[tftp]
root = "$WORK/root"
listen = ["$SRV:69"]
engine = "$ENGINE"
[control]
socket = "$WORK/control.sock"
TOML
            ip netns exec "$P-srv" "$BIN/pxe-server" serve --config "$WORK/pxe.toml" \
                > "$WORK/server.log" 2>&1 &
            ;;
        dnsmasq)
            ip netns exec "$P-srv" dnsmasq --no-daemon --port=0 --enable-tftp \
                --tftp-root="$WORK/root" --listen-address="$SRV" --bind-interfaces \
                --tftp-max=5000 --quiet-tftp --user=root --group=root --pid-file= --conf-file=/dev/null \
                > "$WORK/server.log" 2>&1 &
            ;;
        tftpd-hpa)
            ip netns exec "$P-srv" /usr/sbin/in.tftpd --foreground --listen --user root \
                --address "$SRV:69" --secure "$WORK/root" > "$WORK/server.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    wait_udp_port "$P-srv" "$SRV" 69 10
}


echo "raw UDP limit of the path (iperf3, 1472-byte datagrams, server -> client) ..." >&2
ip netns exec "$P-cli" iperf3 -s -1 -B "$NET.2" > /dev/null 2>&1 &
sleep 0.5
RAW=$(ip netns exec "$P-srv" iperf3 -u -b 0 -l 1472 -t 5 -c "$NET.2" -J 2>/dev/null |
    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print("%.0f" % (e["bits_per_second"]*(1-e["lost_percent"]/100)/1e6))' || echo "n/a")

ROWS=()
for n in $CLIENTS; do
    for s in $SERVERS; do
        echo "== $s, $n clients x ${SIZE_MIB} MiB, blksize $BLKSIZE, windowsize $WINDOW asked" >&2
        start_server "$s"
        echo 0 > "$WORK/rss"
        (
            [ -n "$CG" ] && echo "$BASHPID" > /sys/fs/cgroup/cpuacct/cgroup.procs
            sample_rss "$SERVER_PID" "$WORK/rss"
        ) &
        SAMPLER=$!
        c0=$(cpu_ns)
        set +e
        client_exec ip netns exec "$P-cli" "$BIN/pxe-bench" tftp-storm --server "$SRV" --file image.bin \
            --verify "$WORK/root/image.bin" --clients "$n" --blksize "$BLKSIZE" \
            --windowsize "$WINDOW" --deadline-s 600 --source-base "$SOURCE_BASE" \
            --source-count "$n" --json > "$WORK/report.json"
        set -e
        c1=$(cpu_ns)
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
        row=$(python3 - "$WORK/report.json" "$s" "$n" "$(( c1 - c0 ))" "$(cat "$WORK/rss")" <<'PY'
import json, sys
path, server, n, cpu_ns, rss = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {server} | {n} | no report ({e}) | | | | | | |")
    sys.exit(0)
fails = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "0"
print(f"| {server} | {n} | {r['goodput_mbit_s']:.0f} | {r['completion_ms_p50']/1000:.2f} | "
      f"{r['completion_ms_p99']/1000:.2f} | {r['completion_ms_max']/1000:.2f} | {fails} | "
      f"{int(cpu_ns)/1e9:.2f} | {int(rss)/1024:.0f} |")
PY
)
        echo "$row" >&2
        ROWS+=("$row")
        sleep 1
    done
done

echo
echo "Path: veth between two network namespaces on $(hostname), $(nproc) cores, $(uname -r)."
echo "Raw UDP limit of the same path (iperf3 -u, 1472-byte datagrams): ${RAW} Mbit/s"
echo
echo "| server | clients | goodput Mbit/s | p50 s | p99 s | max s | failures | server CPU s | server peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
