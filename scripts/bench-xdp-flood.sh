#!/usr/bin/env bash
# The DHCP discovery filter under a flood: pxe-server (full mode) with the policy in XDP (driver
# and SKB mode), in the daemon (userspace fallback), and with no filter at all, one after another
# in the same namespaces, in one run. Run as root (it builds network namespaces).
#
#   scripts/bench-xdp-flood.sh [--period 10] [--clients 100] [--macs 4096]
#                              [--variants "xdp-driver xdp-skb userspace none"] [--rate 0]
#
# For each variant a fresh server starts, then for --period seconds two `pxe-bench dhcp-flood`
# processes send from the client namespace as fast as they can (--rate 0; or PPS each): plain
# DISCOVERs (no vendor class, like dhclient) cycling over --macs MACs, and one PXE ROM's
# DISCOVERs from a single MAC. Two seconds in, `pxe-bench dhcp-storm` boots --clients simulated
# PXE clients (full DORA, PXE retransmission timers) and measures their DHCP latency. A last
# row ("no flood") runs the same storm with nothing else, the latency floor.
#
# The filtering variants share one policy: drop_non_pxe = true, rate_per_sec = 5, burst = 10.
#
# Prints a markdown table: flood packets per second sent, what the filter dropped per second of
# flood, how many datagrams reached the responder in the whole run, the server's CPU seconds (cpuacct cgroup: the daemon
# only), the whole machine's busy and softirq CPU (from /proc/stat: XDP on a veth runs in
# softirq, charged to no daemon), and the PXE clients' completion and DHCP latency.
#
# Environment: KEEP_LOGS=DIR keeps each variant's logs and JSON reports.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/netns.sh

PERIOD=10
CLIENTS=100
MACS=4096
RATE=0
VARIANTS="xdp-driver xdp-skb userspace none"
while [ $# -gt 0 ]; do
    case "$1" in
        --period) PERIOD="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --macs) MACS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --variants) VARIANTS="$2"; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-xdp-flood.sh: run as root (network namespaces)" >&2; exit 1; }
[ "$PERIOD" -ge 5 ] || { echo "--period must be at least 5 (the storm starts 2 s in)" >&2; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

P=xdpflood
NET=10.91
SRV="$NET.0.1"
IF_SRV="$P-s"
IF_CLI="$P-c"
WORK=$(mktemp -d /tmp/bench-xdp-flood.XXXXXX)
SERVER_PID=
FLOOD_PIDS=()
cleanup() {
    for p in "${FLOOD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${SERVER_PID:-}" ] && kill -9 "$SERVER_PID" 2>/dev/null || true
    netns_destroy "$P"
    if [ -n "${CG:-}" ]; then
        echo $$ > /sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true
        rmdir "$CG" "$CGC" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
on_exit cleanup

cargo build --release -q -p pxe-server -p pxe-bench
BIN=target/release

netns_create "$P" "$NET.0"

# The daemon's CPU from a cpuacct cgroup; the load generators run in a second one.
CG=/sys/fs/cgroup/cpuacct/$P
CGC=/sys/fs/cgroup/cpuacct/$P-cli
if mkdir -p "$CG" "$CGC" 2>/dev/null && [ -w "$CG/cgroup.procs" ] && [ -w "$CGC/cgroup.procs" ]; then
    echo $$ > "$CG/cgroup.procs"
    cpu_ns() { cat "$CG/cpuacct.usage"; }
    client_exec() { sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CGC" "$@"; }
else
    CG=
    CGC=
    cpu_ns() { echo $(( $(proc_cpu_ticks "$SERVER_PID") * 1000000000 / $(getconf CLK_TCK) )); }
    client_exec() { "$@"; }
fi
# "busy softirq total" jiffies of the whole machine.
sys_jiffies() {
    awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; print busy, $8, busy+$5+$6; exit}' /proc/stat
}

write_config() { # VARIANT DIR
    local v="$1" d="$2" mode policy=1
    case "$v" in
        xdp-driver) mode=driver ;;
        xdp-skb) mode=skb ;;
        userspace) mode=off ;;
        none) mode=off; policy=0 ;;
        *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    mkdir -p "$d/tftp"
    cat > "$d/pxe.toml" <<TOML
[tftp]
root = "$d/tftp"
listen = ["$SRV:69"]
threads = 1
[dhcp]
enabled = true
mode = "full"
interfaces = ["$IF_SRV"]
pxe_port_4011 = false
lease_db = "$d/leases.redb"
[[dhcp.subnets]]
subnet = "$NET.0.0/16"
range_start = "$NET.1.1"
range_end = "$NET.240.255"
router = "$SRV"
[boot]
bios = "undionly.kpxe"
uefi_x64 = "snponly.efi"
[xdp]
mode = "$mode"
TOML
    if [ "$policy" = 1 ]; then
        printf 'drop_non_pxe = true\nrate_per_sec = 5\nburst = 10\n' >> "$d/pxe.toml"
    fi
    printf '[control]\nsocket = "%s/control.sock"\n' "$d" >> "$d/pxe.toml"
}

start_server() { # DIR
    RUST_LOG=info ip netns exec "$P-srv" "$BIN/pxe-server" serve --config "$1/pxe.toml" \
        > "$1/server.log" 2>&1 &
    SERVER_PID=$!
    wait_udp_port "$P-srv" "$SRV" 67 15 || { cat "$1/server.log" >&2; return 1; }
}


status() { "$BIN/pxe-server" status --json --socket "$1/control.sock"; }

storm() { # DIR -> storm.json
    client_exec ip netns exec "$P-cli" "$BIN/pxe-bench" dhcp-storm --clients "$CLIENTS" \
        --mode full --interface "$IF_CLI" --arch-mix bios=50,uefi=50 --deadline-s 60 --json \
        > "$1/storm.json" 2> "$1/storm.err" || true
}

ROWS=()
run_variant() { # VARIANT FLOOD(0|1)
    local v="$1" flood="$2" d="$WORK/$1-$2" c0 c1 j0 j1 t0 t1
    mkdir -p "$d"
    write_config "$v" "$d"
    echo "== $v, flood=$flood, ${PERIOD}s" >&2
    start_server "$d" || { ROWS+=("| $v | did not start |"); stop_server; return; }
    status "$d" > "$d/status0.json"
    c0=$(cpu_ns); j0=$(sys_jiffies); t0=$(date +%s.%N)
    FLOOD_PIDS=()
    if [ "$flood" = 1 ]; then
        for kind in non-pxe same-mac; do
            client_exec ip netns exec "$P-cli" "$BIN/pxe-bench" dhcp-flood --kind "$kind" \
                --macs "$MACS" --rate "$RATE" --duration-s "$PERIOD" --interface "$IF_CLI" \
                --sport 0 --json > "$d/flood-$kind.json" 2> "$d/flood-$kind.err" &
            FLOOD_PIDS+=($!)
        done
        sleep 2
    fi
    storm "$d"
    for p in "${FLOOD_PIDS[@]}"; do wait "$p" || true; done
    FLOOD_PIDS=()
    c1=$(cpu_ns); j1=$(sys_jiffies); t1=$(date +%s.%N)
    status "$d" > "$d/status1.json"
    stop_server
    local row
    row=$(python3 - "$v" "$flood" "$d" "$(( c1 - c0 ))" "$j0" "$j1" "$t0" "$t1" <<'PY'
import json, os, sys
v, flood, d, cpu_ns = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
j0, j1 = [list(map(int, s.split())) for s in sys.argv[5:7]]
wall = float(sys.argv[8]) - float(sys.argv[7])
def load(name):
    p = os.path.join(d, name)
    try:
        return json.load(open(p))
    except Exception:
        return None
s0, s1, storm = load("status0.json"), load("status1.json"), load("storm.json")
sent = 0.0
secs = 0.0
for k in ("non-pxe", "same-mac"):
    f = load(f"flood-{k}.json")
    if f:
        sent += f.get("sent", 0)
        secs = max(secs, f.get("seconds", 0.0))
def delta(path):
    a, b = s0, s1
    for k in path:
        a = (a or {}).get(k) if isinstance(a, dict) else None
        b = (b or {}).get(k) if isinstance(b, dict) else None
    return (b or 0) - (a or 0)
where = "xdp" if v.startswith("xdp") else "userspace"
dropped = sum(delta(["filter", where, k]) for k in ("dropped_not_pxe", "dropped_rate", "dropped_denied"))
received = delta(["dhcp", "metrics", "received"])
busy = (j1[0] - j0[0]) / max(1, j1[2] - j0[2]) * 100
soft = (j1[1] - j0[1]) / max(1, j1[2] - j0[2]) * 100
def pps(n, t):
    return f"{n / t:,.0f}" if t > 0 else "-"
if storm:
    lat = storm["dhcp_total"]
    ok = f'{storm["ok"]}/{storm["clients"]}'
    lat_s = f'{lat["p50_us"]/1000:.1f} / {lat["p99_us"]/1000:.1f} / {lat["max_us"]/1000:.1f}'
    rtx = storm["retransmits"]
else:
    ok, lat_s, rtx = "no report", "-", "-"
name = v if flood == "1" else f"{v}, no flood"
print(f"| {name} | {pps(sent, secs) if flood == '1' else 0} | "
      f"{pps(dropped, secs) if flood == '1' else 0} | {received:,} | {cpu_ns/1e9:.2f} | "
      f"{busy:.0f} / {soft:.0f} | {ok} | {rtx} | {lat_s} |")
PY
)
    echo "$row" >&2
    ROWS+=("$row")
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS"; cp -r "$d" "$KEEP_LOGS/"
    fi
    sleep 1
}

for v in $VARIANTS; do
    run_variant "$v" 1
done
run_variant "$(set -- $VARIANTS; echo "$1")" 0

echo
echo "Machine: $(hostname), $(nproc) cores, $(uname -r). Flood: two pxe-bench dhcp-flood" \
     "processes (plain DISCOVERs over $MACS MACs; one MAC's PXE DISCOVERs), rate $([ "$RATE" = 0 ] && echo 'as fast as possible' || echo "$RATE/s each")," \
     "${PERIOD}s; storm: $CLIENTS PXE clients (pxe-bench dhcp-storm, full DORA) starting 2 s in." \
     "Policy when filtering: drop_non_pxe, 5/s per MAC, burst 10."
echo
echo "| variant | flood sent pkt/s | filter dropped pkt/s | responder received (datagrams) | server CPU s | machine busy / softirq % | PXE clients ok | retransmits | DHCP p50 / p99 / max ms |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
