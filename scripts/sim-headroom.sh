#!/usr/bin/env bash
# Is the simulator the bottleneck? The same TFTP storm (`pxe-bench boot --skip-dhcp`, iPXE-like
# lock-step: blksize 1432, no window) against pxe-server while the server is held to a CPU
# quota (cgroup cpu.cfs_quota_us: 0.25, 0.5, 0.75 of a core, then none) and the simulator is
# not limited. If goodput follows the server's quota and the simulator has CPU to spare at each
# step, the server is what limits the row, and the simulator measured it faithfully; the last
# row (no quota) shows where both share the machine. Run as root.
#
#   scripts/sim-headroom.sh [--clients 200] [--file-mib 16] [--quotas "0.25 0.5 0.75 none"]
#                           [--windowsize 0]
#
# Prints a markdown table: quota, goodput, goodput per server core, server CPU s (cpuacct of
# its cgroup), simulator CPU % (its getrusage over the wall time), simulator and server CPU
# microseconds per MiB delivered.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/netns.sh

CLIENTS=200
FILE_MIB=16
QUOTAS="0.25 0.5 0.75 none"
WINDOWSIZE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        --file-mib) FILE_MIB="$2"; shift 2 ;;
        --quotas) QUOTAS="$2"; shift 2 ;;
        --windowsize) WINDOWSIZE="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "sim-headroom.sh: run as root (namespaces, cgroups)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
CPU_CG_ROOT=/sys/fs/cgroup/cpu
ACCT_CG_ROOT=/sys/fs/cgroup/cpuacct
[ -w "$CPU_CG_ROOT/cgroup.procs" ] && [ -w "$ACCT_CG_ROOT/cgroup.procs" ] || {
    echo "sim-headroom.sh: needs the cgroup v1 cpu and cpuacct controllers" >&2; exit 1; }

P=headroom
NET=10.91.0
SRV="$NET.1"
WORK=$(mktemp -d /tmp/headroom.XXXXXX)
CPU_CG="$CPU_CG_ROOT/$P"
ACCT_CG="$ACCT_CG_ROOT/$P"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; fi
    netns_destroy "$P"
    echo $$ > "$CPU_CG_ROOT/cgroup.procs" 2>/dev/null || true
    echo $$ > "$ACCT_CG_ROOT/cgroup.procs" 2>/dev/null || true
    rmdir "$CPU_CG" "$ACCT_CG" 2>/dev/null || true
    rm -rf "$WORK"
}
on_exit cleanup

cargo build --release -q -p pxe-server -p pxe-bench
BIN=$PWD/target/release
ROOT="$WORK/root"
mkdir -p "$ROOT"
head -c "$((FILE_MIB * 1024 * 1024))" /dev/urandom > "$ROOT/vmlinuz"
netns_create "$P" "$NET"
SOURCE_BASE=$(netns_client_addrs "$P" "$NET" "$CLIENTS")
mkdir -p "$CPU_CG" "$ACCT_CG"
cat > "$WORK/pxe.toml" <<TOML
[tftp]
root = "$ROOT"
listen = ["$SRV:69"]
[control]
socket = "$WORK/control.sock"
TOML

ROWS=()
for q in $QUOTAS; do
    period=$(cat "$CPU_CG/cpu.cfs_period_us")
    if [ "$q" = none ]; then
        echo -1 > "$CPU_CG/cpu.cfs_quota_us"
    else
        quota=$(python3 -c "print(int($q * $period))")
        echo "$quota" > "$CPU_CG/cpu.cfs_quota_us"
    fi
    # The server (and only the server) in both cgroups: quota and accounting.
    sh -c "echo \$\$ > $CPU_CG/cgroup.procs; echo \$\$ > $ACCT_CG/cgroup.procs; \
        exec ip netns exec $P-srv $BIN/pxe-server serve --config $WORK/pxe.toml" \
        > "$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_udp_port "$P-srv" "$SRV" 69 15
    echo "== quota $q core(s): $CLIENTS clients x $FILE_MIB MiB, windowsize $WINDOWSIZE" >&2
    c0=$(cat "$ACCT_CG/cpuacct.usage")
    set +e
    ip netns exec "$P-cli" timeout 900 "$BIN/pxe-bench" boot --clients "$CLIENTS" --skip-dhcp \
        --boot-file vmlinuz --tftp-server "$SRV" --arch-mix bios=1 --windowsize "$WINDOWSIZE" \
        --source-base "$SOURCE_BASE" --source-count "$CLIENTS" --verify-dir "$ROOT" \
        --deadline-s 800 --json --no-progress > "$WORK/report.json" 2> "$WORK/bench.err"
    rc=$?
    set -e
    c1=$(cat "$ACCT_CG/cpuacct.usage")
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    ROWS+=("$(python3 - "$WORK/report.json" "$q" "$((c1 - c0))" "$rc" <<'PY'
import json, sys
path, q, cpu_ns, rc = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {q} | no report (pxe-bench exit {rc}, {type(e).__name__}) | | | | | | |")
    sys.exit(0)
srv = int(cpu_ns) / 1e9
sim = r["cpu_user_s"] + r["cpu_system_s"]
mib = r["bytes"] / 2**20
per_core = f"{r['goodput_mbit_s'] / float(q):.0f}" if q != "none" else ""
print(f"| {q} | {r['ok']} / {r['failed']} | {r['wall_s']:.2f} | {r['goodput_mbit_s']:.0f} | "
      f"{per_core} | {srv:.2f} | {r['cpu_percent']:.0f} | "
      f"{sim / mib * 1e6:.0f} | {srv / mib * 1e6:.0f} |")
PY
)")
    echo "${ROWS[-1]}" >&2
done

echo
echo "$CLIENTS clients x $FILE_MIB MiB over TFTP (blksize 1432, windowsize $WINDOWSIZE), server held to a CPU quota:"
echo
echo "| server quota (cores) | ok / failed | wall s | goodput Mbit/s | Mbit/s per server core | server CPU s | simulator CPU % | simulator CPU us/MiB | server CPU us/MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
