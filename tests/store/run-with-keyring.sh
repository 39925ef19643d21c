#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs CMD... on a private D-Bus session bus with a headless gnome-keyring
# whose login collection (the default one) is unlocked, in a private HOME:
#
#   tests/store/run-with-keyring.sh CMD [ARG]...
#
# The bus has no service directories, so nothing is started by activation:
# a gnome-keyring that was stopped stays away. CMD controls the keyring with
# tests/store/keyring.sh (start, stop, kill, lock, pause, resume, pid); the
# paths it needs are in $TOKEND_TEST_KEYRING_DIR. Everything started here is
# stopped at exit, by PID. Exit status: CMD's, or 77 (skip) when gnome-keyring
# or dbus-run-session is missing.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
for tool in dbus-run-session dbus-daemon gnome-keyring-daemon gdbus; do
        if ! command -v "$tool" >/dev/null 2>&1; then
                echo "run-with-keyring: $tool is missing (apt-get install gnome-keyring dbus libglib2.0-bin); skipping" >&2
                exit 77
        fi
done
[ $# -gt 0 ] || { echo "usage: run-with-keyring.sh CMD [ARG]..." >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/tokend-keyring.XXXXXX")
cleanup() {
        "$here/keyring.sh" stop >/dev/null 2>&1 || true
        rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

mkdir -p "$dir/home" "$dir/run"
chmod 700 "$dir/home" "$dir/run"
export TOKEND_TEST_KEYRING_DIR="$dir"
export HOME="$dir/home" XDG_RUNTIME_DIR="$dir/run"
export XDG_DATA_HOME="$dir/home/.local/share" XDG_CONFIG_HOME="$dir/home/.config" XDG_CACHE_HOME="$dir/home/.cache"
unset DBUS_SESSION_BUS_ADDRESS GNOME_KEYRING_CONTROL SSH_AUTH_SOCK

cat > "$dir/bus.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF

# Not exec: the trap above must run once the bus is gone.
status=0
dbus-run-session --config-file="$dir/bus.conf" -- \
        sh -c '"$1" start >/dev/null && shift && exec "$@"' sh "$here/keyring.sh" "$@" 2>&1 ||
        status=$?
exit "$status"
