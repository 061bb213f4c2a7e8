#!/usr/bin/env bash
# Creates the service account pxe-server runs as after start ([server] user, default
# "pxe-server"): a system user with its own group, no login shell and no home directory.
# Idempotent. Used by scripts/install-deps.sh and scripts/install-service.sh.
#
#   scripts/lib/account.sh [NAME]
set -euo pipefail
name="${1:-pxe-server}"
if ! getent group "$name" >/dev/null; then
    groupadd --system "$name"
fi
if ! getent passwd "$name" >/dev/null; then
    useradd --system --gid "$name" --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "pxe-server network boot server" "$name"
    echo "account.sh: created system account $name"
fi
