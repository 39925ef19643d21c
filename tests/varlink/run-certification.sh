#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs upstream's Varlink conformance client (varlink-go-certification) against
# varlink-cert-server. Usage: run-certification.sh SERVER
# The client exits 0 even when a test fails, so success is its final line
# "End: 'true'". Fails (with the client's and the server's output) when the
# server is missing, does not come up, crashes, or the client does not finish.
set -u

server=${1:?usage: run-certification.sh SERVER}
client=${VARLINK_GO_CERTIFICATION:-$(command -v varlink-go-certification || true)}

fail() {
    echo "varlink-certification: FAIL: $*" >&2
    exit 1
}

case $server in
    missing:*)
        fail "varlink-cert-server was not built: ${server#missing:} does not exist (install golang-github-varlink-go-dev)" ;;
esac
[ -x "$server" ] || fail "$server is not an executable"
[ -n "$client" ] && [ -x "$client" ] || fail "varlink-go-certification not found (install varlink-go)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/varlink-cert.XXXXXX") || fail "mktemp failed"
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

socket=$tmp/cert.sock
"$server" --socket "$socket" 2>"$tmp/server.log" &
server_pid=$!

dump() {
    echo "--- client output ---"
    cat "$tmp/client.log" 2>/dev/null
    echo "--- server output ---"
    cat "$tmp/server.log" 2>/dev/null
}

# Wait for the socket; give up if the server dies first.
for _ in $(seq 100); do
    [ -S "$socket" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        wait "$server_pid"
        status=$?
        server_pid=
        dump
        fail "server exited with status $status before listening"
    fi
    sleep 0.05
done
[ -S "$socket" ] || { dump; fail "server did not create $socket"; }

timeout 60 "$client" --client --varlink="unix:$socket" >"$tmp/client.log" 2>&1
client_status=$?

# A crash during the run shows up here even if the client got lucky.
if ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid"
    status=$?
    server_pid=
    dump
    fail "server died during the run (status $status)"
fi
kill -TERM "$server_pid"
wait "$server_pid"
status=$?
server_pid=

cat "$tmp/client.log"
if [ "$client_status" -ne 0 ]; then
    dump
    fail "client exited with status $client_status"
fi
if ! grep -qx "End: 'true'" "$tmp/client.log"; then
    dump
    fail "the client did not report End: 'true'"
fi
if [ "$status" -ne 0 ]; then
    dump
    fail "server exited with status $status on SIGTERM"
fi
echo "varlink-certification: PASS"
