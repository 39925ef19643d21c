#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Ask mode: an agent's request waits for the owner, who answers it with tokenctl.

Daemon with --consent-timeout 6; policy: agent "asker" = this interpreter and uid, Mode=ask,
[Credential cred] Scopes=*. Requests come from caller processes (vclient.py with the same
interpreter, so agent "asker"); the owner is tokenctl (another executable, no agent).
1. Watchers started first: `tokenctl watch`, and a raw io.tokend.manager.Watch stream.
2. GetToken ["read"] waits: no answer within 1 s; `tokenctl pending` lists it (id, agent, pid,
   credential) and `tokenctl --json pending` / ListPending describe it (agent asker, the
   caller's pid, exe, uid, credential, scopes, deadline = created + 6 s); both watchers see a
   "pending" event with its id.
3. `tokenctl approve ID` -> the waiting caller gets a token carrying exactly "read" (server
   introspection); the request leaves pending; the watchers see "approved" with the grant; the
   grant is listed (agent asker, credential cred, scopes [read], kind time). Another process of
   the same agent then gets ["read"] at once (the grant covers the agent).
4. GetToken ["write"], `tokenctl deny ID` -> ConsentDenied naming credential, agent, request.
5. GetToken ["write"], nobody answers -> ConsentRequired after the consent timeout (6 s, not
   before 5 s), naming the request; gone from pending; watchers see "timeout".
6. GetToken ["openid","write"], `tokenctl approve ID --scope write` -> the token carries exactly
   the intersection ["write"] (introspection "write").
7. `tokenctl approve` / `tokenctl deny` of an unknown id exit 4 (Approve/Deny: NoSuchRequest).
8. A caller that sends GetToken ["openid"] and hangs up: its request leaves pending; watchers
   see "gone"; it cannot be approved any more (exit 4).
9. An unknown caller (a copy of the interpreter at another path: no agent matches) asks too:
   pending without an agent, with its exe; approve -> token.
10. `tokenctl approve ID --scope admin` (beyond the ceiling) exits 7 (ApprovalTooWide); the request
   still waits.
11. One approval answers every other waiting request its grant covers; a single-use one answers
   one request only.
12. At most 8 requests of one agent wait: the 9th gets ConsentRequired at once ("too many"); a
   Watch started while they wait first sends one "pending" event per waiting request.
13. `tokenctl remove cred` ends its grants and its waiting request (an error, no token).
14. A request waiting when tokend stops (SIGTERM) gets ConsentRequired; tokend exits 0.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consentlib import (approve, approve_grant, approve_plain, ask, deny, expect_error, expect_token,  # noqa: E402
                        expect_waits, find_grant, introspected_scopes, timed_reply)
from harness import (ERR_CONSENT_DENIED, ERR_CONSENT_REQUIRED, EXIT_NO_SUCH, EXIT_REFUSED, LineReader,  # noqa: E402
                     PYTHON_EXE, TOKENCTL, VCLIENT, check, log, python_env, run_test, test_agent_policy,
                     wait_until)

CRED = "cred"
TIMEOUT = 6
ERR_NO_SUCH_REQUEST = "io.tokend.manager.NoSuchRequest"
ERR_APPROVAL_TOO_WIDE = "io.tokend.manager.ApprovalTooWide"


class RawWatch:
    """io.tokend.manager.Watch with "more", from an owner process; one reply a line."""

    def __init__(self, ctx, d):
        py = ctx.owner_python
        self.r = LineReader(ctx, [py, VCLIENT, d.socket, "stream", "io.tokend.manager.Watch", "{}"], "raw-watch",
                            env=python_env(py))
        self.events = []

    def wait(self, event, rid, timeout=15):
        def match(line):
            res = json.loads(line)
            m = res.get("reply")
            check(m is not None and "error" not in m, "raw Watch: a reply, not an error or a closed stream", res)
            check(m.get("continues") is True, "raw Watch: every event reply has continues: true", m)
            p = m["parameters"]
            self.events.append((p.get("event"), p.get("request", {}).get("id")))
            return p.get("event") == event and p.get("request", {}).get("id") == rid
        line = self.r.wait_line(match, timeout, f"Watch event {event} for {rid}")
        return json.loads(line)["reply"]["parameters"]


class TokenctlWatch:
    def __init__(self, ctx, d):
        env = dict(os.environ, TOKEND_SOCKET=d.socket)
        self.r = LineReader(ctx, [TOKENCTL, "watch"], "tokenctl-watch", env=env)

    def wait(self, word, rid, timeout=15):
        return self.r.wait_line(lambda line: rid in line and word in line.lower(), timeout,
                                f"a `tokenctl watch` line with {rid} and {word!r}")


def main(ctx):
    srv = ctx.oauth_server()
    d = ctx.tokend(policy=test_agent_policy("asker", mode="ask", credentials={CRED: "*"}), consent_timeout=TIMEOUT)
    d.add(CRED, srv)
    me = os.getuid()

    log("=== 1. watchers first")
    raw = RawWatch(ctx, d)
    tw = TokenctlWatch(ctx, d)
    time.sleep(0.5)  # both have subscribed before the first request
    check(raw.r.proc.poll() is None and tw.r.proc.poll() is None, "both watchers are running")

    log("=== 2. a request waits")
    a = ctx.caller(d.socket, name="asker-1")
    check(a.whoami()["policy"].get("name") == "asker", "the caller is agent 'asker'")
    t0 = time.time()
    req = ask(d, a, CRED, ["read"])
    expect_waits(a, "GetToken ['read']")
    rid = req["id"]
    check(req.get("agent") == "asker", "pending: agent asker", req)
    c = req["caller"]
    check(c["pid"] == a.pid and c["uid"] == me and c.get("exe") == PYTHON_EXE,
          "pending: the caller's pid, uid and exe", c)
    check(req["credential"] == CRED and req["scopes"] == ["read"], "pending: credential and scopes", req)
    check(abs(req["created"] - t0) <= 3 and req["deadline"] - req["created"] == TIMEOUT,
          f"pending: created now, deadline {TIMEOUT}s later", req)
    rc, out, err = d.tokenctl("pending")
    check(rc == 0 and rid in out and str(a.pid) in out and "asker" in out and CRED in out,
          "`tokenctl pending` shows the request (id, pid, agent, credential)", (rc, out, err))
    rc, out, err = d.tokenctl("--json", "pending")
    check(rc == 0, "`tokenctl --json pending` exits 0", err)
    listed = json.loads(out)
    listed = listed.get("requests", listed) if isinstance(listed, dict) else listed
    check([r.get("id") for r in listed] == [rid], "`tokenctl --json pending` lists exactly that request", listed)
    ev = raw.wait("pending", rid)
    check(ev["request"]["caller"]["pid"] == a.pid, "raw Watch: pending event describes the caller", ev)
    tw.wait("pending", rid)

    log("=== 3. approve")
    gid = approve_plain(d, rid)
    grant = find_grant(d, gid)
    m = a.reply()
    p = expect_token(m, "approved request", ["read"])
    check(introspected_scopes(srv, p["token"]) == ["read"], "the approved token carries exactly 'read' at the server")
    check(d.pending() == [], "nothing pending after the approval")
    check(grant is not None, f"the grant {gid} printed by tokenctl approve is listed", d.grants())
    check(grant.get("agent") == "asker" and grant["credential"] == CRED and grant["scopes"] == ["read"]
          and grant["kind"] == "time", "the grant: agent asker, credential cred, scopes [read], kind time", grant)
    ev = raw.wait("approved", rid)
    check(ev.get("grant") == grant["id"], "raw Watch: approved event names the grant", ev)
    tw.wait("approved", rid)
    a2 = ctx.caller(d.socket, name="asker-2")
    m, took = timed_reply_now(a2, CRED, ["read"])
    expect_token(m, "another process of agent asker, ['read'], covered by the grant", ["read"])
    check(took < TIMEOUT - 1 and d.pending() == [], f"... at once ({took:.2f}s), without a pending request")
    a2.exit()

    log("=== 4. deny")
    req = ask(d, a, CRED, ["write"])
    deny(d, req["id"])
    params = expect_error(a.reply(), ERR_CONSENT_DENIED, "denied request")
    check(params.get("credential") == CRED and params.get("agent") == "asker" and params.get("request") == req["id"],
          "ConsentDenied names the credential, the agent and the request", params)
    raw.wait("denied", req["id"])
    tw.wait("denied", req["id"])
    check(d.pending() == [], "nothing pending after the denial")

    log("=== 5. timeout")
    req = ask(d, a, CRED, ["write"])
    m, took = timed_reply(a, TIMEOUT + 10)
    params = expect_error(m, ERR_CONSENT_REQUIRED, "unanswered request")
    check(params.get("request") == req["id"] and params.get("credential") == CRED and params.get("agent") == "asker",
          "ConsentRequired names the request, the credential and the agent", params)
    waited = time.time() - req["created"]
    check(TIMEOUT - 1 <= waited <= TIMEOUT + 5,
          f"answered after the consent timeout ({waited:.1f}s, timeout {TIMEOUT}s)")
    raw.wait("timeout", req["id"])
    tw.wait("timeout", req["id"])
    check(d.pending() == [], "the timed-out request left pending")

    log("=== 6. narrower approval")
    req = ask(d, a, CRED, ["openid", "write"])
    g = approve_grant(d, req["id"], "--scope", "write")
    p = expect_token(a.reply(), "request ['openid','write'] approved with --scope write", ["write"])
    check(introspected_scopes(srv, p["token"]) == ["write"], "the token carries exactly 'write' at the server")
    check(g["scopes"] == ["write"], "the grant covers [write]", g)

    log("=== 7. unknown ids")
    approve(d, "no-such-request", expect=EXIT_NO_SUCH)
    deny(d, "no-such-request", expect=EXIT_NO_SUCH)
    m = d.manager("Approve", {"id": "no-such-request"})
    check(m.get("error") == ERR_NO_SUCH_REQUEST, "Approve of an unknown id: NoSuchRequest", m)

    log("=== 8. a caller that hangs up")
    h = ctx.caller(d.socket, name="hangs-up")
    h.send("io.tokend.agent.GetToken", {"credential": CRED, "scopes": ["openid"]})
    req = d.wait_pending(lambda r: r["caller"]["pid"] == h.pid, what="the request of the caller that will hang up")
    h.hangup()
    wait_until(lambda: all(r["id"] != req["id"] for r in d.pending()), 5, "the hung-up request to leave pending")
    rc, out, _ = d.tokenctl("pending")
    check(rc == 0 and req["id"] not in out, "`tokenctl pending` no longer shows it", out)
    raw.wait("gone", req["id"])
    tw.wait("gone", req["id"])
    approve(d, req["id"], expect=EXIT_NO_SUCH)

    log("=== 9. an unknown caller asks too")
    other = ctx.python_copy("unknown")
    u = ctx.caller(d.socket, python=other, name="unknown")
    w = u.whoami()
    check("name" not in w["policy"] and w["policy"].get("mode") == "ask",
          "the copy of the interpreter is an unknown caller (no agent name, mode ask)", w)
    check(w["manager"] is True, "... and, of the owner's uid and no agent, it may use the manager interface", w)
    req = ask(d, u, CRED, ["read"])
    check(req.get("agent") is None and req["caller"].get("exe") == other and req["caller"]["pid"] == u.pid,
          "pending: no agent, the unknown caller's exe and pid", req)
    approve(d, req["id"])
    p = expect_token(u.reply(), "the unknown caller's approved request", ["read"])
    check(introspected_scopes(srv, p["token"]) == ["read"], "its token carries exactly 'read'")

    log("=== 10. an approval wider than the policy")
    req = ask(d, a, CRED, ["offline_access"])
    approve(d, req["id"], "--scope", "admin", expect=EXIT_REFUSED)
    m = d.manager("Approve", {"id": req["id"], "scopes": ["admin"]})
    check(m.get("error") == ERR_APPROVAL_TOO_WIDE, "Approve with scopes beyond the ceiling: ApprovalTooWide", m)
    check([r["id"] for r in d.pending()] == [req["id"]], "the request still waits")
    deny(d, req["id"])
    expect_error(a.reply(), ERR_CONSENT_DENIED, "then denied")

    log("=== 11. one approval answers every waiting request it covers; a single-use one, one")
    b1, b2 = ctx.caller(d.socket, name="b1"), ctx.caller(d.socket, name="b2")
    r1, r2 = ask(d, b1, CRED, ["offline_access"]), ask(d, b2, CRED, ["offline_access"])
    g = approve_grant(d, r1["id"])
    expect_token(b1.reply(), "b1, approved", ["offline_access"])
    expect_token(b2.reply(), "b2, waiting for the same, answered by the same approval", ["offline_access"])
    raw.wait("approved", r2["id"])
    check(d.pending() == [], "nothing left pending")
    r1, r2 = ask(d, b1, CRED, ["openid", "offline_access"]), ask(d, b2, CRED, ["openid", "offline_access"])
    og = approve_grant(d, r1["id"], "--once")
    expect_token(b1.reply(), "b1, approved --once", ["offline_access", "openid"])
    check(og["kind"] == "once" and [r["id"] for r in d.pending()] == [r2["id"]],
          "the single-use grant answered b1 only: b2 still waits", d.pending())
    deny(d, r2["id"])
    expect_error(b2.reply(), ERR_CONSENT_DENIED, "b2 denied")

    log("=== 12. at most 8 requests of one agent wait; a new watcher first sees those waiting")
    eight = [ctx.caller(d.socket, name=f"w{i}") for i in range(8)]
    for c_ in eight:
        c_.send("io.tokend.agent.GetToken", {"credential": CRED, "scopes": ["openid", "read"]})
    waiting = wait_until(lambda: (lambda p: p if len(p) == 8 else None)(d.pending()), 5, "8 requests to wait")
    ninth = ctx.caller(d.socket, name="w8")
    t0 = time.monotonic()
    params = expect_error(ninth.get_token(CRED, ["openid", "read"]), ERR_CONSENT_REQUIRED, "a 9th request of asker")
    check(time.monotonic() - t0 < 2 and "too many" in params.get("reason", ""),
          "... refused at once: too many requests are waiting", params)
    raw2 = RawWatch(ctx, d)
    first = [json.loads(raw2.r.wait_line(lambda line: True, 10, f"initial event {i}"))["reply"]["parameters"]
             for i in range(8)]
    check(all(e["event"] == "pending" for e in first) and {e["request"]["id"] for e in first} ==
          {r["id"] for r in waiting}, "a Watch started now first sends one 'pending' per waiting request", first)
    for c_ in eight + [ninth, b1, b2]:
        c_.exit()
    wait_until(lambda: d.pending() == [], 5, "the requests of the callers that exited to leave pending")

    log("=== 13. removing the credential ends its grants and its waiting requests")
    req = ask(d, a, CRED, ["openid", "read"])
    check(any(g_["credential"] == CRED for g_ in d.grants()), "grants of cred are in force")
    rc, out, err = d.tokenctl("remove", CRED)
    check(rc == 0, "tokenctl remove cred", err)
    m = a.reply()
    check("error" in m and "token" not in (m.get("parameters") or {}), "the waiting request ends with an error", m)
    check(d.pending() == [] and not any(g_["credential"] == CRED for g_ in d.grants()),
          "no request waits and no grant of cred is left")

    log("=== 14. a request waiting when tokend stops")
    d.add(CRED, srv)
    req = ask(d, a, CRED, ["read", "write"])
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM with a request waiting", rc)
    params = expect_error(a.reply(), ERR_CONSENT_REQUIRED, "the request waiting when tokend stopped")
    check(params.get("request") == req["id"], "... names the request", params)

    for c_ in (a, u):
        c_.exit()
    log(f"raw Watch events seen: {raw.events}")


def timed_reply_now(caller, credential, scopes):
    t0 = time.monotonic()
    m = caller.get_token(credential, scopes)
    return m, time.monotonic() - t0


if __name__ == "__main__":
    run_test(main, __doc__)
