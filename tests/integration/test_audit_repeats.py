#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Repeated issues of one token to one connection: counted, and every issue on the record.

The audit trail has a record per decision, except that the same token issued again to the same
connection (same credential, resource and grant) is counted and written as one `issue` record with
`count` (TOKEND_COUNT) and `since` (TOKEND_SINCE). Checked here with the fallback file
(TOKEND_AUDIT_JOURNAL=0, read back by `tokenctl audit --json`), a real OAuth server and the real daemon:
1. Default window (1 s): 50 GetToken on one connection give one plain `issue` record, then counts
   that add up to 49, written while the connection stays open (the timer), with `since` no earlier
   than the first issue; `tokenctl audit` shows "49 times again".
2. Order and keys, with --audit-coalesce 60 (only what is not the timer can write a count):
   a deny on the same connection comes after the count of the issues before it; a different token
   (other scopes) on the same connection writes the pending count first, then a plain record; the
   first token again is a plain record again (the connection's last record was the other token); a
   second connection of the same process has its own plain record; closing a connection writes its
   count at once; SIGTERM writes the counts still held.
3. --audit-coalesce 0: a plain record for every issue, none with a count.
4. Everywhere: the sum of count (1 where absent) over the issue records equals the GetToken calls
   that returned a token, and no record was lost; bad --audit-coalesce values are refused by name.
"""
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TOKEND, TOKENCTL, check, log, mint, run_test, wait_until  # noqa: E402

ERR_SCOPE = "io.tokend.agent.ScopeNotAllowed"


def fp(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def records(d, credential):
    env = dict(os.environ, TOKEND_SOCKET=d.socket, XDG_STATE_HOME=d.state_home)
    r = subprocess.run([TOKENCTL, "audit", "--json", "--credential", credential], capture_output=True, text=True,
                       timeout=60, env=env)
    check(r.returncode == 0, "tokenctl audit --json exits 0", (r.returncode, r.stderr))
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def issued(recs):
    """Sum of count (1 where absent) over the issue records."""
    return sum(r.get("count", 1) for r in recs if r.get("event") == "issue")


def get(conn, credential, scopes=None):
    p = {"credential": credential}
    if scopes is not None:
        p["scopes"] = scopes
    return conn.call("io.tokend.agent.GetToken", p)


def tokens(conn, credential, n, scopes=None):
    """n GetToken calls on conn that must all succeed with one token; returns it."""
    seen = set()
    for _ in range(n):
        m = get(conn, credential, scopes)
        check("error" not in m, f"GetToken {credential} {scopes}", m)
        seen.add(m["parameters"]["token"])
    check(len(seen) == 1, f"{n} cache hits, one token", len(seen))
    return seen.pop()


def new_daemon(ctx, srv, name, coalesce=None):
    args = () if coalesce is None else ("--audit-coalesce", str(coalesce))
    d = ctx.tokend(name=name, extra_args=args)
    cred = "rep-" + uuid.uuid4().hex[:8]
    d.add(cred, srv, refresh_token=mint(srv.issuer))
    return d, cred


def shape(recs):
    """(event, token fp, count) of each decision record (issue, deny)."""
    return [(r.get("event"), r.get("token_fp"), r.get("count")) for r in recs if r.get("event") in ("issue", "deny")]


def main(ctx):
    os.environ["TOKEND_AUDIT_JOURNAL"] = "0"  # the fallback file: the same records, read back exactly
    srv = ctx.oauth_server()
    me = os.getpid()

    log("=== 1. default window: 50 cache hits on one connection")
    d, cred = new_daemon(ctx, srv, "default")
    with d.connect() as c:
        t0 = time.time()
        tok = tokens(c, cred, 50)
        # The connection stays open: only the timer can write the count.
        wait_until(lambda: issued(records(d, cred)) == 50, 15, "the count of the 49 repeats, connection open")
        recs = [r for r in records(d, cred) if r.get("event") == "issue"]
        check(recs[0].get("count") is None and recs[0].get("token_fp") == fp(tok) and recs[0].get("agent_pid") == me,
              "the first issue is a plain record, with the token's fingerprint and the agent", recs[0])
        counted = recs[1:]
        check(len(counted) >= 1 and all(r.get("count", 0) >= 1 and r.get("token_fp") == fp(tok) for r in counted)
              and sum(r["count"] for r in counted) == 49, "the 49 repeats are counted in records of their own",
              [(r.get("count"), r.get("token_fp")) for r in counted])
        check(all(r.get("since", 0) >= int(t0 * 1e6) - 2_000_000 and r.get("since", 0) <= r["timestamp"]
                  for r in counted), "since: when the first counted issue was, before the record",
              [(r.get("since"), r["timestamp"]) for r in counted])
        check(all(r.get("scopes") == recs[0].get("scopes") and r.get("agent_exe") == recs[0].get("agent_exe")
                  and r.get("agent_pid") == me for r in counted), "a count record names the same scopes and agent",
              counted)
        env = dict(os.environ, TOKEND_SOCKET=d.socket, XDG_STATE_HOME=d.state_home)
        table = subprocess.run([TOKENCTL, "audit", "--credential", cred], capture_output=True, text=True,
                               timeout=60, env=env).stdout
        check(("49 times again since" in table) if len(counted) == 1 else ("times again since" in table),
              "tokenctl audit shows the count", table)
        check(tok not in table, "no token in tokenctl audit's table")
    d.stop()

    log("=== 2. order and keys, --audit-coalesce 60")
    d, cred = new_daemon(ctx, srv, "window60", coalesce=60)
    got = 0
    c1 = d.connect()
    t1 = tokens(c1, cred, 10)
    got += 10
    m = get(c1, cred, ["read", "delete"])
    check(m.get("error") == ERR_SCOPE, "a wider scope on the same connection: ScopeNotAllowed", m)
    # The deny comes after the count of the nine repeats before it.
    wait_until(lambda: len(shape(records(d, cred))) >= 3, 10, "three records")
    check(shape(records(d, cred)) == [("issue", fp(t1), None), ("issue", fp(t1), 9), ("deny", None, None)],
          "plain issue, the count of 9, then the deny", shape(records(d, cred)))
    t2 = tokens(c1, cred, 5, ["read"])  # another cache entry: another token
    got += 5
    check(t2 != t1, "scopes ['read'] are another token")
    t1b = tokens(c1, cred, 3)
    got += 3
    check(t1b == t1, "the first token again, from the cache")
    wait_until(lambda: len(shape(records(d, cred))) >= 6, 10, "six records")
    check(shape(records(d, cred))[3:] == [("issue", fp(t2), None), ("issue", fp(t2), 4), ("issue", fp(t1), None)],
          "the other token: plain, its count written before the first token's plain record",
          shape(records(d, cred)))
    c2 = d.connect()
    tokens(c2, cred, 4)
    got += 4
    # (An issue is recorded right after it is sent: its reply may come first.)
    wait_until(lambda: len(shape(records(d, cred))) >= 7, 10, "seven records")
    recs = records(d, cred)
    check(shape(recs)[6:] == [("issue", fp(t1), None)], "a second connection has its own plain record",
          shape(recs))
    check({r.get("agent_pid") for r in recs if r.get("event") in ("issue", "deny")} == {me}, "all of one process",
          recs)
    # c1 holds 2 repeats of t1, c2 holds 3: closing c1 writes its count, not c2's.
    c1.close()
    wait_until(lambda: len(shape(records(d, cred))) >= 8, 10, "c1's count, written when it closed")
    check(shape(records(d, cred))[7:] == [("issue", fp(t1), 2)], "closing c1 wrote its 2 repeats, and only them",
          shape(records(d, cred)))
    rc = d.stop()
    check(rc == 0, "tokend exits 0 on SIGTERM", rc)
    c2.close()
    recs = records(d, cred)
    check(shape(recs)[8:] == [("issue", fp(t1), 3)], "SIGTERM wrote c2's 3 repeats", shape(recs))
    check(issued(recs) == got, f"every issue is on the record: {issued(recs)} counted, {got} handed out",
          shape(recs))

    log("=== 3. --audit-coalesce 0: a record for every issue")
    d, cred = new_daemon(ctx, srv, "window0", coalesce=0)
    with d.connect() as c:
        tokens(c, cred, 20)
    wait_until(lambda: len(shape(records(d, cred))) >= 20, 10, "20 records")
    recs = [r for r in records(d, cred) if r.get("event") == "issue"]
    check(len(recs) == 20 and all("count" not in r for r in recs), "20 plain issue records, no more",
          shape(recs))
    d.stop()

    log("=== 4. bad values")
    for bad in ("61", "-1", "1.5", "", "x"):
        r = subprocess.run([TOKEND, "--audit-coalesce", bad, "--version"], capture_output=True, text=True, timeout=30)
        check(r.returncode != 0 and "--audit-coalesce" in r.stderr, f"--audit-coalesce {bad!r} is refused by name",
              (r.returncode, r.stderr))


if __name__ == "__main__":
    run_test(main)
