#!/bin/sh
# SPDX-License-Identifier: MIT
# Controls the headless gnome-keyring of run-with-keyring.sh:
#   start   start it (foreground process, login collection unlocked), wait for it
#   stop    SIGTERM it and wait until it is gone (kill: SIGKILL)
#   pause   SIGSTOP it (it keeps its bus name but answers nothing); resume: SIGCONT
#   lock    lock the login collection
#   pid     print its PID
set -eu

dir=${TOKEND_TEST_KEYRING_DIR:?run this under tests/store/run-with-keyring.sh}
pidfile="$dir/keyring.pid"

alive() {
        # A reaped or zombie process is gone (kill -0 succeeds on zombies).
        [ -r "/proc/$1/stat" ] || return 1
        state=$(sed 's/^[0-9]* (.*) \([A-Z]\) .*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
        [ "$state" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = gnome-keyring-d ]
}

name_owned() {
        gdbus call --session -d org.freedesktop.DBus -o /org/freedesktop/DBus -m org.freedesktop.DBus.NameHasOwner \
                org.freedesktop.secrets 2>/dev/null | grep -q true
}

wait_for() { # SECONDS COMMAND...
        n=$(($1 * 10))
        shift
        while ! "$@"; do
                n=$((n - 1))
                [ "$n" -gt 0 ] || return 1
                sleep 0.1
        done
}

not() { ! "$@"; }

stop_with() {
        [ -f "$pidfile" ] || return 0
        pid=$(cat "$pidfile")
        if alive "$pid"; then
                kill -CONT "$pid" 2>/dev/null || true
                kill "-$1" "$pid" 2>/dev/null || true
                if ! wait_for 10 not alive "$pid"; then
                        kill -KILL "$pid" 2>/dev/null || true
                        wait_for 5 not alive "$pid" || true
                fi
        fi
        rm -f "$pidfile"
        [ -n "${DBUS_SESSION_BUS_ADDRESS:-}" ] || return 0
        wait_for 10 not name_owned || { echo "keyring.sh: org.freedesktop.secrets still owned" >&2; return 1; }
}

case "${1:-}" in
start)
        if [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; then
                echo "keyring.sh: already running" >&2
                exit 1
        fi
        # One password for the life of the directory, so a restart unlocks the same keyring.
        [ -f "$dir/password" ] || (umask 077 && head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/password")
        gnome-keyring-daemon --foreground --unlock --components=secrets < "$dir/password" >> "$dir/keyring.log" 2>&1 &
        echo $! > "$pidfile"
        if ! wait_for 10 name_owned; then
                echo "keyring.sh: gnome-keyring did not claim org.freedesktop.secrets; its log:" >&2
                cat "$dir/keyring.log" >&2
                exit 1
        fi
        # The default alias points at the login collection once it is unlocked or created.
        wait_for 10 sh -c 'gdbus call --session -d org.freedesktop.secrets -o /org/freedesktop/secrets \
                -m org.freedesktop.Secret.Service.ReadAlias default 2>/dev/null | grep -q /collection/' ||
                { echo "keyring.sh: no default collection" >&2; exit 1; }
        cat "$pidfile"
        ;;
stop)
        stop_with TERM
        ;;
kill)
        stop_with KILL
        ;;
pause)
        kill -STOP "$(cat "$pidfile")"
        ;;
resume)
        kill -CONT "$(cat "$pidfile")"
        ;;
lock)
        gdbus call --session -d org.freedesktop.secrets -o /org/freedesktop/secrets \
                -m org.freedesktop.Secret.Service.Lock "[objectpath '/org/freedesktop/secrets/collection/login']" >/dev/null
        ;;
pid)
        cat "$pidfile"
        ;;
*)
        echo "usage: keyring.sh start|stop|kill|pause|resume|lock|pid" >&2
        exit 2
        ;;
esac
