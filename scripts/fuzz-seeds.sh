#!/usr/bin/env bash
# Writes the committed seed corpus of the fuzz targets: fuzz/corpus/TARGET/seed-NAME.
#
#   scripts/fuzz-seeds.sh
#
# - http_request: request heads as curl, iPXE and UEFI HTTP boot send them, with ranges,
#   validators (`{etag}` and `{date}` stand for the path's own, see the target) and the
#   traversal attempts the router must refuse;
# - install_routes: request lines as iPXE, an installer and its callback send them, from the
#   host's address or a stranger's, with right and wrong tokens;
# - xdp_decision and dhcp_roundtrip: frames and DHCP requests built from pxe_ebpf::vectors
#   (pxe-ebpf's ignored test `write_fuzz_seeds`).
#
# Only seed-* files are tracked (fuzz/.gitignore); what libFuzzer adds to a corpus directory
# is named by its hash and stays untracked. scripts/fuzz.sh runs on a copy of the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

CORPUS=fuzz/corpus
for t in http_request install_routes xdp_decision dhcp_roundtrip; do
    mkdir -p "$CORPUS/$t"
    rm -f "$CORPUS/$t"/seed-*
done

# seed TARGET NAME TEXT: TEXT as it is (use $'...' for CR LF).
seed() { printf '%s' "$3" > "$CORPUS/$1/seed-$2"; }

H=$'Host: 10.0.0.1\r\n'
seed http_request curl-get $'GET /file HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n'
seed http_request ipxe-get $'GET /boot/ipxe.efi HTTP/1.1\r\nConnection: keep-alive\r\n'"$H"$'User-Agent: iPXE/1.21.1+\r\n\r\n'
seed http_request uefi-head $'HEAD /boot/ipxe.efi HTTP/1.1\r\n'"$H"$'User-Agent: UefiHttpBoot/1.0\r\nAccept: */*\r\n\r\n'
seed http_request uefi-range $'GET /boot/ipxe.efi HTTP/1.1\r\n'"$H"$'User-Agent: UefiHttpBoot/1.0\r\nRange: bytes=0-15\r\n\r\n'
seed http_request range-middle $'GET /file HTTP/1.1\r\n'"$H"$'Range: bytes=2-5\r\n\r\n'
seed http_request range-suffix $'GET /boot/grub/grub.cfg HTTP/1.1\r\n'"$H"$'Range: bytes=-4\r\n\r\n'
seed http_request range-open $'GET /link HTTP/1.1\r\n'"$H"$'Range: bytes=7-\r\n\r\n'
seed http_request range-past-end $'GET /file HTTP/1.1\r\n'"$H"$'Range: bytes=100-\r\n\r\n'
seed http_request range-empty-file $'GET /empty HTTP/1.1\r\n'"$H"$'Range: bytes=0-0\r\n\r\n'
seed http_request range-two $'GET /file HTTP/1.1\r\n'"$H"$'Range: bytes=0-1,4-5\r\n\r\n'
seed http_request if-none-match $'GET /file HTTP/1.1\r\n'"$H"$'If-None-Match: "old", {etag}\r\n\r\n'
seed http_request if-modified-since $'HEAD /boot/up HTTP/1.1\r\n'"$H"$'If-Modified-Since: {date}\r\n\r\n'
seed http_request if-range-etag $'GET /file HTTP/1.1\r\n'"$H"$'Range: bytes=1-3\r\nIf-Range: {etag}\r\n\r\n'
seed http_request if-range-date $'GET /boot/g/grub.cfg HTTP/1.1\r\n'"$H"$'Range: bytes=3-\r\nIf-Range: {date}\r\n\r\n'
seed http_request encoded-name $'GET /sp%20ace%2541.img?x=1 HTTP/1.1\r\n'"$H"$'\r\n'
seed http_request dot-segments $'GET //boot/./grub//grub.cfg HTTP/1.0\r\n\r\n'
seed http_request post $'POST /file HTTP/1.1\r\n'"$H"$'Content-Length: 0\r\n\r\n'
seed http_request traversal $'GET /../secret HTTP/1.1\r\n'"$H"$'\r\n'
seed http_request traversal-encoded $'GET /boot/%2e%2e/%2E%2E/secret HTTP/1.1\r\n'"$H"$'\r\n'
seed http_request symlink-out $'GET /escape HTTP/1.1\r\n'"$H"$'\r\n'
seed http_request symlink-dir-out $'GET /parent/secret HTTP/1.1\r\n'"$H"$'\r\n'
seed http_request symlink-absolute $'GET /absolute-inside HTTP/1.1\r\n'"$H"$'\r\n'
seed http_request backslash $'GET /boot%5c..%5csecret HTTP/1.1\r\n'"$H"$'\r\n'

# install_routes: `@PEER` sets the request's source address (n1's is 10.0.0.21; else a
# stranger's), `{t1}`..`{t4}` stand for the hosts' install tokens (see the target).
seed install_routes ipxe-first $'GET /boot.ipxe'
seed install_routes ipxe-n1-install $'@10.0.0.21 GET /boot.ipxe?mac=52-54-a1-b2-c3-d4&uuid='
seed install_routes ipxe-n1-stranger $'GET /boot.ipxe?mac=52-54-a1-b2-c3-d4&uuid='
seed install_routes ipxe-both-ids $'GET /boot.ipxe?mac=52-54-a1-b2-c3-f6&uuid=5a5b5c5d-6e6f-7071-8283-a4a5b6b7c8c9'
seed install_routes ipxe-uuid $'GET /boot.ipxe?uuid=4C4C4544-3135-3510-8047-B4C04F4D3232'
seed install_routes ipxe-unknown $'GET /boot.ipxe?mac=02-00-00-00-00-99&uuid=00000000-0000-0000-0000-000000000000'
seed install_routes kickstart-then-done $'@10.0.0.21 GET /boot.ipxe?mac=52-54-a1-b2-c3-d4\n@10.0.0.21 GET /install/mac:52:54:a1:b2:c3:d4/{t1}/ks.cfg\n@10.0.0.21 POST /done/mac:52:54:a1:b2:c3:d4/{t1}\n@10.0.0.21 GET /boot.ipxe?mac=52-54-a1-b2-c3-d4'
seed install_routes cloud-init $'GET /install/uuid:5a5b5c5d-6e6f-7071-8283-a4a5b6b7c8c9/{t4}/cloud/user-data\nPOST /done/uuid%3A5a5b5c5d-6e6f-7071-8283-a4a5b6b7c8c9/{t4}'
seed install_routes script-by-key $'GET /install/52-54-a1-b2-c3-e5/{t2}/ipxe/install.ipxe'
seed install_routes unknown-done $'POST /done/mac:02:00:00:00:00:99/{t1}\nGET /install/mac:02:00:00:00:00:99/{t1}/ks.cfg'
seed install_routes bad-tokens $'GET /install/mac:52:54:a1:b2:c3:d4/{t2}/ks.cfg\nPOST /done/mac:52:54:a1:b2:c3:d4/00000000000000000000000000000000\nGET /install/mac:52:54:a1:b2:c3:d4/ks.cfg\nPOST /done/mac:52:54:a1:b2:c3:d4'
seed install_routes done-by-get $'GET /done/mac:52:54:a1:b2:c3:d4/{t1}\nPUT /done/mac:52:54:a1:b2:c3:d4/{t1}'
seed install_routes hostile $'GET /boot.ipxe?mac=%zz\nGET /install/mac:52:54:a1:b2:c3:d4/%2e%2e%2fetc%2fpasswd\nGET /install/%ff/{t1}/ks.cfg\nDELETE /done/x\nPUT /boot.ipxe'

FUZZ_CORPUS="$PWD/$CORPUS" cargo test -q -p pxe-ebpf --lib tests::write_fuzz_seeds -- --ignored --exact

for t in http_request install_routes xdp_decision dhcp_roundtrip; do
    echo "$CORPUS/$t: $(ls "$CORPUS/$t" | grep -c '^seed-') seeds"
done
