#!/usr/bin/env bash
# Installs pxe-server as a systemd service on this machine (Debian 12, as root):
# - the service account pxe-server (scripts/lib/account.sh);
# - the release binary as /usr/local/sbin/pxe-server (built here unless --binary names one);
# - /etc/pxe-server/pxe-server.toml from config/pxe-server.toml, only if there is none yet;
# - /srv/tftp (the default root) if missing, and the documentation;
# - the unit dist/pxe-server.service as /etc/systemd/system/pxe-server.service, after
#   `systemd-analyze verify` accepts it.
# With --enable, the service is enabled and started (needs systemd running as PID 1).
#
#   scripts/install-service.sh [--binary PATH] [--enable]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

binary=""
enable=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --enable) enable=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install-service.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "install-service.sh: run as root" >&2
    exit 1
fi

bash scripts/lib/account.sh pxe-server
if [ -z "$binary" ]; then
    cargo build --release -p pxe-server -q
    binary=target/release/pxe-server
fi
install -D -m 0755 "$binary" /usr/local/sbin/pxe-server
install -d -m 0755 /etc/pxe-server /srv/tftp /usr/local/share/doc/pxe-server
if [ ! -e /etc/pxe-server/pxe-server.toml ]; then
    install -m 0644 config/pxe-server.toml /etc/pxe-server/pxe-server.toml
    echo "install-service.sh: wrote /etc/pxe-server/pxe-server.toml (edit it, then start the service)"
else
    echo "install-service.sh: kept the existing /etc/pxe-server/pxe-server.toml"
fi
install -m 0644 README.md SECURITY.md ARCHITECTURE.md /usr/local/share/doc/pxe-server/
/usr/local/sbin/pxe-server check --config /etc/pxe-server/pxe-server.toml >/dev/null

install -D -m 0644 dist/pxe-server.service /etc/systemd/system/pxe-server.service
systemd-analyze verify /etc/systemd/system/pxe-server.service
echo "install-service.sh: installed /etc/systemd/system/pxe-server.service"

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$enable" -eq 1 ]; then
        systemctl enable --now pxe-server.service
        systemctl --no-pager status pxe-server.service || true
    else
        echo "install-service.sh: start it with: systemctl enable --now pxe-server"
    fi
elif [ "$enable" -eq 1 ]; then
    echo "install-service.sh: systemd is not running here: cannot enable the service" >&2
    exit 1
else
    echo "install-service.sh: systemd is not running here; on a systemd host: systemctl enable --now pxe-server"
fi
