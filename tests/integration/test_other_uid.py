#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Agents of another uid, and agents of the owner's uid, against the manager interface.

Needs root (setpriv to another uid; cgroups). Policy:
  10-sandbox.conf   agent "sandbox": Uid=65534, Mode=allow, [Credential cred] Scopes=read
  20-owner.conf     agent "owner-agent": Cgroup=/tokend-test-TAG.slice/agent-TAG.scope (the owner's
                    uid), Mode=ask, [Credential cred] Scopes=*
  30-test.conf      agent "test-python": this interpreter and uid, Mode=allow (harness default)
The socket is opened to 0666 and its directories made traversable, as test_hostile_callers does.
(a) A uid 65534 process: WhoAmI says agent sandbox, manager false; GetToken gets a token carrying
    exactly "read"; ["write"] -> ScopeNotAllowed; every io.tokend.manager method (with valid
    parameters) -> PermissionDenied, and nothing changed (credential, grants, pending, policy).
(b) A uid 65533 process, which no agent matches, is refused (PermissionDenied or closed), also
    for GetToken.
(c) An agent of the owner's uid in the cgroup (owner-agent) asks; while its request waits, from
    the same process and from others in the cgroup: Approve, Deny, RevokeGrant, AddCredential,
    Reload, ListPending -> PermissionDenied; tokenctl approve, deny, grants revoke, reload and list
    run inside the cgroup exit 8, and `tokenctl token` there asks as the agent (it waits; denied,
    it exits 8); the request still waits; this test process (agent test-python) is refused too. The owner
    (tokenctl outside) approves, and the waiting agent gets its token. The agent cannot revoke
    the grant either; the owner can.
"""
import os
import secrets
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import (approve_grant, ask, deny, expect_error, expect_token, find_grant,  # noqa: E402
                        introspected_scopes)
from harness import (ERR_PERMISSION_DENIED, ERR_SCOPE_NOT_ALLOWED, EXIT_DENIED, Cgroups, Skip, TOKENCTL,  # noqa: E402
                     agent_policy, check, log, move_to_cgroup, run_test, test_agent_policy)

CRED = "cred"
NOBODY = 65534
STRANGER = 65533


def manager_calls(d, request_id="no-such-request", grant_id="no-such-grant"):
    """Every io.tokend.manager method, with parameters it would accept from the owner."""
    secret_file = os.path.join(d.dir, "x.secret")
    return [
        ("AddCredential", {"name": "intruder", "issuer": "http://127.0.0.1:1", "client_id": "x",
                           "refresh_token": "rt-intruder", "insecure_loopback": True}),
        ("Login", {"name": "intruder2", "issuer": "http://127.0.0.1:1", "client_id": "x",
                   "client_secret_file": secret_file, "insecure_loopback": True, "flow": "device"}),
        ("RevokeCredential", {"name": CRED}),
        ("RemoveCredential", {"name": CRED}),
        ("ListCredentials", {}),
        ("MigrateStore", {"to": "keyring"}),
        ("GetToken", {"credential": CRED}),
        ("ListPending", {}),
        ("Watch", {}),
        ("Approve", {"id": request_id}),
        ("Deny", {"id": request_id}),
        ("ListGrants", {}),
        ("RevokeGrant", {"id": grant_id}),
        ("Reload", {}),
    ]


def refused_everything(caller, d, label, request_id="no-such-request", grant_id="no-such-grant", allow_close=False):
    for method, params in manager_calls(d, request_id, grant_id):
        res = caller.call_result("io.tokend.manager." + method, params, timeout=20, more=(method in ("Watch", "Login")))
        replies = res.get("replies") or ([res["reply"]] if "reply" in res else [])
        text = str(res)
        check("token" not in text.replace("GetToken", "") and "credentials" not in text and "grants" not in text,
              f"{label}: {method}: nothing revealed", res)
        if allow_close and not replies:
            check(res.get("closed") is True, f"{label}: {method}: refused (connection closed)", res)
            continue
        check(len(replies) == 1 and replies[0].get("error") == ERR_PERMISSION_DENIED,
              f"{label}: {method} -> PermissionDenied", res)


def open_socket(ctx, d):
    saved = [(p, os.stat(p).st_mode) for p in (ctx.tmp, d.dir, d.socket)]
    os.chmod(ctx.tmp, 0o755)
    os.chmod(d.dir, 0o755)
    os.chmod(d.socket, 0o666)
    p = os.path.dirname(ctx.tmp)
    while p != "/":
        check(os.stat(p).st_mode & 0o001, f"{p} is traversable by others")
        p = os.path.dirname(p)

    def restore():
        for path, mode in reversed(saved):
            if os.path.exists(path):
                os.chmod(path, mode & 0o7777)
    ctx._register(restore, "socket modes")
    return restore


def main(ctx):
    if os.geteuid() != 0:
        raise Skip("needs root (setpriv to uid 65534, cgroups)")
    if not shutil.which("setpriv"):
        raise Skip("setpriv (util-linux) is not installed")
    cgs = Cgroups(ctx)
    tag = secrets.token_hex(4)
    x = cgs.make(f"tokend-test-{tag}.slice/agent-{tag}.scope")
    srv = ctx.oauth_server()
    d = ctx.tokend(policy={
        "10-sandbox.conf": agent_policy("sandbox", uid=NOBODY, credentials={CRED: "read"}),
        "20-owner.conf": agent_policy("owner-agent", mode="ask", cgroup=f"/tokend-test-{tag}.slice/agent-{tag}.scope",
                                      credentials={CRED: "*"}),
        "30-test.conf": test_agent_policy(),
    }, consent_timeout=60)
    d.add(CRED, srv)
    restore_modes = open_socket(ctx, d)
    before_list = d.list_json()

    log("=== (a) uid 65534, agent sandbox")
    wrap = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    nb = ctx.caller(d.socket, wrapper=wrap, name="nobody")
    w = nb.whoami()
    check(w["uid"] == NOBODY and w["policy"].get("name") == "sandbox" and w["manager"] is False,
          "uid 65534: agent sandbox, manager false", w)
    p = expect_token(nb.get_token(CRED), "uid 65534: GetToken", ["read"])
    check(introspected_scopes(srv, p["token"]) == ["read"], "uid 65534: the token carries exactly 'read'")
    p = expect_error(nb.get_token(CRED, ["write"]), ERR_SCOPE_NOT_ALLOWED, "uid 65534: ['write']")
    check(p.get("allowed") == ["read"], "... allowed [read]", p)
    refused_everything(nb, d, "uid 65534")
    check(d.list_json().keys() == before_list.keys(), "the credentials are unchanged", d.list_json().keys())
    check(d.grants() == [] and d.pending() == [], "no grant, no pending request")
    expect_token(nb.get_token(CRED), "uid 65534 still gets its token (policy unchanged)", ["read"])
    nb.exit()

    log("=== (b) uid 65533, no agent")
    st = ctx.caller(d.socket, wrapper=["setpriv", f"--reuid={STRANGER}", f"--regid={STRANGER}", "--clear-groups"],
                    name="stranger")
    for method, params in (("io.tokend.agent.GetToken", {"credential": CRED}), ("io.tokend.agent.WhoAmI", None),
                           ("io.tokend.manager.ListCredentials", {})):
        res = st.call_result(method, params, timeout=20)
        check("token" not in str(res.get("reply", {}).get("parameters", {})), f"uid 65533: {method}: no token", res)
        check(res.get("closed") is True or res.get("reply", {}).get("error") == ERR_PERMISSION_DENIED,
              f"uid 65533: {method} -> PermissionDenied or closed", res)
    st.exit()
    restore_modes()

    log("=== (c) an agent of the owner's uid")
    ag = ctx.caller(d.socket, cgroup=x, name="owner-agent")
    w = ag.whoami()
    check(w["uid"] == os.getuid() and w["policy"].get("name") == "owner-agent" and w["manager"] is False,
          "the process in the cgroup: agent owner-agent, owner's uid, manager false", w)
    # An earlier grant, to try revoking: approved by the owner for another request.
    req0 = ask(d, ag, CRED, ["openid"])
    g0 = approve_grant(d, req0["id"], "--for", "1h")
    expect_token(ag.reply(), "owner-agent's first request, approved by the owner")
    # The request that waits while the agent tries to answer it itself.
    ag.send("io.tokend.agent.GetToken", {"credential": CRED, "scopes": ["read"]})
    req = d.wait_pending(lambda r: r["caller"]["pid"] == ag.pid, what="owner-agent's request to wait")
    rid = req["id"]
    check(req.get("agent") == "owner-agent", "the request is owner-agent's", req)
    refused_everything(ag, d, "owner-agent (the waiting process itself)", rid, g0["id"])
    ag2 = ctx.caller(d.socket, cgroup=x, name="owner-agent-2")
    refused_everything(ag2, d, "another process of owner-agent", rid, g0["id"])
    ag2.exit()
    env = dict(os.environ, TOKEND_SOCKET=d.socket)
    for args in (["approve", rid], ["deny", rid], ["grants", "revoke", g0["id"]], ["reload"], ["list"]):
        r = subprocess.run([TOKENCTL, *args], capture_output=True, text=True, timeout=30, env=env,
                           preexec_fn=lambda: move_to_cgroup(x))
        check(r.returncode == EXIT_DENIED, f"`tokenctl {' '.join(args)}` run inside the agent's cgroup exits "
              f"{EXIT_DENIED}", (r.returncode, r.stderr))
    for method, params in (("Approve", {"id": rid}), ("Deny", {"id": rid}), ("RevokeGrant", {"id": g0["id"]}),
                           ("Reload", {})):
        m = d.call("io.tokend.manager." + method, params)
        check(m.get("error") == ERR_PERMISSION_DENIED, f"this test process (agent test-python): {method} -> "
              "PermissionDenied", m)
    # tokenctl token inside the cgroup is the agent asking (agent interface), not the owner's token:
    # it waits for consent like any request of owner-agent; denied, it exits 8 without a token.
    tk = subprocess.Popen([TOKENCTL, "token", CRED, "--scope", "write"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: move_to_cgroup(x))
    try:
        treq = d.wait_pending(lambda r: r["caller"].get("exe") == os.path.realpath(TOKENCTL),
                              what="the request of tokenctl token run inside the cgroup")
        check(treq.get("agent") == "owner-agent" and treq["caller"]["pid"] == tk.pid,
              "`tokenctl token` inside the cgroup asks as owner-agent: it must wait for consent", treq)
        deny(d, treq["id"])
        out, err = tk.communicate(timeout=30)
    finally:
        if tk.poll() is None:
            tk.kill()
            tk.wait(timeout=10)
    check(tk.returncode == EXIT_DENIED and out.strip() == "", f"... denied, it exits {EXIT_DENIED} without a token",
          (tk.returncode, out, err))
    pend = [r["id"] for r in d.pending()]
    check(pend == [rid], "the agent's request is still waiting, unanswered", pend)
    check(find_grant(d, g0["id"]) is not None, "the earlier grant is still in force")
    check(not ag.has_result(0.2), "the waiting agent has no answer yet")
    g = approve_grant(d, rid)
    res = ag.recv(30)
    expect_token(res.get("reply", {}), "the owner's approval answers the waiting agent", ["read"])
    r = d.tokenctl("grants", "revoke", g["id"])
    check(r[0] == 0 and find_grant(d, g["id"]) is None, "the owner revokes the grant", r)
    ag.exit()
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
