#!/bin/sh
# SPDX-License-Identifier: MIT
#
# A shell "agent": gets an access token from tokend through tokenctl and calls
# an API with it, without the token ever appearing on a command line (which
# every user can read in ps and /proc/PID/cmdline), in a file, or on the
# terminal.
#
#   shell-agent.sh [-s SCOPE]... [-t MIN_TTL] [-n COUNT] [-i SECONDS] CREDENTIAL [URL]
#       asks with 'tokenctl token' (COUNT times, every SECONDS)
#   shell-agent.sh -x [-s SCOPE]... [-t MIN_TTL] CREDENTIAL [URL]
#       runs itself under 'tokenctl exec', which hands it the token in its
#       environment (see -e)
#   shell-agent.sh -e VAR CREDENTIAL [URL]
#       takes the token from the environment variable VAR, as in
#       'tokenctl exec CREDENTIAL --env VAR -- shell-agent.sh -e VAR CREDENTIAL URL'
#
#   -s SCOPE    a scope the token must carry (repeatable)
#   -t MIN_TTL  seconds the token must stay valid at least ('tokenctl exec'
#               asks for 300 unless told otherwise)
#   -n COUNT    ask and call COUNT times (default 1). The pattern for a
#               long-running script: ask tokend again before each use rather
#               than keep a token. tokend answers from its cache and refreshes
#               ahead of expiry, so asking costs one local socket call.
#   -i SECONDS  pause between rounds (default 5)
#   URL         an API to GET with "Authorization: Bearer" (e.g. the
#               provider's userinfo endpoint); without it the script only
#               prints the token's fingerprint
#
# Environment: TOKENCTL (default: tokenctl from $PATH), TOKEND_SOCKET (read by
# tokenctl; default $XDG_RUNTIME_DIR/tokend/socket).
#
# Output: "token fp=..." (the first 12 hex digits of the token's SHA-256, as
# on tokend's audit trail: printf %s "$TOKEN" | sha256sum), and with URL
# "api GET URL: BODY".
#
# Exit status: tokenctl's when it fails (3 tokend unreachable, 4 no such
# credential, 5 re-authentication needed, 6 provider unavailable, 7 refused,
# 8 permission denied, 1 other), 2 for a usage error, 22 when the API answered
# with an HTTP error, curl's own status when it could not ask at all.
#
# Never run this with 'set -x' or 'sh -x': the shell would trace the
# expansion of the printf that writes the header, token included, to stderr.

set -u
set -f  # no pathname expansion: a scope such as 'repo:*' stays as it is

prog=shell-agent
tokenctl=${TOKENCTL:-tokenctl}

usage() {
        echo "usage: $prog [-x | -e VAR] [-s SCOPE]... [-t MIN_TTL] [-n COUNT] [-i SECONDS] CREDENTIAL [URL]" >&2
        exit 2
}

count=1
interval=5
from_env=
run_under_exec=
# Options for tokenctl, as one blank-separated list: scopes are RFC 6749
# scope tokens (no blanks, quotes or backslashes; checked below), and set -f
# keeps them from being globbed, so splitting the list is safe.
tokenctl_args=
while getopts s:t:n:i:e:x opt; do
        case $opt in
        s)
                case $OPTARG in
                ''|*[[:space:]\'\"\\]*) echo "$prog: -s takes one scope" >&2; exit 2 ;;
                esac
                tokenctl_args="$tokenctl_args --scope $OPTARG" ;;
        t)
                case $OPTARG in ''|*[!0-9]*) echo "$prog: -t takes a number of seconds" >&2; exit 2 ;; esac
                tokenctl_args="$tokenctl_args --min-ttl $OPTARG" ;;
        n)
                case $OPTARG in ''|*[!0-9]*|0) echo "$prog: -n takes a count of at least 1" >&2; exit 2 ;; esac
                count=$OPTARG ;;
        i)
                case $OPTARG in ''|*[!0-9]*) echo "$prog: -i takes a number of seconds" >&2; exit 2 ;; esac
                interval=$OPTARG ;;
        e)
                case $OPTARG in
                ''|[0-9]*|*[!A-Za-z0-9_]*) echo "$prog: -e takes a variable name" >&2; exit 2 ;;
                esac
                from_env=$OPTARG ;;
        x)
                run_under_exec=1 ;;
        *)
                usage ;;
        esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
if { [ -n "$from_env" ] || [ -n "$run_under_exec" ]; } && [ "$count" -ne 1 ]; then
        echo "$prog: -n works with 'tokenctl token' only: a token handed over by 'tokenctl exec' is not renewed" >&2
        exit 2
fi
credential=$1
url=${2:-}

# What tokenctl's exit status means (tokenctl has already said why on stderr).
explain() {
        case $1 in
        2) echo "tokenctl rejected its arguments" ;;
        3) echo "tokend is not reachable (is it running? is TOKEND_SOCKET set?)" ;;
        4) echo "tokend holds no credential '$credential'" ;;
        5) echo "the credential needs a new login by its owner" ;;
        6) echo "the provider is unavailable: retry later" ;;
        7) echo "the request was refused (scope, lifetime, or no consent in time)" ;;
        8) echo "permission denied (policy, or the owner denied it)" ;;
        *) echo "tokenctl failed" ;;
        esac
}

fail_tokenctl() {
        echo "$prog: could not get a token for '$credential' (tokenctl exit $1): $(explain "$1")" >&2
        exit "$1"
}

# Uses the token in $token: prints its fingerprint, and calls the API.
use_token() {
        # printf is a shell builtin (in dash and bash alike): no process is
        # started with the token as an argument; sha256sum reads it on stdin.
        fp=$(printf '%s' "$token" | sha256sum | cut -c1-12)
        echo "token fp=$fp"
        [ -n "$url" ] || return 0

        # 'curl -H "Authorization: Bearer $token"' would put the token in
        # curl's argv. Instead the builtin printf writes the header line into a
        # pipe, and '-H @-' makes curl read header lines from its standard
        # input (curl 7.55 or later; --fail-with-body needs 7.76). No -L: a
        # redirect is not followed, so the header goes to this URL only.
        body=$(printf 'Authorization: Bearer %s\n' "$token" |
                curl --silent --show-error --fail-with-body --max-time 15 -H @- -- "$url")
        rc=$?
        # An API that echoed the token back does not get it shown either.
        case $body in *"$token"*) body="(answer withheld: it contains the token)" ;; esac
        # Nor do control characters from the network reach the terminal.
        printf 'api GET %s: %s\n' "$url" "$body" | tr -d '\000-\010\013-\037\177'
        if [ $rc -ne 0 ]; then
                echo "$prog: the API call failed (curl exit $rc)" >&2
                unset token
                exit $rc
        fi
}

if [ -n "$run_under_exec" ]; then
        # tokenctl exec asks tokend for the token, puts it in the environment
        # of the command (SHELL_AGENT_TOKEN here, its expiry in
        # SHELL_AGENT_TOKEN_EXPIRES_AT) and executes the command in its own
        # place: the token is on no command line, and a process's environment
        # (/proc/PID/environ) is readable only by its own user. The command
        # is this script again, with -e. The shell is replaced by tokenctl, and
        # tokenctl by the script: the exit status is tokenctl's when it could
        # not get a token (it says why), else the script's.
        # shellcheck disable=SC2086
        exec "$tokenctl" exec "$credential" --env SHELL_AGENT_TOKEN $tokenctl_args -- \
                "$0" -e SHELL_AGENT_TOKEN "$credential" ${url:+"$url"}
fi

if [ -n "$from_env" ]; then
        # The variable name was checked above, so eval expands exactly it.
        eval "token=\${$from_env-} expires_at=\${${from_env}_EXPIRES_AT-}"
        # Unset at once, so that curl and anything else started from here does
        # not inherit the token in its environment.
        unset "$from_env" "${from_env}_EXPIRES_AT"
        if [ -z "$token" ]; then
                echo "$prog: \$$from_env is empty: run this under 'tokenctl exec $credential --env $from_env'" >&2
                exit 2
        fi
        [ -z "$expires_at" ] || echo "token from \$$from_env, expires_at=$expires_at"
        use_token
        unset token
        exit 0
fi

round=1
while :; do
        # The token goes from tokenctl's stdout into a shell variable. A
        # variable that is not exported is in no process's argv or environment.
        # shellcheck disable=SC2086
        token=$("$tokenctl" token "$credential" $tokenctl_args)
        rc=$?
        [ $rc -eq 0 ] || fail_tokenctl $rc
        [ -n "$token" ] || fail_tokenctl 1
        use_token
        unset token

        [ "$round" -lt "$count" ] || break
        round=$((round + 1))
        sleep "$interval"
done
exit 0
