# Shared helpers for the scripts: a two-namespace virtual network and process bookkeeping.
# Source it; it defines functions only.

# netns_create PREFIX SUBNET  -> namespaces ${PREFIX}-srv and ${PREFIX}-cli joined by a veth
# pair; the server is ${SUBNET}.1/16, the client ${SUBNET}.2/16 (SUBNET like 10.66.0; the /16
# leaves room for one address per simulated machine, see netns_client_addrs).
netns_create() {
    local prefix="$1" subnet="$2"
    netns_destroy "$prefix"
    ip netns add "${prefix}-srv"
    ip netns add "${prefix}-cli"
    ip link add "${prefix}-s" type veth peer name "${prefix}-c"
    ip link set "${prefix}-s" netns "${prefix}-srv"
    ip link set "${prefix}-c" netns "${prefix}-cli"
    ip -n "${prefix}-srv" addr add "${subnet}.1/16" dev "${prefix}-s"
    ip -n "${prefix}-cli" addr add "${subnet}.2/16" dev "${prefix}-c"
    ip -n "${prefix}-srv" link set lo up
    ip -n "${prefix}-cli" link set lo up
    ip -n "${prefix}-srv" link set "${prefix}-s" up
    ip -n "${prefix}-cli" link set "${prefix}-c" up
}

# netns_client_addrs PREFIX SUBNET COUNT -> adds COUNT addresses to the client end, from
# A.B.1.1 on (SUBNET = A.B.0), one per simulated machine; prints the first one.
netns_client_addrs() {
    local prefix="$1" subnet="$2" count="$3" ab i
    ab="${subnet%.*}"
    for ((i = 0; i < count; i++)); do
        echo "addr add ${ab}.$((1 + (i + 1) / 256)).$(((i + 1) % 256))/16 dev ${prefix}-c"
    done | ip -n "${prefix}-cli" -batch -
    echo "${ab}.1.1"
}

netns_destroy() {
    netns_delete "${1}-srv" "${1}-cli"
}

# netns_delete NS... -> kills every process inside each namespace and deletes it (absent ones
# are skipped).
netns_delete() {
    local ns pid
    for ns in "$@"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$pid" 2>/dev/null || true
            done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}

# proc_cpu_ticks PID -> utime+stime+cutime+cstime of PID, in clock ticks.
proc_cpu_ticks() {
    awk '{print $14+$15+$16+$17}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# tree_rss_kib PID -> resident memory of PID and its direct children, in KiB.
tree_rss_kib() {
    local total=0 p r
    for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# wait_udp_port NS ADDR PORT SECONDS -> waits until something listens on ADDR:PORT in NS.
wait_udp_port() {
    local ns="$1" addr="$2" port="$3" secs="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        if ip netns exec "$ns" ss -Hlun "sport = :$port" | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on $addr:$port in $ns after ${secs}s" >&2
    return 1
}

# wait_tcp_port NS ADDR PORT SECONDS -> waits until something listens on TCP ADDR:PORT in NS.
wait_tcp_port() {
    local ns="$1" addr="$2" port="$3" secs="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        if ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on TCP $addr:$port in $ns after ${secs}s" >&2
    return 1
}

# stop_server -> stops the process $SERVER_PID (the caller's server, started in the background
# by this shell): SIGTERM, up to 10 s to exit, then SIGKILL; reaps it and clears SERVER_PID.
stop_server() {
    [ -n "${SERVER_PID:-}" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# sample_rss PID OUTFILE -> until PID exits (or this is killed), writes the peak resident size
# of PID and its direct children, in KiB, to OUTFILE.
sample_rss() {
    local peak=0 r
    while kill -0 "$1" 2>/dev/null; do
        r=$(tree_rss_kib "$1")
        [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$2"
        sleep 0.2
    done
}

# on_exit FUNC -> the one way a script cleans up: when it ends, on success, on failure (set -e)
# and on Ctrl-C or kill (INT, TERM and HUP make it exit, which runs the EXIT trap), every
# global sysctl changed with sysctl_set_saved is put back, then FUNC runs (namespaces,
# processes, files). The exit status is kept; signals are ignored while this runs, so a second
# Ctrl-C cannot cut it short.
on_exit() {
    ON_EXIT_FUNC="$1"
    trap on_exit_run EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

on_exit_run() {
    local rc=$?
    trap '' INT TERM HUP
    sysctl_restore_saved
    "$ON_EXIT_FUNC" || true
    exit "$rc"
}

# sysctl_set_saved KEY=VALUE... -> sets global sysctls (per-namespace ones die with their
# namespace and need none of this), recording the previous values in SAVED_SYSCTLS first;
# on_exit puts them back (so it refuses to run before on_exit).
sysctl_set_saved() {
    local kv
    [ -n "${ON_EXIT_FUNC:-}" ] || { echo "sysctl_set_saved: on_exit was not called" >&2; return 1; }
    for kv in "$@"; do
        SAVED_SYSCTLS+=("${kv%%=*}=$(sysctl -n "${kv%%=*}")")
    done
    sysctl -qw "$@"
}

# sysctl_restore_saved -> writes back what sysctl_set_saved recorded, the latest change first
# (a key set twice ends at its first recorded value, the one found before), and forgets it.
sysctl_restore_saved() {
    [ -n "${SAVED_SYSCTLS+x}" ] || return 0
    local i
    for ((i = ${#SAVED_SYSCTLS[@]} - 1; i >= 0; i--)); do
        sysctl -qw "${SAVED_SYSCTLS[i]}" ||
            echo "could not restore sysctl ${SAVED_SYSCTLS[i]}" >&2
    done
    SAVED_SYSCTLS=()
}

# The storm scripts (compare.sh, compare-http.sh, compare-tftp.sh) keep their state in these
# globals: P (the namespace prefix), WORK (a scratch directory), SERVER_PID, SAMPLER (an RSS
# sampler), CG (the server's cpuacct cgroup, empty without one) and SAVED_SYSCTLS (values to
# restore).

# storm_sysctls -> socket buffers for a thousand clients' windows in flight, and a neighbour
# table holding one entry per client address (the default gc_thresh3 of 1024 overflows above
# that, and clients fail for a reason that is no server's). Global; restored on exit (on_exit).
storm_sysctls() {
    sysctl_set_saved net.core.rmem_max=8388608 net.core.wmem_max=8388608 \
        net.core.rmem_default=1048576 net.ipv4.neigh.default.gc_thresh1=16384 \
        net.ipv4.neigh.default.gc_thresh2=32768 net.ipv4.neigh.default.gc_thresh3=65536
}

# server_cpu_accounting -> CPU time of the servers this shell starts from now on and of every
# process they fork: a cpuacct cgroup where the kernel offers one (CG set, this shell moves into
# it), else /proc (children counted once reaped). Defines cpu_ns (nanoseconds so far) and
# client_exec CMD... (runs CMD outside the server's cgroup).
server_cpu_accounting() {
    CG=/sys/fs/cgroup/cpuacct/$P
    if mkdir -p "$CG" 2>/dev/null && [ -w "$CG/cgroup.procs" ]; then
        echo $$ > "$CG/cgroup.procs"
        cpu_ns() { cat "$CG/cpuacct.usage"; }
        client_exec() { sh -c 'echo $$ > /sys/fs/cgroup/cpuacct/cgroup.procs; exec "$@"' sh "$@"; }
    else
        CG=
        cpu_ns() { echo $(( $(proc_cpu_ticks "$SERVER_PID") * 1000000000 / $(getconf CLK_TCK) )); }
        client_exec() { "$@"; }
    fi
}

# storm_cleanup -> (on_exit storm_cleanup) kills the sampler and the server, removes the
# namespaces and the cgroup, deletes WORK.
storm_cleanup() {
    if [ -n "${SAMPLER:-}" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
    if [ -n "${SERVER_PID:-}" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; fi
    netns_destroy "$P"
    if [ -n "${CG:-}" ]; then
        echo $$ > /sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true
        rmdir "$CG" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
