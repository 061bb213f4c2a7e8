#!/usr/bin/env bash
# Side-by-side DHCP load: perfdhcp DORA exchanges at rising rates against pxe-server (full mode),
# dnsmasq and kea-dhcp4 (memfile lease backend), in the same namespaces, in one run. Run as root
# (it builds network namespaces).
#
#   scripts/compare-dhcp.sh [--rates "1000 5000 10000 20000 40000"] [--period 10]
#                           [--clients 50000] [--servers "pxe-server dnsmasq kea"]
#                           [--kea-threads 0] [--storm-rates "500 1000"] [--quick]
#
# Servers on PostgreSQL (not in the default list; name them in --servers): kea-pg (kea-dhcp4 on
# its PostgreSQL lease backend, schema by `kea-admin db-init pgsql`), pxe-pg1 and pxe-pg2
# (pxe-server with [store] backend = "postgres", one instance, and two instances in two server
# namespaces sharing the database and the segment, RFC 3074 buckets). Each run gets a fresh
# PostgreSQL cluster (initdb in the run's directory, run as nobody, Unix socket only, Debian's
# defaults: fsync on), stopped after the run; its CPU counts as the server's. For pxe-pg2 the
# client namespace bridges a second veth, and perfdhcp (still a relay) sends to the broadcast
# address so that both instances see every message, as a relay with two helper addresses would.
#
# perfdhcp plays a relay (giaddr = its own address, answers to its port 67) simulating
# --clients PXE clients (options 60 and 93), each server gets the same /16 pool of 60,000
# addresses, the same one-hour lease time and a fresh lease file in a temporary directory on
# the same file system. Every server is started fresh for each rate, measured, and stopped by
# PID. --quick runs one rate (5000/s) for 5 s, a smoke test.
#
# Prints a markdown table: DORA exchanges per second completed, drops, average and maximum
# delay (DISCOVER->OFFER plus REQUEST->ACK), server CPU seconds (cpuacct cgroup: the server
# only, plus its PostgreSQL) and per completed exchange, server peak RSS, and perfdhcp's own CPU
# seconds. perfdhcp reports no percentiles: with --storm-rates, after the perfdhcp runs, every
# server also meets `pxe-bench dhcp-storm --mode full --arrival rate:N/s` at each of those rates:
# N x --period simulated BIOS PXE ROMs (at most the pool) arriving at N per second from the
# client namespace, full DORA by broadcast (no relay), PXE retransmission timers (4, 8, 16, 32 s;
# a client still unanswered after them, or at --period + 60 s, counts as failed). Each run again
# starts fresh servers (and a fresh PostgreSQL); kea listens on a raw socket for these runs (its
# UDP socket takes relayed traffic only); for pxe-pg2 the storm sends on the bridge, so both
# instances see every broadcast. A second table: completed and failed clients, retransmissions,
# p50 and p99 of the whole exchange (first DISCOVER sent to ACK received), server CPU.
#
# Environment: KEEP_LOGS=DIR keeps each run's logs and perfdhcp output; PROFILE_DIR=DIR records
# pxe-server with `perf record -g` during each run (perf-pxe-server-RATE.data).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/netns.sh

RATES="1000 5000 10000 20000 40000"
PERIOD=10
CLIENTS=50000
POOL=60000
LEASE=3600
SERVERS="pxe-server dnsmasq kea"
KEA_THREADS=0
STORM_RATES=
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) RATES="$2"; shift 2 ;;
        --period) PERIOD="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --kea-threads) KEA_THREADS="$2"; shift 2 ;;
        --storm-rates) STORM_RATES="$2"; shift 2 ;;
        --quick) RATES=5000; PERIOD=5; shift ;;
        -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "compare-dhcp.sh: run as root (network namespaces)" >&2; exit 1; }
[ "$CLIENTS" -le "$POOL" ] || { echo "--clients must be at most the pool size ($POOL)" >&2; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH"
for tool in perfdhcp dnsmasq kea-dhcp4 kea-admin; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
        { echo "compare-dhcp.sh: $tool missing (run scripts/install-deps.sh)" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin:/sbin"

P=cmpdhcp
NET=10.89
SRV="$NET.0.1"
CLI="$NET.0.2"
IFS_SRV="$P-s"
# The pool: $POOL addresses from 10.89.1.1 on.
POOL_FIRST=$NET.1.1
last=$(( 256 + POOL ))   # offset of the last address in 10.89.0.0/16
POOL_LAST=$NET.$(( last / 256 )).$(( last % 256 ))
WORK=$(mktemp -d /tmp/compare-dhcp.XXXXXX)
# PostgreSQL runs as nobody and pxe-server as its service account: both reach their files
# through this directory.
chmod 711 "$WORK"
SERVER_PID=
SERVER2_PID=
PG_PID=
cleanup() {
    [ -n "${PERF_PID:-}" ] && kill "$PERF_PID" 2>/dev/null || true
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
    [ -n "${SERVER_PID:-}" ] && kill -9 "$SERVER_PID" 2>/dev/null || true
    [ -n "${SERVER2_PID:-}" ] && kill -9 "$SERVER2_PID" 2>/dev/null || true
    pg_stop
    netns_delete "$P-srv2"
    netns_destroy "$P"
    if [ -n "${CG:-}" ]; then
        echo $$ > /sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true
        rmdir "$CG" "$CGC" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
on_exit cleanup

if [ -n "$STORM_RATES" ]; then
    cargo build --release -q -p pxe-server -p pxe-bench
else
    cargo build --release -q -p pxe-server
fi
BIN=target/release

# Two namespaces on one veth, both ends in 10.89.0.0/16 (the relay address perfdhcp puts in
# giaddr selects that subnet's pool on every server).
netns_create "$P" "$NET.0"
ip -n "$P-srv" addr flush dev "$P-s"
ip -n "$P-cli" addr flush dev "$P-c"
ip -n "$P-srv" addr add "$SRV/16" dev "$P-s"
ip -n "$P-cli" addr add "$CLI/16" dev "$P-c"
# pxe-bench dhcp-storm sends its broadcasts on this interface of the client namespace.
STORM_IF="$P-c"
# pxe-pg2: a second server namespace ($SRV2) on the same segment, a bridge in the client
# namespace joining both veths (only then: the other runs keep the plain veth).
SRV2="$NET.0.3"
IFS_SRV2="$P-s2"
case " $SERVERS " in
    *" pxe-pg2 "*)
        ip netns add "$P-srv2"
        ip -n "$P-srv2" link set lo up
        ip link add "$IFS_SRV2" netns "$P-srv2" type veth peer name "$P-c2" netns "$P-cli"
        ip -n "$P-srv2" addr add "$SRV2/16" dev "$IFS_SRV2"
        ip -n "$P-srv2" link set "$IFS_SRV2" up
        ip -n "$P-cli" link add br0 type bridge
        ip -n "$P-cli" link set br0 type bridge stp_state 0 forward_delay 0
        ip -n "$P-cli" addr flush dev "$P-c"
        for dev in "$P-c" "$P-c2"; do
            ip -n "$P-cli" link set "$dev" master br0
            ip -n "$P-cli" link set "$dev" up
        done
        ip -n "$P-cli" addr add "$CLI/16" dev br0
        ip -n "$P-cli" link set br0 up
        STORM_IF=br0
        ;;
esac
# Socket buffers: the kernel's settings as they are (every server runs under the same ones;
# they are printed with the table). pxe-server asks for its own receive buffer.
SOCKBUF="rmem_default $(sysctl -n net.core.rmem_default), rmem_max $(sysctl -n net.core.rmem_max)"

# CPU time of the server, from a cpuacct cgroup where the kernel offers one, else from /proc;
# perfdhcp runs in a second cgroup (its CPU is shown too: on 2 cores it competes with the
# server, and a run where it used a whole core may be client-bound).
CG=/sys/fs/cgroup/cpuacct/$P
CGC=/sys/fs/cgroup/cpuacct/$P-cli
if mkdir -p "$CG" "$CGC" 2>/dev/null && [ -w "$CG/cgroup.procs" ] && [ -w "$CGC/cgroup.procs" ]; then
    echo $$ > "$CG/cgroup.procs"   # children of this shell (the servers) start inside it
    cpu_ns() { cat "$CG/cpuacct.usage"; }
    cli_cpu_ns() { cat "$CGC/cpuacct.usage"; }
    client_exec() { sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CGC" "$@"; }
else
    CG=
    CGC=
    cpu_ns() { echo $(( $(proc_cpu_ticks "$SERVER_PID") * 1000000000 / $(getconf CLK_TCK) )); }
    cli_cpu_ns() { echo 0; }
    client_exec() { "$@"; }
fi

# PostgreSQL (kea-pg, pxe-pg1, pxe-pg2): Debian's newest installed major version.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
case " $SERVERS " in
    *" kea-pg "* | *" pxe-pg"*)
        [ -x "$PG_BIN/postgres" ] ||
            { echo "compare-dhcp.sh: PostgreSQL missing (run scripts/install-deps.sh)" >&2; exit 1; }
        ;;
esac
# as_pg CMD... -> CMD as nobody (PostgreSQL refuses root), from a directory it may read.
as_pg() { (cd / && setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"); }
# pg_psql DIR SQL -> runs SQL as the role pxe over the Unix socket of the cluster in DIR.
pg_psql() {
    PGPASSWORD="$(cat "$1/password")" "$PG_BIN/psql" -h "$1/run" -U pxe -d "${3:-postgres}" \
        -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}
# pg_start DIR -> a fresh cluster in DIR (initdb as nobody, role pxe with a random SCRAM password
# in DIR/password, database pxe), started in the server namespace on a Unix socket in DIR/run
# only; waits until it answers.
pg_start() {
    local d="$1" i
    mkdir -p "$d/run"
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$d/password"
    chmod 644 "$d/password"
    chown -R nobody:nogroup "$d"
    as_pg "$PG_BIN/initdb" -D "$d/data" -U pxe --auth=scram-sha-256 -E UTF8 \
        "--pwfile=$d/password" > "$d/initdb.log" 2>&1 ||
        { cat "$d/initdb.log" >&2; return 1; }
    ip netns exec "$P-srv" setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        "$PG_BIN/postgres" -D "$d/data" -k "$d/run" -c listen_addresses= \
        -c max_connections=200 -c unix_socket_permissions=0777 > "$d/postgres.log" 2>&1 &
    PG_PID=$!
    for ((i = 0; i < 300; i++)); do
        pg_psql "$d" "SELECT 1" > /dev/null 2>&1 && break
        sleep 0.1
    done
    pg_psql "$d" "CREATE DATABASE pxe OWNER pxe" ||
        { cat "$d/postgres.log" >&2; return 1; }
}
# pg_stop -> fast shutdown of the cluster pg_start started (bounded), then SIGKILL.
pg_stop() {
    [ -n "${PG_PID:-}" ] || return 0
    kill -INT "$PG_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$PG_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=
}
# pg_url DIR -> the URL of that cluster's socket, no password (pxe-server reads password_file).
pg_url() { echo "postgres://pxe@$(echo "$1/run" | sed 's|/|%2F|g'):5432/pxe"; }

PXE_CLASS=PXEClient:Arch:00000:UNDI:002001
CLASS_HEX=$(printf '%s' "$PXE_CLASS" | od -An -tx1 | tr -d ' \n')

# pxe_config DIR ADDR IFACE [INSTANCE PGDIR] -> DIR/pxe.toml: full mode on IFACE at ADDR; with
# INSTANCE, on the PostgreSQL in PGDIR under that instance name.
pxe_config() {
    local d="$1" addr="$2" iface="$3" instance="${4:-}" pg="${5:-}"
    mkdir -p "$d/tftp"
    chmod 755 "$d"
    cat > "$d/pxe.toml" <<TOML
[tftp]
root = "$d/tftp"
listen = ["$addr:69"]
threads = 1
[dhcp]
enabled = true
mode = "full"
interfaces = ["$iface"]
server_ip = "$addr"
pxe_port_4011 = false
lease_db = "$d/leases.redb"
lease_time_secs = $LEASE
[[dhcp.subnets]]
subnet = "$NET.0.0/16"
range_start = "$POOL_FIRST"
range_end = "$POOL_LAST"
router = "$SRV"
[boot]
bios = "undionly.kpxe"
[control]
socket = "$d/control.sock"
TOML
    if [ -n "$instance" ]; then
        cat >> "$d/pxe.toml" <<TOML
[store]
backend = "postgres"
url = "$(pg_url "$pg")"
password_file = "$pg/password"
instance = "$instance"
TOML
    fi
}

# kea's socket: udp for perfdhcp (a relay), raw for pxe-bench's broadcasting clients.
KEA_SOCKET=udp
start_server() { # NAME RUNDIR
    local s="$1" d="$2"
    case "$s" in
        pxe-server)
            pxe_config "$d" "$SRV" "$IFS_SRV"
            RUST_LOG=info ip netns exec "$P-srv" "$BIN/pxe-server" serve --config "$d/pxe.toml" \
                > "$d/server.log" 2>&1 &
            ;;
        pxe-pg1 | pxe-pg2)
            pg_start "$d/pg" || return 1
            if [ "$s" = pxe-pg2 ]; then
                mkdir -p "$d/pxe2"
                pxe_config "$d/pxe2" "$SRV2" "$IFS_SRV2" pxe2 "$d/pg"
                RUST_LOG=info ip netns exec "$P-srv2" "$BIN/pxe-server" serve \
                    --config "$d/pxe2/pxe.toml" > "$d/server2.log" 2>&1 &
                SERVER2_PID=$!
                wait_udp_port "$P-srv2" "$SRV2" 67 30 || { cat "$d/server2.log" >&2; return 1; }
            fi
            pxe_config "$d" "$SRV" "$IFS_SRV" pxe1 "$d/pg"
            RUST_LOG=info ip netns exec "$P-srv" "$BIN/pxe-server" serve --config "$d/pxe.toml" \
                > "$d/server.log" 2>&1 &
            ;;
        dnsmasq)
            # --no-ping: dnsmasq otherwise pings each address before offering it (the others
            # do not); the lease file is real (rewritten on every change, as dnsmasq does).
            ip netns exec "$P-srv" dnsmasq --no-daemon --port=0 --conf-file=/dev/null \
                --interface="$IFS_SRV" --bind-interfaces --user=root --group=root --pid-file= \
                --dhcp-range="$POOL_FIRST,$POOL_LAST,255.255.0.0,${LEASE}" \
                --dhcp-lease-max=$((POOL + 1000)) --dhcp-leasefile="$d/dnsmasq.leases" \
                --dhcp-authoritative --no-ping --quiet-dhcp --dhcp-option=3,"$SRV" \
                --dhcp-boot=undionly.kpxe,,"$SRV" --log-facility="$d/dnsmasq.log" \
                > "$d/server.log" 2>&1 &
            ;;
        kea | kea-pg)
            local mt="" db
            db="\"type\": \"memfile\", \"persist\": true, \"lfc-interval\": 0, \"name\": \"$d/kea-leases4.csv\""
            if [ "$s" = kea-pg ]; then
                pg_start "$d/pg" || return 1
                PGPASSWORD="$(cat "$d/pg/password")" kea-admin db-init pgsql -h "$d/pg/run" \
                    -u pxe -n pxe -p "$(cat "$d/pg/password")" > "$d/kea-admin.log" 2>&1 ||
                    { cat "$d/kea-admin.log" >&2; return 1; }
                db="\"type\": \"postgresql\", \"name\": \"pxe\", \"user\": \"pxe\", \"password\": \"$(cat "$d/pg/password")\", \"host\": \"$d/pg/run\""
            fi
            if [ "$KEA_THREADS" -gt 0 ]; then
                mt="\"multi-threading\": { \"enable-multi-threading\": true, \"thread-pool-size\": $KEA_THREADS, \"packet-queue-size\": 64 },"
            fi
            cat > "$d/kea.json" <<JSON
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "$IFS_SRV/$SRV" ], "dhcp-socket-type": "$KEA_SOCKET" },
    "lease-database": { $db },
    $mt
    "valid-lifetime": $LEASE, "min-valid-lifetime": $LEASE, "max-valid-lifetime": $LEASE,
    "subnet4": [ {
        "id": 1, "subnet": "$NET.0.0/16",
        "pools": [ { "pool": "$POOL_FIRST - $POOL_LAST" } ],
        "next-server": "$SRV", "boot-file-name": "undionly.kpxe",
        "option-data": [ { "name": "routers", "data": "$SRV" } ]
    } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                   "output_options": [ { "output": "$d/kea.log" } ] } ]
} }
JSON
            KEA_PIDFILE_DIR="$d" KEA_LOCKFILE_DIR="$d" \
                ip netns exec "$P-srv" kea-dhcp4 -c "$d/kea.json" > "$d/server.log" 2>&1 &
            ;;
        *) echo "unknown server $s" >&2; exit 2 ;;
    esac
    SERVER_PID=$!
    wait_udp_port "$P-srv" "$SRV" 67 15 || { cat "$d/server.log" >&2; return 1; }
}



# stop_servers -> the run's servers (a second pxe-server instance, then the first) and its
# PostgreSQL.
stop_servers() {
    if [ -n "$SERVER2_PID" ]; then
        local first="$SERVER_PID"
        SERVER_PID=$SERVER2_PID
        stop_server
        SERVER_PID=$first
        SERVER2_PID=
    fi
    stop_server
    pg_stop
}

# Row of the table from a perfdhcp report.
row_of() { # SERVER RATE PERIOD OUTFILE CPU_NS RSS_KIB CLIENT_CPU_NS
    python3 - "$@" <<'PY'
import re, sys
server, rate, period, path, cpu_ns, rss, cli_ns = sys.argv[1:]
out = open(path, errors="replace").read()
def block(name):
    i = out.find(f"Statistics for: {name}")
    if i < 0:
        return None
    b = out[i:]
    j = b.find("Statistics for:", 10)
    b = b if j < 0 else b[:j]
    def num(key):
        m = re.search(rf"^\s*{re.escape(key)}:\s*([0-9.]+)", b, re.M)
        return float(m.group(1)) if m else float("nan")
    return {k: num(k) for k in ("sent packets", "received packets", "drops",
                                   "avg delay", "max delay")}
do, ra = block("DISCOVER-OFFER"), block("REQUEST-ACK")
cpu = f"{int(cpu_ns)/1e9:.2f}"
rss = f"{int(rss)/1024:.0f}"
cli = f"{int(cli_ns)/1e9:.2f}"
if not do or not ra:
    print(f"| {server} | {rate} | no report | | | | {cpu} | | {rss} | {cli} |")
    sys.exit(0)
def pct(b):
    return 100.0 * b["drops"] / b["sent packets"] if b["sent packets"] else 0.0
# Delays of a whole exchange: DISCOVER->OFFER plus REQUEST->ACK.
avg = do["avg delay"] + ra["avg delay"]
mx = do["max delay"] + ra["max delay"]
dora_s = ra["received packets"] / float(period)
per = f"{int(cpu_ns) / 1e3 / ra['received packets']:.0f}" if ra["received packets"] else ""
print(f"| {server} | {rate} | {dora_s:.0f} | {pct(do):.2f} / {pct(ra):.2f} | "
      f"{avg:.3f} | {mx:.1f} | {cpu} | {per} | {rss} | {cli} |")
PY
}

ROWS=()
NOTES=()
for rate in $RATES; do
    for s in $SERVERS; do
        d="$WORK/$s-$rate"
        mkdir -p "$d"
        echo "== $s, perfdhcp DORA at $rate/s for ${PERIOD}s, $CLIENTS clients" >&2
        if ! start_server "$s" "$d"; then
            ROWS+=("| $s | $rate | did not start | | | | | | | |")
            stop_servers
            continue
        fi
        echo 0 > "$d/rss"
        (
            [ -n "$CG" ] && echo "$BASHPID" > /sys/fs/cgroup/cpuacct/cgroup.procs
            sample_rss "$SERVER_PID" "$d/rss"
        ) &
        SAMPLER=$!
        PERF_PID=
        if [ -n "${PROFILE_DIR:-}" ] && [ "$s" = pxe-server ]; then
            mkdir -p "$PROFILE_DIR"
            perf record -q -g -p "$SERVER_PID" -o "$PROFILE_DIR/perf-$s-$rate.data" \
                > /dev/null 2>&1 &
            PERF_PID=$!
            [ -n "$CG" ] && echo "$PERF_PID" > /sys/fs/cgroup/cpuacct/cgroup.procs  # in neither cgroup
            sleep 0.5
        fi
        c0=$(cpu_ns); k0=$(cli_cpu_ns)
        set +e
        # -W: after the period, wait 1 s for late answers, sending nothing new. Two instances:
        # to the broadcast address (both see every message, the bucket's owner answers).
        target=$SRV
        [ "$s" = pxe-pg2 ] && target=all
        client_exec ip netns exec "$P-cli" timeout $((PERIOD + 30)) perfdhcp -4 -r "$rate" \
            -R "$CLIENTS" -p "$PERIOD" -W 1000000 -l "$CLI" \
            -o "60,$CLASS_HEX" -o 93,0000 "$target" > "$d/perfdhcp.out" 2>&1
        set -e
        c1=$(cpu_ns); k1=$(cli_cpu_ns)
        if [ -n "$PERF_PID" ]; then
            kill -TERM "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true
            PERF_PID=
        fi
        stop_servers
        kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
        row=$(row_of "$s" "$rate" "$PERIOD" "$d/perfdhcp.out" "$(( c1 - c0 ))" "$(cat "$d/rss")" "$(( k1 - k0 ))")
        echo "$row" >&2
        ROWS+=("$row")
        if [ "${s#pxe-}" != "$s" ]; then
            # The server's own count of what it answered: drops perfdhcp counts beyond these
            # were lost or late on the client side.
            m=$(grep "DHCP service stopped" "$d/server.log" | tail -1 |
                grep -ow '\(received\|offers\|acks\|drop_batch_commit\|send_errors\)=[0-9]*' |
                tr '\n' ' ')
            NOTES+=("$s at $rate/s, its own counters: ${m:-none}")
        fi
        if [ -n "${KEEP_LOGS:-}" ]; then
            mkdir -p "$KEEP_LOGS"; cp -r "$d" "$KEEP_LOGS/"
        fi
        sleep 1
    done
done

# Row of the storm table from a pxe-bench dhcp-storm JSON report.
storm_row_of() { # SERVER RATE CLIENTS JSONFILE CPU_NS
    python3 - "$@" <<'PY'
import json, sys
server, rate, clients, path, cpu_ns = sys.argv[1:]
cpu = int(cpu_ns) / 1e9
try:
    r = json.load(open(path))
except Exception:
    print(f"| {server} | {rate} | {clients} | no report | | | | | {cpu:.2f} | |")
    sys.exit(0)
t = r["dhcp_total"]
per = f"{int(cpu_ns) / 1e3 / r['ok']:.0f}" if r["ok"] else ""
print(f"| {server} | {rate} | {r['clients']} | {r['ok']} | {r['failed']} | {r['retransmits']} | "
      f"{t['p50_us'] / 1000:.1f} | {t['p99_us'] / 1000:.1f} | {cpu:.2f} | {per} |")
PY
}

# pxe-bench dhcp-storm: --period seconds of arrivals at each storm rate, every server fresh.
STORM_ROWS=()
KEA_SOCKET=raw
for rate in $STORM_RATES; do
    n=$(( rate * PERIOD ))
    [ "$n" -le "$POOL" ] || n=$POOL
    for s in $SERVERS; do
        d="$WORK/$s-storm-$rate"
        mkdir -p "$d"
        echo "== $s, pxe-bench dhcp-storm at $rate/s, $n clients" >&2
        if ! start_server "$s" "$d"; then
            STORM_ROWS+=("| $s | $rate | $n | did not start | | | | | | |")
            stop_servers
            continue
        fi
        c0=$(cpu_ns)
        set +e
        # Exit status 1 when a client failed: the report says which and why.
        client_exec ip netns exec "$P-cli" timeout $((PERIOD + 90)) "$BIN/pxe-bench" dhcp-storm \
            --mode full --arrival "rate:$rate/s" --clients "$n" --arch-mix bios=100 \
            --interface "$STORM_IF" --timeout-scale 1 --deadline-s $((PERIOD + 60)) --json \
            > "$d/storm.json" 2> "$d/storm.err"
        set -e
        c1=$(cpu_ns)
        stop_servers
        row=$(storm_row_of "$s" "$rate" "$n" "$d/storm.json" "$(( c1 - c0 ))")
        echo "$row" >&2
        STORM_ROWS+=("$row")
        if [ -n "${KEEP_LOGS:-}" ]; then
            mkdir -p "$KEEP_LOGS"; cp -r "$d" "$KEEP_LOGS/"
        fi
        sleep 1
    done
done

echo
echo "Machine: $(hostname), $(nproc) cores, $(uname -r). perfdhcp $(perfdhcp -v 2>&1 | awk '{print $NF; exit}') as a relay" \
     "from the client namespace, $CLIENTS simulated PXE clients, ${PERIOD}s per rate;" \
     "pool of $POOL addresses, lease time ${LEASE}s; dnsmasq $(dnsmasq --version | awk 'NR==1{print $3}')," \
     "kea-dhcp4 $(kea-dhcp4 -v) (kea: memfile, persist; kea-pg: PostgreSQL; multi-threading $([ "$KEA_THREADS" -gt 0 ] && echo "$KEA_THREADS threads" || echo off));" \
     "PostgreSQL $("$PG_BIN/postgres" -V 2>/dev/null | awk '{print $3}') for kea-pg and pxe-pg*, a fresh cluster per run, fsync on, Unix socket;" \
     "lease files on $(df -T "$WORK" | awk 'NR==2{print $2}'); net.core $SOCKBUF."
echo
echo "| server | rate asked /s | DORA/s completed | drops % DISCOVER / REQUEST | avg delay ms | max delay ms | server CPU s | server CPU us per DORA | server peak RSS MiB | perfdhcp CPU s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
if [ "${#NOTES[@]}" -gt 0 ]; then
    echo
    printf -- '- %s\n' "${NOTES[@]}"
fi
if [ "${#STORM_ROWS[@]}" -gt 0 ]; then
    echo
    echo "pxe-bench dhcp-storm (full DORA by broadcast from the client namespace, BIOS PXE ROMs," \
         "PXE retransmission timers), $PERIOD s of arrivals at each rate; latency from the first" \
         "DISCOVER sent to the ACK received; server CPU includes its PostgreSQL."
    echo
    echo "| server | rate /s | clients | completed | failed | retransmissions | p50 ms | p99 ms (DISCOVER sent to ACK) | server CPU s | server CPU us per DORA |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${STORM_ROWS[@]}"
fi
