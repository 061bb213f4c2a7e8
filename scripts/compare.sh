#!/usr/bin/env bash
# Side-by-side PXE boot storm: the same `pxe-bench boot` storm (DHCP, boot file, kernel, initrd)
# against pxe-server, dnsmasq (DHCP + TFTP) and, for the TFTP phases only, tftpd-hpa, one after
# another in one run, next to the raw UDP limit of the same virtual path (`pxe-bench
# udp-limit`). Run as root (it builds network namespaces).
#
#   scripts/compare.sh [--clients "1000 10000"] [--kernel-mib 8] [--initrd-mib 32]
#                      [--servers "pxe-server dnsmasq tftpd-hpa"] [--arch-mix bios=50,uefi=40,ipxe=10]
#                      [--deadline-s 900] [--limit-threads "1 2"] [--no-verify] [--quick] [--dry-run]
#                      [--observe]
#
# --quick: 50 clients, 1 MiB kernel, 3 MiB initrd (a smoke run).
# --observe: what watching a storm costs. The pxe-server run is watched as an operator would:
#            Prometheus-style scrapes of /metrics every second (pxe-bench --metrics-url, whose
#            server view lands in the report), boot journeys on (the default) and the live page
#            open in headless Chromium for the whole storm; add the server "pxe-server-dark"
#            (metrics listener and journeys off, nothing watching) for the row it is compared
#            with. Every client then fetches from its leased address (--source-from-lease, the
#            pool is the clients' own addresses), as firmware does, so journeys follow each one.
# --dry-run: everything except the storms (network, files, each server started, checked and
#            stopped, the udp-limit rows); the storm rows say they were not run.
#
# Prints a markdown table: ok/failed, time until the last client booted, goodput, goodput as a
# percentage of the path's UDP limit, p50/p99 time-to-boot, server CPU seconds, server peak RSS,
# the simulator's own CPU; then the ratios pxe-server/peer. A server that did not start, or a
# storm where clients failed, is a row of the table, never left out.
#
# Servers:
#   pxe-server            full DHCP + TFTP on 10.90.0.1, its default TFTP engine (auto).
#   dnsmasq               full DHCP + TFTP; boot file by tags: client-arch 7 -> snponly.efi,
#                         user class iPXE -> boot.ipxe, anything else -> undionly.kpxe.
#   pxe-server-dark       pxe-server with [metrics] and [journeys] off (for --observe).
#   tftpd-hpa             TFTP only: `pxe-bench boot --skip-dhcp --boot-file undionly.kpxe`;
#                         with it, pxe-server runs the same TFTP-only storm too
#                         ("pxe-server tftp-only"), the row its ratio is taken against.
#
# Environment: KEEP_LOGS=DIR keeps every run's config, logs and JSON reports.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/netns.sh

CLIENTS="1000"
KERNEL_MIB=8
INITRD_MIB=32
SERVERS="pxe-server dnsmasq tftpd-hpa"
ARCH_MIX="bios=50,uefi=40,ipxe=10"
DEADLINE=900
LIMIT_THREADS="1 2"
VERIFY=1
DRY_RUN=0
OBSERVE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        --kernel-mib) KERNEL_MIB="$2"; shift 2 ;;
        --initrd-mib) INITRD_MIB="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --arch-mix) ARCH_MIX="$2"; shift 2 ;;
        --deadline-s) DEADLINE="$2"; shift 2 ;;
        --limit-threads) LIMIT_THREADS="$2"; shift 2 ;;
        --no-verify) VERIFY=0; shift ;;
        --quick) CLIENTS=50; KERNEL_MIB=1; INITRD_MIB=3; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --observe) OBSERVE=1; shift ;;
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "compare.sh: run as root (it builds network namespaces)" >&2; exit 1; }
for s in $SERVERS; do
    case "$s" in
        pxe-server|pxe-server-dark|dnsmasq|tftpd-hpa) ;;
        *) echo "compare.sh: unknown server $s (pxe-server, pxe-server-dark, dnsmasq, tftpd-hpa)" >&2; exit 2 ;;
    esac
done
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
for s in $SERVERS; do
    case "$s" in
        dnsmasq) command -v dnsmasq > /dev/null ;;
        pxe-server) [ "$OBSERVE" = 0 ] || command -v chromium > /dev/null ;;
        tftpd-hpa) command -v in.tftpd > /dev/null ;;
        *) true ;;
    esac || { echo "compare.sh: $s is not installed (run scripts/install-deps.sh)" >&2; exit 1; }
done

P=cmpboot
NET=10.90.0
SRV="$NET.1"
CLI_IF="$P-c"
SRV_IF="$P-s"
# Addresses handed out by the DHCP servers (the simulated machines' own TFTP source addresses
# are 10.90.1.1 upwards, see netns_client_addrs; the pool is far above them).
POOL_FIRST=10.90.128.1
POOL_LAST=10.90.255.254
WORK=$(mktemp -d /tmp/compare.XXXXXX)
SERVER_PID=
SAMPLER=
SAVED_SYSCTLS=()
on_exit storm_cleanup

cargo build --release -q -p pxe-server -p pxe-bench
BIN=target/release
HAVE_BOOT=1
"$BIN/pxe-bench" boot --help > /dev/null 2>&1 || HAVE_BOOT=0
if [ "$HAVE_BOOT" = 0 ] && [ "$DRY_RUN" = 0 ]; then
    echo "compare.sh: this pxe-bench has no 'boot' subcommand; only --dry-run can run" >&2
    exit 1
fi

# Boot files (random bytes: every fetched file is compared byte-exact with them).
ROOT="$WORK/root"
mkdir -p "$ROOT"
head -c $((64 * 1024)) /dev/urandom > "$ROOT/undionly.kpxe"
head -c $((64 * 1024)) /dev/urandom > "$ROOT/snponly.efi"
printf '#!ipxe\nkernel tftp://%s/vmlinuz\ninitrd tftp://%s/initrd.img\nboot\n' "$SRV" "$SRV" \
    > "$ROOT/boot.ipxe"
head -c "$((KERNEL_MIB * 1024 * 1024))" /dev/urandom > "$ROOT/vmlinuz"
head -c "$((INITRD_MIB * 1024 * 1024))" /dev/urandom > "$ROOT/initrd.img"

netns_create "$P" "$NET"
MAX_CLIENTS=0
for n in $CLIENTS; do [ "$n" -gt "$MAX_CLIENTS" ] && MAX_CLIENTS=$n; done
[ "$MAX_CLIENTS" -le 30000 ] || { echo "compare.sh: at most 30000 clients" >&2; exit 2; }
# One address per simulated machine, as in a cluster (per-client limits see real clients).
SOURCE_BASE=$(netns_client_addrs "$P" "$NET" "$MAX_CLIENTS")
if [ "$OBSERVE" = 1 ]; then
    # The pool is the clients' own addresses: each fetches from the one it was leased.
    POOL_FIRST="$SOURCE_BASE"
    POOL_LAST=$(python3 -c "import ipaddress; print(ipaddress.ip_address('$SOURCE_BASE') + $MAX_CLIENTS - 1)")
fi
# Global sysctls for the storm (see lib/netns.sh), restored on exit.
storm_sysctls

# Server CPU: its cpuacct cgroup (clients run outside it).
server_cpu_accounting

start_server() { # NAME RUNDIR
    local s="$1" d="$2"
    case "$s" in
        pxe-server|pxe-server-dark)
            cat > "$d/pxe.toml" <<TOML
[tftp]
root = "$ROOT"
listen = ["$SRV:69"]
[dhcp]
enabled = true
mode = "full"
interfaces = ["$SRV_IF"]
lease_db = "$d/leases.redb"
[[dhcp.subnets]]
subnet = "$NET.0/16"
range_start = "$POOL_FIRST"
range_end = "$POOL_LAST"
router = "$SRV"
[boot]
bios = "undionly.kpxe"
uefi_x64 = "snponly.efi"
ipxe_script = "boot.ipxe"
[control]
socket = "$d/control.sock"
TOML
            if [ "$s" = pxe-server ] && [ "$OBSERVE" = 1 ]; then
                printf '[metrics]\nlisten = ["%s:9469", "127.0.0.1:9469"]\n' "$SRV" >> "$d/pxe.toml"
            fi
            if [ "$s" = pxe-server-dark ]; then
                printf '[metrics]\nenabled = false\n[journeys]\nenabled = false\n' >> "$d/pxe.toml"
            fi
            RUST_LOG=info ip netns exec "$P-srv" "$BIN/pxe-server" serve --config "$d/pxe.toml" \
                > "$d/server.log" 2>&1 &
            ;;
        dnsmasq)
            # --tftp-max: dnsmasq's limit of simultaneous transfers (default 50); 9000 keeps
            # its sockets and files within this machine's 20000 open files.
            ip netns exec "$P-srv" dnsmasq --no-daemon --port=0 --conf-file=/dev/null \
                --interface="$SRV_IF" --bind-interfaces --user=root --group=root --pid-file= \
                --dhcp-range="$POOL_FIRST,$POOL_LAST,255.255.0.0,1h" \
                --dhcp-lease-max=40000 --dhcp-leasefile="$d/dnsmasq.leases" \
                --dhcp-authoritative --no-ping --dhcp-option=3,"$SRV" \
                --dhcp-match=set:efi64,option:client-arch,7 --dhcp-userclass=set:ipxe,iPXE \
                --dhcp-boot=tag:!efi64,tag:!ipxe,undionly.kpxe,,"$SRV" \
                --dhcp-boot=tag:efi64,tag:!ipxe,snponly.efi,,"$SRV" \
                --dhcp-boot=tag:ipxe,boot.ipxe,,"$SRV" \
                --enable-tftp --tftp-root="$ROOT" --tftp-max=9000 \
                --quiet-dhcp --quiet-tftp --log-facility="$d/dnsmasq.log" \
                > "$d/server.log" 2>&1 &
            ;;
        tftpd-hpa)
            ip netns exec "$P-srv" in.tftpd --foreground --listen --user root \
                --address "$SRV:69" --secure "$ROOT" > "$d/server.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    if [ "$s" != tftpd-hpa ]; then
        wait_udp_port "$P-srv" "$SRV" 67 15 || return 1
    fi
    wait_udp_port "$P-srv" "$SRV" 69 15
}



# The raw UDP limit: server namespace -> client namespace over the same veth, datagrams of the
# size TFTP DATA has at blksize 1468 (4 + 1468 = 1472 bytes), sendmmsg + UDP GSO (as the TFTP
# server sends a window), for each --limit-threads value; the best is "the limit".
LIMIT_ROWS=()
LIMIT_MBIT=()
LIMIT=0
for t in $LIMIT_THREADS; do
    echo "== udp-limit, $t thread(s), 1472-byte datagrams, GSO" >&2
    set +e
    client_exec "$BIN/pxe-bench" udp-limit --send-netns "$P-srv" --recv-netns "$P-cli" \
        --dest "$NET.2:9999" --size 1472 --gso-segments 64 --threads "$t" --duration-s 5 --json \
        > "$WORK/limit-$t.json" 2> "$WORK/limit-$t.err"
    set -e
    row=$(python3 - "$WORK/limit-$t.json" "$t" <<'PY'
import json, sys
path, t = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| udp-limit ({t} thr) | | did not run ({type(e).__name__}) | | | | | | | | |\t0")
    sys.exit(0)
gso = f"GSO {r['gso_segments']}" if r["gso_segments"] else "no GSO"
print(f"| udp-limit ({t} thr, 1472 B, {gso}) | | loss {r['loss_percent']:.1f}% | | "
      f"{r['received_mbit_s']:.0f} | PCT | | | | | "
      f"{r['sender_cpu_percent']:.0f} + {r['receiver_cpu_percent']:.0f} |\t{r['received_mbit_s']:.3f}")
PY
)
    LIMIT_ROWS+=("${row%%$'\t'*}")
    mbit="${row##*$'\t'}"
    LIMIT_MBIT+=("$mbit")
    LIMIT=$(python3 -c "print(max($LIMIT, $mbit))")
    cells="${row%%$'\t'*}"
    echo "${cells/PCT/(of the best)}" >&2
done
[ -s "$WORK/limit-${LIMIT_THREADS%% *}.err" ] && cat "$WORK/limit-${LIMIT_THREADS%% *}.err" >&2

# Runs: NAME SERVER EXTRA-ARGS... (NAME is the row label).
RUNS=()
for s in $SERVERS; do
    case "$s" in
        tftpd-hpa) RUNS+=("pxe-server-tftp-only" "tftpd-hpa") ;;
        *) RUNS+=("$s") ;;
    esac
done

ROWS=()
NOTES=()
for n in $CLIENTS; do
    for label in "${RUNS[@]}"; do
        case "$label" in
            pxe-server-tftp-only) s=pxe-server; tftp_only=1; name="pxe-server tftp-only" ;;
            tftpd-hpa) s=tftpd-hpa; tftp_only=1; name=tftpd-hpa ;;
            pxe-server-dark) s=pxe-server-dark; tftp_only=0; name="pxe-server (nothing watching)" ;;
            *) s="$label"; tftp_only=0; name="$label" ;;
        esac
        d="$WORK/$label-$n"
        mkdir -p "$d"
        echo "== $name, $n clients: boot file, ${KERNEL_MIB} MiB kernel, ${INITRD_MIB} MiB initrd" >&2
        if ! start_server "$s" "$d"; then
            cat "$d/server.log" >&2 || true
            ROWS+=("| $name | $n | did not start | | | | | | | | |")
            NOTES+=("$name ($n clients) did not start: $(tail -c 300 "$d/server.log" | tr '\n' ' ')")
            stop_server
            continue
        fi
        if [ "$DRY_RUN" = 1 ]; then
            stop_server
            ROWS+=("| $name | $n | started and stopped; storm not run (--dry-run) | | | | | | | | |")
            continue
        fi
        echo 0 > "$d/rss"
        (
            [ -n "$CG" ] && echo "$BASHPID" > /sys/fs/cgroup/cpuacct/cgroup.procs
            sample_rss "$SERVER_PID" "$d/rss"
        ) &
        SAMPLER=$!
        args=(boot --clients "$n" --arch-mix "$ARCH_MIX" --interface "$CLI_IF"
              --kernel vmlinuz --initrd initrd.img
              --source-base "$SOURCE_BASE" --source-count "$n"
              --deadline-s "$DEADLINE" --json --no-progress)
        if [ "$tftp_only" = 1 ]; then
            args+=(--skip-dhcp --boot-file undionly.kpxe --tftp-server "$SRV")
        else
            args+=(--mode full)
        fi
        [ "$VERIFY" = 1 ] && args+=(--verify-dir "$ROOT")
        BROWSER=
        if [ "$OBSERVE" = 1 ]; then
            args+=(--source-from-lease)
            if [ "$s" = pxe-server ]; then
                name="pxe-server (watched)"
                args+=(--metrics-url "http://$SRV:9469/metrics")
                # The live page stays open for the whole storm (its own CPU is not the
                # server's: it runs outside the server's cgroup).
                client_exec ip netns exec "$P-srv" chromium --headless=new --no-sandbox --disable-gpu \
                    --no-first-run --disable-extensions --user-data-dir="$d/chromium" \
                    --remote-debugging-port=0 "http://127.0.0.1:9469/" > "$d/chromium.log" 2>&1 &
                BROWSER=$!
                sleep 3
            fi
        fi
        c0=$(cpu_ns)
        set +e
        client_exec ip netns exec "$P-cli" timeout $((DEADLINE + 60)) "$BIN/pxe-bench" "${args[@]}" \
            > "$d/report.json" 2> "$d/bench.err"
        rc=$?
        set -e
        c1=$(cpu_ns)
        if [ -n "$BROWSER" ]; then
            # What the page cost this machine (the browser's processes, CPU seconds), next to
            # the server's row: on a small machine it competes with the server and the clients.
            ticks=0
            for pid in $(pgrep -f -- "--user-data-dir=$d/chromium"); do
                ticks=$(( ticks + $(proc_cpu_ticks "$pid" 2>/dev/null || echo 0) ))
            done
            NOTES+=("$name ($n clients): the live page's browser used $(python3 -c "print(f'{$ticks / $(getconf CLK_TCK):.2f}')") CPU s")
            pkill -9 -f -- "--user-data-dir=$d/chromium" 2>/dev/null || true
            wait "$BROWSER" 2>/dev/null || true
        fi
        stop_server
        kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
        row=$(python3 - "$d/report.json" "$name" "$n" "$(( c1 - c0 ))" "$(cat "$d/rss")" "$LIMIT" "$rc" <<'PY'
import json, sys
path, name, n, cpu_ns, rss, limit, rc = sys.argv[1:]
limit = float(limit)
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {name} | {n} | no report (pxe-bench exit {rc}, {type(e).__name__}) | | | | | | "
          f"{int(cpu_ns)/1e9:.2f} | {int(rss)/1024:.0f} | |\tnan\tnan\t")
    sys.exit(0)
tot = r["phases"]["total"]
pct = f"{100*r['goodput_mbit_s']/limit:.0f}" if limit > 0 else "n/a"
fails = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("failures", {}).items()))
rt = r.get("retransmits", {})
note = ""
if fails or rt.get("dhcp") or rt.get("tftp"):
    note = (f"{name} ({n} clients): failures {{{fails or 'none'}}}, retransmits dhcp "
            f"{rt.get('dhcp', 0)} tftp {rt.get('tftp', 0)}")
p = lambda us: "-" if not tot.get("count") else f"{us/1e6:.2f}"
print(f"| {name} | {n} | {r['ok']} / {r['failed']} | {r['last_finished_s']:.2f} | "
      f"{r['goodput_mbit_s']:.0f} | {pct} | {p(tot['p50_us'])} | {p(tot['p99_us'])} | "
      f"{int(cpu_ns)/1e9:.2f} | {int(rss)/1024:.0f} | {r['cpu_percent']:.0f} |"
      f"\t{r['goodput_mbit_s']}\t{r['last_finished_s'] if r['failed'] == 0 else 'nan'}\t{note}")
PY
)
        IFS=$'\t' read -r cells goodput last note <<< "$row"
        echo "$cells" >&2
        ROWS+=("$cells")
        echo "$goodput $last $(( c1 - c0 ))" > "$WORK/result-$label-$n"
        [ -n "$note" ] && NOTES+=("$note")
        [ "$rc" -ne 0 ] && [ -s "$d/bench.err" ] &&
            NOTES+=("$name ($n clients): pxe-bench exit $rc: $(tail -c 300 "$d/bench.err" | tr '\n' ' ')")
        if [ -n "${KEEP_LOGS:-}" ]; then
            mkdir -p "$KEEP_LOGS"; cp -r "$d" "$KEEP_LOGS/"
        fi
        sleep 1
    done
done

# Ratios pxe-server / peer (goodput: higher is better; last-client time: lower is better, so
# peer/pxe-server is shown as the speed-up).
RATIOS=()
ratio() { # OURS PEER N
    local a="$WORK/result-$1-$3" b="$WORK/result-$2-$3"
    [ -f "$a" ] && [ -f "$b" ] || return 0
    python3 - "$1" "$2" "$3" "$(cat "$a")" "$(cat "$b")" <<'PY'
import math, sys
ours, peer, n, a, b = sys.argv[1:]
ga, la = (float(x) for x in a.split()[:2])
gb, lb = (float(x) for x in b.split()[:2])
ok = lambda *v: not any(math.isnan(x) for x in v)
g = f"{ga/gb:.2f}x" if ok(ga, gb) and gb > 0 else "n/a (no report)"
l = f"{lb/la:.2f}x faster" if ok(la, lb) and la > 0 else "n/a (clients failed)"
name = {"pxe-server-tftp-only": "pxe-server tftp-only"}.get(ours, ours)
print(f"| {name} vs {peer} | {n} | {g} | {l} |")
PY
}
# --observe: the watched pxe-server against the one nothing watches, same storm.
WATCH=()
watch_ratio() { # N
    local a="$WORK/result-pxe-server-$1" b="$WORK/result-pxe-server-dark-$1"
    [ -f "$a" ] && [ -f "$b" ] || return 0
    python3 - "$1" "$(cat "$a")" "$(cat "$b")" <<'PY'
import math, sys
n, a, b = sys.argv[1:]
ga, la, ca = (float(x) for x in a.split())
gb, lb, cb = (float(x) for x in b.split())
ok = lambda *v: not any(math.isnan(x) for x in v)
g = f"{ga/gb:.3f}" if ok(ga, gb) and gb > 0 else "n/a"
l = f"{la/lb:.3f}" if ok(la, lb) and lb > 0 else "n/a"
c = f"{ca/cb:.3f}" if cb > 0 else "n/a"
print(f"| watched / nothing watching | {n} | {g} | {l} | {c} |")
PY
}
if [ "$DRY_RUN" = 0 ]; then
    for n in $CLIENTS; do
        r=$(watch_ratio "$n"); [ -n "$r" ] && WATCH+=("$r")
        r=$(ratio pxe-server dnsmasq "$n"); [ -n "$r" ] && RATIOS+=("$r")
        r=$(ratio pxe-server-tftp-only tftpd-hpa "$n"); [ -n "$r" ] && RATIOS+=("$r")
    done
fi

echo
echo "Machine: $(hostname), $(nproc) cores, Linux $(uname -r); pxe-server $(git describe --always --dirty 2>/dev/null || echo '?')," \
     "dnsmasq $(dnsmasq --version 2>/dev/null | awk 'NR==1{print $3}'), tftpd-hpa $(in.tftpd -V 2>&1 | awk 'NR==1{sub(",", "", $2); print $2}')."
echo "Path: veth between two network namespaces; one source address per simulated machine;" \
     "arch mix $ARCH_MIX; files: 64 KiB boot file, ${KERNEL_MIB} MiB kernel, ${INITRD_MIB} MiB initrd$([ "$VERIFY" = 1 ] && echo ', every file verified byte-exact')."
echo "Time-to-boot: DHCP + boot file + kernel + initrd per client (TFTP-only rows: no DHCP). Goodput:"
echo "file bytes received per second over the run; % of udp-limit: goodput / best udp-limit row"
echo "(UDP payload incl. the 4-byte TFTP header, so 100% is not quite reachable). Server CPU:"
echo "$([ -n "$CG" ] && echo 'cpuacct cgroup (server and its children)' || echo '/proc of the server process')." \
     "Simulator CPU: pxe-bench's own, % of one core; udp-limit CPU: senders + receivers."
echo
echo "| server | clients | ok / failed | last client booted s | goodput Mbit/s | % of udp-limit | p50 boot s | p99 boot s | server CPU s | server peak RSS MiB | simulator CPU % |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for i in "${!LIMIT_ROWS[@]}"; do
    pct=$(python3 -c "print('%.0f' % (100 * ${LIMIT_MBIT[$i]} / $LIMIT) if $LIMIT > 0 else 'n/a')")
    echo "${LIMIT_ROWS[$i]/PCT/$pct}"
done
printf '%s\n' "${ROWS[@]}"
if [ "${#RATIOS[@]}" -gt 0 ]; then
    echo
    echo "| pxe-server vs peer | clients | goodput ratio | time until last client booted |"
    echo "|---|---|---|---|"
    printf '%s\n' "${RATIOS[@]}"
fi
if [ "${#WATCH[@]}" -gt 0 ]; then
    echo
    echo "Watched: /metrics scraped every second, journeys on, the live page open in Chromium."
    echo
    echo "| pxe-server | clients | goodput ratio | last-client time ratio | server CPU ratio |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${WATCH[@]}"
fi
if [ "${#NOTES[@]}" -gt 0 ]; then
    echo
    printf -- '- %s\n' "${NOTES[@]}"
fi
