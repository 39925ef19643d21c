#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tokenctl's consent and policy commands against a fake tokend.

A small Varlink server on a temporary socket answers with canned replies of
the IDL (protocol/io.tokend.*.varlink), records the calls, and so pins what
tokenctl sends and how it shows the answers, without the daemon:

- pending, grants, whoami, reload: tables and key: value lines, --json before
  and after the command, escaping of what a caller chose (its executable path);
- watch: calls Watch with "more", one line per reply as it arrives, exit 0 on
  SIGINT and SIGTERM, 0 when the stream ends, 3 when tokend hangs up;
- approve, deny, grants revoke: the parameters sent (durations, --once,
  --process, --scope), the grant id on stdout;
- token: one call, io.tokend.agent.GetToken with as_owner (tokend tells owner from agent), no WhoAmI;
  an older tokend that refuses as_owner;
- exec: the parameters sent (default min_ttl 300), the child replacing tokenctl (same pid, its exit
  status and signal), the token in its environment only (the child reads its own /proc/self/cmdline
  and environ), --env names and their caps, 126/127 and tokenctl's codes without running the child;
- credential-helper: get answers only https and a --host (exact, any case, port included), with the
  parameters sent; anything else, store, erase and unknown operations print nothing, exit 0 and do
  not call tokend; the caps on standard input (line, total, NUL, key=value) never echo it; a token
  that could inject a line is refused;
- the exit codes and messages of the new errors, PermissionDenied on the
  manager interface (with the WhoAmI explanation), an older tokend;
- usage errors and caps, with no daemon at all;
- every verb of 'tokenctl help' is in tokenctl(1) and in the bash completion,
  which completes request and grant ids from the (fake) daemon.

Usage: test_tokenctl_cli.py TOKENCTL MAN_PAGE COMPLETION
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TOKENCTL, MAN_PAGE, COMPLETION = sys.argv[1:4]
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_NO_SUCH = 0, 1, 2, 3, 4
EXIT_REFUSED, EXIT_DENIED = 7, 8

failures = 0


def check(cond, what, detail=None):
    global failures
    if cond:
        print(f"ok: {what}", flush=True)
    else:
        failures += 1
        print(f"FAIL: {what}" + (f"\n  {detail!r}" if detail is not None else ""), flush=True)


def ok(params=None):
    return {"parameters": params or {}}


def more(params):
    return {"parameters": params, "continues": True}


def err(name, params=None):
    return {"error": name, "parameters": params or {}}


HOLD = "hold"    # keep the connection open until the test ends
CLOSE = "close"  # hang up


class FakeTokend:
    """Answers each call with handlers[method](parameters, more): a list of
    replies (dicts), HOLD or CLOSE. Unknown methods get MethodNotFound."""

    def __init__(self, path):
        self.path = path
        self.handlers = {}
        self.calls = []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\0" in buf:
                    raw, buf = buf.split(b"\0", 1)
                    m = json.loads(raw)
                    self.calls.append(m)
                    h = self.handlers.get(m["method"])
                    replies = (h(m.get("parameters", {}), m.get("more", False)) if h
                               else [err("org.varlink.service.MethodNotFound", {"method": m["method"]})])
                    for r in replies:
                        if r == HOLD:
                            self.stop.wait()
                            return
                        if r == CLOSE:
                            return
                        conn.sendall(json.dumps(r).encode() + b"\0")

    def answer(self, method, *replies):
        self.handlers[method] = lambda params, more_: list(replies)

    def last(self, method):
        calls = [c for c in self.calls if c["method"] == method]
        return calls[-1] if calls else None


def tokenctl(*args, socket_path=None, timeout=20, stdin=None, env_extra=None, cwd=None):
    """Runs tokenctl; stdin: bytes or text fed on its standard input (default: /dev/null)."""
    env = dict(os.environ)
    env.pop("XDG_RUNTIME_DIR", None)
    env["TOKEND_SOCKET"] = socket_path or "/nonexistent/tokend.socket"
    env.update(env_extra or {})
    if isinstance(stdin, str):
        stdin = stdin.encode()
    r = subprocess.run([TOKENCTL, *args], capture_output=True, timeout=timeout, env=env, cwd=cwd,
                       input=stdin if stdin is not None else b"")
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


NOW = int(time.time())
EVIL_EXE = "/tmp/\x1b]0;owned\x07evil\nnext\u202egpj.exe"
CALLER = {"uid": 1000, "pid": 4242, "exe": "/usr/bin/node", "comm": "node",
          "cgroup": "/user.slice/claude-code.service", "unit": "claude-code.service"}
REQ_AGENT = {"id": "r-7", "agent": "claude-code", "caller": CALLER, "credential": "gh",
             "scopes": ["repo", "read:org"], "created": NOW, "deadline": NOW + 118}
REQ_UNKNOWN = {"id": "r-8", "caller": dict(CALLER, pid=777, exe=EVIL_EXE, unit=None),
               "credential": "gh", "scopes": [], "resource": "https://api.github.com",
               "created": NOW, "deadline": NOW + 30}
GRANT = {"id": "g-3", "agent": "claude-code", "credential": "gh", "scopes": ["repo"], "kind": "time",
         "created": NOW, "expires": NOW + 28799, "expires_in": 28799}
GRANT_UNKNOWN = {"id": "g-4", "match": dict(CALLER, exe="/opt/x/bin/x", unit="x.service"), "credential": "gh",
                 "scopes": [], "resource": "https://api.github.com", "kind": "process", "pid": 4242,
                 "created": NOW, "expires": NOW + 3600, "expires_in": 3600}
POLICY = {"mode": "ask", "consent_duration": 28800, "name": "claude-code",
          "file": "/home/u/.config/tokend/policy.d/50-claude.conf", "line": 2, "max_lifetime": 3600,
          "unit": "claude-*.service",
          "credentials": [{"name": "gh", "scopes": ["repo", "read:org"], "resources": ["https://api.github.com"]}]}
WHOAMI = {"uid": 1000, "gid": 1000, "pid": 4242, "pidfd": True, "exe": "/usr/bin/node", "comm": "node",
          "cgroup": "/user.slice/claude-code.service", "unit": "claude-code.service", "user_unit": True,
          "policy": POLICY, "manager": False}


def test_no_daemon():
    for args in (["pending"], ["watch"], ["approve", "r-1"], ["deny", "r-1"], ["grants"],
                 ["grants", "revoke", "g-1"], ["reload"], ["whoami"], ["token", "gh"], ["exec", "gh", "--", "true"],
                 ["exec", "gh", "--env", "X" * 128, "--", "true"], ["exec", "gh", "--env", "_a1", "--", "true"],
                 ["credential-helper", "gh", "--host", "github.com", "get"],
                 ["credential-helper", "gh", "--host", "GitHub.com:443", "--host", "[::1]", "--host", "10.0.0.1:1",
                  "--host", "a_b-c.example", "--username", "u" * 256, "get"]):
        rc, _, e = tokenctl(*args, stdin="protocol=https\nhost=github.com\n\n")
        if args[0] == "credential-helper" and "[::1]" in args:  # no host of these matches: no call at all
            check(rc == 0 and e == "", f"{' '.join(args)[:60]}: exit 0, nothing asked", (rc, e))
            continue
        check(rc == EXIT_NO_DAEMON, f"{' '.join(args)[:60]}: exit {EXIT_NO_DAEMON} without tokend", (rc, e))


def test_usage():
    long_id = "r" * 65
    cases = [
        ["approve"], ["approve", "a", "b"], ["approve", "r-1", "--for", "90"], ["approve", "r-1", "--for", "0s"],
        ["approve", "r-1", "--for", "31d"], ["approve", "r-1", "--for", "30d1s"], ["approve", "r-1", "--for", "1h30"],
        ["approve", "r-1", "--for", "1w"], ["approve", "r-1", "--for", "1" * 40 + "s"],
        ["approve", "r-1", "--once", "--process"], ["approve", "r-1", "--once", "--for", "1h"],
        ["approve", long_id], ["approve", ""], ["approve", "r 1"], ["approve", "r\x1b1"],
        ["approve", "r-1", "--scope", " ".join(f"s{i}" for i in range(65))],
        ["approve", "r-1", "--scope", "x" * 257], ["approve", "r-1", "--bogus"],
        ["deny"], ["deny", "a", "b"], ["deny", long_id],
        ["grants", "x"], ["grants", "revoke"], ["grants", "revoke", "a", "b"], ["grants", "revoke", long_id],
        ["pending", "x"], ["watch", "x"], ["reload", "x"], ["whoami", "x"],
        ["token", "n" * 65], ["token", "gh", "--resource", "https://x/" + "a" * 2048],
    ]
    for args in cases:
        rc, out, e = tokenctl(*args)
        check(rc == EXIT_USAGE and out == "", f"usage error: {args!r:.80}", (rc, out, e))
    rc, _, e = tokenctl("approve", "r-1", "--for", "90")
    check("needs a unit" in e, "a bare number asks for a unit", e)
    rc, out, _ = tokenctl("approve", "--help")
    check(rc == 0 and "Usage: tokenctl approve ID" in out, "approve --help", out)
    rc, out, _ = tokenctl("grants", "revoke", "--help")
    check(rc == 0 and "Usage: tokenctl grants" in out, "grants revoke --help", out)
    rc, out, _ = tokenctl("exec", "gh", "--help")
    check(rc == 0 and "Usage: tokenctl exec NAME" in out and "not renewed" in out and "300" in out
          and "TOKEND_TOKEN_EXPIRES_AT" in out and "127" in out, "exec --help: says the token is not renewed", out)
    rc, out, _ = tokenctl("credential-helper", "--help")
    check(rc == 0 and "Usage: tokenctl credential-helper NAME --host HOST" in out and "x-access-token" in out,
          "credential-helper --help", out)


def test_helpers_usage():
    """exec and credential-helper: usage errors and caps, with no daemon at all."""
    cases = [
        # exec: NAME, "--" and a command are needed; --env takes a variable name
        ["exec"], ["exec", "gh"], ["exec", "gh", "--"], ["exec", "--", "true"], ["exec", "a", "b", "--", "true"],
        ["exec", "gh", "true"], ["exec", "n" * 65, "--", "true"], ["exec", "gh", "--bogus", "--", "true"],
        ["exec", "gh", "--min-ttl", "-1", "--", "true"], ["exec", "gh", "--min-ttl", "5m", "--", "true"],
        ["exec", "gh", "--resource", "https://x/" + "a" * 2048, "--", "true"],
        ["exec", "gh", "--scope", " ".join(f"s{i}" for i in range(65)), "--", "true"],
        *(["exec", "gh", "--env", v, "--", "true"] for v in
          ("", "1X", "A-B", "A B", "A=B", "\u00c4X", "X" * 129, "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "X\n")),
        ["exec", "gh", "--env", "--", "true"],
        # credential-helper: NAME, at least one --host, an operation
        ["credential-helper"], ["credential-helper", "gh"], ["credential-helper", "gh", "get"],
        ["credential-helper", "--host", "github.com", "get"],
        ["credential-helper", "gh", "--host", "github.com"],
        ["credential-helper", "gh", "--host", "github.com", "get", "x"],
        ["credential-helper", "n" * 65, "--host", "github.com", "get"],
        ["credential-helper", "gh", "--host", "github.com", "--min-ttl", "x", "get"],
        ["credential-helper", "gh", "--host", "github.com", "--bogus", "get"],
        *(["credential-helper", "gh", "--host", h, "get"] for h in
          ("", "a b", "a/b", "https://github.com", "user@github.com", "host:0", "host:65536", "host:", ":443",
           "host:44x", "[::1", "[]", "[::1]x", "github.com\n", "h" * 262, "gith\u00fcb.com")),
        ["credential-helper", "gh", *[a for i in range(17) for a in ("--host", f"h{i}.example")], "get"],
        *(["credential-helper", "gh", "--host", "github.com", "--username", u, "get"] for u in
          ("", "a\nb", "a\rb", "tab\tuser", "u" * 257)),
    ]
    for args in cases:
        rc, out, e = tokenctl(*args)
        check(rc == EXIT_USAGE and out == "", f"usage error: {args!r:.80}", (rc, out, e))


def test_pending(d, sock):
    d.answer("io.tokend.manager.ListPending", ok({"requests": [REQ_AGENT, REQ_UNKNOWN]}))
    rc, out, e = tokenctl("pending", socket_path=sock)
    check(rc == 0, "pending exits 0", (rc, e))
    lines = out.splitlines()
    check(len(lines) == 3 and lines[0].split() == ["ID", "AGENT", "PID", "EXE", "UNIT", "CREDENTIAL", "SCOPES",
                                                   "RESOURCE", "LEFT"], "pending: header and two rows", out)
    check(re.search(r"^r-7 +claude-code +4242 +/usr/bin/node +claude-code.service +gh +repo read:org +- +1m5\ds",
                    out, re.M), "pending: the agent's request", out)
    check(re.search(r"^r-8 +unknown +777 ", out, re.M), "pending: an unknown caller", out)
    check("(all allowed)" in out and "https://api.github.com" in out, "pending: all scopes, resource", out)
    check("\x1b" not in out and "\x07" not in out and "\u202e" not in out, "pending: no control characters", out)
    check("\\x1b]0;owned\\x07evil\\x0anext\\xe2\\x80\\xaegpj.exe" in out, "pending: the exe escaped", out)
    check("tokenctl approve ID" in e, "pending: says how to answer", e)
    for args in (["--json", "pending"], ["pending", "--json"]):
        rc, out, _ = tokenctl(*args, socket_path=sock)
        check(rc == 0 and json.loads(out) == {"requests": [REQ_AGENT, REQ_UNKNOWN]}, f"{args}: the reply", out)
    d.answer("io.tokend.manager.ListPending", ok({"requests": []}))
    rc, out, _ = tokenctl("pending", socket_path=sock)
    check(rc == 0 and out == "No requests waiting.\n", "pending: none", out)


def events():
    return [more({"event": "pending", "request": REQ_AGENT}),
            more({"event": "pending", "request": REQ_UNKNOWN}),
            more({"event": "approved", "request": REQ_AGENT, "grant": "g-3"}),
            more({"event": "timeout", "request": REQ_UNKNOWN})]


def test_watch(d, sock):
    d.answer("io.tokend.manager.Watch", *events(), CLOSE)
    rc, out, e = tokenctl("watch", socket_path=sock)
    check(d.last("io.tokend.manager.Watch").get("more") is True, "watch: calls Watch with more")
    lines = out.splitlines()
    check(rc == EXIT_NO_DAEMON and "closed the connection" in e, "watch: tokend hanging up is exit 3", (rc, e))
    check(len(lines) == 4, "watch: one line per event", out)
    check(re.match(r"\d\d:\d\d:\d\d pending +r-7: agent claude-code \(pid 4242, /usr/bin/node, claude-code.service\)"
                   r" wants gh \(repo read:org\); 1m5\ds left$", lines[0]), "watch: a pending line", lines[0])
    check("unknown caller (uid 1000, pid 777, /tmp/\\x1b]0;" in lines[1] and "for https://api.github.com" in lines[1],
          "watch: an unknown caller, escaped", lines[1])
    check(re.search(r" approved r-7: .*; grant g-3$", lines[2]), "watch: approved with its grant", lines[2])
    check(" timeout " in lines[3], "watch: timeout", lines[3])

    d.answer("io.tokend.manager.Watch", *events(), CLOSE)
    rc, out, _ = tokenctl("watch", "--json", socket_path=sock)
    got = [json.loads(x) for x in out.splitlines()]
    check(got == [r["parameters"] for r in events()], "watch --json: one reply per line", out)

    d.answer("io.tokend.manager.Watch", more({"event": "pending", "request": REQ_AGENT}),
             ok({"event": "gone", "request": REQ_AGENT}))
    rc, out, _ = tokenctl("watch", socket_path=sock)
    check(rc == 0 and len(out.splitlines()) == 2, "watch: exit 0 when the stream ends", (rc, out))

    d.answer("io.tokend.manager.Watch", err("org.varlink.service.MethodNotFound", {"method": "Watch"}))
    rc, _, e = tokenctl("watch", socket_path=sock)
    check(rc == EXIT_FAILURE and "older than this tokenctl" in e, "watch: an older tokend", (rc, e))

    for sig in (signal.SIGINT, signal.SIGTERM):
        d.answer("io.tokend.manager.Watch", more({"event": "pending", "request": REQ_AGENT}), HOLD)
        env = dict(os.environ, TOKEND_SOCKET=sock)
        p = subprocess.Popen([TOKENCTL, "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = p.stdout.readline()  # arrives at once: stdout is flushed per line, even to a pipe
        check(" pending " in line, f"watch: the line arrives before the stream ends ({sig.name})", line)
        p.send_signal(sig)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = None
        p.stdout.close()
        p.stderr.close()
        check(rc == 0, f"watch: exit 0 on {sig.name}", rc)


def test_approve(d, sock):
    d.answer("io.tokend.manager.Approve", ok({"grant": GRANT}))
    rc, out, e = tokenctl("approve", "r-7", socket_path=sock)
    check(rc == 0 and out == "g-3\n", "approve: the grant id on stdout", (rc, out, e))
    check(d.last("io.tokend.manager.Approve")["parameters"] == {"id": "r-7"}, "approve: only the id by default",
          d.last("io.tokend.manager.Approve"))
    check(re.search(r"Approved: grant g-3 lets agent claude-code get gh tokens \(repo\) until \S+ \S+ \(7h5\dm\)",
                    e), "approve: the summary", e)

    cases = [
        (["--for", "1h30m", "--scope", "repo", "--scope", "read:org,gist"],
         {"duration": 5400, "scopes": ["repo", "read:org", "gist"]}),
        (["--process", "--for", "2d"], {"process": True, "duration": 172800}),
        (["--process"], {"process": True}),
        (["--once"], {"once": True}),
        (["--for", "30d"], {"duration": 2592000}),
        (["--for", "90s", "--scope", " ".join(f"s{i}" for i in range(64))],
         {"duration": 90, "scopes": [f"s{i}" for i in range(64)]}),
    ]
    for args, want in cases:
        rc, _, e = tokenctl("approve", "r-7", *args, socket_path=sock)
        sent = d.last("io.tokend.manager.Approve")["parameters"]
        check(rc == 0 and sent == dict(want, id="r-7"), f"approve {args!r:.60}: parameters", (rc, sent, e))

    d.answer("io.tokend.manager.Approve", ok({"grant": GRANT_UNKNOWN}))
    rc, out, e = tokenctl("approve", "r-8", "--process", socket_path=sock)
    check(rc == 0 and out == "g-4\n" and "while pid 4242 runs" in e and "exe=/opt/x/bin/x" in e,
          "approve: a process grant for an unknown caller", (out, e))
    rc, out, _ = tokenctl("approve", "r-8", "--json", socket_path=sock)
    check(rc == 0 and json.loads(out) == {"grant": GRANT_UNKNOWN}, "approve --json: the reply", out)

    for error, params, code, says in [
            ("io.tokend.manager.NoSuchRequest", {"id": "r-7"}, EXIT_NO_SUCH, "no request 'r-7' is waiting"),
            ("io.tokend.manager.ApprovalTooWide", {"reason": "agent claude-code may have repo only"}, EXIT_REFUSED,
             "may have repo only"),
            ("io.tokend.manager.TooManyGrants", {}, EXIT_REFUSED, "tokenctl grants revoke"),
    ]:
        d.answer("io.tokend.manager.Approve", err(error, params))
        rc, out, e = tokenctl("approve", "r-7", socket_path=sock)
        check(rc == code and says in e and out == "", f"approve: {error} exits {code}", (rc, e))


def test_deny_grants(d, sock):
    d.answer("io.tokend.manager.Deny", ok())
    rc, _, e = tokenctl("deny", "r-7", socket_path=sock)
    check(rc == 0 and d.last("io.tokend.manager.Deny")["parameters"] == {"id": "r-7"}, "deny", (rc, e))
    d.answer("io.tokend.manager.Deny", err("io.tokend.manager.NoSuchRequest", {"id": "r-7"}))
    rc, _, e = tokenctl("deny", "r-7", socket_path=sock)
    check(rc == EXIT_NO_SUCH and "tokenctl pending" in e, "deny: NoSuchRequest exits 4", (rc, e))

    d.answer("io.tokend.manager.ListGrants", ok({"grants": [GRANT, GRANT_UNKNOWN]}))
    rc, out, e = tokenctl("grants", socket_path=sock)
    lines = out.splitlines()
    check(rc == 0 and len(lines) == 3 and lines[0].split() == ["ID", "AGENT", "CREDENTIAL", "SCOPES", "RESOURCE",
                                                               "KIND", "LEFT"], "grants: header and rows", (out, e))
    check(re.search(r"^g-3 +claude-code +gh +repo +- +time +7h59m$", out, re.M), "grants: a time grant", out)
    check(re.search(r"^g-4 +uid=1000 exe=/opt/x/bin/x unit=x.service +gh +\(all allowed\) +https://api.github.com"
                    r" +process:4242 +1h$", out, re.M), "grants: an unknown caller's process grant", out)
    rc, out, _ = tokenctl("grants", "--json", socket_path=sock)
    check(rc == 0 and json.loads(out) == {"grants": [GRANT, GRANT_UNKNOWN]}, "grants --json", out)
    d.answer("io.tokend.manager.ListGrants", ok({"grants": []}))
    rc, out, _ = tokenctl("grants", socket_path=sock)
    check(rc == 0 and out == "No grants in force.\n", "grants: none", out)

    d.answer("io.tokend.manager.RevokeGrant", ok())
    rc, _, e = tokenctl("grants", "revoke", "g-3", socket_path=sock)
    check(rc == 0 and d.last("io.tokend.manager.RevokeGrant")["parameters"] == {"id": "g-3"}, "grants revoke",
          (rc, e))
    d.answer("io.tokend.manager.RevokeGrant", err("io.tokend.manager.NoSuchGrant", {"id": "g-3"}))
    rc, _, e = tokenctl("grants", "revoke", "g-3", socket_path=sock)
    check(rc == EXIT_NO_SUCH and "no grant 'g-3'" in e, "grants revoke: NoSuchGrant exits 4", (rc, e))


def test_reload(d, sock):
    d.answer("io.tokend.manager.Reload", ok({"agents": 3, "directory": "/home/u/.config/tokend/policy.d"}))
    rc, out, e = tokenctl("reload", socket_path=sock)
    check(rc == 0 and e == "Policy reloaded: 3 agents from /home/u/.config/tokend/policy.d\n", "reload", (rc, e))
    rc, out, _ = tokenctl("reload", "--json", socket_path=sock)
    check(rc == 0 and json.loads(out)["agents"] == 3, "reload --json", out)
    reason = '/home/u/.config/tokend/policy.d/50-claude.conf:7: Mode: "allways" is not a mode'
    d.answer("io.tokend.manager.Reload", err("io.tokend.manager.PolicyInvalid", {"reason": reason}))
    rc, out, e = tokenctl("reload", socket_path=sock)
    check(rc == EXIT_FAILURE and reason in e and "kept" in e, "reload: PolicyInvalid exits 1 with the reason",
          (rc, e))
    d.answer("io.tokend.manager.Reload", err("org.varlink.service.MethodNotFound", {"method": "Reload"}))
    rc, _, e = tokenctl("reload", socket_path=sock)
    check(rc == EXIT_FAILURE and "older than this tokenctl" in e, "reload: an older tokend", (rc, e))


def test_token(d, sock):
    # One call: the agent interface with as_owner, whoever runs tokenctl (tokend tells the owner, who
    # gets the manager's token, from an agent); no WhoAmI first.
    d.calls.clear()
    d.answer("io.tokend.agent.GetToken", ok({"token": "at-123", "token_type": "Bearer", "expires_at": NOW + 60,
                                             "scopes": ["repo"]}))
    rc, out, e = tokenctl("token", "gh", "--scope", "repo", "--min-ttl", "30", socket_path=sock)
    check(rc == 0 and out == "at-123\n", "token prints the token", (rc, out, e))
    check(d.last("io.tokend.agent.GetToken")["parameters"] == {"credential": "gh", "scopes": ["repo"],
                                                               "min_ttl": 30, "as_owner": True},
          "token calls io.tokend.agent.GetToken with as_owner", d.last("io.tokend.agent.GetToken"))
    check([c["method"] for c in d.calls] == ["io.tokend.agent.GetToken"], "token makes one call (no WhoAmI)",
          d.calls)
    for error, params, code, says in [
            ("io.tokend.agent.NoSuchCredential", {"credential": "gh"}, EXIT_NO_SUCH, "no credential named 'gh'"),
            ("io.tokend.agent.PolicyDenied", {"credential": "gh", "agent": "x", "reason": "agent x may not use gh"},
             EXIT_DENIED, "agent x may not use gh"),
            ("io.tokend.agent.ConsentDenied", {"credential": "gh", "request": "r-9"}, EXIT_DENIED, "denied request r-9"),
            ("io.tokend.agent.ConsentRequired", {"credential": "gh", "request": "r-9", "reason": "nobody answered"},
             EXIT_REFUSED, "tokenctl approve r-9"),
            ("io.tokend.agent.ScopeNotAllowed", {"credential": "gh", "scopes": ["admin"], "allowed": ["repo", "gist"],
                                                 "reason": "scope admin is wider than allowed"},
             EXIT_REFUSED, "Allowed: repo gist"),
            ("io.tokend.agent.ScopeNotAllowed", {"credential": "gh", "scopes": ["admin"], "allowed": []},
             EXIT_REFUSED, "No scope at all"),
            ("io.tokend.agent.ScopeNotAllowed", {"credential": "gh", "scopes": ["admin"]},
             EXIT_REFUSED, "does not hold scope(s): admin"),
            # A tokend older than as_owner refuses it.
            ("org.varlink.service.InvalidParameter", {"parameter": "as_owner"}, EXIT_FAILURE,
             "older than this tokenctl"),
            ("org.varlink.service.InvalidParameter", {"parameter": "scopes"}, EXIT_REFUSED,
             "rejected parameter 'scopes'"),
    ]:
        d.answer("io.tokend.agent.GetToken", err(error, params))
        rc, out, e = tokenctl("token", "gh", socket_path=sock)
        check(rc == code and says in e and out == "", f"token: {error.rsplit('.', 1)[1]} exits {code}", (rc, e))


# A child for 'tokenctl exec': prints its pid, its own command line and environment as the kernel
# has them (/proc/self/cmdline, /proc/self/environ), then exits with argv[1] (negative: kills
# itself with that signal), or creates the file argv[2] names first, when given.
EXEC_CHILD = r"""
import json, os, signal, sys
def nul_list(path):
    with open(path, "rb") as f:
        return [x.decode(errors="replace") for x in f.read().split(b"\0")[:-1]]
if len(sys.argv) > 2:
    open(sys.argv[2], "w").close()
print(json.dumps({"pid": os.getpid(), "cmdline": nul_list("/proc/self/cmdline"),
                  "environ": nul_list("/proc/self/environ")}), flush=True)
code = int(sys.argv[1]) if len(sys.argv) > 1 else 0
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""
SECRET = "at-Zk9.secret_Token-42~x+/="


def exec_run(sock, args, env_extra=None, timeout=20):
    """Runs tokenctl exec ARGS; returns (pid of tokenctl, rc, what the child printed or None, stderr)."""
    env = dict(os.environ, TOKEND_SOCKET=sock)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(env_extra or {})
    p = subprocess.Popen([TOKENCTL, "exec", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=os.path.dirname(sock))
    out, err = p.communicate(timeout=timeout)
    child = json.loads(out) if out.strip() else None
    return p.pid, p.returncode, child, err.decode(errors="replace")


def env_of(child):
    """The child's environment as a list of (name, value), in order (duplicates kept)."""
    return [tuple(e.split("=", 1)) for e in child["environ"]]


def test_exec(d, sock, tmp):
    child_py = os.path.join(tmp, "child.py")
    with open(child_py, "w") as f:
        f.write(EXEC_CHILD)
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    child_cmd = os.path.join(bindir, "tokend-test-child")
    with open(child_cmd, "w") as f:
        f.write(f"#!{sys.executable}\n" + EXEC_CHILD)
    os.chmod(child_cmd, 0o755)
    path_env = {"PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")}
    exp = NOW + 3600

    d.answer("io.tokend.agent.GetToken", ok({"token": SECRET, "token_type": "Bearer", "expires_at": exp,
                                             "scopes": ["repo"]}))
    pid, rc, child, e = exec_run(sock, ["gh", "--scope", "repo", "--", sys.executable, child_py, "0"],
                                 env_extra={"TOKEND_TEST_KEEP": "kept"})
    check(rc == 0 and child is not None, "exec: runs the command, exit 0", (rc, child, e))
    if child is None:
        return
    check(child["pid"] == pid, "exec: the command replaces tokenctl (the same pid)", (child["pid"], pid))
    check(child["cmdline"] == [sys.executable, child_py, "0"], "exec: the command's argv is CMD ARGS",
          child["cmdline"])
    check(not any(SECRET in a for a in child["cmdline"]), "exec: the token is not in the child's argv")
    env = env_of(child)
    check(("TOKEND_TOKEN", SECRET) in env, "exec: the token in $TOKEND_TOKEN", [n for n, _ in env])
    check(("TOKEND_TOKEN_EXPIRES_AT", str(exp)) in env, "exec: its expiry in $TOKEND_TOKEN_EXPIRES_AT")
    check(("TOKEND_TEST_KEEP", "kept") in env, "exec: the rest of the environment passes on")
    check(sum(1 for _, v in env if SECRET in v) == 1, "exec: the token in one variable only")
    check(SECRET not in e, "exec: the token not on stderr", e)
    check(d.last("io.tokend.agent.GetToken")["parameters"] == {"credential": "gh", "scopes": ["repo"],
                                                               "min_ttl": 300, "as_owner": True},
          "exec: GetToken (as_owner) with the default --min-ttl 300", d.last("io.tokend.agent.GetToken"))

    # --env replaces earlier values of VAR and VAR_EXPIRES_AT; CMD is looked up in $PATH.
    pid, rc, child, e = exec_run(sock, ["gh", "--env", "GH_TOKEN", "--min-ttl", "60", "--resource",
                                        "https://api.github.com", "--", "tokend-test-child", "42"],
                                 env_extra=dict(path_env, GH_TOKEN="old", GH_TOKEN_EXPIRES_AT="1",
                                                GH_TOKENX="other"))
    env = env_of(child) if child else []
    check(rc == 42, "exec: the command's exit status is tokenctl's", (rc, e))
    check([v for n, v in env if n == "GH_TOKEN"] == [SECRET] and
          [v for n, v in env if n == "GH_TOKEN_EXPIRES_AT"] == [str(exp)] and ("GH_TOKENX", "other") in env,
          "exec --env GH_TOKEN: replaces the old values, once each", env)
    check(not any(n == "TOKEND_TOKEN" for n, _ in env), "exec --env: no $TOKEND_TOKEN then")
    check(d.last("io.tokend.agent.GetToken")["parameters"] == {"credential": "gh", "min_ttl": 60,
                                                               "resource": "https://api.github.com",
                                                               "as_owner": True},
          "exec: --min-ttl and --resource sent", d.last("io.tokend.agent.GetToken"))
    pid, rc, child, e = exec_run(sock, ["gh", "--", sys.executable, child_py, "-15"])
    check(rc == -signal.SIGTERM, "exec: a signal that ends the command ends 'tokenctl exec' too", (rc, e))
    pid, rc, child, e = exec_run(sock, ["gh", "--", sys.executable, child_py, "0", os.path.join(tmp, "m"), "--help"])
    check(rc == 0 and child and child["cmdline"][-1] == "--help", "exec: options after -- are the command's",
          (rc, child, e))

    # One call, whoever runs it.
    d.calls.clear()
    pid, rc, child, e = exec_run(sock, ["gh", "--", sys.executable, child_py, "0"])
    check(rc == 0 and [c["method"] for c in d.calls] == ["io.tokend.agent.GetToken"],
          "exec: one call, io.tokend.agent.GetToken (no WhoAmI)", (rc, d.calls))

    # No token: tokenctl's exit code, and the command does not run.
    marker = os.path.join(tmp, "ran")
    bad_replies = [
        (err("io.tokend.agent.NoSuchCredential", {"credential": "gh"}), EXIT_NO_SUCH, "no credential named 'gh'"),
        (err("io.tokend.agent.ConsentRequired", {"credential": "gh", "request": "r-9"}), EXIT_REFUSED, "r-9"),
        (err("io.tokend.agent.LifetimeTooShort", {"credential": "gh", "lifetime": 60}), EXIT_REFUSED, ""),
        (ok({"token": "two\nlines", "token_type": "Bearer", "expires_at": exp, "scopes": []}), EXIT_FAILURE,
         "control"),
        (ok({"token": "", "token_type": "Bearer", "expires_at": exp, "scopes": []}), EXIT_FAILURE, "empty"),
        # libtokend refuses a reply without a token or an expiry as a protocol error.
        (ok({"token_type": "Bearer", "expires_at": exp, "scopes": []}), EXIT_FAILURE, "tokend's reply"),
        (ok({"token": SECRET, "token_type": "Bearer", "expires_at": NOW - 5, "scopes": []}), EXIT_FAILURE, "expired"),
        (ok({"token": SECRET, "token_type": "Bearer", "scopes": []}), EXIT_FAILURE, "tokend's reply"),
    ]
    for reply, code, says in bad_replies:
        d.answer("io.tokend.agent.GetToken", reply)
        pid, rc, child, e = exec_run(sock, ["gh", "--", sys.executable, child_py, "0", marker])
        check(rc == code and child is None and not os.path.exists(marker) and says in e and SECRET not in e
              and "two\nlines" not in e,
              f"exec: {json.dumps(reply)[:60]} exits {code}, the command not run", (rc, e))

    # A command that cannot run: 127 or 126, before asking tokend (no token, no consent prompt).
    noexec = os.path.join(tmp, "not-executable")
    with open(noexec, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(noexec, 0o644)
    for cmd, code in (["tokend-no-such-command-xyz", 127], [os.path.join(tmp, "nonexistent"), 127],
                      [noexec, 126], [tmp, 126], ["", 127]):
        d.calls.clear()
        pid, rc, child, e = exec_run(sock, ["gh", "--", cmd], env_extra=path_env)
        check(rc == code and not d.calls, f"exec {cmd!r:.40}: exit {code} without calling tokend", (rc, e, d.calls))


def helper(sock, stdin, *args, op="get", hosts=("github.com",), cwd=None, env_extra=None):
    host_args = [a for h in hosts for a in ("--host", h)]
    return tokenctl("credential-helper", "gh", *host_args, *args, op, socket_path=sock, stdin=stdin, cwd=cwd,
                    env_extra=env_extra)


def test_credential_helper(d, sock, tmp):
    exp = NOW + 3600
    d.answer("io.tokend.agent.GetToken", ok({"token": SECRET, "token_type": "Bearer", "expires_at": exp,
                                             "scopes": ["repo"]}))
    answer = f"username=x-access-token\npassword={SECRET}\npassword_expiry_utc={exp}\n"

    rc, out, e = helper(sock, "protocol=https\nhost=github.com\n\n")
    check(rc == 0 and out == answer and e == "", "credential-helper get: username, token, expiry", (rc, out, e))
    check(d.last("io.tokend.agent.GetToken")["parameters"] == {"credential": "gh", "min_ttl": 300,
                                                               "as_owner": True},
          "credential-helper get: GetToken (as_owner) with the default --min-ttl 300",
          d.last("io.tokend.agent.GetToken"))
    rc, out, _ = helper(sock, "protocol=https\nhost=gitlab.example\npath=g/p.git\n\n", "--username", "oauth2",
                        "--scope", "read_repository", "--min-ttl", "60", hosts=("github.com", "gitlab.example"))
    check(rc == 0 and out == answer.replace("x-access-token", "oauth2"),
          "credential-helper: --username, a second --host", out)
    check(d.last("io.tokend.agent.GetToken")["parameters"] == {"credential": "gh", "scopes": ["read_repository"],
                                                               "min_ttl": 60, "as_owner": True},
          "credential-helper: --scope and --min-ttl sent", d.last("io.tokend.agent.GetToken"))

    matching = [
        "protocol=https\nhost=GitHub.COM\n\n",                      # hosts compare without case
        "protocol=HTTPS\nhost=github.com\n\n",
        "protocol=https\r\nhost=github.com\r\n\r\n",                # CRLF
        "host=evil.example\nprotocol=https\nhost=github.com\n",     # the last value counts; EOF ends
        "protocol=https\nhost=github.com\nusername=x-access-token\npassword=typed-secret\n\n",
        "protocol=https\nhost=github.com\npath=" + "p" * (64 * 1024 - 5) + "\n\n",   # a line of 64 KiB
        "protocol=https\nhost=github.com\nwwwauth[]=Bearer realm=\"x\"\ncapability[]=authtype\n\n",
    ]
    for stdin in matching:
        rc, out, e = helper(sock, stdin)
        check(rc == 0 and out == answer and "typed-secret" not in out + e, f"credential-helper answers {stdin[:50]!r}",
              (rc, out, e))

    # Not ours: nothing on stdout or stderr, exit 0 (git asks its next helper), tokend not asked.
    not_ours = [
        ("protocol=http\nhost=github.com\n\n", ()),
        ("protocol=https\nhost=gitlab.com\n\n", ()),
        ("protocol=https\nhost=github.com.evil.example\n\n", ()),
        ("protocol=https\nhost=evil-github.com\n\n", ()),
        ("protocol=https\nhost=github.com:443\n\n", ()),              # a port must be configured
        ("protocol=https\nhost=git.example.com\n\n", ("git.example.com:8443",)),
        ("protocol=https\nhost=github.com\nhost=evil.example\n\n", ()),
        ("host=github.com\n\n", ()),
        ("protocol=https\n\n", ()),
        ("protocol=https\nhost=\n\n", ()),
        ("protocol=ssh\nhost=github.com\n\n", ()),
        ("protocol=https\nhost=github.com\nusername=alice\n\n", ()),  # another account
        ("\nprotocol=https\nhost=github.com\n\n", ()),                # the blank line ends it
        ("", ()),
    ]
    for stdin, hosts in not_ours:
        d.calls.clear()
        rc, out, e = helper(sock, stdin, hosts=hosts or ("github.com",))
        check(rc == 0 and out == "" and e == "" and not d.calls, f"credential-helper ignores {stdin[:50]!r}",
              (rc, out, e, d.calls))
    d.calls.clear()
    rc, out, _ = helper(sock, "protocol=https\nhost=git.example.com:8443\n\n", hosts=("git.example.com:8443",))
    check(rc == 0 and out == answer, "credential-helper: a --host with a port matches that port", out)
    rc, out, _ = helper(sock, "protocol=https\nhost=[::1]:8443\n\n", hosts=("[::1]:8443",))
    check(rc == 0 and out == answer, "credential-helper: an IPv6 literal with a port", out)

    # store and erase keep nothing and say nothing, whatever the password; neither do unknown operations.
    work = os.path.join(tmp, "helper-home")
    os.makedirs(work, exist_ok=True)
    for op in ("store", "erase", "frob"):
        d.calls.clear()
        rc, out, e = helper(sock, f"protocol=https\nhost=github.com\nusername=x-access-token\npassword={SECRET}\n"
                            f"password_expiry_utc={exp}\n\n", op=op, cwd=work, env_extra={"HOME": work})
        check(rc == 0 and out == "" and e == "" and not d.calls, f"credential-helper {op}: nothing, exit 0",
              (rc, out, e, d.calls))
    check(os.listdir(work) == [], "credential-helper store/erase: no file written", os.listdir(work))

    # It stops at the blank line: git (or anyone) may keep its end open.
    env = dict(os.environ, TOKEND_SOCKET=sock)
    p = subprocess.Popen([TOKENCTL, "credential-helper", "gh", "--host", "github.com", "get"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdin.write(b"protocol=https\nhost=github.com\n\n")
    p.stdin.flush()
    try:
        rc = p.wait(timeout=10)
        out = p.stdout.read().decode()
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc, out = None, ""
    for f in (p.stdin, p.stdout, p.stderr):
        f.close()
    check(rc == 0 and out == answer, "credential-helper: answers at the blank line, stdin still open", (rc, out))

    # Caps on standard input; the input (which may hold a password) is never echoed.
    too_much = [
        (b"protocol=https\nhost=github.com\npath=" + b"p" * (64 * 1024 - 4) + b"\n\n", "longer than 65536"),
        (b"protocol=https\nhost=github.com\n" + (b"x=" + b"y" * 60000 + b"\n") * 18 + b"\n", "longer than 1048576"),
        (b"protocol=https\nhost=github.com\npassword=a\0b\n\n", "NUL"),
        (b"protocol=https\nhost=github.com\nhunter2-typed-secret\n\n", "not key=value"),
        (b"protocol=https\nhost=github.com\n=hunter2-typed-secret\n\n", "not key=value"),
    ]
    for stdin, says in too_much:
        for op in ("get", "store"):
            d.calls.clear()
            rc, out, e = helper(sock, stdin, op=op)
            check(rc == EXIT_USAGE and out == "" and says in e and "hunter2" not in e and "yyyy" not in e
                  and not d.calls, f"credential-helper {op}: refuses input ({says})", (rc, out, e[:200]))

    # tokend's answer: errors are tokenctl's exit codes; a token that could inject a line is refused.
    for reply, code in [
            (err("io.tokend.agent.NoSuchCredential", {"credential": "gh"}), EXIT_NO_SUCH),
            (ok({"token": "tok\nusername=evil", "token_type": "Bearer", "expires_at": exp, "scopes": []}),
             EXIT_FAILURE),
            (ok({"token": "tok en", "token_type": "Bearer", "expires_at": exp, "scopes": []}), EXIT_FAILURE),
            (ok({"token": SECRET, "token_type": "Bearer", "expires_at": NOW - 1, "scopes": []}), EXIT_FAILURE),
    ]:
        d.answer("io.tokend.agent.GetToken", reply)
        rc, out, e = helper(sock, "protocol=https\nhost=github.com\n\n")
        check(rc == code and out == "" and "evil" not in e and SECRET not in e,
              f"credential-helper: {json.dumps(reply)[:60]} exits {code}, prints nothing", (rc, out, e))


def test_permission_denied(d, sock):
    d.answer("io.tokend.manager.ListPending", err("org.varlink.service.PermissionDenied"))
    d.answer("io.tokend.agent.WhoAmI", ok(WHOAMI))
    rc, _, e = tokenctl("pending", socket_path=sock)
    check(rc == EXIT_DENIED and "manager interface only to its owner" in e and "tokenctl whoami" in e,
          "manager PermissionDenied: says why", (rc, e))
    check("agent 'claude-code' (/home/u/.config/tokend/policy.d/50-claude.conf:2)" in e,
          "manager PermissionDenied: names the agent from WhoAmI", e)
    d.answer("io.tokend.agent.WhoAmI", ok(dict(WHOAMI, uid=os.getuid(), policy={"mode": "ask",
                                                                                "consent_duration": 28800})))
    rc, _, e = tokenctl("pending", socket_path=sock)
    check(rc == EXIT_DENIED and "failsafe" in e, "manager PermissionDenied without an agent: the failsafe policy", e)
    d.answer("io.tokend.agent.WhoAmI", err("org.varlink.service.PermissionDenied"))
    rc, _, e = tokenctl("pending", socket_path=sock)
    check(rc == EXIT_DENIED and "manager interface" in e, "manager PermissionDenied, WhoAmI refused too", e)
    rc, _, e = tokenctl("whoami", socket_path=sock)
    check(rc == EXIT_DENIED and "serves another user" in e, "agent PermissionDenied: another user", e)


def test_whoami(d, sock):
    d.answer("io.tokend.agent.WhoAmI", ok(WHOAMI))
    rc, out, e = tokenctl("whoami", socket_path=sock)
    lines = out.splitlines()
    for want in ("uid: 1000", "pid: 4242", "pidfd: yes", "exe: /usr/bin/node", "unit: claude-code.service",
                 "user_unit: yes", "agent: claude-code", "mode: ask",
                 "defined: /home/u/.config/tokend/policy.d/50-claude.conf:2", "consent_duration: 8h",
                 "max_lifetime: 1h", "credential: gh scopes: repo read:org; resources: https://api.github.com",
                 "selector: Unit=claude-*.service", "manager: no"):
        check(want in lines, f"whoami: {want}", out)
    check(rc == 0 and "refuses this process its manager interface" in e, "whoami: explains manager: no", e)
    rc, out, _ = tokenctl("--json", "whoami", socket_path=sock)
    check(rc == 0 and json.loads(out) == WHOAMI, "whoami --json", out)
    d.answer("io.tokend.agent.WhoAmI", ok(dict(WHOAMI, exe=EVIL_EXE, manager=True,
                                               policy={"mode": "ask", "consent_duration": 28800})))
    rc, out, e = tokenctl("whoami", socket_path=sock)
    check(rc == 0 and "manager: yes" in out and "agent: none" in out and "\x1b" not in out and e == "",
          "whoami: an unknown caller that may manage", (out, e))


def test_status(d, sock):
    d.answer("org.varlink.service.GetInfo", ok({"vendor": "tokend", "product": "tokend", "version": "0.1.0",
                                                "url": "x", "interfaces": []}))
    d.answer("io.tokend.manager.ListCredentials", ok({"credentials": [], "store": "keyring", "store_state": "ok",
                                                      "store_pending": 0}))
    d.answer("io.tokend.manager.ListPending", ok({"requests": [REQ_AGENT, REQ_UNKNOWN]}))
    d.answer("io.tokend.manager.ListGrants", ok({"grants": [GRANT]}))
    rc, out, e = tokenctl("status", socket_path=sock)
    check(rc == 0 and "Approvals: 2 pending" in out and "Grants: 1 in force" in out, "status: counts", (out, e))
    rc, out, _ = tokenctl("--json", "status", socket_path=sock)
    st = json.loads(out)
    check(st.get("requests_pending") == 2 and st.get("grants") == 1, "status --json: counts", st)
    del d.handlers["io.tokend.manager.ListPending"]
    rc, out, _ = tokenctl("status", socket_path=sock)
    check(rc == 0 and "Approvals: n/a" in out, "status: an older tokend", out)


def complete(sock, words):
    """Runs the bash completion for words (the last one being completed)."""
    script = (f'source "{os.path.abspath(COMPLETION)}"\n'
              'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))\n'
              '_tokenctl\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    env = dict(os.environ, TOKEND_SOCKET=sock)
    env["PATH"] = os.path.dirname(os.path.abspath(TOKENCTL)) + os.pathsep + env.get("PATH", "")
    # In the test's own directory: file names completed are those of no other test.
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", *words], capture_output=True,
                       text=True, env=env, timeout=30, cwd=os.path.dirname(sock))
    return sorted(x for x in r.stdout.splitlines() if x)


def test_completion(d, sock):
    d.answer("io.tokend.manager.ListPending", ok({"requests": [REQ_AGENT, REQ_UNKNOWN]}))
    d.answer("io.tokend.manager.ListGrants", ok({"grants": [GRANT, GRANT_UNKNOWN]}))
    for words, want in [
            (["tokenctl", "ap"], ["approve"]),
            (["tokenctl", "approve", ""], ["r-7", "r-8"]),
            (["tokenctl", "deny", "r-"], ["r-7", "r-8"]),
            (["tokenctl", "approve", "r-7", "--"], ["--for", "--json", "--once", "--process", "--scope"]),
            (["tokenctl", "approve", "r-7", "--for", ""], ["15m", "1d", "1h", "8h"]),
            (["tokenctl", "approve", "r-7", ""], []),
            (["tokenctl", "grants", ""], ["revoke"]),
            (["tokenctl", "grants", "revoke", ""], ["g-3", "g-4"]),
            (["tokenctl", "--socket", sock, "grants", "revoke", "g-"], ["g-3", "g-4"]),
            (["tokenctl", "grants", "revoke", "g-3", ""], []),
            (["tokenctl", "whoami", "--"], ["--json"]),
            (["tokenctl", "ex"], ["exec"]),
            (["tokenctl", "cred"], ["credential-helper"]),
            (["tokenctl", "exec", "gh", "--"], ["--env", "--min-ttl", "--resource", "--scope"]),
            (["tokenctl", "exec", "gh", "--env", ""], ["GH_TOKEN", "GITHUB_TOKEN", "GITLAB_TOKEN", "TOKEND_TOKEN"]),
            (["tokenctl", "exec", "gh", "--", "python"], None),  # the command: from $PATH
            (["tokenctl", "exec", "gh", "--", "true", "--"], []),  # the command's own words: not ours
            (["tokenctl", "credential-helper", "gh", "--"],
             ["--host", "--min-ttl", "--resource", "--scope", "--username"]),
            (["tokenctl", "credential-helper", "gh", "--host", "github.com", ""], ["erase", "get", "store"]),
            (["tokenctl", "credential-helper", "gh", "--username", ""], ["oauth2", "x-access-token"]),
    ]:
        if want is None:
            got = complete(sock, words)
            check("python3" in got and all(g.startswith("python") for g in got), f"completion of {words[1:]}", got)
            continue
        got = complete(sock, words)
        check(got == want, f"completion of {words[1:]}", got)


def test_docs():
    rc, out, _ = tokenctl("help")
    verbs = re.findall(r"^  ([a-z][a-z-]*) ", out, re.M)
    check(rc == 0 and {"pending", "watch", "approve", "deny", "grants", "reload", "whoami", "exec",
                       "credential-helper"} <= set(verbs), "help lists the new verbs", verbs)
    with open(MAN_PAGE, encoding="utf-8") as f:
        man = f.read()
    # The helpers' limits are said plainly: in tokenctl(1) and docs/helpers.md.
    helpers_md = os.path.join(os.path.dirname(os.path.abspath(MAN_PAGE)), "..", "docs", "helpers.md")
    with open(helpers_md, encoding="utf-8") as f:
        helpers = f.read()
    for doc, text in (("tokenctl(1)", man.replace("\\-", "-")), ("docs/helpers.md", helpers)):
        for want in ("not renewed", "TOKEND_TOKEN_EXPIRES_AT", "Subscribe", "x-access-token", "oauth2",
                     "password_expiry_utc", "127", "126", "credential-helper", "300"):
            check(want in text, f"{doc} mentions {want}")
    with open(COMPLETION, encoding="utf-8") as f:
        completion = f.read()
    listed = set(re.search(r'local verbs="([^"]*)"', completion).group(1).split())
    for v in verbs:
        check(re.search(r'^(\.B|\.BI|\\fB)\s*"?' + v.replace("-", r"\\?-") + r'\b', man, re.M),
              f"tokenctl(1) documents {v}")
        check(v in listed, f"the completion offers {v}", listed)


def main():
    # The fake tokend's canned requests count down from NOW: their tests come first, so that a
    # slow machine (or a sanitizer build) does not change the times they show.
    with tempfile.TemporaryDirectory(prefix="tokenctl-cli.") as tmp:
        sock = os.path.join(tmp, "socket")
        d = FakeTokend(sock)
        try:
            for t in (test_pending, test_watch, test_approve, test_deny_grants, test_reload, test_token,
                      test_permission_denied, test_whoami, test_status, test_completion):
                d.handlers.clear()
                t(d, sock)
            for t in (test_exec, test_credential_helper):
                d.handlers.clear()
                d.calls.clear()
                t(d, sock, tmp)
        finally:
            d.stop.set()
            d.sock.close()
    test_no_daemon()
    test_usage()
    test_docs()
    test_helpers_usage()
    print(f"{failures} failure(s)")
    return 1 if failures else 0


sys.exit(main())
