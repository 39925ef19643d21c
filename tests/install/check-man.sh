#!/bin/sh
# Renders each man page with man -l and fails on any warning.
set -u
fail=0
for page in "$@"; do
        out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
        lines=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -E UTF-8 -l "$page" 2>/dev/null | wc -l)
        if [ -n "$out" ] || [ "$lines" -lt 10 ]; then
                echo "FAIL: $page ($lines lines): $out"
                fail=1
        else
                echo "ok: $page ($lines lines, no warnings)"
        fi
done
exit $fail
