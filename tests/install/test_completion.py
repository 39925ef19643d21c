#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bash completion for tokenctl completes verbs, options and credential names.

Against a real daemon holding two credentials: `tokenctl <TAB>` offers the verbs,
`tokenctl token al<TAB>` completes the credential name the daemon holds, `tokenctl revoke <TAB>`
offers both, `tokenctl login --flow <TAB>` offers the flows, `tokenctl token x --sc<TAB>` the option;
the consent verbs are offered, `tokenctl grants <TAB>` offers revoke, `tokenctl approve ID --<TAB>`
its options. (Completing request and grant ids is tested against a fake daemon in
test_tokenctl_cli.py.)
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import TOKENCTL, check, run_test  # noqa: E402

COMPLETION = os.path.join(HERE, "..", "..", "shell-completion", "tokenctl.bash")


def complete(d, words):
    """Runs the completion function for `words` (the last one being completed)."""
    script = (f'source "{COMPLETION}"\n'
              'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))\n'
              '_tokenctl\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(TOKENCTL) + os.pathsep + env.get("PATH", "")
    env["TOKEND_SOCKET"] = d.socket
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", *words], capture_output=True,
                       text=True, env=env, timeout=30)
    check(r.returncode == 0, f"completion of {words} runs", r.stderr)
    return sorted(x for x in r.stdout.splitlines() if x)


def main(ctx):
    srv = ctx.oauth_server()
    d = ctx.tokend()
    d.add("alpha-cred", srv)
    d.add("beta-cred", srv)
    verbs = complete(d, ["tokenctl", ""])
    check({"login", "add", "list", "status", "token", "revoke", "remove", "store", "audit", "pending", "watch",
           "approve", "deny", "grants", "reload", "whoami", "help"} <= set(verbs), "verbs offered", verbs)
    check(complete(d, ["tokenctl", "to"]) == ["token"], "a verb prefix completes")
    check(complete(d, ["tokenctl", "token", "al"]) == ["alpha-cred"], "a credential name completes")
    check(complete(d, ["tokenctl", "revoke", ""]) == ["alpha-cred", "beta-cred"], "both names offered for revoke")
    check(complete(d, ["tokenctl", "--socket", d.socket, "remove", "b"]) == ["beta-cred"], "with --socket too")
    check(complete(d, ["tokenctl", "login", "x", "--flow", ""]) == ["auth-code", "device"], "flows offered")
    check(complete(d, ["tokenctl", "token", "alpha-cred", "--sc"]) == ["--scope"], "token options complete")
    check(complete(d, ["tokenctl", "grants", ""]) == ["revoke"], "grants offers revoke")
    check(complete(d, ["tokenctl", "approve", "r-1", "--"]) == ["--for", "--json", "--once", "--process", "--scope"],
          "approve options complete")
    check(complete(d, ["tokenctl", "audit", "--credential", "a"]) == ["alpha-cred"], "audit --credential completes")


run_test(main, __doc__)
