#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Policy: scopes, credentials, resources, modes, reloads and broken files.

Credentials "cred" and "other" hold "openid offline_access read write". Policy v1:
  10-scoped.conf   agent "scoped" = this interpreter and uid, Mode=allow,
                   [Credential cred] Scopes=read write, Resources=https://api.example.test/v1
  20-denied.conf   agent "denied" = a copy of the interpreter (another exe), Mode=deny,
                   [Credential *] Scopes=* Resources=*
1. WhoAmI: agent scoped, mode allow, its file and the line of its [Agent], manager false.
2. Wider scopes -> ScopeNotAllowed naming the scopes too wide and the allowed set [read, write]
   (["admin"]; ["read","openid"]: openid is held by the credential but not allowed), without a
   request to the provider.
3. ["read"] -> a token introspected with exactly "read"; no scopes -> exactly "read write" (the
   policy's scopes intersected with the credential's).
4. PolicyDenied: credential "other" (no section), a resource not listed (also one differing by a
   trailing slash); the listed resource gets a token. The Mode=deny agent is refused even for a
   credential its sections allow. The agents cannot use the manager interface (PermissionDenied).
   "as_owner": true changes nothing for an agent: the same ScopeNotAllowed, PolicyDenied and
   policy-scoped token for "scoped", PolicyDenied for "denied". Subscribe and the manager's
   GetToken refuse the field (InvalidParameter "as_owner").
5. Reload by SIGHUP (v2: scoped gets Scopes=read, and other Scopes=write) changes the outcome;
   `tokenctl reload` (v3: scoped Mode=deny) too, and Reload answers the agent count and directory.
   A connection opened before the SIGHUP gets the new policy too; MaxLifetime=1m (v2) caps the
   expires_at the agent is told.
6. A broken file (a valid agent that would allow everything, then a bad Mode= on line 14) on
   `tokenctl reload`: exit status not 0, PATH:14 printed, Reload -> PolicyInvalid "PATH:14: ...";
   the old policy stays in force (not even the broken file's valid agent is used); SIGHUP likewise.
   A group-writable file fails the reload too ("PATH: ... writable").
7. The daemon restarted with the broken file (first load fails) -> failsafe: it serves, every
   caller is unknown (mode ask; this test's GetToken waits and ends in ConsentRequired), and the
   manager interface refuses everyone (tokenctl list exits 8; an owner process that no agent
   would match gets PermissionDenied; "as_owner" from such a process waits for consent too). The
   file fixed, SIGHUP ends the failsafe.
8. An empty policy directory: no agents; this test is an unknown caller and may manage. Being the
   owner, it gets a token from io.tokend.agent.GetToken with "as_owner" at once, with every scope
   of the credential; without the field it is an unknown caller that must ask (ConsentRequired).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import expect_error, expect_token, introspected_scopes  # noqa: E402
from harness import (ERR_CONSENT_REQUIRED, ERR_INVALID_PARAMETER, ERR_PERMISSION_DENIED,  # noqa: E402
                     ERR_POLICY_DENIED,
                     ERR_SCOPE_NOT_ALLOWED, EXIT_DENIED, PYTHON_EXE, agent_policy, check, log, run_test,
                     test_agent_policy, wait_until)

CRED, OTHER = "cred", "other"
RES = "https://api.example.test/v1"
CONSENT_TIMEOUT = 3
ERR_POLICY_INVALID = "io.tokend.manager.PolicyInvalid"


def policy_v1(denied_exe, scoped_mode="allow", scoped_creds=None):
    return {
        "10-scoped.conf": test_agent_policy("scoped", mode=scoped_mode, credentials=scoped_creds or {
            CRED: ("read write", RES)}, comment="the test process"),
        "20-denied.conf": agent_policy("denied", mode="deny", exe=denied_exe, credentials={"*": ("*", "*")}),
    }


def broken_file(uid):
    # Line 14 is wrong; lines 2-9 are a valid agent that would match this test and allow it all.
    text = ("# a valid agent first, then an error\n"         # 1
            "[Agent]\n"                                       # 2
            "Name=would-allow\n"                              # 3
            f"Exe={PYTHON_EXE}\n"                             # 4
            f"Uid={uid}\n"                                    # 5
            "Mode=allow\n"                                    # 6
            "\n"                                              # 7
            "[Credential *]\n"                                # 8
            "Scopes=*\n"                                      # 9
            "\n"                                              # 10
            "[Agent]\n"                                       # 11
            "Name=broken\n"                                   # 12
            "Exe=/usr/bin/true\n"                             # 13
            "Mode=allways\n")                                 # 14
    return text


def scope_refused(d, srv, scopes, too_wide, allowed, what):
    before = srv.stats()
    m = d.get_token(CRED, scopes)
    p = expect_error(m, ERR_SCOPE_NOT_ALLOWED, what)
    check(p.get("credential") == CRED and sorted(p.get("scopes", [])) == sorted(too_wide),
          f"{what}: names exactly the scopes too wide {too_wide}", p)
    check(sorted(p.get("allowed") or []) == sorted(allowed), f"{what}: names the allowed set {allowed}", p)
    after = srv.stats()
    check(after["grants"]["refresh_token"] == before["grants"]["refresh_token"], f"{what}: no request to the provider")


def main(ctx):
    srv = ctx.oauth_server()
    denied_exe = ctx.python_copy("denied")
    d = ctx.tokend(policy=policy_v1(denied_exe), consent_timeout=CONSENT_TIMEOUT)
    d.add(CRED, srv)
    d.add(OTHER, srv)
    scoped_path = d.policy_path("10-scoped.conf")

    log("=== 1. WhoAmI")
    w = d.whoami()
    pol = w.get("policy") or {}
    check(pol.get("name") == "scoped" and pol.get("mode") == "allow", "WhoAmI: agent scoped, mode allow", w)
    check(pol.get("file") == scoped_path and pol.get("line") == 2,
          f"WhoAmI: defined in {scoped_path} at line 2 (its [Agent])", pol)
    check(w.get("manager") is False, "WhoAmI: manager false (an agent)", w)

    log("=== 2. wider scopes")
    scope_refused(d, srv, ["admin"], ["admin"], ["read", "write"], "['admin']")
    scope_refused(d, srv, ["read", "openid"], ["openid"], ["read", "write"],
                  "['read','openid'] (openid held, not allowed)")
    scope_refused(d, srv, ["read", "write", "admin", "openid"], ["admin", "openid"], ["read", "write"],
                  "['read','write','admin','openid']")

    log("=== 3. narrower scopes")
    p = expect_token(d.get_token(CRED, ["read"]), "['read']", ["read"])
    check(introspected_scopes(srv, p["token"]) == ["read"], "['read']: introspected scope exactly 'read'")
    p = expect_token(d.get_token(CRED), "no scopes", ["read", "write"])
    check(introspected_scopes(srv, p["token"]) == ["read", "write"],
          "no scopes: introspected scope exactly 'read write' (policy scopes within the credential's)")

    log("=== 4. PolicyDenied")
    p = expect_error(d.get_token(OTHER), ERR_POLICY_DENIED, "credential without a section")
    check(p.get("credential") == OTHER and p.get("agent") == "scoped" and p.get("reason"),
          "PolicyDenied names the credential, the agent and why", p)
    p = expect_error(d.get_token(CRED, ["read"], resource="https://api.example.test/v2"), ERR_POLICY_DENIED,
                     "a resource not listed")
    check(p.get("agent") == "scoped", "... names the agent", p)
    expect_error(d.get_token(CRED, ["read"], resource=RES + "/"), ERR_POLICY_DENIED,
                 "a resource differing by a trailing slash")
    expect_token(d.get_token(CRED, ["read"], resource=RES), "the listed resource", ["read"])
    dn = ctx.caller(d.socket, python=denied_exe, name="denied")
    w = dn.whoami()
    check(w["policy"].get("name") == "denied" and w["policy"].get("mode") == "deny",
          "the other executable is agent 'denied', mode deny", w)
    for cred in (CRED, OTHER):
        p = expect_error(dn.get_token(cred, ["read"]), ERR_POLICY_DENIED, f"Mode=deny, credential {cred}")
        check(p.get("agent") == "denied", "... names agent 'denied'", p)
    for cred in (CRED, OTHER):
        p = expect_error(dn.call("io.tokend.agent.GetToken", {"credential": cred, "as_owner": True}),
                         ERR_POLICY_DENIED, f"Mode=deny with as_owner, credential {cred}")
        check(p.get("agent") == "denied", "... still agent 'denied': as_owner gains an agent nothing", p)
    m = dn.call("io.tokend.manager.ListCredentials", {})
    check(m.get("error") == ERR_PERMISSION_DENIED, "agent 'denied' (owner uid) may not use the manager interface", m)
    m = d.call("io.tokend.manager.ListCredentials", {})
    check(m.get("error") == ERR_PERMISSION_DENIED, "agent 'scoped' (this test) may not use the manager interface", m)
    dn.exit()
    m = d.get_token(CRED, ["admin"], as_owner=True)
    p = expect_error(m, ERR_SCOPE_NOT_ALLOWED, "agent 'scoped' with as_owner: ['admin']")
    check(sorted(p.get("allowed") or []) == ["read", "write"], "... the policy's scopes still bound it", p)
    expect_error(d.get_token(OTHER, as_owner=True), ERR_POLICY_DENIED, "agent 'scoped' with as_owner: credential other")
    p = expect_token(d.get_token(CRED, as_owner=True), "agent 'scoped' with as_owner, no scopes", ["read", "write"])
    check(introspected_scopes(srv, p["token"]) == ["read", "write"],
          "... exactly the policy's scopes, not the credential's four")
    with d.connect() as c:
        m = c.call("io.tokend.agent.Subscribe", {"credential": CRED, "as_owner": True}, more=True, timeout=30)
    check(m.get("error") == ERR_INVALID_PARAMETER and (m.get("parameters") or {}).get("parameter") == "as_owner",
          "Subscribe refuses as_owner (InvalidParameter as_owner)", m)

    log("=== 5. reload by SIGHUP")
    keep = d.connect()  # opened under v1, used after the reload
    expect_token(keep.call("io.tokend.agent.GetToken", {"credential": CRED, "scopes": ["write"]}),
                 "a connection opened before the reload: ['write'] allowed under v1", ["write"])
    v2 = policy_v1(denied_exe, scoped_creds={CRED: ("read", RES), OTHER: "write"})
    v2["10-scoped.conf"] = test_agent_policy("scoped", credentials={CRED: ("read", RES), OTHER: "write"},
                                             max_lifetime="1m", comment="the test process")
    d.write_policy(v2)
    d.sighup()
    wait_until(lambda: d.get_token(CRED, ["write"]).get("error") == ERR_SCOPE_NOT_ALLOWED, 10,
               "the SIGHUP reload to refuse ['write']")
    scope_refused(d, srv, ["write"], ["write"], ["read"], "after SIGHUP, ['write']")
    expect_error(keep.call("io.tokend.agent.GetToken", {"credential": CRED, "scopes": ["write"]}),
                 ERR_SCOPE_NOT_ALLOWED, "the connection opened before the reload: the new policy applies to it too")
    keep.close()
    p = expect_token(d.get_token(OTHER), "after SIGHUP, credential other (now Scopes=write)", ["write"])
    check(introspected_scopes(srv, p["token"]) == ["write"], "... introspected 'write'")
    check(p["expires_at"] <= time.time() + 61, "MaxLifetime=1m: the agent is told the token expires within 60 s "
          "(the server's lasts an hour)", p["expires_at"] - time.time())

    log("=== 5b. reload by tokenctl")
    v3 = policy_v1(denied_exe, scoped_mode="deny", scoped_creds={CRED: ("read", RES), OTHER: "write"})
    d.write_policy(v3)
    rc, out, err = d.tokenctl("reload")
    check(rc == 0, "tokenctl reload exits 0", (rc, out, err))
    p = expect_error(d.get_token(CRED, ["read"]), ERR_POLICY_DENIED, "after tokenctl reload (scoped Mode=deny)")
    check(d.whoami()["policy"].get("mode") == "deny", "WhoAmI: mode deny now")
    r = d.manager_ok("Reload", {})
    check(r.get("agents") == 2 and r.get("directory") == d.policy_dir, "Reload: 2 agents, the directory", r)

    log("=== 6. a broken file on reload")
    broken = {**v3, "05-broken.conf": broken_file(os.getuid())}
    bpath = d.policy_path("05-broken.conf")
    d.write_policy(broken)
    rc, out, err = d.tokenctl("reload")
    check(rc != 0, "tokenctl reload of a broken file exits non-zero", (rc, out, err))
    check(f"{bpath}:14" in out + err, f"tokenctl reload prints {bpath}:14", (out, err))
    m = d.manager("Reload", {})
    check(m.get("error") == ERR_POLICY_INVALID and (m.get("parameters") or {}).get("reason", "").startswith(
        f"{bpath}:14:"), f"Reload: PolicyInvalid '{bpath}:14: ...'", m)
    p = expect_error(d.get_token(CRED, ["read"]), ERR_POLICY_DENIED, "after the failed reload, the old policy")
    check(p.get("agent") == "scoped", "... still agent scoped (the broken file's valid agent is not used)", p)
    d.sighup()
    time.sleep(1)
    check(d.alive(), "SIGHUP with the broken file: the daemon keeps running")
    p = expect_error(d.get_token(CRED, ["read"]), ERR_POLICY_DENIED, "after SIGHUP with the broken file")
    check(p.get("agent") == "scoped" and d.whoami()["policy"].get("name") == "scoped",
          "... the old policy is still in force", p)
    rc, out, err = d.tokenctl("list")
    check(rc == 0, "the manager interface still works for the owner", (rc, err))
    d.write_policy(v3)
    os.chmod(scoped_path, 0o620)
    rc, out, err = d.tokenctl("reload")
    check(rc != 0 and f"{scoped_path}: " in out + err and "writable" in out + err,
          "a group-writable policy file: tokenctl reload fails naming PATH and why", (rc, out, err))
    os.chmod(scoped_path, 0o600)
    check(d.whoami()["policy"].get("mode") == "deny", "the policy in force is still v3")

    log("=== 7. first load broken: failsafe")
    d.write_policy({**policy_v1(denied_exe), "05-broken.conf": broken_file(os.getuid())})
    d.restart()
    w = d.whoami()
    check("name" not in w["policy"] and w["policy"].get("mode") == "ask" and w["manager"] is False,
          "failsafe: this test is an unknown caller (ask), manager false", w)
    rc, out, err = d.tokenctl("list")
    check(rc == EXIT_DENIED, f"failsafe: tokenctl list exits {EXIT_DENIED} (PermissionDenied)", (rc, out, err))
    m = d.manager("ListCredentials", {})
    check(m.get("error") == ERR_PERMISSION_DENIED, "failsafe: an owner process no agent would match is refused", m)
    m = d.manager("Reload", {})
    check(m.get("error") == ERR_PERMISSION_DENIED, "failsafe: Reload is refused too", m)
    t0 = time.monotonic()
    m = d.get_token(CRED, ["read"], timeout=CONSENT_TIMEOUT + 20)
    took = time.monotonic() - t0
    expect_error(m, ERR_CONSENT_REQUIRED, "failsafe: GetToken waits for consent nobody can give")
    check(took >= CONSENT_TIMEOUT - 0.5, f"... after the consent timeout ({took:.1f}s)")
    res = ctx.vclient_call(d.socket, "io.tokend.agent.GetToken", {"credential": CRED, "as_owner": True},
                           timeout=CONSENT_TIMEOUT + 20)
    expect_error(res.get("reply", {}), ERR_CONSENT_REQUIRED,
                 "failsafe: an owner process with as_owner is no owner either: it waits for consent")
    d.write_policy(policy_v1(denied_exe))
    d.sighup()
    wait_until(lambda: d.tokenctl("list")[0] == 0, 10, "the manager interface back after the fixed reload")
    p = expect_token(d.get_token(CRED, ["read"]), "after the fix, agent scoped is allowed again", ["read"])
    check(d.whoami()["policy"].get("name") == "scoped", "WhoAmI: agent scoped again")
    check(d.alive(), "daemon still running")

    log("=== 8. an empty policy directory")
    e = ctx.tokend(name="empty", policy=None, consent_timeout=CONSENT_TIMEOUT)
    check(os.listdir(e.policy_dir) == [], "the policy directory is empty")
    w = e.whoami()
    check("name" not in w["policy"] and w["policy"].get("mode") == "ask" and w["manager"] is True,
          "no agents: this test is an unknown caller (ask) and, of the owner's uid, may manage", w)
    m = e.call("io.tokend.manager.ListCredentials", {})
    check("error" not in m, "... so its own manager call is answered", m)
    e.add(CRED, srv)
    t0 = time.monotonic()
    p = expect_token(e.get_token(CRED, as_owner=True, timeout=CONSENT_TIMEOUT + 20),
                     "the owner with as_owner: its token", ["offline_access", "openid", "read", "write"])
    check(time.monotonic() - t0 < CONSENT_TIMEOUT, "... at once, with no consent asked")
    m = e.manager("GetToken", {"credential": CRED, "as_owner": True})
    check(m.get("error") == ERR_INVALID_PARAMETER and (m.get("parameters") or {}).get("parameter") == "as_owner",
          "io.tokend.manager.GetToken refuses as_owner (InvalidParameter as_owner)", m)
    expect_error(e.get_token(CRED, as_owner=False, timeout=CONSENT_TIMEOUT + 20), ERR_CONSENT_REQUIRED,
                 "the owner without as_owner (false): an unknown caller that must ask")


if __name__ == "__main__":
    run_test(main, __doc__)
