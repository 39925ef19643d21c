#!/bin/bash
# SPDX-License-Identifier: MIT
# Parses Varlink IDL files with upstream's parser (varlink-go-interface-generator,
# which exits non-zero on a syntax error). The generator writes a .go file next
# to its input, so each file is checked as a copy in a temporary directory.
# Usage: check-idl.sh FILE.varlink...
set -u

generator=${VARLINK_GO_INTERFACE_GENERATOR:-$(command -v varlink-go-interface-generator || true)}

fail() {
    echo "idl-parse: FAIL: $*" >&2
    exit 1
}

[ $# -gt 0 ] || fail "no IDL files given"
[ -n "$generator" ] && [ -x "$generator" ] || fail "varlink-go-interface-generator not found (install varlink-go)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/idl-parse.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

failed=0
for file in "$@"; do
    name=$(basename "$file")
    rm -rf "${tmp:?}"/*
    if ! cp "$file" "$tmp/$name"; then
        echo "idl-parse: $file: cannot copy" >&2
        failed=1
        continue
    fi
    if out=$(cd "$tmp" && "$generator" "$name" 2>&1); then
        echo "idl-parse: $file: ok"
    else
        echo "idl-parse: $file: FAILED" >&2
        echo "$out" >&2
        failed=1
    fi
done
[ "$failed" -eq 0 ] || fail "some IDL files do not parse"
