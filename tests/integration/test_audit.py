#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 7: every decision has exactly one audit record, read back by `tokenctl audit`.

With a real systemd-journald (started here if /run/systemd/journal/socket is not served, stopped
by PID at the end; failing if it cannot be started), a real OAuth server and the real daemon:
1. add a credential; GetToken (issue, from the cache); GetToken with a wider scope (deny
   ScopeNotAllowed); GetToken ["read"] (refresh + rotate + issue); GetToken for an unknown credential
   (deny NoSuchCredential); the grant revoked at the server, then GetToken ["write"]
   (reauth-needed + deny ReauthenticationRequired); remove.
2. `tokenctl audit --json --credential NAME` shows exactly those records, in order, with the owner
   (uid, user name), the agent (uid, pid = this test's pid, exe = python's realpath; tokenctl for add
   and remove; none for the rotation) and token fingerprints sha256(token)[:12] of the tokens got.
3. `journalctl -o json SYSLOG_IDENTIFIER=tokend` holds no access token and no refresh token (read
   from the keyring as they rotated); no fallback file was written while the journal was there.
4. A daemon started with TOKEND_AUDIT_JOURNAL=0 writes STATE_DIR/audit.log (mode 0600) instead;
   `tokenctl audit --json` reads it back (via $XDG_STATE_HOME and via --state-dir), and the
   journal has none of its records.
"""
import hashlib
import json
import os
import pwd
import socket
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TOKENCTL, TestFailure, _keyctl_session, check, log, mint, run_test, stop_pid,  # noqa: E402
                     wait_until)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNALD = "/lib/systemd/systemd-journald"
ERR_SCOPE = "io.tokend.agent.ScopeNotAllowed"
ERR_NO_SUCH = "io.tokend.agent.NoSuchCredential"
ERR_REAUTH = "io.tokend.agent.ReauthenticationRequired"


def fp(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def journal_served():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(JOURNAL_SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


def ensure_journald(ctx):
    if journal_served():
        log("systemd-journald already serves " + JOURNAL_SOCKET)
        return
    os.makedirs("/run/systemd/journal", exist_ok=True)
    logf = open(os.path.join(ctx.tmp, "journald.log"), "ab")
    try:
        proc = subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    except OSError as e:
        raise TestFailure(f"cannot start {JOURNALD}: {e} (this test needs a real journal; CI runs as root)")
    ctx._register(lambda: log(f"systemd-journald pid {proc.pid} stopped: status {stop_pid(proc)}"),
                  "systemd-journald", logf.name)
    try:
        wait_until(lambda: proc.poll() is None and journal_served(), 15, "systemd-journald to serve its socket")
    except TestFailure:
        raise TestFailure(f"systemd-journald did not start (status {proc.poll()}); see {logf.name}")
    log(f"started systemd-journald pid {proc.pid}")


def audit(d, *args, env_extra=None):
    env = dict(os.environ, TOKEND_SOCKET=d.socket, XDG_STATE_HOME=d.state_home)
    env.update(env_extra or {})
    r = subprocess.run([TOKENCTL, "audit", *args], capture_output=True, text=True, timeout=60, env=env)
    check(r.returncode == 0, f"tokenctl audit {' '.join(args)} exits 0", (r.returncode, r.stderr))
    return r.stdout


def audit_json(d, *args, **kw):
    return [json.loads(line) for line in audit(d, "--json", *args, **kw).splitlines() if line.strip()]


def read_key(d, credential, kind="refresh_token"):
    r = _keyctl_session('P=$(keyctl get_persistent @s) && K=$(keyctl search "$P" user "$1") && keyctl pipe "$K"',
                        d.key_description(credential, kind))
    return r.stdout if r.returncode == 0 else None


def main(ctx):
    ensure_journald(ctx)
    start = int(time.time()) - 1
    me, exe, uid = os.getpid(), os.path.realpath(sys.executable), os.getuid()
    user = pwd.getpwuid(uid).pw_name
    tokenctl_exe = os.path.realpath(TOKENCTL)
    name = "audit-" + uuid.uuid4().hex[:8]
    srv = ctx.oauth_server()
    d = ctx.tokend()
    secrets = set()

    rt0 = mint(srv.issuer)
    secrets.add(rt0)
    d.add(name, srv, refresh_token=rt0)
    secrets.add(read_key(d, name))

    p1 = d.token(name)  # served from the cache the add's check refresh filled
    m = d.get_token(name, ["read", "delete"])
    check(m.get("error") == ERR_SCOPE, "GetToken with a wider scope -> ScopeNotAllowed", m)
    before = srv.refresh_count()
    p2 = d.token(name, ["read"])  # a new cache key: refresh (rotating) + issue
    check(srv.refresh_count() == before + 1, "GetToken ['read'] needed exactly one refresh")
    secrets.add(read_key(d, name))
    m = d.get_token("no-such-" + name)
    check(m.get("error") == ERR_NO_SUCH, "GetToken of an unknown credential -> NoSuchCredential", m)
    srv.revoke(p2["token"])
    m = d.get_token(name, ["write"])
    check(m.get("error") == ERR_REAUTH, "GetToken after revocation at the server -> ReauthenticationRequired", m)
    rc, out, err = d.tokenctl("remove", name)
    check(rc == 0, "tokenctl remove", err)
    secrets |= {p1["token"], p2["token"]}
    secrets.discard(None)

    expected = [("add", None), ("issue", None), ("deny", ERR_SCOPE), ("refresh", None), ("rotate", None),
                ("issue", None), ("reauth-needed", "invalid_grant"), ("deny", ERR_REAUTH), ("remove", None)]
    recs = []

    def got_all():
        nonlocal recs
        recs = audit_json(d, "--credential", name)
        return len(recs) >= len(expected)

    wait_until(got_all, 15, "the audit records to reach the journal")
    time.sleep(0.5)
    recs = audit_json(d, "--credential", name)
    for r in recs:
        log(f"record: {json.dumps(r, sort_keys=True)}")
    check([(r.get("event"), r.get("reason")) for r in recs] == expected,
          "exactly one record per decision, in order", [(r.get("event"), r.get("reason")) for r in recs])
    check(all(r.get("source") == "journal" for r in recs), "all records came from the journal")
    for r in recs:
        ev = r["event"]
        check(r.get("credential") == name and r.get("owner_uid") == uid and r.get("owner_user") == user,
              f"{ev}: credential, owner uid and user name", r)
        check(isinstance(r.get("timestamp"), int) and r["timestamp"] >= start * 1000000, f"{ev}: a timestamp", r)
        check(bool(r.get("message")), f"{ev}: a MESSAGE for humans", r)
        check("grant" not in r, f"{ev}: no grant id yet", r)
        if ev == "rotate":
            check("agent_pid" not in r and "agent_exe" not in r, "rotate: no agent (the daemon's own doing)", r)
        elif ev in ("add", "remove"):
            check(r.get("agent_exe") == tokenctl_exe and r.get("agent_uid") == uid and r.get("agent_pid", 0) > 0,
                  f"{ev}: the agent is tokenctl", r)
        else:
            check(r.get("agent_pid") == me and r.get("agent_exe") == exe and r.get("agent_uid") == uid,
                  f"{ev}: the agent is this test (pid {me}, {exe})", r)
        if ev in ("issue", "deny", "refresh", "reauth-needed"):
            check(bool(r.get("scopes")), f"{ev}: scopes recorded", r)
    issues = [r for r in recs if r["event"] == "issue"]
    check(issues[0].get("token_fp") == fp(p1["token"]), "first issue: fingerprint of the token got", issues[0])
    check(issues[1].get("token_fp") == fp(p2["token"]), "second issue: fingerprint of the token got", issues[1])
    check(issues[1].get("scopes") == "read", "second issue: scopes 'read'", issues[1])
    refresh = next(r for r in recs if r["event"] == "refresh")
    check(refresh.get("token_fp") == fp(p2["token"]), "refresh: fingerprint of the new token", refresh)
    for r in recs:
        if r["event"] not in ("issue", "refresh"):
            check("token_fp" not in r, f"{r['event']}: no token fingerprint", r)

    unknown = audit_json(d, "--credential", "no-such-" + name)
    check([(r.get("event"), r.get("reason"), r.get("agent_pid")) for r in unknown] == [("deny", ERR_NO_SUCH, me)],
          "NoSuchCredential: one deny record with the agent", unknown)

    # filters and the table
    check(len(audit_json(d, "--credential", name, "--agent", exe)) == 6, "--agent EXE keeps this test's records")
    check(len(audit_json(d, "--credential", name, "--agent", "*/tokenctl")) == 2, "--agent glob: tokenctl's")
    check(audit_json(d, "--credential", name, "--since", "@" + str(int(time.time()) + 60)) == [],
          "--since in the future: nothing")
    check(len(audit_json(d, "--credential", name, "--since", "10m")) == len(expected), "--since 10m: all")
    table = audit(d, "--credential", name)
    check(table.startswith("TIME") and table.count(name) == len(expected), "the table has a row per record", table)

    # no secret in the journal, nor a fallback file while the journal was there
    j = subprocess.run(["journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=tokend"], capture_output=True,
                       text=True, timeout=60)
    check(j.returncode == 0 and name in j.stdout, "journalctl shows tokend's records", j.stderr)
    check(len(secrets) >= 4, "collected the tokens and refresh tokens", len(secrets))
    for s in secrets:
        check(s not in j.stdout, f"no token value in the journal ({fp(s)})")
    check(not os.path.exists(os.path.join(d.state_dir, "audit.log")), "no fallback file while the journal works")

    log("=== fallback: TOKEND_AUDIT_JOURNAL=0")
    name2 = "auditf-" + uuid.uuid4().hex[:8]
    os.environ["TOKEND_AUDIT_JOURNAL"] = "0"
    try:
        d2 = ctx.tokend(name="fileonly")
    finally:
        del os.environ["TOKEND_AUDIT_JOURNAL"]
    path = os.path.join(d2.state_dir, "audit.log")
    d2.add(name2, srv)
    p3 = d2.token(name2)
    check(os.path.exists(path), "audit.log written", path)
    check(os.stat(path).st_mode & 0o777 == 0o600, "audit.log has mode 0600", oct(os.stat(path).st_mode))
    with open(path) as f:
        text = f.read()
    check(p3["token"] not in text, "no token in audit.log")
    for via, args in (("$XDG_STATE_HOME", ()), ("--state-dir", ("--state-dir", d2.state_dir))):
        recs2 = audit_json(d2, "--credential", name2, *args,
                           env_extra={"XDG_STATE_HOME": "/nonexistent"} if args else None)
        check([(r.get("event"), r.get("source")) for r in recs2] == [("add", "file"), ("issue", "file")],
              f"tokenctl audit reads audit.log via {via}", recs2)
    iss = recs2[1]
    check(iss.get("token_fp") == fp(p3["token"]) and iss.get("agent_pid") == me and iss.get("agent_exe") == exe
          and iss.get("owner_uid") == uid and iss.get("owner_user") == user,
          "the file record has the same fields", iss)
    j = subprocess.run(["journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=tokend"], capture_output=True,
                       text=True, timeout=60)
    check(name2 not in j.stdout, "the journal has none of the file-only daemon's records")
    check(d.alive() and d2.alive(), "daemons still running")


if __name__ == "__main__":
    run_test(main, __doc__)
