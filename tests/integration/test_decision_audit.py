#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every policy and consent decision has exactly one audit record, in the real journal.

With a real systemd-journald (started here when none serves /run/systemd/journal/socket, as
test_audit.py does), --consent-timeout 3, credentials NAME (all scopes) and NOSEC, and the policy
  10-asker.conf  agent "asker": Unit=agent-T.scope (a real cgroup, root), Mode=ask,
                 [Credential NAME] Scopes=*
  50-test.conf   agent "test-python" (this test), Mode=allow, [Credential NAME] Scopes=read write
decisions are made, and `tokenctl audit --json --credential ...` must show, in order, exactly one
record for each (events issue, deny, approve, grant; refresh/rotate/add are left out here):
  issue via allow (test-python, ['read'])         issue, token fp, no grant
  scope deny (['admin'])                          deny ScopeNotAllowed
  policy deny (NOSEC: no section)                 deny PolicyDenied (under NOSEC)
  ask, owner approves (asker, ['write'])          approve with the grant id and the waiting agent,
                                                  then issue with the grant id and token fp
  issue via the grant (asker again)               issue with the grant id
  deny by the owner (['read'])                    deny ConsentDenied
  consent timeout (['read'])                      deny ConsentRequired
  grant revoked (tokenctl grants revoke)          grant, reason revoked
  process grant, its process exits                approve, issue, grant reason process-exited
  time grant of 2 s expires                       approve, issue, grant reason expired
  (approve records have the grant's kind as reason: time, process)
Each record has the owner (uid, user name), the credential, and for issue/deny/approve the scopes
and the agent (uid, pid, exe, policy agent name, and unit agent-T.scope for asker); no record but
issue has a token fingerprint. The journal's TOKEND_AGENT_NAME names the policy agent (asker,
test-python). This test's own call to the manager interface (it is an agent) has one deny record,
PermissionDenied. Finally `journalctl -o export` holds none of the access tokens handed out and none
of the refresh tokens (read from the keyring).
"""
import json
import os
import pwd
import secrets
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import approve_grant, ask, deny, expect_error, expect_token, revoke_grant, timed_reply  # noqa: E402
from harness import (ERR_CONSENT_DENIED, ERR_CONSENT_REQUIRED, ERR_PERMISSION_DENIED, ERR_POLICY_DENIED,  # noqa: E402
                     ERR_SCOPE_NOT_ALLOWED, PYTHON_EXE, Cgroups, agent_policy, check, log, mint, run_test,
                     test_agent_policy, wait_until)
from test_audit import audit_json, ensure_journald, fp, read_key  # noqa: E402

TIMEOUT = 3
DECISIONS = ("issue", "deny", "approve", "grant")


def short(reason):
    return (reason or "").rsplit(".", 1)[-1]


def main(ctx):
    cgs = Cgroups(ctx)  # Skip unless root with cgroup v2
    ensure_journald(ctx)
    tag = secrets.token_hex(4)
    unit = f"agent-{tag}.scope"
    x = cgs.make(f"tokend-test-{tag}.slice/{unit}")
    name, nosec = f"dec-{tag}", f"nosec-{tag}"
    me, uid = os.getpid(), os.getuid()
    user = pwd.getpwuid(uid).pw_name
    srv = ctx.oauth_server()
    d = ctx.tokend(policy={
        "10-asker.conf": agent_policy("asker", mode="ask", unit=unit, credentials={name: "*"}),
        "50-test.conf": test_agent_policy(credentials={name: "read write"}),
    }, consent_timeout=TIMEOUT)
    secrets_seen = set()
    for cred in (name, nosec):
        rt = mint(srv.issuer)
        secrets_seen.add(rt)
        d.add(cred, srv, refresh_token=rt)
        secrets_seen.add(read_key(d, cred))
    tokens = []
    expected = []

    def rec(cred, event, reason, pid, grant, token, scopes):
        """One expected record: reason (short name), agent pid, grant id, token, scopes (or None)."""
        expected.append(dict(cred=cred, event=event, reason=reason, pid=pid, grant=grant, token=token,
                             scopes=sorted(scopes) if scopes is not None else None))
        if token:
            tokens.append(token)

    log("=== issue via allow, scope deny, policy deny")
    p = expect_token(d.get_token(name, ["read"]), "test-python ['read']", ["read"])
    rec(name, "issue", None, me, None, p["token"], ["read"])
    expect_error(d.get_token(name, ["admin"]), ERR_SCOPE_NOT_ALLOWED, "test-python ['admin']")
    rec(name, "deny", "ScopeNotAllowed", me, None, None, ["admin"])
    expect_error(d.get_token(nosec, ["read"]), ERR_POLICY_DENIED, "test-python, credential without a section")
    rec(nosec, "deny", "PolicyDenied", me, None, None, ["read"])
    m = d.call("io.tokend.manager.ListCredentials", {})
    check(m.get("error") == ERR_PERMISSION_DENIED, "test-python (an agent) calls the manager interface: refused", m)

    log("=== ask and approve; issue via the grant")
    a = ctx.caller(d.socket, cgroup=x, name="asker")
    check(a.whoami()["policy"].get("name") == "asker", "the caller in the unit is agent asker")
    req = ask(d, a, name, ["write"])
    g1 = approve_grant(d, req["id"], "--for", "1h")
    p = expect_token(a.reply(), "asker ['write'] approved", ["write"])
    rec(name, "approve", "time", a.pid, g1["id"], None, ["write"])
    rec(name, "issue", None, a.pid, g1["id"], p["token"], ["write"])
    p = expect_token(a.get_token(name, ["write"]), "asker ['write'] again, by the grant", ["write"])
    rec(name, "issue", None, a.pid, g1["id"], p["token"], ["write"])

    log("=== deny by the owner; consent timeout")
    req = ask(d, a, name, ["read"])
    deny(d, req["id"])
    expect_error(a.reply(), ERR_CONSENT_DENIED, "asker ['read'] denied")
    rec(name, "deny", "ConsentDenied", a.pid, None, None, ["read"])
    req = ask(d, a, name, ["read"])
    m, _ = timed_reply(a, TIMEOUT + 15)
    expect_error(m, ERR_CONSENT_REQUIRED, "asker ['read'] unanswered")
    rec(name, "deny", "ConsentRequired", a.pid, None, None, ["read"])

    log("=== grant revoked")
    revoke_grant(d, g1["id"])
    rec(name, "grant", "revoked", None, g1["id"], None, None)

    log("=== process grant, the process exits")
    a2 = ctx.caller(d.socket, cgroup=x, name="asker-process")
    req = ask(d, a2, name, ["openid"])
    g2 = approve_grant(d, req["id"], "--process")
    p = expect_token(a2.reply(), "asker ['openid'] approved --process", ["openid"])
    a2_pid = a2.pid
    rec(name, "approve", "process", a2_pid, g2["id"], None, ["openid"])
    rec(name, "issue", None, a2_pid, g2["id"], p["token"], ["openid"])
    a2.exit()
    wait_until(lambda: all(g["id"] != g2["id"] for g in d.grants()), 5, "the process grant to end")
    rec(name, "grant", "process-exited", None, g2["id"], None, None)

    log("=== time grant expires")
    req = ask(d, a, name, ["openid", "read"])
    g3 = approve_grant(d, req["id"], "--for", "2s")
    p = expect_token(a.reply(), "asker ['openid','read'] approved --for 2s", ["openid", "read"])
    rec(name, "approve", "time", a.pid, g3["id"], None, ["openid", "read"])
    rec(name, "issue", None, a.pid, g3["id"], p["token"], ["openid", "read"])
    rec(name, "grant", "expired", None, g3["id"], None, None)
    time.sleep(2.5)
    a_pid = a.pid
    a.exit()

    def decisions(cred):
        return [r for r in audit_json(d, "--credential", cred) if r.get("event") in DECISIONS]

    def all_there():
        d.grants()  # a look at the grants, should the daemon notice expiry only then
        return len(decisions(name)) >= sum(1 for e in expected if e["cred"] == name)

    wait_until(all_there, 20, "every decision record to reach the journal", interval=0.5)
    time.sleep(0.5)
    for cred in (name, nosec):
        recs = decisions(cred)
        exp = [e for e in expected if e["cred"] == cred]
        got = [(r.get("event"), short(r.get("reason")) or None, r.get("grant")) for r in recs]
        want = [(e["event"], e["reason"], e["grant"]) for e in exp]
        log(f"{cred} records: {got}")
        check(got == want, f"{cred}: exactly one record per decision, in order", {"got": got, "want": want})
        for r, e in zip(recs, exp):
            what = f"{cred} {e['event']} {e['reason'] or ''} {e['grant'] or ''}".strip()
            check(r.get("source") == "journal", f"{what}: from the journal", r)
            check(r.get("credential") == cred and r.get("owner_uid") == uid and r.get("owner_user") == user,
                  f"{what}: credential, owner uid {uid} and user {user}", r)
            if e["scopes"] is not None:
                check(sorted(r.get("scopes", "").split()) == e["scopes"], f"{what}: scopes {e['scopes']}", r)
            if e["pid"] is not None:
                check(r.get("agent_pid") == e["pid"] and r.get("agent_uid") == uid
                      and r.get("agent_exe") == PYTHON_EXE, f"{what}: the agent (pid {e['pid']}, {PYTHON_EXE})", r)
                agent = "test-python" if e["pid"] == me else "asker"
                check(r.get("agent_name") == agent, f"{what}: the policy agent's name {agent}", r)
                if e["pid"] != me:
                    check(r.get("agent_unit") == unit, f"{what}: the agent's unit {unit}", r)
            if e["token"]:
                check(r.get("token_fp") == fp(e["token"]), f"{what}: the fingerprint of the token handed out", r)
            else:
                check("token_fp" not in r, f"{what}: no token fingerprint", r)

    log("=== the manager interface refused to an agent")
    refused = [r for r in audit_json(d) if r.get("event") == "deny" and short(r.get("reason")) == "PermissionDenied"
               and r.get("agent_pid") == me]
    check(len(refused) == 1 and refused[0].get("agent_exe") == PYTHON_EXE and refused[0].get("owner_uid") == uid,
          "exactly one deny record (PermissionDenied) for this test's manager call, with the agent", refused)

    log("=== the policy agent's name, in the journal")
    j = subprocess.run(["journalctl", "-o", "json", "--no-pager", f"TOKEND_CREDENTIAL={name}"], capture_output=True,
                       text=True, timeout=60)
    names = {}
    for line in j.stdout.splitlines():
        e = json.loads(line)
        if e.get("TOKEND_EVENT") in ("issue", "deny", "approve"):
            names.setdefault(e.get("TOKEND_AGENT_PID"), set()).add(e.get("TOKEND_AGENT_NAME"))
    check(names.get(str(me)) == {"test-python"} and names.get(str(a_pid)) == {"asker"}
          and names.get(str(a2_pid)) == {"asker"},
          "TOKEND_AGENT_NAME names the policy agent of each issue/deny/approve record", names)

    log("=== no secret in the journal")
    for cred in (name, nosec):
        secrets_seen.add(read_key(d, cred))
    secrets_seen.discard(None)
    j = subprocess.run(["journalctl", "-o", "export", "--no-pager"], capture_output=True, timeout=120)
    check(j.returncode == 0 and name.encode() in j.stdout, "journalctl -o export shows the records", j.stderr[-500:])
    check(len(tokens) == sum(e["event"] == "issue" for e in expected) == 5, "five access tokens were handed out",
          len(tokens))
    for s in tokens + sorted(secrets_seen):
        check(s.encode() not in j.stdout, f"no token value in the journal ({fp(s)})")
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
