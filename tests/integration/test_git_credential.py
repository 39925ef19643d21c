#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tokenctl's helpers for tools agents run, end to end: real git, a real tokend, a real OAuth server.

git runs `tokenctl credential-helper` from a throwaway global config (GIT_CONFIG_GLOBAL in the test's
directory, GIT_CONFIG_NOSYSTEM=1, HOME there too, GIT_TERMINAL_PROMPT=0), configured as docs/helpers.md
says: for https://git.example.test only, after an empty `helper =` that drops a general
`credential.helper = store --file F` for that URL.
- `git credential fill` for https://git.example.test prints username=x-access-token and a password
  the OAuth server introspects as active, for this client, with the credential's scopes and at least
  --min-ttl (default 300 s) to live; any case of the host matches; `url=` input works too;
- for another host, the same host with a port, or http, no helper answers and git may not prompt:
  `git credential fill` exits 128, says "terminal prompts disabled" and prints no password;
- `git credential approve` and `reject` run the helper's store and erase (GIT_TRACE shows them),
  which exit 0 and write nothing; the general store helper never saw the token (F is never made);
- `tokenctl exec`: the child finds a token in $TOKEND_TOKEN (not in its argv) that introspects active,
  with $TOKEND_TOKEN_EXPIRES_AT its expiry, at least --min-ttl ahead; its exit status is tokenctl's;
  --env names the variable; a --min-ttl longer than the provider's tokens live gives exit 7 and the
  child does not run; an unknown credential exit 4; a missing command 127.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DEFAULT_SCOPE, EXIT_NO_SUCH, EXIT_REFUSED, TOKENCTL, TestFailure, check, log,  # noqa: E402
                     run_test)

HOST = "git.example.test"
CRED = "git-cred"
USERNAME = "x-access-token"


def git_version():
    out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class Git:
    """git with a configuration and a home of its own, that may never prompt."""

    def __init__(self, ctx, socket_path):
        self.home = os.path.join(ctx.tmp, "git-home")
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        self.config = os.path.join(self.home, "gitconfig")
        self.store_file = os.path.join(self.home, "git-credentials")
        helper = f"!'{TOKENCTL}' credential-helper {CRED} --host {HOST}"
        with open(self.config, "w") as f:
            f.write("[credential]\n"
                    f"\thelper = \"store --file={self.store_file}\"\n"
                    f"[credential \"https://{HOST}\"]\n"
                    "\thelper =\n"
                    f"\thelper = \"{helper}\"\n")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "LANG": "C",
            "LC_ALL": "C",
            "GIT_CONFIG_GLOBAL": self.config,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "TOKEND_SOCKET": socket_path,
        }

    def credential(self, action, description, trace=False):
        """git credential ACTION, fed `description` (key=value lines); returns (rc, stdout, stderr)."""
        env = dict(self.env, GIT_TRACE="1") if trace else self.env
        r = subprocess.run(["git", "credential", action], input=description, capture_output=True, text=True,
                           env=env, cwd=self.home, timeout=60)
        log(f"git credential {action} -> {r.returncode}")
        return r.returncode, r.stdout, r.stderr


def attrs(out):
    """key=value lines as a dict (the last value of a key)."""
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def check_token(srv, token, what, min_ttl):
    info = srv.introspect(token)
    check(info.get("active") is True, f"{what}: the OAuth server introspects the token as active", info)
    check(info.get("client_id") == "tokend-test", f"{what}: issued to the credential's client", info)
    check(sorted((info.get("scope") or "").split()) == sorted(DEFAULT_SCOPE.split()),
          f"{what}: with the credential's scopes", info.get("scope"))
    check(info.get("exp", 0) >= time.time() + min_ttl - 2, f"{what}: lives at least --min-ttl ({min_ttl} s)", info)
    return info


def test_git(ctx, srv, d):
    git = Git(ctx, d.socket)
    version = git_version()
    log(f"git {'.'.join(map(str, version))}, config {git.config}")

    # The configured host: the helper answers.
    rc, out, err = git.credential("fill", f"protocol=https\nhost={HOST}\n\n")
    check(rc == 0, "git credential fill for the configured host exits 0", (rc, err))
    got = attrs(out)
    check(got.get("protocol") == "https" and got.get("host") == HOST and got.get("username") == USERNAME,
          f"fill: username {USERNAME} for https://{HOST}", out)
    token = got.get("password", "")
    check(len(token) > 10, "fill: a password (the token)", len(token))
    info = check_token(srv, token, "fill", 300)
    if version >= (2, 41):
        check(got.get("password_expiry_utc") == str(info["exp"]), "fill: password_expiry_utc is the token's expiry",
              out)
    else:
        check("password_expiry_utc" not in got, f"fill: git {version} drops password_expiry_utc, and takes the rest",
              out)
    check(token not in err, "fill: the token is not on git's stderr")

    rc, out, err = git.credential("fill", f"protocol=https\nhost={HOST.upper()}\npath=org/repo.git\n\n")
    check(rc == 0 and attrs(out).get("password") == token, "fill: any case of the host, with a path (cached token)",
          (rc, err))
    rc, out, err = git.credential("fill", f"url=https://{HOST}/org/repo.git\n\n")
    check(rc == 0 and attrs(out).get("password") == token, "fill: url= input", (rc, err))

    # Anything else: no helper answers, and git may not prompt.
    for desc in (f"protocol=https\nhost=other.example.test\n\n", f"protocol=https\nhost={HOST}:8443\n\n",
                 f"protocol=http\nhost={HOST}\n\n", f"protocol=https\nhost={HOST}.evil.example\n\n"):
        rc, out, err = git.credential("fill", desc)
        check(rc == 128 and "terminal prompts disabled" in err and "password=" not in out and token not in out + err,
              f"fill {desc.split(chr(10))[1]} ({desc.split(chr(10))[0]}): no password, git fails (128) without "
              f"prompting", (rc, out, err))

    # approve and reject run the helper's store and erase: harmless, nothing written.
    full = f"protocol=https\nhost={HOST}\nusername={USERNAME}\npassword={token}\n\n"
    for action, op in (("approve", "store"), ("reject", "erase")):
        rc, out, err = git.credential(action, full, trace=True)
        check(rc == 0 and out == "", f"git credential {action} exits 0, prints nothing", (rc, out))
        check(re.search(rf"run_command: .*credential-helper {CRED} --host {re.escape(HOST)} {op}", err),
              f"{action} ran the helper's {op}", err)
        check("store --file" not in err, f"{action}: the general store helper is not run for {HOST}", err)
        check(token not in err, f"{action}: the token is not on git's stderr")
    check(not os.path.exists(git.store_file), "no credential file written: the token is stored nowhere",
          git.store_file)
    rc, out, err = git.credential("fill", f"protocol=https\nhost={HOST}\n\n")
    check(rc == 0 and attrs(out).get("password") == token, "fill after reject: the helper still answers", (rc, err))
    check(srv.introspect(token).get("active") is True, "the token is still active after reject (erase did nothing)")
    rc, _, err = git.credential("fill", "protocol=https\nhost=other.example.test\n\n")
    check(rc == 128 and not os.path.exists(git.store_file), "another host asks the general store helper, "
          "which has nothing", (rc, err))


CHILD = r"""
import json, os, sys
with open("/proc/self/cmdline", "rb") as f:
    argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
var = sys.argv[1]
print(json.dumps({"argv": argv, "token": os.environ.get(var), "expires_at": os.environ.get(var + "_EXPIRES_AT"),
                  "pid": os.getpid()}), flush=True)
sys.exit(int(sys.argv[2]))
"""


def run_exec(d, args, timeout=60):
    env = dict(os.environ, TOKEND_SOCKET=d.socket)
    p = subprocess.Popen([TOKENCTL, "exec", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.communicate(timeout=timeout)
    log(f"tokenctl exec {' '.join(args[:4])} ... -> {p.returncode}" + (f" ({err.strip()})" if err.strip() else ""))
    return p.pid, p.returncode, (json.loads(out) if out.strip() else None), err


def test_exec(ctx, srv, d):
    child = os.path.join(ctx.tmp, "exec-child.py")
    with open(child, "w") as f:
        f.write(CHILD)

    pid, rc, got, err = run_exec(d, [CRED, "--", sys.executable, child, "TOKEND_TOKEN", "0"])
    check(rc == 0 and got is not None, "exec: the command ran and exited 0", (rc, err))
    check(got["pid"] == pid, "exec: the command replaced tokenctl (same pid)", (got["pid"], pid))
    token = got["token"] or ""
    check(len(token) > 10 and not any(token in a for a in got["argv"]),
          "exec: a token in $TOKEND_TOKEN, none in the command's argv", got["argv"])
    info = check_token(srv, token, "exec", 300)
    # tokend counts a token's life from when it asked (never later than the server's exp): a
    # refresh that straddles a second boundary (slow under valgrind) tells 1 s less.
    check(info["exp"] - 2 <= int(got["expires_at"]) <= info["exp"],
          "exec: $TOKEND_TOKEN_EXPIRES_AT is the token's expiry (or up to 2 s before it)",
          (got["expires_at"], info["exp"]))
    check(token not in err, "exec: the token is not on stderr")

    pid, rc, got, err = run_exec(d, [CRED, "--env", "GIT_TOKEN", "--min-ttl", "900", "--", sys.executable, child,
                                     "GIT_TOKEN", "7"])
    check(rc == 7 and got is not None, "exec: the command's exit status (7) is tokenctl's", (rc, err))
    check_token(srv, got["token"] or "", "exec --env GIT_TOKEN --min-ttl 900", 900)
    check(int(got["expires_at"]) >= time.time() + 900 - 2, "exec: $GIT_TOKEN_EXPIRES_AT at least 900 s ahead",
          got["expires_at"])

    pid, rc, got, err = run_exec(d, [CRED, "--min-ttl", str(srv.access_ttl + 600), "--", sys.executable, child,
                                     "TOKEND_TOKEN", "0"])
    check(rc == EXIT_REFUSED and got is None and "shorter --min-ttl" in err,
          f"exec: --min-ttl beyond the provider's token lifetime exits {EXIT_REFUSED}, the command not run", (rc, err))
    pid, rc, got, err = run_exec(d, ["no-such-cred", "--", sys.executable, child, "TOKEND_TOKEN", "0"])
    check(rc == EXIT_NO_SUCH and got is None, f"exec: an unknown credential exits {EXIT_NO_SUCH}, command not run",
          (rc, err))
    pid, rc, got, err = run_exec(d, [CRED, "--", "tokend-no-such-command-xyz"])
    check(rc == 127 and "command not found" in err, "exec: a missing command exits 127", (rc, err))


def main(ctx):
    if not shutil.which("git"):
        raise TestFailure("git is not installed: apt-get install git (tools/setup-deps)")
    srv = ctx.oauth_server()
    d = ctx.tokend()
    d.add(CRED, srv)
    test_git(ctx, srv, d)
    test_exec(ctx, srv, d)
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
