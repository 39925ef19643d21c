#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceptance item 5: rotated refresh tokens survive daemon restarts.

The test server rotates refresh tokens on every refresh and kills the grant when a rotated
(old) refresh token is reused. So a daemon that kept using the refresh token it had at start-up,
or lost the rotated one on restart, gets invalid_grant / reuse detection here.

1. Add a credential (one refresh), then force another rotating refresh with an uncached scope
   set (["read"]); the server counts it.
2. Twice: SIGTERM the daemon (it must exit 0) and start it again with the same state directory
   and keyring; GetToken with a scope set it has not cached since the restart succeeds (a
   refresh with the last rotated refresh token: no re-login), and the token is active.
3. Then SIGTERM while a GetToken refresh is in flight: the daemon exits 0 after finishing it; if
   the call was answered, its token is active; after a start, a further refresh works.
4. Throughout: reuse_detected == 0, no invalid_grant, and the refresh count is exactly the
   number of cache misses; the credential stays in state ok.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ConnectionClosed, check, log, run_test  # noqa: E402

NAME = "rotor"


def check_stats(srv, expected, when):
    st = srv.stats()
    check(st["reuse_detected"] == 0, f"{when}: reuse_detected == 0", st)
    check(st["refresh_errors"].get("invalid_grant", 0) == 0, f"{when}: no invalid_grant", st)
    check(st["grants"]["refresh_token"] == expected, f"{when}: {expected} refresh_token grants in total",
          st["grants"])


def refresh_with(srv, d, scopes, expected, when):
    p = d.token(NAME, scopes)
    check(sorted(p["scopes"]) == sorted(scopes), f"{when}: GetToken {scopes} succeeds with those scopes", p)
    info = srv.introspect(p["token"])
    check(info.get("active") is True and sorted(info.get("scope", "").split()) == sorted(scopes),
          f"{when}: token introspected active with scope {scopes}", info)
    check_stats(srv, expected, when)
    return p


def main(ctx):
    srv = ctx.oauth_server()
    srv.reset_stats()
    d = ctx.tokend()
    d.add(NAME, srv)
    expected = 1
    check_stats(srv, expected, "after add")

    expected += 1
    refresh_with(srv, d, ["read"], expected, "before any restart")
    # A cached scope set does not refresh.
    d.token(NAME, ["read"])
    check_stats(srv, expected, "cached ['read'] again")

    for cycle, scope_sets in ((1, [["write"], ["read"]]), (2, [["read", "write"], ["openid", "read"]])):
        log(f"=== restart #{cycle}")
        d.restart()
        c = d.list_json().get(NAME)
        check(c is not None and c["state"] == "ok", f"restart #{cycle}: credential listed in state ok", c)
        check(d.has_secret(NAME, "refresh_token"), f"restart #{cycle}: refresh token still in the keyring")
        for scopes in scope_sets:
            expected += 1
            refresh_with(srv, d, scopes, expected, f"after restart #{cycle}")
        # The full-scope token is not cached after a restart either: one more refresh.
        expected += 1
        p = d.token(NAME)
        check(srv.introspect(p["token"]).get("active") is True, f"after restart #{cycle}: full-scope token active")
        check_stats(srv, expected, f"after restart #{cycle}, full scope")

    # Cycle 3: SIGTERM while a refresh is in flight. The daemon finishes it (saving the rotated
    # refresh token) before it exits; a daemon that dropped the response would reuse the old
    # refresh token after the restart and the server would kill the grant.
    log("=== restart #3 with a refresh in flight")
    with d.connect() as conn:
        conn.send("io.tokend.agent.GetToken", {"credential": NAME, "scopes": ["write"]})
        time.sleep(0.05)
        rc = d.stop()
        check(rc == 0, "restart #3: tokend exits 0 on SIGTERM with a refresh in flight", rc)
        try:
            m = conn.read_reply(timeout=5)
        except (ConnectionClosed, TimeoutError) as e:
            m = {"error": f"(no reply: {e})"}
    n = srv.refresh_count()
    log(f"in-flight call got: {m.get('error') or 'a token'}; refresh grants {n} (before: {expected})")
    check(n in (expected, expected + 1), "restart #3: at most one refresh for the in-flight call", n)
    if "error" not in m:
        check(n == expected + 1, "restart #3: the answered call was a real refresh", n)
        check(srv.introspect(m["parameters"]["token"]).get("active") is True,
              "restart #3: the token handed out during shutdown is active")
    expected = n
    d.start()
    expected += 1
    refresh_with(srv, d, ["openid", "write"], expected, "after restart #3")

    c = d.list_json()[NAME]
    check(c["state"] == "ok" and not c.get("last_error"), "credential still ok with no last error", c)
    check(d.alive(), "daemon still running")


if __name__ == "__main__":
    run_test(main, __doc__)
