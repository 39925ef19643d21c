#!/bin/sh
# SPDX-License-Identifier: MIT
# The exposure score gate (issue 5, acceptance 4): the configured user unit must
# score 1.5 or lower in 'systemd-analyze security --offline=true --user'.
# Usage: unit-security.sh UNIT-FILE [THRESHOLD-IN-TENTHS]  (exit 0 pass, 1 fail, 77 skip)
set -u
unit=$1
threshold=${2:-15}
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }
[ -r "$unit" ] || { echo "FAIL: $unit is missing"; exit 1; }
# --user needs $XDG_RUNTIME_DIR; use a private one.
rt=$(mktemp -d) || exit 1
trap 'rm -rf "$rt"' EXIT
out=$(XDG_RUNTIME_DIR=$rt systemd-analyze security --offline=true --user --threshold="$threshold" --no-pager "$unit" 2>&1)
rc=$?
# The items still exposed, then the score.
printf '%s\n' "$out" | grep -v '^✓'
score=$(printf '%s\n' "$out" | sed -n 's/^→ Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
limit=$(echo "$threshold" | sed 's/\(.\)$/.\1/; s/^\./0./')
if [ -z "$score" ]; then
        echo "FAIL: no score from systemd-analyze (status $rc)"
        exit 1
fi
if [ "$rc" -ne 0 ]; then
        echo "FAIL: exposure score $score of $(basename "$unit") is above $limit"
        exit 1
fi
echo "PASS: exposure score $score of $(basename "$unit") (limit $limit)"
